"""Two delivery defects found in review, each pinned by a test.

1. SQLite (the embedded default): a batch read the reader's state, sent, and then
   wrote the answer in the same transaction; if another connection committed in
   between, SQLite refused the write at once (SQLITE_BUSY_SNAPSHOT: busy_timeout does
   not apply) and the error path handed the row just sent back as `queued`.
2. Pause then a quick resume: a batch that saw `paused` handed its rows back after the
   resume had already dispatched (while they were still claimed), so no batch covered
   them until the sweeper noticed.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from service.db import session_scope
from service.delivery import fanout
from service.delivery.batch import send_batch
from service.delivery.planner import plan
from service.delivery.smtp import SmtpConnection
from service.models import (
    AuditLog,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    utcnow,
)
from tests.test_delivery_send import ledger as states
from tests.test_delivery_support import (
    add_subscribers,
    make_edition,
    renderer,
)


def planned_edition(n: int, kind: str = "digest") -> int:
    with session_scope() as s:
        add_subscribers(s, n)
        eid = make_edition(s, kind, "daily" if kind == "digest" else None, headline="h", url="https://x.example/")
        plan(s, eid, renderer=renderer())
    return eid


# ------------------------------------------------------------------ 1. SQLite snapshot


def test_sqlite_a_commit_by_another_process_during_a_send_never_sends_twice(sqlite_env, smtp_sink, monkeypatch):
    eid = planned_edition(6)
    other = sa.create_engine(sqlite_env, connect_args={"timeout": 30})  # another process's connection
    original = SmtpConnection.send
    interleaved = []

    def send_while_another_process_commits(self, *args, **kwargs):
        outcome = original(self, *args, **kwargs)
        # Between the 250 and the batch's write of it, another worker (or the web
        # app, or beat) commits a write to the same database file.
        with other.begin() as c:
            c.execute(sa.insert(AuditLog.__table__).values(
                at=utcnow(), actor="test", action="other.process", target="x", details={}))
        interleaved.append(outcome.code)
        return outcome

    monkeypatch.setattr(SmtpConnection, "send", send_while_another_process_commits)
    try:
        # What the system does on its own: a failed batch is run again (Celery retry,
        # or the sweeper re-dispatching the rows it handed back) until nothing is left.
        errors = []
        for _ in range(10):
            with session_scope() as s:
                ranges = fanout.batch_ranges(s, eid, 50)
            if not ranges:
                break
            for a, b in ranges:
                try:
                    send_batch(eid, a, b)
                except Exception as exc:  # noqa: BLE001
                    errors.append(type(exc).__name__)
    finally:
        other.dispose()
    assert len(interleaved) >= 6  # the interfering commit really happened during the sends
    copies = smtp_sink.copies()
    assert copies == {f"reader{i}@example.com": 1 for i in range(6)}, (copies, errors)
    assert set(states(eid).values()) == {"sent"}
    assert errors == []


def test_a_row_whose_answer_could_not_be_written_is_not_handed_back_as_queued(sqlite_env, smtp_sink, monkeypatch):
    from service.delivery import ledger

    eid = planned_edition(4)
    original = ledger.record

    def record_refused_for_the_second_row(conn, delivery_id, *args, **kwargs):
        if delivery_id == 2:
            raise sa.exc.OperationalError("UPDATE deliveries", {}, Exception("disk I/O error"))
        return original(conn, delivery_id, *args, **kwargs)

    monkeypatch.setattr(ledger, "record", record_refused_for_the_second_row)
    with pytest.raises(sa.exc.OperationalError):
        send_batch(eid, 1, 4)
    assert smtp_sink.copies() == {"reader0@example.com": 1, "reader1@example.com": 1}
    with session_scope() as s:
        by_id = dict(s.execute(sa.select(Delivery.id, Delivery.status).where(Delivery.edition_id == eid)).all())
    # the 250'd row keeps its claim (the lease decides, as after a crash); the untouched rows go back
    assert by_id == {1: DeliveryStatus.sent, 2: DeliveryStatus.claimed, 3: DeliveryStatus.queued,
                     4: DeliveryStatus.queued}
    monkeypatch.setattr(ledger, "record", original)
    send_batch(eid, 1, 4)  # the task run again (Celery retry): the rest goes, the doubtful row does not
    assert smtp_sink.copies() == {f"reader{i}@example.com": 1 for i in range(4)}


# ------------------------------------------------------------------ 2. pause, then a quick resume


def test_rows_handed_back_after_a_quick_resume_are_dispatched_at_once(pg_env, smtp_sink, monkeypatch):
    from service.delivery import control, ledger

    eid = planned_edition(10, kind="alert")
    enqueued: list = []
    monkeypatch.setattr(fanout, "_enqueue", lambda edition_id, sigs: enqueued.extend(sigs))
    original_send = SmtpConnection.send

    def pause_after_the_third(self, *args, **kwargs):
        outcome = original_send(self, *args, **kwargs)
        if len(smtp_sink.messages) == 3:
            with session_scope() as s:
                control.pause(s, eid, actor="editor:1")
        return outcome

    original_release = ledger.release
    resumed = []

    def resume_just_before_the_hand_back(conn, worker, ids, to, **kw):
        if to == DeliveryStatus.queued and not resumed:
            # The editor's resume commits between the batch's read of `paused` and its
            # hand-back: the batch's rows are still claimed, so the resume covers none.
            with session_scope() as s:
                control.resume(s, eid, actor="editor:1")
            resumed.append([sig.args for sig in enqueued])
        return original_release(conn, worker, ids, to, **kw)

    monkeypatch.setattr(SmtpConnection, "send", pause_after_the_third)
    monkeypatch.setattr(ledger, "release", resume_just_before_the_hand_back)
    report = send_batch(eid, 1, 10)
    assert report.stopped == "paused" and len(smtp_sink.messages) == 3
    assert resumed == [[]]  # the resume itself found nothing to dispatch
    with session_scope() as s:
        assert s.get(Edition, eid).status == EditionStatus.sending
        queued = s.scalars(sa.select(Delivery.id).where(Delivery.edition_id == eid,
                                                        Delivery.status == DeliveryStatus.queued)).all()
    assert sorted(queued) == list(range(4, 11))
    # ... but the batch dispatched the rows it handed back: a queued task covers each of them
    covered = {i for sig in enqueued for i in range(sig.args[1], sig.args[2] + 1) if sig.args[0] == eid}
    assert set(queued) <= covered, (queued, [sig.args for sig in enqueued])
    monkeypatch.setattr(SmtpConnection, "send", original_send)
    for sig in list(enqueued):  # the worker runs them; no sweeper involved
        send_batch(*sig.args)
    assert smtp_sink.copies() == {f"reader{i}@example.com": 1 for i in range(10)}
    assert set(states(eid).values()) == {"sent"}
