"""Chunked planning: an alert's first batches leave while the rest of its audience is
still being written, and nothing about "one row, one message per reader" changes.

Real PostgreSQL, the real Redis queue (read directly), a real SMTP peer; chunk sizes
are made tiny so that a few hundred readers take many chunks.  Also the other pieces
of a fast alert: the SMTP connection opened ahead of the first message, and alerts'
own rate budget per domain.
"""

from __future__ import annotations

import json
import threading
import time
from base64 import b64decode

import pytest
import redis
import sqlalchemy as sa

from service.db import get_engine, session_scope
from service.delivery import control, fanout, planner
from service.delivery.batch import send_batch
from service.delivery.ledger import PLANNING
from service.delivery.planner import PlanError, plan_chunk
from service.delivery.sweeper import STALLED_DRAFT_AFTER, stalled_drafts, sweep
from service.jobs import names
from service.models import Delivery, DeliveryStatus, Edition, EditionStatus, Subscriber, utcnow
from tests.support.delivery import (
    add_subscribers,
    add_suppression,
    make_edition,
    renderer,
)

ALERT = {"headline": "عاجل: زلزال يضرب شمال المغرب", "url": "https://news.example/quake", "summary": "لا إصابات."}


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(planner, "CHUNK_FIRST", 10)
    monkeypatch.setattr(planner, "CHUNK_GROWTH", 2)
    monkeypatch.setattr(planner, "CHUNK_MAX", 40)


@pytest.fixture
def celery_on_test_redis(redis_url, monkeypatch):
    """This process's producer talks to the test Redis, under the test prefix; back after."""
    from service.config import get_settings, reset_settings
    from service.jobs.app import configure

    configure()
    yield redis.Redis.from_url(redis_url), get_settings().redis_key_prefix + "alerts"
    monkeypatch.delenv("REDIS_URL", raising=False)
    reset_settings()
    configure()


def alert_edition(readers: int, **kw) -> int:
    with session_scope() as s:
        add_subscribers(s, readers, **kw)
        return make_edition(s, "alert", None, **ALERT)


def ledger_rows(eid: int) -> dict[str, str]:
    with session_scope() as s:
        rows = s.execute(
            sa.select(Subscriber.email, Delivery.status)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.edition_id == eid)
        ).all()
    emails = [e for e, _ in rows]
    assert len(emails) == len(set(emails)), "two ledger rows for one reader"
    return {e: st.value for e, st in rows}


def edition(eid: int) -> Edition:
    with session_scope() as s:
        return s.get(Edition, eid)


def queued_batches(client, key) -> list[tuple[int, int, int]]:
    out = []
    for raw in client.lrange(key, 0, -1):
        msg = json.loads(raw)
        if msg["headers"]["task"] == names.SEND_BATCH:
            out.append(tuple(json.loads(b64decode(msg["body"]))[0]))
    return out


def plan_by_hand(eid: int, after: int = 0, limit: int = 10, send: bool = True) -> int:
    """The planner task's loop, with the batches run here instead of through Celery."""
    from service.delivery.ledger import finish_if_complete

    while True:
        with session_scope() as s:
            chunk = plan_chunk(s, eid, after=after, limit=limit, renderer=renderer())
            if chunk.finished:
                finish_if_complete(s, eid)  # as the task does: every batch may be done already
        if send:
            with session_scope() as s:
                ranges = fanout.batch_ranges(s, eid, 50, subscribers=(chunk.after, chunk.through))
            for first, last in ranges:
                send_batch(eid, first, last)
        if chunk.finished:
            return chunk.total
        after = chunk.through


def test_chunked_planning_writes_each_reader_once_even_when_run_twice(pg_env, celery_on_test_redis, small_chunks):
    from service.jobs.tasks import plan_edition

    client, key = celery_on_test_redis
    with session_scope() as s:
        add_subscribers(s, 150)
        add_subscribers(s, 20, prefix="off", alerts=False)
        add_subscribers(s, 10, prefix="gone", status="unsubscribed")
        add_suppression(s, "reader7@example.com")
        eid = make_edition(s, "alert", None, **ALERT)

    assert plan_edition(eid)["recipients"] == 149
    expected = {f"reader{i}@example.com" for i in range(150)} - {"reader7@example.com"}
    assert set(ledger_rows(eid)) == expected
    ed = edition(eid)
    assert ed.status == EditionStatus.planned and ed.recipients == 149
    assert ed.planned_at is not None and PLANNING not in ed.params  # the audience is complete
    assert ed.params["headline"] == ALERT["headline"]  # the alert's own params are kept

    # Each row is in exactly one queued batch, and alert batches are small.
    with session_scope() as s:
        row_ids = sorted(s.scalars(sa.select(Delivery.id).where(Delivery.edition_id == eid)))
    batches = queued_batches(client, key)
    covered = [i for _e, first, last in batches for i in row_ids if first <= i <= last]
    assert sorted(covered) == row_ids
    assert max(sum(1 for i in row_ids if first <= i <= last) for _e, first, last in batches) <= 50

    # Again (a retried task, a double click): not one row more.
    assert plan_edition(eid)["recipients"] == 149
    assert set(ledger_rows(eid)) == expected


def test_the_first_batches_are_queued_before_the_last_chunk_is_written(pg_env, celery_on_test_redis, small_chunks):
    from service.jobs.tasks import plan_edition

    client, key = celery_on_test_redis
    eid = alert_edition(300)
    waiting: list[int] = []  # batch messages in the queue as each INSERT of the audience starts…
    written: list[int] = []  # …and the ledger rows that INSERT wrote

    def before(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO DELIVERIES"):
            waiting.append(client.llen(key))

    def after(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO DELIVERIES"):
            written.append(cursor.rowcount)

    sa.event.listen(get_engine(), "before_cursor_execute", before)
    sa.event.listen(get_engine(), "after_cursor_execute", after)
    try:
        plan_edition(eid)
    finally:
        sa.event.remove(get_engine(), "before_cursor_execute", before)
        sa.event.remove(get_engine(), "after_cursor_execute", after)
    chunks = [(w, n) for w, n in zip(waiting, written, strict=True) if n > 0]
    assert len(chunks) >= 5, chunks  # 300 readers in chunks of 10, 20, 40, 40 …
    assert sum(n for _w, n in chunks) == 300
    assert chunks[0][0] == 0  # nothing can be queued before the first rows exist
    assert chunks[1][0] > 0  # the first chunk's batches were out before the second chunk was written
    assert chunks[-1][0] >= len(chunks) - 1  # every earlier chunk's batches were out before the last one
    assert [w for w, _n in chunks] == sorted(w for w, _n in chunks)
    assert len(ledger_rows(eid)) == 300


def test_two_planners_racing_plan_once_and_each_reader_gets_one_message(
        pg_env, celery_on_test_redis, smtp_sink, small_chunks, celery_worker_factory):
    from service.jobs.tasks import plan_edition

    eid = alert_edition(200)
    start = threading.Barrier(2)
    results, errors = [], []

    def planner_thread():
        try:
            start.wait(5)
            results.append(plan_edition(eid))
        except Exception as exc:  # noqa: BLE001 — reported below
            errors.append(exc)

    threads = [threading.Thread(target=planner_thread) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 2
    assert len(ledger_rows(eid)) == 200

    # Both planners queued batches for the same rows; the claims decide who sends.
    with celery_worker_factory(queues=("alerts",), concurrency=2):
        deadline = time.monotonic() + 60
        while edition(eid).status != EditionStatus.done:
            assert time.monotonic() < deadline, f"not done: {sorted(set(ledger_rows(eid).values()))}"
            time.sleep(0.1)
    copies = smtp_sink.copies()
    assert set(copies) == {f"reader{i}@example.com" for i in range(200)}
    assert max(copies.values()) == 1
    assert set(ledger_rows(eid).values()) == {"sent"}


def test_an_edition_is_not_done_while_its_audience_is_still_being_written(pg_env, smtp_sink):
    eid = alert_edition(30)
    with session_scope() as s:
        first = plan_chunk(s, eid, after=0, limit=10, renderer=renderer())
    assert not first.finished and first.total == 10
    with session_scope() as s:
        ranges = fanout.batch_ranges(s, eid, 50, subscribers=(first.after, first.through))
    for a, b in ranges:
        send_batch(eid, a, b)
    # Every row written so far is sent, but twenty readers are still to be written.
    assert len(smtp_sink.messages) == 10 and set(ledger_rows(eid).values()) == {"sent"}
    assert edition(eid).status == EditionStatus.sending
    with session_scope() as s:
        assert eid not in sweep(s).finished
    assert edition(eid).status == EditionStatus.sending

    assert plan_by_hand(eid, after=first.through) == 30
    assert edition(eid).status == EditionStatus.done
    assert sorted(smtp_sink.copies().values()) == [1] * 30


def test_the_sweeper_hands_a_half_planned_edition_back_to_the_planner(pg_env):
    eid = alert_edition(30)
    with session_scope() as s:
        plan_chunk(s, eid, after=0, limit=10, renderer=renderer())  # …and its planner dies here
    with session_scope() as s:
        assert stalled_drafts(s) == []  # the planner may still be at work
        later = utcnow() + STALLED_DRAFT_AFTER + STALLED_DRAFT_AFTER
        assert stalled_drafts(s, now=later) == [(eid, "alert")]
    # What the sweep task enqueues: planning again, from the start.
    assert plan_by_hand(eid, send=False) == 30
    ed = edition(eid)
    assert PLANNING not in ed.params and ed.planned_at is not None
    with session_scope() as s:
        assert stalled_drafts(s, now=later) == []
    assert len(ledger_rows(eid)) == 30


def test_a_cancel_during_chunked_planning_stops_it(pg_env):
    eid = alert_edition(30)
    with session_scope() as s:
        first = plan_chunk(s, eid, after=0, limit=10, renderer=renderer())
    with session_scope() as s:
        control.cancel(s, eid, "editor:1")
    with session_scope() as s:
        after_cancel = plan_chunk(s, eid, after=first.through, limit=10, renderer=renderer())
    assert after_cancel.finished and after_cancel.inserted == 0
    assert after_cancel.status == EditionStatus.cancelled
    rows = ledger_rows(eid)
    assert len(rows) == 10 and set(rows.values()) == {DeliveryStatus.cancelled.value}


def test_bad_chunk_requests_change_nothing(pg_env):
    eid = alert_edition(5)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(PlanError, match="limit"), session_scope() as s:
            plan_chunk(s, eid, limit=bad, renderer=renderer())
    with pytest.raises(PlanError, match="no edition"), session_scope() as s:
        plan_chunk(s, 987_654, limit=10, renderer=renderer())
    assert ledger_rows(eid) == {}
    assert edition(eid).status == EditionStatus.draft


def test_a_prewarmed_smtp_connection_carries_the_first_messages(pg_env, smtp_sink, monkeypatch):
    from service.config import get_settings, reset_settings
    from service.delivery import smtp_pool

    monkeypatch.setenv("SMTP_CONNECTIONS", "1")  # one session per lane: the warm one, or a second connection
    reset_settings()
    eid = alert_edition(3)
    with session_scope() as s:
        planner.plan(s, eid, renderer=renderer())
    opened = []
    warm = threading.Thread(target=lambda: opened.append(smtp_pool.prewarm(get_settings())))  # as at worker start
    warm.start()
    warm.join(30)
    assert opened == [True] and smtp_sink.connections == 1
    with session_scope() as s:
        ranges = fanout.batch_ranges(s, eid, 50)
    for a, b in ranges:
        send_batch(eid, a, b)
    assert len(smtp_sink.messages) == 3
    assert smtp_sink.connections == 1  # the batch used the connection opened ahead of it
    smtp_pool.close_all()


def test_worker_warm_up_writes_nothing_and_opens_what_the_first_alert_needs(pg_env, celery_on_test_redis, smtp_sink,
                                                                           monkeypatch):
    from structlog.testing import capture_logs

    from service.config import reset_settings
    from service.delivery import smtp_pool
    from service.jobs.worker import _prepare_process

    monkeypatch.setenv("SMTP_CONNECTIONS", "1")  # one session per lane: the warm one, or a second connection
    reset_settings()
    eid = alert_edition(3)
    with capture_logs() as logs:
        _prepare_process()  # what a new alert worker process runs at start, in its own thread
    assert [e["event"] for e in logs if e["event"].startswith("worker.")] == ["worker.warmed_up"]
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Edition)) == 1  # its probes left no trace
    assert ledger_rows(eid) == {} and edition(eid).status == EditionStatus.draft
    assert smtp_sink.connections == 1 and smtp_sink.messages == []
    assert plan_by_hand(eid) == 3
    assert len(smtp_sink.messages) == 3 and smtp_sink.connections == 1
    smtp_pool.close_all()


def test_prewarm_against_a_dead_smtp_server_is_no_error(monkeypatch):
    from service.config import get_settings, reset_settings
    from service.delivery import smtp_pool
    from tests.support.net import free_port

    monkeypatch.setenv("SMTP_URL", f"smtp://127.0.0.1:{free_port()}")
    reset_settings()
    assert smtp_pool.prewarm(get_settings()) is False
    assert smtp_pool.lane(get_settings(), "alert").sessions() == []  # nothing half-open kept for the first message
    smtp_pool.close_all()


def test_alerts_to_a_rate_limited_domain_do_not_wait_behind_digests(redis_url):
    from service.config import load_settings
    from service.delivery.throttle import Limiter, buckets_for

    s = load_settings(domain_rates="gmail.com=10")
    digests, alerts = Limiter(s), Limiter(s)  # two worker processes, one Redis
    assert digests._try(buckets_for(s, "digest", "gmail.com")) == 0
    assert digests._try(buckets_for(s, "digest", "gmail.com")) > 0  # gmail's budget is spent for now
    assert alerts._try(buckets_for(s, "alert", "gmail.com")) == 0  # an alert does not wait for digests
    assert digests._try(buckets_for(s, "digest", "gmail.com")) > 0.15  # it pushed them back a slot
    assert alerts._try(buckets_for(s, "alert", "gmail.com")) > 0  # and alerts alone keep to gmail's rate
