"""Breaking-news alert latency: from the editor's click to the messages at the mail server.

    .venv/bin/python bench/bench_alert_latency.py [--audiences 1000,10000,100000] [--workers 2]
                                                  [--baseline REV] [--ceiling 5000] [--repeat 3]

Everything is real: a scratch PostgreSQL database (created and dropped here), the
machine's Redis (db 14, keys under a prefix of this run's own, removed at the end),
the web app in this process (uvicorn on a loopback port), `celery worker -Q alerts`
with 2 prefork processes as a subprocess, and an aiosmtpd sink in a process of its own
that records the arrival time (CLOCK_MONOTONIC, shared by every process on the machine)
of every message it accepts.

Per audience (N active readers with alerts on, among 1.25 N subscribers: every fifth
has alerts off, created by one INSERT … SELECT generate_series) it times, from the
start of `POST /api/alerts` to the sink accepting the FIRST message, the median one and
the LAST one; and, from the ledger, when the audience was fully planned and when the
first batch claimed its rows.  Audiences up to 10,000 are alerted --repeat times and
the medians printed; larger ones once.  Before them, "cold": the first alert (1,000
readers) that freshly started workers handle, --idle seconds after they are ready;
then one uncounted alert, as long-lived workers have handled alerts before.

References measured in the same run:
  * the sink's ceiling: the same alert bytes sent with plain smtplib over one
    connection (→ the least time N messages can take through this sink);
  * the bare INSERT … SELECT of N ledger rows (→ the least work before "everyone is
    in the ledger"), rolled back.

--baseline REV runs the same measures with the workers running the code of git
revision REV (extracted with `git archive` into a temporary directory; the web app
is this tree's), so "before" and "after" come from one run on the same machine.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.support import (  # noqa: E402
    ceiling,
    celery_worker,
    has_newsletters,
    insert_readers,
    scratch_database,
    serve_smtp,
    sink_process,
    web_server,
)

REDIS_BASE = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


# ------------------------------------------------------------------ the sink, in its own process


def _sink_main(port: int, count, arrivals, stop) -> None:
    class Recording:
        async def handle_DATA(self, server, session, envelope):
            now = time.monotonic()
            with count.get_lock():
                i = count.value
                if i < len(arrivals):
                    arrivals[i] = now
                count.value = i + 1
            return "250 2.0.0 OK"

    serve_smtp(Recording(), port, 10_000_000, stop)


@contextlib.contextmanager
def sink(capacity: int):
    ctx = mp.get_context("spawn")
    count = ctx.Value("q", 0)
    arrivals = ctx.Array("d", capacity, lock=False)
    with sink_process(_sink_main, count, arrivals) as port:
        yield port, count, arrivals


# ------------------------------------------------------------------ Redis, web, workers


@contextlib.contextmanager
def redis_prefix():
    """The shared Redis, under a prefix nobody else uses; our keys are removed afterwards."""
    import redis

    prefix = f"nashra-bench-alert-{os.getpid()}-{uuid.uuid4().hex[:4]}:"
    try:
        yield REDIS_BASE, prefix
    finally:
        client = redis.Redis.from_url(REDIS_BASE)
        for key in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(key)
        client.close()


@contextlib.contextmanager
def code_of(rev: str | None):
    """A directory holding the service's code at `rev` (None: this working tree)."""
    if rev is None:
        yield REPO
        return
    tmp = Path(tempfile.mkdtemp(prefix="nashra-baseline-"))
    try:
        archive = subprocess.run(["git", "archive", rev, "service", "templates", "alembic.ini", "migrations"],
                                 cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def alert_workers(env: dict[str, str], concurrency: int, code: Path, log_path: str | None = None):
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 — closed below
    level = "INFO" if log_path else "WARNING"
    try:
        with celery_worker("alerts", concurrency, "benchalert", {**env, "PYTHONPATH": str(code), "LOG_LEVEL": level},
                           cwd=code, loglevel=level, output=log, stop_timeout=60) as proc:
            yield proc
    finally:
        if log_path:
            log.close()


# ------------------------------------------------------------------ data


def clear() -> None:
    import sqlalchemy as sa

    from service.db import session_scope

    with session_scope() as s:
        s.execute(sa.text("TRUNCATE deliveries, edition_variants, edition_articles, editions, subscribers, "
                          "suppressions RESTART IDENTITY CASCADE"))


def add_audience(n: int) -> None:
    """n readers with alerts on, and every fifth subscriber with alerts off among them."""
    import sqlalchemy as sa

    from service.db import get_engine, session_scope

    total = n + n // 4
    with session_scope() as s:
        insert_readers(s, total, email="'reader' || i || '@example.com'", alerts="i % 5 <> 0")
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(sa.text("VACUUM ANALYZE subscribers"))
        if has_newsletters(c):
            c.execute(sa.text("VACUUM ANALYZE subscriptions"))


def bare_insert_select(n: int) -> float:
    """The INSERT … SELECT alone, for a throwaway edition, rolled back: its bare cost."""
    import sqlalchemy as sa

    from service.db import get_engine

    with get_engine().connect() as c:
        eid = c.execute(sa.text(
            "INSERT INTO editions (kind, status, title, params, created_at, recipients) "
            "VALUES ('alert', 'draft', 'reference', '{}', now(), 0) RETURNING id")).scalar()
        # The alerts' readers: on the `alerts` newsletter (0008 on), or alerts on their row before.
        audience = ("JOIN subscriptions m ON m.subscriber_id = s.id AND m.newsletter_id ="
                    " (SELECT id FROM newsletters WHERE slug = 'alerts') WHERE s.status = 'active' "
                    if has_newsletters(c) else "WHERE s.status = 'active' AND s.alerts ")
        t = time.perf_counter()
        got = c.execute(sa.text(
            "INSERT INTO deliveries (edition_id, subscriber_id, variant, status, attempts, updated_at) "
            "SELECT :e, s.id, 'all', 'queued', 0, now() FROM subscribers s " + audience
            + "AND NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.email = s.email) "
            "ON CONFLICT (edition_id, subscriber_id) DO NOTHING"), {"e": eid}).rowcount
        elapsed = time.perf_counter() - t
        c.rollback()
    assert got == n, (got, n)
    return elapsed


def alert_message() -> bytes:
    """The bytes of one real alert, rendered and composed as the workers do."""
    import datetime as dt

    from service.config import get_settings
    from service.delivery.compose import compose, prepare
    from service.rendering import contexts
    from service.rendering.render import render_variant

    settings = get_settings()
    ctx = contexts.alert_context(contexts.site_view(settings), headline=HEADLINE, url=URL, summary=SUMMARY,
                                 sent_at=dt.datetime.now(dt.UTC))
    rendered = render_variant("alert", ctx)
    tpl = prepare(1, "alert", "all", rendered.subject, rendered.html, rendered.text)
    return compose(tpl, delivery_id=1, subscriber_id=1, token_version=1, to_addr="ceiling@example.com").data


HEADLINE = "عاجل: زلزال بقوة 5.8 درجات يضرب شمال المغرب"
URL = "https://news.example/2021/11/24/quake"
SUMMARY = "أعلن المعهد الوطني للجيوفيزياء أن الهزة شعر بها سكان طنجة وتطوان، ولا أنباء عن إصابات."


# ------------------------------------------------------------------ one alert, timed


def edition_times(edition_id: int):
    import sqlalchemy as sa

    from service.db import get_engine

    with get_engine().connect() as c:
        return c.execute(sa.text(
            "SELECT status, recipients, planned_at, started_at, finished_at, created_at FROM editions WHERE id = :e"),
            {"e": edition_id}).one()


def one_alert(client, token: str, n: int, count, arrivals, timeout: float = 1200.0) -> dict:
    import datetime as dt

    before = count.value
    key = uuid.uuid4().hex
    wall0 = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    r = client.post("/api/alerts", headers={"Authorization": f"Bearer {token}"},
                    json={"headline": HEADLINE, "url": f"{URL}?k={key}", "summary": SUMMARY, "idempotency_key": key})
    t_http = time.monotonic() - t0
    assert r.status_code == 202, (r.status_code, r.text)
    edition_id = r.json()["edition_id"]
    deadline = time.monotonic() + timeout
    while count.value < before + n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {count.value - before} of {n} messages arrived")
        time.sleep(0.01)
    got = sorted(arrivals[before:before + n])
    while edition_times(edition_id)[0] != "done":
        if time.monotonic() > deadline:
            raise RuntimeError(f"edition {edition_id} did not finish")
        time.sleep(0.02)
    status, recipients, planned_at, started_at, _finished, _created = edition_times(edition_id)
    assert recipients == n, (recipients, n)
    time.sleep(0.3)
    extra = count.value - before - n  # a duplicate would show here

    def since(t: dt.datetime | None) -> float:
        return (t.replace(tzinfo=dt.UTC) - wall0).total_seconds() if t else float("nan")

    return {
        "http": t_http, "first": got[0] - t0, "median": statistics.median(got) - t0, "last": got[-1] - t0,
        "planned": since(planned_at), "first_claim": since(started_at), "extra": extra,
    }


def run_phase(label: str, code: Path, env: dict, args, base: str, token: str, count, arrivals, refs: dict) -> dict:
    import httpx

    results: dict = {}
    with alert_workers(env, args.workers, code, args.worker_log), httpx.Client(base_url=base, timeout=60) as client:
        # The first alert of freshly started workers (a deploy, a restart): workers come
        # up long before news breaks, so the alert is sent a few seconds after they are ready.
        clear()
        add_audience(args.cold)
        time.sleep(args.idle)
        results["cold"] = one_alert(client, token, args.cold, count, arrivals)
        # Then long-lived workers, the normal case: one more small alert, then the measures.
        one_alert(client, token, args.cold, count, arrivals)
        for n in args.audiences:
            clear()
            add_audience(n)
            runs = [one_alert(client, token, n, count, arrivals) for _ in range(args.repeat if n <= 10_000 else 1)]
            results[n] = {k: statistics.median(r[k] for r in runs) for k in runs[0]} | {
                "extra": sum(r["extra"] for r in runs), "runs": len(runs)}
    print(f"\n[{label}] workers running {'this tree' if code == REPO else f'git {args.baseline}'}")
    print(f"{'audience':>9} {'202':>7} {'first':>8} {'median':>8} {'last':>8} {'planned':>8} {'1st claim':>9}"
          f" {'msg/s':>7}  first/INSERT  last/ceiling  dupes  runs")
    cold = results["cold"]
    print(f"{'cold ' + str(args.cold):>9} {cold['http'] * 1e3:6.0f}ms {cold['first']:7.3f}s {cold['median']:7.3f}s "
          f"{cold['last']:7.3f}s {cold['planned']:7.3f}s {cold['first_claim']:8.3f}s")
    for n in args.audiences:
        r = results[n]
        rate = n / (r["last"] - r["first"]) if r["last"] > r["first"] else float("nan")
        print(f"{n:>9,} {r['http'] * 1e3:6.0f}ms {r['first']:7.3f}s {r['median']:7.3f}s {r['last']:7.3f}s "
              f"{r['planned']:7.3f}s {r['first_claim']:8.3f}s {rate:7.0f}  {r['first'] / refs['insert'][n]:11.1f}x "
              f"{r['last'] / (n / refs['ceiling']):12.2f}x  {r['extra']:5d}  {r['runs']:4d}")
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--audiences", default="1000,10000,100000",
                    type=lambda v: [int(x) for x in v.split(",") if x])
    ap.add_argument("--workers", type=int, default=2, help="alert worker processes (prefork children)")
    ap.add_argument("--baseline", default=None, help="git revision whose workers to measure first, for comparison")
    ap.add_argument("--ceiling", type=int, default=5000, help="messages for the sink's ceiling")
    ap.add_argument("--cold", type=int, default=1000, help="audience of the first alert on fresh workers")
    ap.add_argument("--repeat", type=int, default=3,
                    help="alerts per audience up to 10,000 readers (medians are printed); larger ones run once")
    ap.add_argument("--idle", type=float, default=3.0, help="seconds between the workers being ready and the cold alert")
    ap.add_argument("--worker-log", default=None, help="append the workers' INFO logs to this file (diagnosis)")
    args = ap.parse_args()

    var = tempfile.mkdtemp(prefix="nashra-bench-alert-")
    per_phase = 2 * args.cold + sum(n * (args.repeat if n <= 10_000 else 1) for n in args.audiences)
    capacity = args.ceiling + per_phase * (2 if args.baseline else 1) + 10_000
    with scratch_database("alert") as db_url, redis_prefix() as (redis_url, prefix), sink(capacity) as (port, count, arrivals):
        env = {
            "DATABASE_URL": db_url, "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix,
            "SMTP_URL": f"smtp://127.0.0.1:{port}", "NASHRA_VAR_DIR": var,
            "SECRET_KEY": "bench-secret-key-0123456789", "LOG_LEVEL": "WARNING", "LOG_FORMAT": "json",
        }
        os.environ.update(env)
        from service.config import get_settings, reset_settings
        from service.db import session_scope
        from service.jobs.app import configure
        from service.logs import setup_logging
        from service.staff.editors import create_editor

        reset_settings()
        setup_logging()
        configure()
        settings = get_settings()
        with session_scope() as s:
            _editor, token = create_editor(s, "bench editor")

        message = alert_message()
        ceil = ceiling(port, message, args.ceiling, settings.mail_from_address)
        print(f"alert: {len(message) / 1024:.1f} KB on the wire; batch size {settings.batch_size}; "
              f"{args.workers} alert worker processes; sink ceiling (plain smtplib, one connection) "
              f"{ceil:,.0f} msg/s over {args.ceiling} messages")
        refs = {"ceiling": ceil, "insert": {}}
        for n in args.audiences:
            clear()
            add_audience(n)
            refs["insert"][n] = min(bare_insert_select(n) for _ in range(3))
            print(f"reference for {n:>7,}: bare INSERT … SELECT {refs['insert'][n] * 1e3:8.1f} ms; "
                  f"sink ceiling for {n:,} messages {n / ceil:7.2f} s")

        from service.web.app import create_app

        with web_server(create_app()) as base:
            phases = {}
            if args.baseline:
                with code_of(args.baseline) as code:
                    phases["before"] = run_phase("before", code, env, args, base, token, count, arrivals, refs)
            phases["after"] = run_phase("after", REPO, env, args, base, token, count, arrivals, refs)
        if "before" in phases:
            print("\nratios before / after (higher is better):")
            for n in ["cold", *args.audiences]:
                b, a = phases["before"][n], phases["after"][n]
                print(f"{n if n == 'cold' else format(n, ','):>9}  first {b['first'] / a['first']:5.1f}x   "
                      f"median {b['median'] / a['median']:5.2f}x   last {b['last'] / a['last']:5.2f}x")
    shutil.rmtree(var, ignore_errors=True)


if __name__ == "__main__":
    main()
