"""Recovery in seconds: due retries go when they fall due, lost batches come back quickly.

The sweeper's rules on a real PostgreSQL ledger with a recording dispatcher (what would
have been queued), then a reader whose server answered 451 once, end to end through a
real Celery worker and Redis, with a short backoff (RETRY_BASE_SECONDS) and the test
playing beat every SWEEP_SECONDS.  The SIGKILL and Redis-restart cases are in
tests/test_delivery_crash.py.
"""

from __future__ import annotations

import datetime as dt
import time

import sqlalchemy as sa

from service.config import get_settings, reset_settings
from service.db import session_scope
from service.delivery.sweeper import STALL_SECONDS, sweep
from service.dispatch import Recorder
from service.models import Delivery, Edition, Subscriber, utcnow
from tests.support.delivery import planned_edition
from tests.support.workers import dispatch, report, wait_done


def sending(eid: int, **rows) -> None:
    """The edition is under way; every row of it gets `rows`' values."""
    with session_scope() as s:
        s.execute(sa.update(Edition).where(Edition.id == eid).values(status="sending", started_at=utcnow()))
        s.execute(sa.update(Delivery).where(Delivery.edition_id == eid).values(**rows))


def one_row(eid: int, **values) -> int:
    with session_scope() as s:
        first = s.scalar(sa.select(sa.func.min(Delivery.id)).where(Delivery.edition_id == eid))
        s.execute(sa.update(Delivery).where(Delivery.id == first).values(**values))
    return first


def swept():
    recorder = Recorder()
    with session_scope() as s:
        result = sweep(s, dispatcher=recorder)
    return result, recorder.calls


def ago(seconds: float) -> dt.datetime:
    return utcnow() - dt.timedelta(seconds=seconds)


def test_a_due_retry_is_dispatched_once_when_due_not_at_every_sweep(pg_env):
    eid = planned_edition(3)
    sending(eid, status="sent", updated_at=ago(60))
    rid = one_row(eid, status="retry", next_attempt_at=utcnow() + dt.timedelta(seconds=30), updated_at=ago(60))
    result, calls = swept()
    assert (result.due_retries, calls) == (0, [])  # not yet
    one_row(eid, next_attempt_at=ago(1))  # its time has come
    result, calls = swept()
    assert result.due_retries == 1 and calls == [("send_batches", eid, "digest", [(rid, rid)])]
    # The batch message is queued (or in a worker's hands): the next sweeps ask for nothing more
    for _ in range(2):
        result, calls = swept()
        assert (result.due_retries, result.stalled, calls) == (0, [], [])
    # ... unless nothing happened for STALL_SECONDS and nothing waits in the queue: the message was lost
    one_row(eid, next_attempt_at=ago(STALL_SECONDS + 2), updated_at=ago(STALL_SECONDS + 1))  # time passes
    result, calls = swept()
    assert result.stalled == [eid] and calls == [("send_batches", eid, "digest", [(rid, rid)])]


def test_lost_batches_come_back_after_seconds_of_quiet_not_a_multiple_of_the_lease(pg_env):
    eid = planned_edition(5)
    sending(eid, updated_at=ago(STALL_SECONDS - 3))
    result, calls = swept()
    assert (result.stalled, calls) == ([], [])  # the ledger moved a moment ago
    sending(eid, updated_at=ago(STALL_SECONDS + 1))
    result, calls = swept()
    assert result.stalled == [eid] and len(calls) == 1
    # A live claim is a batch at work (its heartbeat keeps the lease): it is left to finish
    sending(eid, updated_at=ago(60))
    one_row(eid, status="claimed", claimed_by="alive:1:1", lease_until=utcnow() + dt.timedelta(seconds=20))
    result, calls = swept()
    assert (result.stalled, calls) == ([], [])


def test_a_451_reader_is_sent_when_the_retry_falls_due(pg_env, redis_url, smtp_sink, celery_worker_factory,
                                                       monkeypatch, capsys):
    monkeypatch.setenv("RETRY_BASE_SECONDS", "2")  # a backoff of 1 to 3 s
    reset_settings()
    smtp_sink.rcpt_replies["reader1@example.com"] = "451 4.7.1 greylisted, try again later"
    eid = planned_edition(20)
    with celery_worker_factory(queues=("digests",), concurrency=2):
        dispatch(eid)
        deadline = time.monotonic() + 30
        due = None
        while due is None and time.monotonic() < deadline:
            with session_scope() as s:
                due = s.scalar(sa.select(Delivery.next_attempt_at)
                               .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                               .where(Subscriber.email == "reader1@example.com", Delivery.status == "retry"))
            time.sleep(0.1)
        assert due is not None, "the 451 was not recorded as a retry"
        del smtp_sink.rcpt_replies["reader1@example.com"]  # the server has recovered
        sweeps = wait_done(eid, timeout=60)
    (message,) = [m for m in smtp_sink.messages if m.rcpt_tos == ["reader1@example.com"]]
    delivered = time.time() - (time.monotonic() - message.at)
    late = delivered - due.timestamp()
    report(capsys, f"451 then a retry backoff of {get_settings().retry_base_seconds:g} s (±50 %): delivered "
                   f"{late:.1f} s after its retry fell due (SWEEP_SECONDS {get_settings().sweep_seconds:g})")
    assert smtp_sink.copies() == {f"reader{i}@example.com": 1 for i in range(20)}
    # dispatched because it fell due (once), not because the ledger had stalled
    assert sum(r.due_retries for _, r in sweeps) == 1
    assert not any(r.stalled for _, r in sweeps)


def test_a_dead_workers_rows_come_back_with_the_batches_it_had_prefetched(pg_env):
    eid = planned_edition(6)
    sending(eid, updated_at=ago(1))  # queued rows of a batch message the dead worker had prefetched
    one_row(eid, status="claimed", claimed_by="dead:1:1", lease_until=ago(1))  # and the one it was sending
    result, calls = swept()
    assert result.expired == 1
    ((_, _, _, ranges),) = calls
    with session_scope() as s:
        ids = set(s.scalars(sa.select(Delivery.id).where(Delivery.edition_id == eid)))
    assert {i for a, b in ranges for i in range(a, b + 1)} >= ids  # all of them, not just the expired one
