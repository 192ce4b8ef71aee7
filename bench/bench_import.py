"""Import benchmark: `nashra subscribers import` of 100,000 and 1,000,000 readers into PostgreSQL.

    .venv/bin/python bench/bench_import.py [--rows 100000,1000000] [--baseline-rows 20000]
        [--baseline REV] [--code DIR|REV] [--sqlite 100000] [--chunk 5000]

For each size: a CSV in the contract's columns (sections by name or slug, weekly and
daily, 1 % pending, consent times) generated in a temp dir, imported into a fresh scratch
PostgreSQL database (bench/support.py `scratch_database`, three sections) through the
use-case the CLI calls (`import_file`), in a child process of its own so that its peak
RSS (resource.getrusage, ru_maxrss) is the import's alone; then the same file again (a
resumed import: every reader already there) — rows/s and peak RSS for both.

The reference, in the same run: the import of git revision --baseline (default
cbaf0d0, the per-row ORM import of before) on a --baseline-rows file (20,000 rows), also
in a child process and a fresh scratch database.  The ratio is new rows/s / old rows/s.

--code DIR|REV measures another version of the new path (a copy of the tree, or a git
revision, as bench/profile_send.py).  --sqlite N also imports N rows into a SQLite file
(the embedded default), where speed matters less.  Confirmations of pending readers go to
a Recorder dispatcher (no broker): the bench measures the database work.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.support import code_label, code_of, scratch_database  # noqa: E402

BASELINE = "cbaf0d0"  # the last revision with the per-row ORM import
SECTIONS = (("world", "عربي دولي"), ("sport", "رياضة"), ("economy", "اقتصاد"))


def write_csv(path: Path, rows: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    with path.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh, lineterminator="\r\n")
        out.writerow(["email", "sections", "frequency", "alerts", "status", "consent_source", "consented_at"])
        for i in range(rows):
            picked = rnd.sample(SECTIONS, rnd.choice((0, 0, 1, 2)))
            out.writerow([
                f"Reader.{i}.{rnd.randrange(10**6)}@mail{i % 997}.example.com",
                "|".join(rnd.choice((slug, name)) for slug, name in picked),
                rnd.choice(("daily", "daily", "weekly")),
                rnd.choice(("yes", "yes", "no")),
                "pending" if i % 100 == 0 else "active",
                rnd.choice(("print-form", "old-site", "")),
                (start + dt.timedelta(minutes=i)).isoformat() if i % 3 else "",
            ])


def child(code: str, path: str, database_url: str, chunk: int) -> None:
    """In a process of its own: one import, then a JSON line with its figures."""
    sys.path.insert(0, code)
    for name in [m for m in sys.modules if m == "service" or m.startswith("service.")]:
        del sys.modules[name]
    os.environ["DATABASE_URL"] = database_url
    from service import dispatch
    from service.usecases import subscribers

    recorder = dispatch.Recorder()
    dispatch.install(recorder)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    started = time.perf_counter()
    if "chunk" in subscribers.import_file.__code__.co_varnames:
        report = subscribers.import_file(path, chunk=chunk)
    else:
        report = subscribers.import_file(path)  # the per-row import of before
    elapsed = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    from bench.support import postgres_cpu_seconds

    pg_cpu = postgres_cpu_seconds(database_url) if database_url.startswith("postgresql") else 0.0
    rows = getattr(report, "rows", report.created + report.updated + report.unchanged + report.skipped)
    print(json.dumps({
        "rows": rows, "created": report.created, "already": report.updated + report.unchanged,
        "skipped": report.skipped, "confirmations": len(recorder.calls), "seconds": elapsed, "cpu": cpu,
        "pg_cpu": pg_cpu,
        "rss_start_mb": rss_before / 1024, "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def run_child(code: Path, path: Path, database_url: str, chunk: int) -> dict:
    env = {**os.environ, "SECRET_KEY": "bench-secret-key-0123456789", "LOG_LEVEL": "WARNING", "LOG_FORMAT": "json",
           "NASHRA_VAR_DIR": str(path.parent / "var")}
    proc = subprocess.run([sys.executable, __file__, "--child", str(code), str(path), database_url, str(chunk)],
                          env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"import failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def add_sections(database_url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        for position, (slug, name) in enumerate(SECTIONS, 1):
            conn.execute(sa.text("INSERT INTO sections (slug, name, position, hidden) VALUES (:s, :n, :p, false)"),
                         {"s": slug, "n": name, "p": position})
    engine.dispose()


def show(label: str, result: dict) -> None:
    n = result["rows"]
    bound = n / max(result["cpu"], result["pg_cpu"], 1e-9)
    print(f"{label:<32} {n:>9,} rows {result['seconds']:>7.2f} s {n / result['seconds']:>8,.0f} rows/s | "
          f"CPU µs/row: Nashra {result['cpu'] / n * 1e6:5.1f}, PostgreSQL {result['pg_cpu'] / n * 1e6:5.1f} "
          f"(each on a core of its own: {bound:,.0f} rows/s) | created {result['created']:,}, "
          f"already {result['already']:,} | peak RSS {result['rss_peak_mb']:.0f} MB "
          f"(at start {result['rss_start_mb']:.0f})", flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="100000,1000000", help="comma-separated file sizes (default 100000,1000000)")
    ap.add_argument("--baseline-rows", type=int, default=20000)
    ap.add_argument("--baseline", default=BASELINE, metavar="REV", help="the old import's git revision ('' to skip)")
    ap.add_argument("--code", default=None, metavar="DIR|REV", help="the new path from DIR or git revision REV")
    ap.add_argument("--sqlite", type=int, default=0, metavar="N", help="also import N rows into SQLite")
    ap.add_argument("--chunk", type=int, default=5000)
    args = ap.parse_args()
    sizes = [int(n) for n in args.rows.split(",") if n]

    tmp = Path(tempfile.mkdtemp(prefix="nashra-bench-import-"))
    print(f"code: {code_label(args.code)}; chunk {args.chunk}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at start; files in {tmp}")
    results: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        code = stack.enter_context(code_of(args.code))
        for n in sizes:
            path = tmp / f"readers-{n}.csv"
            write_csv(path, n)
            print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB")
            with scratch_database("import") as url:
                add_sections(url)
                results[f"new {n}"] = first = run_child(code, path, url, args.chunk)
                show(f"import {n:,} (PostgreSQL)", first)
                again = run_child(code, path, url, args.chunk)
                show("again, all already there", again)
            path.unlink()
        if args.sqlite:
            path = tmp / f"readers-{args.sqlite}.csv"
            write_csv(path, args.sqlite)
            db = tmp / "nashra.db"
            url = f"sqlite:///{db}"
            sys.path.insert(0, str(code))
            from service.migrate import upgrade

            upgrade(url)
            add_sections(url)
            show(f"import {args.sqlite:,} (SQLite)", run_child(code, path, url, args.chunk))
        if args.baseline:
            old = stack.enter_context(code_of(args.baseline))
            path = tmp / f"readers-{args.baseline_rows}.csv"
            write_csv(path, args.baseline_rows)
            with scratch_database("import_old") as url:
                add_sections(url)
                results["old"] = base = run_child(old, path, url, args.chunk)
                show(f"old import {args.baseline_rows:,} ({args.baseline})", base)
            old_rate = base["rows"] / base["seconds"]
            for n in sizes:
                new = results[f"new {n}"]
                print(f"ratio, {n:,} rows new / {args.baseline_rows:,} rows old: "
                      f"{new['rows'] / new['seconds'] / old_rate:.0f}x")


if __name__ == "__main__":
    main()
