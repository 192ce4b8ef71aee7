"""Sending a batch: a real aiosmtpd peer, a real PostgreSQL ledger, one SMTP connection.

Also the embedded default, SQLite: it sends too, and never twice when another process
commits while a batch is sending or when a batch cannot write an answer.
"""

from __future__ import annotations

import email.policy
import time
from email import message_from_bytes

import pytest
import sqlalchemy as sa

from service.db import session_scope
from service.delivery import fanout
from service.delivery.batch import send_batch
from service.delivery.compose import delivery_for_bounce
from service.delivery.progress import progress
from service.delivery.smtp import SmtpConnection
from service.jobs import names
from service.models import (
    AuditLog,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    Subscriber,
    utcnow,
)
from service.newsletters import catalogue
from service.subscribers.tokens import read_token
from tests.support.delivery import (
    ARABIC_TITLE,
    add_subscribers,
    ledger,
    planned_edition,
    run_all_batches,
)


def test_batch_sends_each_reader_once_over_one_connection(pg_env, smtp_sink, monkeypatch):
    from service.config import get_settings, reset_settings
    from service.delivery import smtp_pool

    monkeypatch.setenv("SMTP_CONNECTIONS", "1")  # (many: tests/test_delivery_concurrency.py)
    reset_settings()
    eid = planned_edition(120)
    reports = run_all_batches(eid)
    assert sum(r.claimed for r in reports) == 120
    assert sorted(smtp_sink.recipients()) == sorted(f"reader{i}@example.com" for i in range(120))
    assert set(ledger(eid).values()) == {"sent"}
    assert smtp_pool.lane(get_settings(), "digest").connections_opened == 1  # persistent: three batches, one connection
    with session_scope() as s:
        ed = s.get(Edition, eid)
        assert ed.status == EditionStatus.done and ed.finished_at is not None
        p = progress(s, eid)
        assert (p["sent"], p["remaining"], p["failed"]) == (120, 0, 0)
        row = s.scalars(sa.select(Delivery).where(Delivery.edition_id == eid)).first()
        assert row.smtp_code == 250 and "accepted" in row.smtp_reply and row.sent_at and row.message_id
    # running the same batches again (Celery redelivers) sends nothing more
    run_all_batches(eid)
    assert len(smtp_sink.messages) == 120


def test_message_headers_links_and_rtl_body(pg_env, smtp_sink):
    eid = planned_edition(1)
    run_all_batches(eid)
    (got,) = smtp_sink.wait_for(1)
    msg = message_from_bytes(got.data, policy=email.policy.default)
    with session_scope() as s:
        sub = s.scalars(sa.select(Subscriber)).one()
        delivery = s.scalars(sa.select(Delivery)).one()
        daily_id = catalogue.by_slug(s, "daily").id  # the edition's newsletter
    assert msg["Subject"].startswith(ARABIC_TITLE)
    assert msg["To"] == "reader0@example.com"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    lu = str(msg["List-Unsubscribe"])
    https_url = lu.split("<", 1)[1].split(">", 1)[0]
    assert https_url.startswith("http") and "/unsubscribe/" in https_url
    token, query = https_url.rsplit("/", 1)[1].split("?e=")  # the link names its edition (issue 18)
    edition, newsletter = query.split("&n=")  # … and its newsletter: one click leaves that one
    assert read_token("unsubscribe", token) == (sub.id, sub.token_version) and edition == str(eid)
    assert newsletter == str(daily_id)
    assert "<mailto:unsubscribe@nashra.example?subject=unsubscribe%20" in lu
    assert msg["List-Id"].endswith("<daily.nashra.example>")  # its newsletter's own list
    assert msg["Feedback-ID"].startswith(f"{eid}:digest:")
    assert msg["Message-ID"] == delivery.message_id
    # VERP: the envelope sender names the ledger row, not the reader
    assert got.mail_from != "newsletter@nashra.example" and "reader0" not in got.mail_from
    assert delivery_for_bounce(got.mail_from) == delivery.id
    assert delivery_for_bounce(got.mail_from.replace(".", "x", 1)) is None
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    # In the HTML the link's query is escaped (`&amp;n=`), as an attribute's & must be.
    assert 'dir="rtl"' in html and https_url.replace("&", "&amp;") in html and "__NASHRA_" not in html + text
    assert msg.get_body(("html",))["Content-Transfer-Encoding"] == "base64"


def test_reader_who_left_after_planning_is_skipped_and_suppressed_is_not_mailed(pg_env, smtp_sink):
    eid = planned_edition(4)
    with session_scope() as s:
        s.execute(sa.update(Subscriber).where(Subscriber.email == "reader1@example.com").values(status="unsubscribed"))
        from tests.support.delivery import add_suppression

        add_suppression(s, "reader2@example.com", "complaint")
    run_all_batches(eid)
    assert sorted(smtp_sink.recipients()) == ["reader0@example.com", "reader3@example.com"]
    states = ledger(eid)
    assert states["reader1@example.com"] == "skipped"
    assert states["reader2@example.com"] == "suppressed"


def test_plan_task_on_real_celery_and_redis_sends_once_even_if_started_twice(pg_env, redis_url, smtp_sink, celery_worker_factory):
    from service.jobs.tasks import plan_edition

    eid = planned_edition(60)  # the variants are rendered; the task re-plans (a no-op) and dispatches
    with celery_worker_factory(queues=("digests",), concurrency=2):
        plan_edition.si(eid).apply_async(queue="digests")
        plan_edition.si(eid).apply_async(queue="digests")  # a double click
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with session_scope() as s:
                if s.get(Edition, eid).status == EditionStatus.done:
                    break
            time.sleep(0.2)
        time.sleep(0.5)  # anything extra would have arrived by now
    assert ledger(eid) and set(ledger(eid).values()) == {"sent"}
    rcpts = smtp_sink.recipients()
    assert len(rcpts) == 60 == len(set(rcpts))


@pytest.mark.parametrize("kind,queue", [("alert", "alerts"), ("digest", "digests")])
def test_batches_go_to_the_editions_queue(kind, queue):
    assert names.edition_queue(kind) == queue


def test_an_address_no_header_can_carry_fails_alone(pg_env, smtp_sink):
    with session_scope() as s:
        add_subscribers(s, 1, prefix="قارئ")  # a non-ASCII local part needs SMTPUTF8
    eid = planned_edition(2)
    run_all_batches(eid)
    states = ledger(eid)
    assert states["قارئ0@example.com"] == "failed"
    assert states["reader0@example.com"] == states["reader1@example.com"] == "sent"


def test_the_embedded_default_sqlite_sends_too(sqlite_env, smtp_sink):
    eid = planned_edition(30)
    with session_scope() as s:
        ranges = fanout.batch_ranges(s, eid, 10)
    assert len(ranges) == 3
    for a, b in ranges:
        send_batch(eid, a, b)
    assert len(smtp_sink.messages) == 30
    assert set(ledger(eid).values()) == {"sent"}
    from service.delivery.sweeper import sweep

    with session_scope() as s:
        sweep(s)
        assert s.get(Edition, eid).status == EditionStatus.done
        assert progress(s, eid)["sent"] == 30


def test_sqlite_a_commit_by_another_process_during_a_send_never_sends_twice(sqlite_env, smtp_sink, monkeypatch):
    """SQLite refuses a write at once (SQLITE_BUSY_SNAPSHOT: busy_timeout does not apply)
    if another connection committed since the transaction read: a batch that read the
    reader's state, sent, then wrote the answer in that same transaction lost the write,
    and the row just sent went back as `queued`."""
    eid = planned_edition(6)
    other = sa.create_engine(sqlite_env, connect_args={"timeout": 30})  # another process's connection
    original = SmtpConnection.finish
    interleaved = []

    def send_while_another_process_commits(self, *args, **kwargs):
        outcome, ready, refusal = original(self, *args, **kwargs)  # the server's answer to the end of data
        # Between the 250 and the batch's write of it, another worker (or the web
        # app, or beat) commits a write to the same database file.
        with other.begin() as c:
            c.execute(sa.insert(AuditLog.__table__).values(
                at=utcnow(), actor="test", action="other.process", target="x", details={}))
        interleaved.append(outcome.code)
        return outcome, ready, refusal

    monkeypatch.setattr(SmtpConnection, "finish", send_while_another_process_commits)
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
    assert set(ledger(eid).values()) == {"sent"}
    assert errors == []


def test_a_row_whose_answer_could_not_be_written_is_not_handed_back_as_queued(sqlite_env, smtp_sink, monkeypatch):
    from service.config import reset_settings
    from service.delivery import ledger as delivery_ledger

    monkeypatch.setenv("LEASE_SECONDS", "3")  # the writer tries until close to the lease's end
    reset_settings()
    eid = planned_edition(4)
    original = delivery_ledger.record

    def record_refused_for_the_second_row(conn, delivery_id, *args, **kwargs):
        if delivery_id == 2:
            raise sa.exc.OperationalError("UPDATE deliveries", {}, Exception("disk I/O error"))
        return original(conn, delivery_id, *args, **kwargs)

    monkeypatch.setattr(delivery_ledger, "record", record_refused_for_the_second_row)
    with pytest.raises(sa.exc.OperationalError):
        send_batch(eid, 1, 4)
    assert smtp_sink.copies() == {"reader0@example.com": 1, "reader1@example.com": 1}
    with session_scope() as s:
        by_id = dict(s.execute(sa.select(Delivery.id, Delivery.status).where(Delivery.edition_id == eid)).all())
    # the 250'd row keeps its claim (the lease decides, as after a crash); the untouched rows go back
    assert by_id == {1: DeliveryStatus.sent, 2: DeliveryStatus.claimed, 3: DeliveryStatus.queued,
                     4: DeliveryStatus.queued}
    monkeypatch.setattr(delivery_ledger, "record", original)
    send_batch(eid, 1, 4)  # the task run again (Celery retry): the rest goes, the doubtful row does not
    assert smtp_sink.copies() == {f"reader{i}@example.com": 1 for i in range(4)}


def test_send_now_for_transactional_mail(smtp_sink):
    from service.config import get_settings
    from service.delivery import smtp_pool
    from service.delivery.smtp import SmtpError, SmtpTransientError

    def send_one(to, message):
        return smtp_pool.send_now(get_settings(), "a@nashra.example", to, message)

    msg = b"From: a@nashra.example\r\nTo: x@example.com\r\nSubject: hi\r\n\r\n.line starting with a dot\r\n"
    assert send_one("x@example.com", msg).code == 250
    assert smtp_sink.wait_for(1)[0].data.endswith(b".line starting with a dot\r\n")  # dot-stuffed on the wire
    smtp_sink.rcpt_replies["later@example.com"] = "451 4.3.0 try later"
    smtp_sink.rcpt_replies["nobody@example.com"] = "550 5.1.1 no such user"
    with pytest.raises(SmtpTransientError) as transient:
        send_one("later@example.com", msg)
    assert isinstance(transient.value, OSError)  # Celery's autoretry_for=(OSError,) retries it
    with pytest.raises(SmtpError) as final:
        send_one("nobody@example.com", msg)
    assert not isinstance(final.value, OSError)
