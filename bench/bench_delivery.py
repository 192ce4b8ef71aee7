"""Delivery throughput, measured against the SMTP sink's own ceiling in the same run.

    .venv/bin/python bench/bench_delivery.py [--recipients 10000] [--workers 2] [--plan-rows 1000000]

Everything is real: a PostgreSQL database of its own (created and dropped here), a
redis-server of its own on a free port, Celery workers as subprocesses (prefork), and
an aiosmtpd sink in a process of its own that counts what it accepts.

It prints:
  1. the sink's ceiling: the same message bytes (a real 60-70 KB digest, rendered by
     service.rendering) blasted over one persistent connection with plain smtplib;
  2. end-to-end: plan_edition on Celery → batches → ledger → SMTP, for N recipients,
     from enqueue to the edition being `done` in the ledger; and the ratio to (1);
  3. Celery's overhead per recipient: one worker process (-c 1) against the same batch
     function called in a loop in this process, same recipients, same sink;
  4. planning a million ledger rows: time and the planner's peak memory (its own
     process), against a naive Python loop over the subscribers measured on 100,000.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.support import (  # noqa: E402
    add_readers,
    ceiling,
    celery_worker,
    free_port,
    insert_readers,
    newsletter_fields,
    scratch_database,
    serve_smtp,
    sink_process,
)

DIGEST_ARTICLES = 60  # → about 66 KB of HTML, 20 KB of text


# ------------------------------------------------------------------ the sink, in its own process


def _sink_main(port: int, count, nbytes, stop) -> None:
    class Counting:
        async def handle_DATA(self, server, session, envelope):
            with count.get_lock():
                count.value += 1
            nbytes.value += len(envelope.content)
            return "250 2.0.0 OK"

    serve_smtp(Counting(), port, 50_000_000, stop)


@contextlib.contextmanager
def sink():
    ctx = mp.get_context("spawn")
    count, nbytes = ctx.Value("q", 0), ctx.Value("q", 0, lock=False)
    with sink_process(_sink_main, count, nbytes) as port:
        yield port, count


# ------------------------------------------------------------------ Redis and workers of our own


@contextlib.contextmanager
def redis_server():
    import redis

    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        with contextlib.suppress(redis.ConnectionError):
            if client.ping():
                break
        time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def workers(env: dict[str, str], concurrency: int):
    return celery_worker("digests", concurrency, "bench", env)


# ------------------------------------------------------------------ data


def digest():
    from service.rendering.render import render_variant
    from tests.support import email_samples as samples

    return render_variant("digest", samples.all_contexts(digest_articles=DIGEST_ARTICLES)["digest"])


def fixed_renderer(rendered):
    return lambda session, edition, variant: rendered


def new_edition(rendered) -> int:
    from service.db import session_scope
    from service.delivery.planner import plan
    from service.models import Edition, EditionKind, Frequency

    with session_scope() as s:
        ed = Edition(kind=EditionKind.digest, frequency=Frequency.daily, title="bench", params={},
                     **newsletter_fields(s, "daily"))
        s.add(ed)
        s.flush()
        plan(s, ed.id, renderer=fixed_renderer(rendered))
        return ed.id


def clear_ledger() -> None:
    import sqlalchemy as sa

    from service.db import session_scope

    with session_scope() as s:
        s.execute(sa.text("TRUNCATE deliveries, edition_variants, editions, subscribers, suppressions RESTART IDENTITY CASCADE"))


def wait_done(edition_id: int, timeout: float = 900) -> float:
    from service.db import session_scope
    from service.models import Edition, EditionStatus

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as s:
            if s.get(Edition, edition_id).status == EditionStatus.done:
                return time.perf_counter()
        time.sleep(0.02)
    raise RuntimeError(f"edition {edition_id} did not finish")


# ------------------------------------------------------------------ the measures


def _run(rendered, n: int, prefix: str, batches_only: bool) -> float:
    from service.db import session_scope
    from service.delivery import fanout
    from service.jobs.tasks import plan_edition
    from service.models import Edition

    clear_ledger()
    add_readers(n, prefix)
    eid = new_edition(rendered)
    t = time.perf_counter()
    if batches_only:
        with session_scope() as s:
            fanout.dispatch(s, s.get(Edition, eid), after_commit=False)
    else:
        plan_edition.si(eid).apply_async(queue="digests")
    return wait_done(eid) - t


def end_to_end(rendered, n: int, env: dict, concurrency: int, count, batches_only: bool = False) -> tuple[float, int]:
    """From the enqueue of plan_edition (or, batches_only, of the batch tasks) to `done`.

    Workers are long-lived in production: a small edition first warms them up (imports,
    connections, the prepared variant), and is not counted.
    """
    with workers(env, concurrency):
        _run(rendered, 20 * concurrency, "warm", batches_only)
        before = count.value
        elapsed = _run(rendered, n, "e2e", batches_only)
        return n / elapsed, count.value - before


def direct(rendered, n: int, count) -> float:
    """The batch function in a loop in this process: sending without Celery."""
    from service.config import get_settings
    from service.db import session_scope
    from service.delivery import fanout
    from service.delivery.batch import send_batch
    from service.delivery.smtp_pool import close_all as close_connection

    for prefix, size in (("warm", 20), ("direct", n)):  # warm up like the workers, not counted
        clear_ledger()
        add_readers(size, prefix)
        eid = new_edition(rendered)
        with session_scope() as s:
            ranges = fanout.batch_ranges(s, eid, get_settings().batch_size)
        if prefix == "warm":
            for a, b in ranges:
                send_batch(eid, a, b)
    t = time.perf_counter()
    for a, b in ranges:
        send_batch(eid, a, b)
    elapsed = time.perf_counter() - t
    close_connection()
    return n / elapsed


PLANNER = r"""
import resource, sys, time, json
from service.db import session_scope, get_engine
from service.delivery.planner import plan
from tests.support import email_samples as samples
from service.rendering.render import render_variant
rendered = render_variant("digest", samples.all_contexts(digest_articles=%d)["digest"])
get_engine().connect().close()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
with session_scope() as s:
    n = plan(s, %d, renderer=lambda session, edition, variant: rendered)
elapsed = time.perf_counter() - t
print(json.dumps({"rows": n, "seconds": elapsed, "rss_before_mb": before,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def plan_million(rows: int, env: dict) -> dict:
    import json

    import sqlalchemy as sa

    from service.db import session_scope
    from service.models import Edition, EditionKind, Frequency

    clear_ledger()
    with session_scope() as s:
        # 8 section sets (so 8 variants) and 1 % of readers suppressed
        insert_readers(s, rows, email="'m' || i || '@example.com'",
                       sections="CASE i % 8 WHEN 0 THEN '[]' ELSE '[' || (i % 8) || ', ' || (i % 5 + 10) || ']' END")
        s.execute(sa.text(
            "INSERT INTO suppressions (email, reason, created_at) "
            "SELECT email, 'hard_bounce', now() FROM subscribers WHERE id % 100 = 0"
        ))
        ed = Edition(kind=EditionKind.digest, frequency=Frequency.daily, title="million", params={},
                     **newsletter_fields(s, "daily"))
        s.add(ed)
        s.flush()
        eid = ed.id
    with session_scope() as s:
        s.execute(sa.text("ANALYZE subscribers; ANALYZE subscriptions; ANALYZE suppressions"))
    out = subprocess.run([sys.executable, "-c", PLANNER % (DIGEST_ARTICLES, eid)], cwd=REPO,
                         env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def naive_plan_rate(sample: int) -> float:
    """The loop the issue rules out: read every subscriber into Python, insert row by row."""
    import sqlalchemy as sa

    from service.db import session_scope
    from service.models import Edition, EditionKind, Frequency

    with session_scope() as s:
        ed = Edition(kind=EditionKind.digest, frequency=Frequency.daily, title="naive", params={},
                     **newsletter_fields(s, "daily"))
        s.add(ed)
        s.flush()
        eid = ed.id
    t = time.perf_counter()
    with session_scope() as s:
        subs = s.execute(sa.text(
            "SELECT s.id, CAST(m.sections AS text) FROM subscribers s JOIN subscriptions m ON m.subscriber_id = s.id "
            "AND m.newsletter_id = (SELECT id FROM newsletters WHERE slug = 'daily') WHERE s.status = 'active' "
            "AND NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.email = s.email) ORDER BY s.id LIMIT :n"
        ), {"n": sample}).all()
        rows = [{"e": eid, "s": sid, "v": "all" if v == "[]" else v} for sid, v in subs]
        s.execute(sa.text(
            "INSERT INTO deliveries (edition_id, subscriber_id, variant, status, attempts, updated_at) "
            "VALUES (:e, :s, :v, 'queued', 0, now())"
        ), rows)
    return len(rows) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipients", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2, help="worker processes (prefork children)")
    ap.add_argument("--ceiling", type=int, default=5_000, help="messages for the sink's ceiling")
    ap.add_argument("--overhead", type=int, default=2_000, help="recipients for the Celery overhead measure")
    ap.add_argument("--plan-rows", type=int, default=1_000_000)
    ap.add_argument("--naive-rows", type=int, default=100_000)
    args = ap.parse_args()

    var = tempfile.mkdtemp(prefix="nashra-bench-")
    with scratch_database("delivery") as db_url, redis_server() as redis_url, sink() as (port, count):
        env = {
            "DATABASE_URL": db_url, "REDIS_URL": redis_url, "SMTP_URL": f"smtp://127.0.0.1:{port}",
            "NASHRA_VAR_DIR": var, "SECRET_KEY": "bench-secret-key-0123456789", "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
        }
        os.environ.update(env)
        from service.config import get_settings, reset_settings
        from service.delivery.compose import compose, prepare
        from service.jobs.app import configure

        reset_settings()
        configure()
        settings = get_settings()
        rendered = digest()
        tpl = prepare(1, "digest", "all", rendered.subject, rendered.html, rendered.text)
        message = compose(tpl, delivery_id=1, subscriber_id=1, token_version=1, to_addr="ceiling@example.com").data
        print(f"digest: {len(rendered.html.encode()) / 1024:.1f} KB HTML, {len(rendered.text.encode()) / 1024:.1f} KB text, "
              f"{len(message) / 1024:.1f} KB on the wire; batch size {settings.batch_size}")

        ceil = ceiling(port, message, args.ceiling, settings.mail_from_address)
        print(f"[1] sink ceiling, plain smtplib, one connection: {ceil:8.1f} msg/s  ({args.ceiling} messages)")

        e2e, got = end_to_end(rendered, args.recipients, env, args.workers, count)
        print(f"[2] end to end, Celery ({args.workers} worker processes) → ledger → SMTP: {e2e:8.1f} msg/s  "
              f"({args.recipients} recipients, sink counted {got})")
        print(f"    ratio end-to-end / ceiling: {e2e / ceil:.2f}  (target ≥ 0.90)")

        d = direct(rendered, args.overhead, count)
        c1, _ = end_to_end(rendered, args.overhead, env, 1, count, batches_only=True)
        per = (1 / c1 - 1 / d) * 1e6
        print(f"[3] one process: direct loop {d:7.1f} msg/s, Celery -c 1 {c1:7.1f} msg/s → Celery overhead "
              f"{per:+.0f} µs per recipient ({per / (1e6 / d) * 100:+.1f} % of a message)")

        pm = plan_million(args.plan_rows, env)
        naive = naive_plan_rate(args.naive_rows)
        rate = pm["rows"] / pm["seconds"]
        print(f"[4] plan(): {pm['rows']:,} ledger rows in {pm['seconds']:.1f} s ({rate:,.0f} rows/s); planner process "
              f"peak RSS {pm['peak_rss_mb']:.0f} MB, {pm['rss_before_mb']:.0f} MB of it before plan() (target < 300 MB)")
        print(f"    naive Python loop on {args.naive_rows:,} rows: {naive:,.0f} rows/s → INSERT … SELECT is "
              f"{rate / naive:.1f}× faster")


if __name__ == "__main__":
    main()
