"""Where a worker's CPU per message goes: a real alert send on loopback, sampled by py-spy.

    .venv/bin/python bench/profile_send.py [--readers 4000] [--workers 2] [--repeat 3]
        [--code DIR|REV] [--no-profile] [--rate 1000] [--all-threads] [--under FUNC] [--top 40]

The set-up of bench_send_engine.py at RTT 0: a scratch PostgreSQL database, a
redis-server of its own, Postfix's smtp-sink, the alert of bench_alert_latency.py (~11 KB
on the wire), and `celery worker -Q alerts,digests -c WORKERS -P prefork` as a subprocess
(SMTP_CONNECTIONS as configured, 20 by default).  One warm-up alert, then --repeat alerts
of --readers each, timed from the enqueue of plan_edition to the edition's `done`:

* worker CPU µs per message, from /proc (the Celery main process and its children), the
  median of the --repeat runs, with the profiler detached; and the scratch database's
  PostgreSQL backends (same measure as bench_send_engine's "PG" column);
* then one more alert with py-spy attached to every process of the worker
  (``--subprocesses``).  By default only the thread holding the GIL is sampled
  (``--gil``): that is the Python work, and its samples add up to within a few per cent
  of the CPU time measured (the rest is system calls with the GIL released).
  ``--all-threads`` samples every thread py-spy thinks busy instead, which on this
  kernel includes threads waiting in recv or in a queue.

From the samples it prints the share per category (token signing, MIME assembly, SMTP,
metrics, the ledger's SQL, Celery/Kombu, …: the innermost frame that names one), the
hottest functions (self and inclusive) and, with --under FUNC, what FUNC's samples are
spent in (e.g. --under "compose (service").  1 % of the samples is about 1 % of the
worker's CPU per message.  The raw samples (py-spy's collapsed stacks) go to
bench/out/profile_send-<time>.txt.

--code DIR runs workers and this process on a copy of the tree in DIR (to measure one
change at a time), --code REV on git revision REV (git archive, as bench_send_engine.py).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_send_engine import clear_ledger, new_edition, rendered_alert, wait_done  # noqa: E402
from bench.support import (  # noqa: E402
    add_readers,
    celery_worker,
    code_of,
    postgres_cpu_seconds,
    redis_server,
    scratch_database,
    session_cpu_seconds,
    smtp_sink,
)

OUT = REPO / "bench" / "out"
PY_SPY = str(Path(sys.executable).parent / "py-spy")

# Categories, first match wins, tested against each frame of a stack from the leaf up:
# a sample counts for the innermost frame that names one of them.
CATEGORIES = [
    ("token signing (itsdangerous)", re.compile(r"itsdangerous|tokens\.py")),
    ("VERP / Message-ID HMAC", re.compile(r"\(_sig |_verp |bounce_address |message_id \(.*compose")),
    ("MIME assembly (PreparedVariant.build)", re.compile(r"mime\.py|personalise\.py|markupsafe")),
    ("compose (other)", re.compile(r"compose\.py")),
    ("structlog / logging", re.compile(r"structlog|/logging/")),
    ("prometheus metrics", re.compile(r"prometheus_client|metrics\.py")),
    ("rate limiter", re.compile(r"throttle\.py")),
    ("SMTP dialogue (smtplib, socket)", re.compile(r"smtplib\.py|smtp\.py|socket\.py")),
    ("SMTP pool (checkout/checkin)", re.compile(r"smtp_pool\.py")),
    ("ledger / SQL (SQLAlchemy, psycopg)", re.compile(r"sqlalchemy|psycopg|ledger\.py")),
    ("connection cap / relays (Redis)", re.compile(r"connection_cap\.py|relays\.py")),
    ("Celery / Kombu / billiard", re.compile(r"celery|kombu|billiard|vine|redis/")),
    ("batch bookkeeping (batch.py)", re.compile(r"batch\.py")),
    ("threads, queues, futures", re.compile(r"threading\.py|queue\.py|concurrent/futures")),
]


def _frames(stack: str) -> list[str]:
    # py-spy raw: "thread (tid);frame;frame;… count"; a frame is "func (file.py:line)".
    return [f for f in stack.split(";") if f]


def analyse(raw: str, top: int) -> str:
    samples: list[tuple[list[str], int]] = []
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            samples.append((_frames(stack), int(count)))
    total = sum(n for _, n in samples) or 1
    cats: collections.Counter = collections.Counter()
    self_t: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    for frames, n in samples:
        leaf = re.sub(r":\d+\)$", ")", frames[-1])
        self_t[leaf] += n
        for f in {re.sub(r":\d+\)$", ")", f) for f in frames}:
            incl[f] += n
        for f in reversed(frames):
            name = next((c for c, rx in CATEGORIES if rx.search(f)), None)
            if name:
                cats[name] += n
                break
        else:
            cats["other"] += n
    out = [f"{total} samples", "", "share of CPU by category (innermost frame that names one):"]
    out += [f"  {n / total:6.1%}  {c}" for c, n in cats.most_common()]
    out += ["", f"top {top} functions, self:"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in self_t.most_common(top)]
    out += ["", f"top {top} of Nashra's functions (service/), inclusive:"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in [kv for kv in incl.most_common() if "(service/" in kv[0]][:top]]
    return "\n".join(out)


def under(raw: str, func: str, depth: int = 1) -> str:
    """How the samples whose stack holds a frame starting with `func` split among the frames
    just below it (the outermost such frame)."""
    total, inside = 0, 0
    kids: collections.Counter = collections.Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not (stack and count.isdigit()):
            continue
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in _frames(stack)]
        at = next((i for i, f in enumerate(frames) if f.startswith(func)), None)
        if at is None:
            continue
        inside += n
        kids[";".join(frames[at + 1:at + 1 + depth]) or "<self>"] += n
    total = total or 1
    out = [f"under {func!r}: {inside / total:.1%} of the samples"]
    out += [f"  {n / total:6.1%}  {k}" for k, n in kids.most_common(25)]
    return "\n".join(out)


@contextlib.contextmanager
def py_spy(pid: int, out: Path, rate: int, gil: bool):
    """py-spy recording `pid` and its children (no pausing them) until the block ends."""
    if not Path(PY_SPY).exists():
        raise SystemExit(f"{PY_SPY} is missing: .venv/bin/pip install py-spy")
    cmd = [PY_SPY, "record", "-p", str(pid), "-o", str(out), "-f", "raw", "-r", str(rate), "--nonblocking",
           "--subprocesses"]
    if gil:
        cmd.append("--gil")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # attached
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(30)
        if proc.returncode not in (0, None, -2) and not out.exists():
            print(err.decode(errors="replace"), file=sys.stderr)


def celery_send(rendered, n: int, prefix: str, sink, worker_pid: int) -> float:
    """One alert of n readers through the Celery workers: worker CPU µs per message."""
    from service.jobs import names
    from service.jobs.tasks import plan_edition

    clear_ledger()
    add_readers(n, prefix)
    eid = new_edition("alert", rendered)
    c0, cpu0, pg0 = sink.count(), session_cpu_seconds(worker_pid), postgres_cpu_seconds(os.environ["DATABASE_URL"])
    plan_edition.si(eid).apply_async(queue=names.edition_queue("alert"))
    deadline = time.monotonic() + 300
    while sink.count() - c0 < n and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        wait_done(eid, 60)
    except RuntimeError:
        print(f"stuck: the sink saw {sink.count() - c0} of {n}; ledger: {ledger_counts(eid)}", flush=True)
        raise
    pg = postgres_cpu_seconds(os.environ["DATABASE_URL"]) - pg0
    PG_US.append(pg / n * 1e6)
    return (session_cpu_seconds(worker_pid) - cpu0) / n * 1e6


PG_US: list[float] = []  # the scratch database's backends, µs per message, per celery_send


def ledger_counts(edition_id: int) -> dict:
    import sqlalchemy as sa

    from service.db import session_scope

    with session_scope() as s:
        return dict(s.execute(sa.text("SELECT status, count(*) FROM deliveries WHERE edition_id = :e GROUP BY status"),
                              {"e": edition_id}).all())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readers", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="measured runs (profiler detached)")
    ap.add_argument("--no-profile", action="store_true", help="only the CPU µs per message")
    ap.add_argument("--rate", type=int, default=1000, help="py-spy samples per second and process")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--code", default=None, metavar="DIR|REV",
                    help="run on the code in DIR (a copy of the tree), or of git revision REV (git archive)")
    ap.add_argument("--worker-log", default=None, help="append the workers' logs (INFO) to this file")
    ap.add_argument("--all-threads", action="store_true",
                    help="sample every thread py-spy takes for busy, not only the one holding the GIL")
    ap.add_argument("--under", default=None, metavar="FUNC",
                    help="also print what the samples under frames starting with FUNC are spent in")
    args = ap.parse_args()

    started = dt.datetime.now().astimezone()
    OUT.mkdir(parents=True, exist_ok=True)
    raw_path = OUT / f"profile_send-{started:%Y%m%d-%H%M%S}.txt"
    var = tempfile.mkdtemp(prefix="nashra-profile-send-")
    with contextlib.ExitStack() as stack:
        if args.code and Path(args.code).is_dir():
            code = Path(args.code).resolve()
        else:
            code = stack.enter_context(code_of(args.code))
        if args.code:  # this process too (planner, migrations): one version of the code
            sys.path.insert(0, str(code))
            for name in [m for m in sys.modules if m == "service" or m.startswith("service.")]:
                del sys.modules[name]
        sink = stack.enter_context(smtp_sink())
        db_url = stack.enter_context(scratch_database("profile"))
        redis_url = stack.enter_context(redis_server())
        env = {
            "DATABASE_URL": db_url, "REDIS_URL": redis_url, "NASHRA_VAR_DIR": var,
            "SECRET_KEY": "bench-secret-key-0123456789", "LOG_LEVEL": "WARNING", "LOG_FORMAT": "json",
            "SMTP_URL": f"smtp://127.0.0.1:{sink.port}", "SMTP_MAX_CONNECTIONS": "64",
        }
        if args.worker_log:
            env["LOG_LEVEL"] = "INFO"
        os.environ.update(env)
        from service.config import get_settings, reset_settings
        from service.jobs.app import configure
        from service.logs import setup_logging

        reset_settings()
        setup_logging()
        configure()
        rendered = rendered_alert()
        print(f"profile_send {started:%Y-%m-%d %H:%M}; code: {code}; {args.readers} readers × {args.repeat}; "
              f"SMTP_CONNECTIONS={get_settings().smtp_connections}; load average {os.getloadavg()[0]:.2f}", flush=True)

        log = stack.enter_context(open(args.worker_log, "ab")) if args.worker_log else subprocess.DEVNULL
        wenv = {**env, "PYTHONPATH": str(code)}
        worker = stack.enter_context(celery_worker("alerts,digests", args.workers, "profile", wenv, cwd=code,
                                                   stop_timeout=60, output=log,
                                                   loglevel="INFO" if args.worker_log else "WARNING"))

        def send(n: int, prefix: str) -> float:
            return celery_send(rendered, n, prefix, sink, worker.pid)

        send(max(200, args.readers // 4), "warm")
        cpu = [send(args.readers, f"r{i}") for i in range(args.repeat)]
        pg = f"; PostgreSQL {statistics.median(PG_US[1:]):.0f}" if len(PG_US) > 1 else ""
        print(f"worker CPU µs per message: median {statistics.median(cpu):.0f} "
              f"(runs: {', '.join(f'{c:.0f}' for c in cpu)}){pg}; load average {os.getloadavg()[0]:.2f}", flush=True)
        if not args.no_profile:
            with py_spy(worker.pid, raw_path, args.rate, gil=not args.all_threads):
                t = time.perf_counter()
                profiled = send(args.readers, "p")
                took = time.perf_counter() - t
            print(f"(profiled run: {profiled:.0f} µs per message with py-spy attached, {took:.1f} s; "
                  f"{args.rate} samples/s per process)\n", flush=True)
            raw = raw_path.read_text()
            print(analyse(raw, args.top))
            if args.under:
                print("\n" + under(raw, args.under))
            print(f"\nraw samples: {raw_path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
