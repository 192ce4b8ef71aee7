"""A breaking-news alert sent alone, and the same alert sent while a big digest sends.

    .venv/bin/python bench/bench_alert_during_digest.py [--alert-readers 10000]
        [--digest-readers 50000] [--rtt 20] [--connections C] [--rounds 1] [--head-start 4]
        [--code REV] [--path auto|netem|proxy] [--sink smtp-sink|aiosmtpd]

Everything is real: a scratch PostgreSQL database (created and dropped), a redis-server of
its own, the web app in this process (uvicorn on loopback; the alert goes in through
`POST /api/alerts` with an editor's token), two `celery worker -P prefork -c 1`
subprocesses — one `-Q alerts`, one `-Q digests` — with SMTP_CONNECTIONS=C each (the
engine's default unless --connections), Postfix's smtp-sink (installed if missing; the
aiosmtpd sink otherwise, said in the output) and bench/netpath.py putting RTT ms between
the workers and the sink (tc netem on lo for the sink's port, or the latency proxy on
loopback where the kernel has no netem).  PostgreSQL and Redis stay undelayed.

The audience: DIGEST_READERS active daily-digest readers, ALERT_READERS of them with
alerts on (one INSERT … SELECT, VACUUM ANALYZE).  Both workers first send a small alert
and a small digest (uncounted: long-lived workers have).  Then per round:

  alone   the alert, nothing else sending;
  during  the 50,000-reader digest (~117 KB a message, planned beforehand as the planner
          does, then its plan_edition task queued) is given --head-start seconds to be in
          full flow, then the same alert is posted; once the alert is out the digest is
          cancelled (service.delivery.control.cancel, as the admin page does).  Before the
          digest starts, the bench waits for the alone alert's "alert sending" flag
          (priority.py: a Redis key that lapses ~LEASE_SECONDS/3 + 2 s after the alert's
          last batch) to be gone, so the digest is in full flow when the alert comes.

The alert's times are from the start of its POST to the first / 50 / 90 / 100 % of its
rows `sent` in the ledger (polled every 20 ms; a row is marked sent a few ms after the
sink's 250 — in the alone case the sink's own time to its last message is printed beside
it).  Target (issue): during / alone ≤ 1.3× for the time to 100 %.  Also printed: the
digest's rate before and while the alert sends, and the CPU each part used during the
alert (cores: alert worker, digest worker, PostgreSQL, proxy, sink).  A copy goes to
bench/out/alert_during_digest-<time>.txt.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import netpath  # noqa: E402
from bench.bench_alert_100k import post_alert  # noqa: E402
from bench.bench_alert_latency import clear  # noqa: E402
from bench.bench_send_engine import Report, analyze, new_edition, rendered_digest  # noqa: E402
from bench.support import (  # noqa: E402
    celery_worker,
    code_label,
    engine_overrides,
    has_newsletters,
    insert_readers,
    pid_cpu_seconds,
    postgres_cpu_seconds,
    services,
    session_cpu_seconds,
    web_server,
)

OUT = REPO / "bench" / "out"


def add_audience(digest_readers: int, alert_readers: int) -> None:
    """digest_readers active daily readers; every k-th has alerts on, alert_readers in all."""
    import sqlalchemy as sa

    from service.db import get_engine, session_scope

    every = max(1, digest_readers // alert_readers)
    with session_scope() as s:
        insert_readers(s, digest_readers, email="'reader' || i || '@example.com'",
                       alerts="i % :k = 0 AND i / :k <= :a", params={"k": every, "a": alert_readers})
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(sa.text("VACUUM ANALYZE subscribers"))
        if has_newsletters(c):
            c.execute(sa.text("VACUUM ANALYZE subscriptions"))


def counts(edition_id: int) -> tuple[int, int, str]:
    """(rows of the edition, rows sent, the edition's status)."""
    import sqlalchemy as sa

    from service.db import get_engine

    with get_engine().connect() as c:
        total, sent = c.execute(sa.text(
            "SELECT count(*), count(*) FILTER (WHERE status = 'sent') FROM deliveries WHERE edition_id = :e"),
            {"e": edition_id}).one()
        status = c.execute(sa.text("SELECT status FROM editions WHERE id = :e"), {"e": edition_id}).scalar_one()
    return total, sent, str(status)


class Watch:
    """Polls an edition's sent rows every `every` s in a thread: (monotonic time, sent) pairs."""

    def __init__(self, edition_id: int, every: float = 0.02):
        self.edition_id, self.every = edition_id, every
        self.samples: list[tuple[float, int]] = []
        self.total = 0
        self.status = ""
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.total, sent, self.status = counts(self.edition_id)
            self.samples.append((time.monotonic(), sent))
            self._stop.wait(self.every)

    def sent(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def time_to(self, k: int) -> float | None:
        """Monotonic time of the first sample with at least k rows sent."""
        return next((t for t, s in self.samples if s >= k), None)

    def stop(self) -> None:
        self._stop.set()
        self._t.join(5)


class Cpu:
    """CPU seconds of each part, read at start() and stop(): cores used in between."""

    def __init__(self, parts: dict):
        self.parts = parts

    def read(self) -> dict[str, float]:
        return {k: f() for k, f in self.parts.items()}

    def start(self) -> None:
        self.t0, self.c0 = time.monotonic(), self.read()

    def stop(self) -> dict[str, float]:
        dt_, c1 = time.monotonic() - self.t0, self.read()
        return {k: (c1[k] - self.c0[k]) / dt_ for k in c1}


def send_alert(client, token: str, n_expected: int, timeout: float) -> dict:
    """Post the alert and follow it to 100 % in the ledger."""
    from service.db import session_scope  # noqa: F401 — the service's engine, configured

    edition_id, t0, http = post_alert(client, token)
    watch = Watch(edition_id)
    deadline = t0 + timeout
    try:
        while time.monotonic() < deadline:
            if watch.total and watch.sent() >= watch.total:
                break
            time.sleep(0.02)
        else:
            raise RuntimeError(f"alert {edition_id} not out after {timeout:.0f} s: {watch.sent()} of {watch.total}")
    finally:
        watch.stop()
    n = watch.total
    if n != n_expected:
        print(f"note: the alert went to {n:,} readers ({n_expected:,} expected)", flush=True)

    def at(fraction: float) -> float:
        t = watch.time_to(max(1, math.ceil(fraction * n)))
        return t - t0 if t is not None else float("nan")

    return {"edition": edition_id, "n": n, "t0": t0, "http": http, "first": at(0), "p50": at(0.5),
            "p90": at(0.9), "p100": at(1.0), "end": t0 + at(1.0)}


def flag_key(settings) -> str:
    """The Redis key an alert batch raises while it sends (service/delivery/priority.py,
    since d273048): digests step down while it exists."""
    try:
        from service.delivery.priority import KEY
    except ImportError:
        return ""
    return settings.redis_key_prefix + KEY


def wait_alert_flag(settings, timeout: float) -> float:
    """Seconds waited until no alert flag is up in Redis (0 for an engine without one)."""
    key = flag_key(settings)
    if not key:
        return 0.0
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    t0 = time.monotonic()
    try:
        while client.exists(key) and time.monotonic() - t0 < timeout:
            time.sleep(0.1)
    finally:
        client.close()
    waited = time.monotonic() - t0
    if waited > 0.05:
        time.sleep(priority_check_every() * 2)  # a digest batch keeps its answer this long
        waited = time.monotonic() - t0
    return waited


def priority_check_every() -> float:
    try:
        from service.delivery.priority import CHECK_EVERY
    except ImportError:
        return 0.0
    return float(CHECK_EVERY)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alert-readers", type=int, default=10_000)
    ap.add_argument("--digest-readers", type=int, default=50_000)
    ap.add_argument("--rtt", type=float, default=20.0, help="round trip between the workers and the sink, ms")
    ap.add_argument("--connections", type=int, default=None,
                    help="SMTP_CONNECTIONS per worker process (default: the engine's own)")
    ap.add_argument("--rounds", type=int, default=1, help="alone + during pairs")
    ap.add_argument("--head-start", type=float, default=4.0, help="seconds the digest sends before the alert")
    ap.add_argument("--timeout", type=float, default=180.0, help="give the alert this long")
    ap.add_argument("--flag-timeout", type=float, default=60.0,
                    help="wait at most this long for the alone alert's 'alert sending' flag to lapse before the "
                         "digest starts (0: do not wait, the digest then starts stepped down)")
    ap.add_argument("--code", default=None, metavar="REV",
                    help="run on the code of git revision REV (git archive: workers, planner, web app)")
    ap.add_argument("--path", choices=("auto", "netem", "proxy"), default="auto")
    ap.add_argument("--sink", choices=("smtp-sink", "aiosmtpd"), default="smtp-sink",
                    help="the relay: Postfix's smtp-sink (C), or the aiosmtpd sink (Python, one event loop)")
    args = ap.parse_args()
    if args.sink != "smtp-sink":  # services() opens support.smtp_sink(): ask it for the other one
        import functools

        from bench import support

        support.smtp_sink = functools.partial(support.smtp_sink, prefer=args.sink)

    started = dt.datetime.now().astimezone()
    out = Report(OUT / f"alert_during_digest-{started:%Y%m%d-%H%M%S}.txt")
    with contextlib.ExitStack() as stack:
        run = services(stack, args.code, "alertdigest")
        code, sink, db_url, env = run.code, run.sink, run.db_url, run.env
        from service.config import get_settings
        from service.db import session_scope
        from service.jobs import names
        from service.jobs.app import app
        from service.jobs.tasks import plan_edition
        from service.staff.editors import create_editor
        from service.web.app import create_app

        settings = get_settings()
        engine_env = engine_overrides(settings, 2, args.connections)
        with session_scope() as s:
            _editor, token = create_editor(s, "bench editor")
        path = stack.enter_context(netpath.round_trip(sink.port, args.rtt, args.path, quiet=True))

        out(f"bench_alert_during_digest {started:%Y-%m-%d %H:%M %Z}; code: {code_label(args.code)}")
        out("command: .venv/bin/python bench/bench_alert_during_digest.py " + " ".join(sys.argv[1:]))
        out(f"machine: {os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.2f} "
            f"(shared with other engineers: compare the ratio, not the absolute figures)")
        out(f"sink: {sink.kind}; {path.describe()}")
        out(path.check())
        per = engine_env.get("SMTP_CONNECTIONS", "(no such setting)")
        out(f"workers: one `-Q alerts -c 1`, one `-Q digests -c 1`, SMTP_CONNECTIONS={per} each; "
            f"SMTP_MAX_CONNECTIONS={engine_env.get('SMTP_MAX_CONNECTIONS', settings.smtp_max_connections)}, "
            f"SMTP_ALERT_CONNECTIONS={getattr(settings, 'smtp_alert_connections', '–')}")

        import httpx

        base = stack.enter_context(web_server(create_app()))
        client = stack.enter_context(httpx.Client(base_url=base, timeout=60))
        wenv = {**env, **engine_env, "SMTP_URL": f"smtp://127.0.0.1:{path.port}", "PYTHONPATH": str(code)}
        alert_w = stack.enter_context(celery_worker("alerts", 1, "benchalerts", wenv, cwd=code, stop_timeout=120))
        digest_w = stack.enter_context(celery_worker("digests", 1, "benchdigests", wenv, cwd=code, stop_timeout=120))
        for _ in range(120):  # celery_worker returned once *a* worker answered: wait for both
            if len(app.control.ping(timeout=0.5)) >= 2:
                break
        else:
            raise RuntimeError("both workers did not come up")
        digest_rendered = rendered_digest()

        def start_digest() -> int:
            eid = new_edition("digest", digest_rendered)
            analyze()
            plan_edition.si(eid).apply_async(queue=names.edition_queue("digest"))
            return eid

        def cancel(eid: int) -> None:
            # The editor API leaves digests to admins ("a digest is steered by an admin"):
            # the control function the admin page calls, in this process.
            from service.delivery import control

            with session_scope() as s:
                control.cancel(s, eid, "bench")
            deadline = time.monotonic() + 60
            last, still = -1, 0
            while time.monotonic() < deadline:  # quiet at the sink for a second: nothing left in flight
                now = sink.count()
                still = still + 1 if now == last else 0
                if still >= 10:
                    break
                last = now
                time.sleep(0.1)

        # Warm-up: each worker sends once, as long-lived workers have.
        clear()
        add_audience(2_000, 1_000)
        send_alert(client, token, 1_000, 120)
        d = start_digest()
        w = Watch(d, 0.1)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (w.total and w.sent() >= w.total):
            time.sleep(0.1)
        w.stop()

        cpu = Cpu({"alert worker": lambda: session_cpu_seconds(alert_w.pid),
                   "digest worker": lambda: session_cpu_seconds(digest_w.pid),
                   "PostgreSQL": lambda: postgres_cpu_seconds(db_url),
                   **({"proxy": lambda: sum(pid_cpu_seconds(p) for p in path.pids)} if path.kind == "proxy" else {}),
                   "sink": sink.cpu_seconds})
        results = []
        for rnd in range(1, args.rounds + 1):
            clear()
            t = time.perf_counter()
            add_audience(args.digest_readers, args.alert_readers)
            out(f"\nround {rnd}: {args.digest_readers:,} daily readers, {args.alert_readers:,} of them with alerts on "
                f"(made in {time.perf_counter() - t:.1f} s); load average {os.getloadavg()[0]:.2f}")
            time.sleep(1.0)

            # alone
            s0 = sink.count()
            cpu.start()
            alone = send_alert(client, token, args.alert_readers, args.timeout)
            use_alone = cpu.stop()
            time.sleep(0.5)
            arr = sink.arrivals(s0, s0 + alone["n"])
            sink_last = (max(arr) - alone["t0"]) if len(arr) >= alone["n"] else float("nan")
            out(f"  alone : first {alone['first']:.3f} s, 50 % {alone['p50']:.2f} s, 90 % {alone['p90']:.2f} s, "
                f"100 % {alone['p100']:.2f} s ({alone['n'] / alone['p100']:.0f} msg/s; the sink's last message at "
                f"{sink_last:.2f} s) | cores: " + ", ".join(f"{k} {v:.2f}" for k, v in use_alone.items()))

            # during the digest: first let the alone alert's "alert sending" flag lapse, or the
            # digest would start stepped down (priority.py) and never be in full flow
            waited = wait_alert_flag(settings, args.flag_timeout)
            if waited:
                out(f"          waited {waited:.1f} s for the alone alert's flag ({flag_key(settings)}) to lapse")
            t = time.perf_counter()
            digest = start_digest()
            planned_in = time.perf_counter() - t
            dwatch = Watch(digest, 0.1)
            time.sleep(args.head_start)
            d_before = dwatch.sent()
            d_t_before = time.monotonic()
            cpu.start()
            during = send_alert(client, token, args.alert_readers, args.timeout)
            use_during = cpu.stop()
            d_after = dwatch.sent()
            d_t_after = time.monotonic()
            d_total = dwatch.total
            d_status = dwatch.status
            dwatch.stop()
            t_start = dwatch.time_to(1)
            d_rate_before = (d_before / (d_t_before - t_start)) if t_start and d_t_before > t_start else float("nan")
            d_rate_during = (d_after - d_before) / (d_t_after - d_t_before)
            cancel(digest)
            _total, d_final, d_final_status = counts(digest)
            out(f"  during: first {during['first']:.3f} s, 50 % {during['p50']:.2f} s, 90 % {during['p90']:.2f} s, "
                f"100 % {during['p100']:.2f} s ({during['n'] / during['p100']:.0f} msg/s) | cores: "
                + ", ".join(f"{k} {v:.2f}" for k, v in use_during.items()))
            out(f"          the digest ({d_total:,} rows, planned in {planned_in:.1f} s): {d_before:,} sent in the "
                f"{args.head_start:g} s before the alert ({d_rate_before:.0f} msg/s from its first), "
                f"{d_rate_during:.0f} msg/s while the alert sent; {d_status} at the alert's end, "
                f"cancelled then ({d_final:,} sent, {d_final_status})")
            ratio = during["p100"] / alone["p100"]
            out(f"  ratio during / alone, time to 100 %: {ratio:.2f}  (50 %: {during['p50'] / alone['p50']:.2f}, "
                f"first: {during['first'] / alone['first']:.2f})")
            results.append((alone, during, ratio))

        out(f"\n{'round':>5} {'alone 100 %':>12} {'during 100 %':>13} {'ratio':>6}   target ≤ 1.3")
        for i, (a, d, r) in enumerate(results, 1):
            out(f"{i:>5} {a['p100']:>10.2f} s {d['p100']:>11.2f} s {r:>6.2f}   {'meets' if r <= 1.3 else 'MISSES'}")
        out(f"load average at the end {os.getloadavg()[0]:.2f}; written to {out.path.relative_to(REPO)}")
    out.close()


if __name__ == "__main__":
    main()
