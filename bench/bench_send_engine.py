"""The send engine across a real round-trip time, beside a plain sender on the same path.

    .venv/bin/python bench/bench_send_engine.py [--rtts 0,5,20,50] [--kinds alert,digest]
        [--workers 2] [--connections 32] [--max-readers 10000] [--budget 25] [--ref-seconds 4]
        [--path auto|netem|proxy]

Everything is real: a scratch PostgreSQL database (created and dropped), a redis-server
of its own, `celery worker -Q alerts,digests -c WORKERS -P prefork` as a subprocess (one
per cell, connecting across that cell's path), Postfix's smtp-sink (installed if missing;
the aiosmtpd sink otherwise) counting what it accepts, and bench/netpath.py putting the
RTT between the senders and the sink (tc netem on lo for the sink's port only, or a
latency proxy on loopback when netem is missing).  PostgreSQL and Redis are never on the
delayed path.

Per RTT and per kind (an alert, ~11 KB on the wire; a 60-article digest, ~65 KB of HTML,
~117 KB on the wire) it plans an edition in the ledger (with the rendered variant stored,
as the planner does) and times Nashra from the enqueue of plan_edition to the edition
being `done`: msg/s.  The audience is chosen per cell from a small warm-up edition so that
the cell takes about --budget seconds: at most --max-readers, and at least one batch per
worker process (a 120-reader digest is one 200-row batch: one process would send it
alone).  Beside it, measured in the same run over the same path with the same bytes:

  * ref@N: plain smtplib in N threads, one persistent connection each, `sendmail` per
    message (four round trips) — N being the most SMTP connections Nashra was seen to hold
    open during its run (whatever the engine in the tree does with SMTP_CONNECTIONS);
  * ref@T and aiosmtplib@T: the same at T = WORKERS × SMTP_CONNECTIONS, what the engine is
    configured to use (and the choice between threads over smtplib and asyncio: msg/s and
    CPU µs per message of this process, every thread counted).

CPU µs per message: the Celery worker's processes (main + prefork children, from /proc),
the scratch database's PostgreSQL backends, the proxy (when in use) and the sink.  "conns"
is the most TCP connections Nashra held open to the sink at once (sampled every 100 ms).

Targets (issue 9): Nashra ≥ 0.8 of ref@N at every RTT; at RTT 0 ≥ 0.9 of the sink's
ceiling on loopback (plain smtplib, one connection, as in bench_delivery.py).  The table
is printed and written to bench/out/send_engine-<time>.txt.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import netpath  # noqa: E402
from bench.bench_alert_latency import HEADLINE, SUMMARY, URL  # noqa: E402 — at the top: it edits sys.path
from bench.support import (  # noqa: E402
    add_readers,
    aiosmtplib_tasks,
    celery_worker,
    code_label,
    engine_overrides,
    newsletter_fields,
    pid_cpu_seconds,
    postgres_cpu_seconds,
    services,
    session_cpu_seconds,
    smtplib_threads,
)

OUT = REPO / "bench" / "out"
DIGEST_ARTICLES = 60


# ------------------------------------------------------------------ what is sent


def rendered_alert():
    from service.config import get_settings
    from service.rendering import contexts
    from service.rendering.render import render_variant

    ctx = contexts.alert_context(contexts.site_view(get_settings()), headline=HEADLINE, url=URL, summary=SUMMARY,
                                 sent_at=dt.datetime.now(dt.UTC))
    return render_variant("alert", ctx)


def rendered_digest():
    from service.rendering.render import render_variant
    from tests.support import email_samples as samples

    return render_variant("digest", samples.all_contexts(digest_articles=DIGEST_ARTICLES)["digest"])


def wire_bytes(kind: str, rendered) -> bytes:
    """One composed message, as a worker builds it (links, Message-ID, List-Unsubscribe, VERP)."""
    from service.delivery.compose import compose, prepare

    tpl = prepare(1, kind, "all", rendered.subject, rendered.html, rendered.text)
    return compose(tpl, delivery_id=1, subscriber_id=1, token_version=1, to_addr="reader1@example.com").data


# ------------------------------------------------------------------ ledger


def clear_ledger() -> None:
    import sqlalchemy as sa

    from service.db import session_scope

    with session_scope() as s:
        s.execute(sa.text("TRUNCATE deliveries, edition_variants, edition_articles, editions, subscribers, "
                          "suppressions RESTART IDENTITY CASCADE"))


def analyze() -> None:
    """Statistics for the tables the cell just filled, before the clock starts.  A scratch
    table that was never analysed is planned as an unknown: `recipient_states` then
    seq-scans the readers and `record_many` hashes the edition's rows, costing PostgreSQL
    several times its CPU per message.  Production's tables are large and analysed
    (autovacuum), and a new edition's rows are a rare edition_id there, planned by index."""
    import sqlalchemy as sa

    from service.db import get_engine

    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE subscribers, deliveries, suppressions"))


def new_edition(kind: str, rendered) -> int:
    """An edition planned in full (rows and the stored variant), not yet dispatched."""
    from service.db import session_scope
    from service.delivery.planner import plan
    from service.models import Edition, EditionKind, Frequency

    with session_scope() as s:
        ed = Edition(kind=EditionKind(kind), frequency=Frequency.daily if kind == "digest" else None,
                     title=f"bench {kind}", params={},
                     **newsletter_fields(s, "daily" if kind == "digest" else "alerts"))
        s.add(ed)
        s.flush()
        plan(s, ed.id, renderer=lambda session, edition, variant: rendered)
        return ed.id


def wait_done(edition_id: int, timeout: float) -> float:
    from service.db import session_scope
    from service.models import Edition, EditionStatus

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as s:
            if s.get(Edition, edition_id).status == EditionStatus.done:
                return time.perf_counter()
        time.sleep(0.01)
    raise RuntimeError(f"edition {edition_id} did not finish in {timeout:.0f} s")


def batch_rows(kind: str, settings) -> int:
    """Rows per batch for this kind, asked of the engine in the tree (its signature changes
    as the engine does); the configured BATCH_SIZE if it cannot say."""
    try:
        from service.delivery.fanout import batch_size_for
    except ImportError:
        return settings.batch_size
    for arg in (settings, settings.batch_size):
        try:
            return int(batch_size_for(kind, arg))
        except (TypeError, AttributeError, ValueError):
            continue
    return settings.batch_size


class PeakConnections:
    """The most connections open to the path's port at once, sampled every 100 ms."""

    def __init__(self, path: netpath.Path):
        self.path, self.peak, self._stop = path, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, self.path.open_connections())

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def nashra_run(kind: str, rendered, n: int, prefix: str, *, sink, path, worker_pid: int, db_url: str,
               timeout: float) -> dict:
    from service.jobs import names
    from service.jobs.tasks import plan_edition

    clear_ledger()
    add_readers(n, prefix)
    eid = new_edition(kind, rendered)
    analyze()
    c0 = sink.count()
    cpu0, pg0 = session_cpu_seconds(worker_pid), postgres_cpu_seconds(db_url)
    px0, sk0 = sum(pid_cpu_seconds(p) for p in path.pids), sink.cpu_seconds()
    with PeakConnections(path) as peak:
        t = time.perf_counter()
        plan_edition.si(eid).apply_async(queue=names.edition_queue(kind))
        # Watch the sink (in this process) first, the database only at the end: polling it
        # all along would add to the PostgreSQL CPU measured.
        deadline = time.monotonic() + timeout
        while sink.count() - c0 < n and time.monotonic() < deadline:
            time.sleep(0.01)
        elapsed = wait_done(eid, max(deadline - time.monotonic(), 5)) - t
    cpu, pg = session_cpu_seconds(worker_pid) - cpu0, postgres_cpu_seconds(db_url) - pg0
    px, sk = sum(pid_cpu_seconds(p) for p in path.pids) - px0, sink.cpu_seconds() - sk0
    for _ in range(100):  # the sink's counter is read by a thread: let it catch up
        if sink.count() - c0 >= n:
            break
        time.sleep(0.02)
    got = sink.count() - c0
    arr = sink.arrivals(c0, c0 + got)
    steady = (len(arr) - 1) / (arr[-1] - arr[0]) if len(arr) > 1 and arr[-1] > arr[0] else float("nan")
    return {"n": n, "rate": n / elapsed, "seconds": elapsed, "sink_rate": steady, "counted": got,
            "cpu_us": cpu / n * 1e6, "pg_us": pg / n * 1e6, "proxy_us": px / n * 1e6, "sink_us": sk / n * 1e6,
            "conns": peak.peak}


# ------------------------------------------------------------------ the run


class Report:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "w", encoding="utf-8")  # noqa: SIM115 — closed in close()

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.f.write(line + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rtts", default="0,5,20,50", type=lambda v: [float(x) for x in v.split(",") if x])
    ap.add_argument("--kinds", default="alert,digest", type=lambda v: [x for x in v.split(",") if x])
    ap.add_argument("--workers", type=int, default=2, help="prefork worker processes")
    ap.add_argument("--connections", type=int, default=None,
                    help="SMTP_CONNECTIONS per worker process (default: the engine's default, else 20); "
                         "T = workers × this")
    ap.add_argument("--max-readers", type=int, default=10000, help="largest edition per cell")
    ap.add_argument("--min-readers", type=int, default=None,
                    help="smallest edition per cell (default: one batch per worker process, so every "
                         "process has work: workers × batch size, 50 for alerts, 200 for digests)")
    ap.add_argument("--budget", type=float, default=25.0, help="seconds Nashra's edition should take per cell")
    ap.add_argument("--ref-seconds", type=float, default=4.0, help="seconds per reference measure")
    ap.add_argument("--ceiling", type=int, default=3000, help="messages for the loopback ceiling")
    ap.add_argument("--path", choices=("auto", "netem", "proxy"), default="auto")
    ap.add_argument("--worker-log", default=None, help="append the workers' logs to this file")
    ap.add_argument("--code", default=None, metavar="REV",
                    help="run on the code of git revision REV (git archive: workers, planner, web app)")
    args = ap.parse_args()

    started = dt.datetime.now().astimezone()
    out = Report(OUT / f"send_engine-{started:%Y%m%d-%H%M%S}.txt")
    with contextlib.ExitStack() as stack:
        run = services(stack, args.code, "engine")
        code, sink, db_url, env = run.code, run.sink, run.db_url, run.env
        from service.config import get_settings

        settings = get_settings()
        per_process = args.connections or getattr(settings, "smtp_connections", 20)
        target = args.workers * per_process
        engine_env = engine_overrides(settings, args.workers, args.connections)
        sender = settings.mail_from_address

        rendered = {"alert": rendered_alert(), "digest": rendered_digest()}
        message = {k: wire_bytes(k, r) for k, r in rendered.items()}

        out(f"bench_send_engine {started:%Y-%m-%d %H:%M %Z}; code: {code_label(args.code)}")
        out("command: .venv/bin/python bench/bench_send_engine.py " + " ".join(sys.argv[1:]))
        out(f"machine: {os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.2f} "
            f"(shared with other engineers: figures are noisy)")
        settings_note = " ".join(f"{k}={v}" for k, v in engine_env.items()) or "no SMTP_CONNECTIONS setting"
        out(f"engine: {args.workers} worker processes, {settings_note}; N = the connections Nashra was seen to "
            f"hold (ref@N uses as many), T = {target} = workers × SMTP_CONNECTIONS")
        for k in args.kinds:
            out(f"{k}: {len(rendered[k].html.encode()) / 1024:.1f} KB HTML, {len(message[k]) / 1024:.1f} KB on the wire")
        out(f"sink: {sink.kind} on 127.0.0.1:{sink.port}")

        # The sink's ceiling on loopback: one plain connection, as bench_delivery.py measures it.
        from bench.support import ceiling

        ceilings = {}
        for k in args.kinds:
            count = args.ceiling if k == "alert" else max(args.ceiling // 3, 200)
            s0 = sink.cpu_seconds()
            ceilings[k] = ceiling(sink.port, message[k], count, sender)
            sink_us = (sink.cpu_seconds() - s0) / count * 1e6
            out(f"sink ceiling, {k}, loopback, plain smtplib over one connection: {ceilings[k]:,.0f} msg/s "
                f"({count} messages); the sink's own CPU {sink_us:.0f} µs/msg (≈ {1e6 / sink_us:,.0f} msg/s per core)")

        rows = []
        for rtt in args.rtts:
            with netpath.round_trip(sink.port, rtt, args.path, quiet=True) as path:
                out(f"\n{path.describe()}")
                out(path.check())
                wenv = {**env, **engine_env, "SMTP_URL": f"smtp://127.0.0.1:{path.port}", "PYTHONPATH": str(code)}
                for kind in args.kinds:
                    # Workers of their own per cell: no session left open by the cell before
                    # is counted in N, and no idle worker competes with the references.
                    log = open(args.worker_log, "ab") if args.worker_log else subprocess.DEVNULL  # noqa: SIM115
                    with celery_worker("alerts,digests", args.workers, "benchengine", wenv, cwd=code, output=log,
                                       loglevel="INFO" if args.worker_log else "WARNING", stop_timeout=120) as proc:
                        warm_n = max(50, 2 * target)
                        warm = nashra_run(kind, rendered[kind], warm_n, "warm", sink=sink, path=path,
                                          worker_pid=proc.pid, db_url=db_url, timeout=300)
                        least = args.min_readers or args.workers * batch_rows(kind, settings)
                        n = int(min(args.max_readers, max(least, warm["rate"] * args.budget)) // 10 * 10)
                        r = nashra_run(kind, rendered[kind], n, "r", sink=sink, path=path, worker_pid=proc.pid,
                                       db_url=db_url, timeout=max(600, 4 * args.budget))
                    if args.worker_log:
                        log.close()
                    seen = max(1, r["conns"])
                    ref_n = smtplib_threads(path.port, message[kind], sender, seen, args.ref_seconds)
                    ref_t = (ref_n if target == seen else
                             smtplib_threads(path.port, message[kind], sender, target, args.ref_seconds))
                    aio_t = aiosmtplib_tasks(path.port, message[kind], sender, target, args.ref_seconds)
                    row = {"rtt": rtt, "kind": kind, "path": path.kind, **r, "ref_n": ref_n, "ref_t": ref_t,
                           "aio_t": aio_t, "ceiling": ceilings[kind]}
                    rows.append(row)
                    out(f"  {kind:6} readers={n:,}: Nashra {r['rate']:7.1f} msg/s "
                        f"(sink saw {r['counted']:,}, steady {r['sink_rate']:.1f}/s, N={seen} conns) | "
                        f"ref@{seen} {ref_n.rate:7.1f} | ref@{target} {ref_t.rate:7.1f} | "
                        f"aiosmtplib@{target} {aio_t.rate if aio_t else float('nan'):7.1f}")

        out()
        out(table(rows, target))
        out(f"\nload average at the end {os.getloadavg()[0]:.2f}; written to {out.path.relative_to(REPO)}")
        out.close()


def table(rows: list[dict], t: int) -> str:
    def f(v, spec=".1f"):
        return format(v, spec) if v is not None and v == v else "–"

    head = (f"{'RTT':>4} {'kind':6} {'readers':>7} {'N':>5} {'Nashra':>8} {'ref@N':>8} {'ratio':>6} "
            f"{f'ref@{t}':>8} {'ratio':>6} {f'aio@{t}':>8} │ {'worker':>7} {'PG':>6} {'proxy':>6} {'sink':>6} │ "
            f"{f'ref@{t}':>7} {f'aio@{t}':>7}")
    lines = [
        "msg/s (Nashra: enqueue → edition done); CPU µs per message on the right "
        "(worker = Celery processes; PG = the database's backends; proxy = the latency proxy; sink)",
        head, "─" * len(head),
    ]
    for r in rows:
        ref_n, ref_t, aio = r["ref_n"], r["ref_t"], r["aio_t"]
        lines.append(
            f"{r['rtt']:>4g} {r['kind']:6} {r['n']:>7,} {r['conns']:>5} {f(r['rate']):>8} {f(ref_n.rate):>8} "
            f"{f(r['rate'] / ref_n.rate, '.2f'):>6} {f(ref_t.rate):>8} {f(r['rate'] / ref_t.rate, '.2f'):>6} "
            f"{f(aio.rate if aio else None):>8} │ {f(r['cpu_us'], '.0f'):>7} {f(r['pg_us'], '.0f'):>6} "
            f"{f(r['proxy_us'] if r['path'] == 'proxy' else None, '.0f'):>6} {f(r['sink_us'], '.0f'):>6} │ "
            f"{f(ref_t.cpu_us, '.0f'):>7} {f(aio.cpu_us if aio else None, '.0f'):>7}")
    lines.append("")
    verdicts = []
    for r in rows:
        ok = r["rate"] / r["ref_n"].rate >= 0.8
        verdicts.append(f"RTT {r['rtt']:g} {r['kind']}: Nashra/ref@N {r['rate'] / r['ref_n'].rate:.2f} "
                        f"{'meets' if ok else 'MISSES'} ≥ 0.8 (N={r['conns']}); Nashra/ref@{t} "
                        f"{r['rate'] / r['ref_t'].rate:.2f}")
        if r["rtt"] == 0:
            c = r["rate"] / r["ceiling"]
            verdicts.append(f"RTT 0 {r['kind']}: Nashra/sink ceiling (one plain connection, {r['ceiling']:,.0f}/s) "
                            f"{c:.2f} {'meets' if c >= 0.9 else 'MISSES'} ≥ 0.9")
    lines += verdicts
    return "\n".join(lines)


if __name__ == "__main__":
    main()
