"""The soft-bounce policy (issue 21, item 4), end to end on PostgreSQL.

SOFT_BOUNCE_LIMIT soft bounces ("mailbox full", "over quota", any 4.x.x) for different
editions within SOFT_BOUNCE_DAYS suppress the address with reason `soft_bounce`; a
delivery report (a DSN with Action `delivered`) starts the count again.

Every edition here is real: planned for readers in the database, sent by the batch to
the SMTP sink; every report is a DSN built from the message the sink received and
delivered over SMTP to the real bounce server at the VERP address the sink recorded.
What a test reads is what an operator would see: the suppression list, the audit log,
and whether the next edition still goes to the reader.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.config import get_settings, reset_settings
from service.db import session_scope
from service.delivery.planner import plan
from service.inbound import actions
from service.models import AuditLog, FeedbackEvent, Subscriber, Suppression, utcnow
from service.subscribers import suppression
from tests.support.delivery import add_subscribers, make_edition, renderer, run_all_batches
from tests.test_bounces import bounce_logs, deliver, dsn, next_edition_recipients
from tests.test_reader_data import prefs, prefs_csrf

READER = "reader0@example.com"  # the one whose mailbox is full
OTHER = "reader1@example.com"  # the one whose mail arrives

FULL = {"action": "failed", "status": "5.2.2", "diagnostic": "smtp; 552 5.2.2 <reader0@example.com>: Mailbox full"}
QUOTA = {"action": "delayed", "status": "4.2.2",
         "diagnostic": "smtp; 452 4.2.2 The email account that you tried to reach is over quota"}
TRY_LATER = {"action": "failed", "status": "4.4.7", "diagnostic": "smtp; 451 4.4.7 mailbox temporarily unavailable"}
DELIVERED = {"action": "delivered", "status": "2.0.0", "diagnostic": "smtp; 250 2.0.0 Ok: queued as 4Tq3xL0f"}


@pytest.fixture
def readers(pg_env, smtp_sink):
    with session_scope() as s:
        add_subscribers(s, 2)
    return smtp_sink


def send_edition(sink) -> tuple[int, dict]:
    """A new digest for every reader, sent through the batch to the sink: (edition id,
    {address: what the sink received})."""
    sink.clear()
    with session_scope() as s:
        eid = make_edition(s)
        plan(s, eid, renderer=renderer())
    run_all_batches(eid)
    with session_scope() as s:
        audience = s.scalar(sa.select(sa.func.count()).select_from(Subscriber)
                            .where(~Subscriber.email.in_(sa.select(Suppression.email))))
    got = {m.rcpt_tos[0]: m for m in sink.wait_for(audience)}
    assert len(got) == audience
    return eid, got


def report(server, received, how: dict) -> tuple[int, str]:
    verp = received.mail_from
    return deliver(server.port, verp, dsn(verp, received.data, final=received.rcpt_tos[0], **how))


def suppressed(email: str = READER) -> tuple[str, str] | None:
    with session_scope() as s:
        row = s.scalar(sa.select(Suppression).where(Suppression.email == email))
        return (row.reason, row.detail) if row is not None else None


def soft_bounces(email: str = READER) -> int:
    with session_scope() as s:
        sub_id = s.scalar(sa.select(Subscriber.id).where(Subscriber.email == email))
        return actions.soft_count(s, sub_id, get_settings())


def test_three_editions_that_soft_bounce_suppress_the_address(readers, bounce_server):
    with bounce_logs() as logs:
        for n, how in enumerate((FULL, QUOTA, TRY_LATER), start=1):
            _, got = send_edition(readers)
            assert READER in got and OTHER in got  # still mailed: the count is not yet full
            assert report(bounce_server, got[READER], how) == (250, "2.0.0 soft_bounce")
            assert soft_bounces() == n
            if n < 3:
                assert suppressed() is None, f"suppressed after {n} soft bounce(s)"
    reason, detail = suppressed()
    assert reason == "soft_bounce" and "3 soft bounces within 15 days" in detail
    assert READER not in detail
    assert suppressed(OTHER) is None
    # The next edition leaves them out; the other reader still gets it.
    assert next_edition_recipients() == {OTHER}
    _, got = send_edition(readers)
    assert set(got) == {OTHER}
    # What an operator sees: one audit line for the limit, without the address; one log
    # line per report, none with an address (bounce_logs checks that).
    with session_scope() as s:
        lines = s.scalars(sa.select(AuditLog).where(AuditLog.action == "bounce.soft_limit")).all()
        events = s.execute(sa.select(FeedbackEvent.source, FeedbackEvent.kind, FeedbackEvent.status)
                           .order_by(FeedbackEvent.id)).all()
    assert len(lines) == 1 and lines[0].details["soft_bounces"] == 3 and READER not in str(lines[0].details)
    assert [e["event"] for e in logs if e["event"].startswith("bounce.")] == ["bounce.soft_bounce"] * 3
    assert [tuple(e) for e in events] == [("smtp", "soft", "5.2.2"), ("smtp", "soft", "4.2.2"),
                                         ("smtp", "soft", "4.4.7")]


def test_soft_bounces_for_the_same_edition_count_once(readers, bounce_server):
    _, first = send_edition(readers)
    # A delay notice, then the final "mailbox full" for the same message: one edition.
    assert report(bounce_server, first[READER], QUOTA)[0] == 250
    assert report(bounce_server, first[READER], FULL)[0] == 250
    assert report(bounce_server, first[READER], FULL)[0] == 250  # and the same DSN twice
    assert soft_bounces() == 1
    _, second = send_edition(readers)
    assert report(bounce_server, second[READER], FULL)[0] == 250
    assert report(bounce_server, second[READER], QUOTA)[0] == 250
    assert soft_bounces() == 2
    assert suppressed() is None  # five reports, two editions
    _, third = send_edition(readers)
    assert report(bounce_server, third[READER], FULL)[0] == 250
    assert suppressed()[0] == "soft_bounce"


def test_a_delivery_report_in_between_starts_the_count_again(readers, bounce_server):
    _, first = send_edition(readers)
    assert report(bounce_server, first[READER], FULL)[0] == 250
    _, second = send_edition(readers)
    assert report(bounce_server, second[READER], QUOTA)[0] == 250
    assert soft_bounces() == 2
    # The reader emptied their mailbox: the third edition arrives, and the receiving
    # system says so.
    _, third = send_edition(readers)
    assert report(bounce_server, third[READER], DELIVERED) == (250, "2.0.0 delivered")
    assert soft_bounces() == 0
    with session_scope() as s:
        assert s.scalar(sa.select(FeedbackEvent.kind).order_by(FeedbackEvent.id.desc()).limit(1)) == "delivered"
    # Two more soft bounces are two, not four; the third after the report suppresses.
    for n in (1, 2):
        _, got = send_edition(readers)
        assert report(bounce_server, got[READER], FULL)[0] == 250
        assert soft_bounces() == n and suppressed() is None
    _, got = send_edition(readers)
    assert report(bounce_server, got[READER], TRY_LATER)[0] == 250
    assert suppressed()[0] == "soft_bounce"


def test_a_delivery_report_for_another_reader_changes_nothing_for_this_one(readers, bounce_server):
    for _ in range(3):
        _, got = send_edition(readers)
        assert report(bounce_server, got[OTHER], DELIVERED)[0] == 250
        assert report(bounce_server, got[READER], FULL)[0] == 250
    assert suppressed()[0] == "soft_bounce" and suppressed(OTHER) is None


def _age_soft_bounces(edition_id: int, days: float) -> None:
    with session_scope() as s:
        s.execute(sa.update(FeedbackEvent).where(FeedbackEvent.edition_id == edition_id)
                  .values(received_at=utcnow() - dt.timedelta(days=days)))


def test_soft_bounces_older_than_soft_bounce_days_do_not_count(readers, bounce_server):
    first_id, first = send_edition(readers)
    assert report(bounce_server, first[READER], FULL)[0] == 250
    second_id, second = send_edition(readers)
    assert report(bounce_server, second[READER], QUOTA)[0] == 250
    _age_soft_bounces(first_id, 15.5)  # out of the window
    _age_soft_bounces(second_id, 14.5)  # still in it
    assert soft_bounces() == 1
    _, third = send_edition(readers)
    assert report(bounce_server, third[READER], FULL)[0] == 250
    assert soft_bounces() == 2 and suppressed() is None  # three editions, two within 15 days
    _, fourth = send_edition(readers)
    assert report(bounce_server, fourth[READER], TRY_LATER)[0] == 250
    reason, detail = suppressed()
    assert reason == "soft_bounce" and "3 soft bounces" in detail


def test_the_limit_and_the_window_are_settings(readers, bounce_server, monkeypatch):
    monkeypatch.setenv("SOFT_BOUNCE_LIMIT", "2")
    monkeypatch.setenv("SOFT_BOUNCE_DAYS", "3")
    reset_settings()
    first_id, first = send_edition(readers)
    assert report(bounce_server, first[READER], FULL)[0] == 250
    _age_soft_bounces(first_id, 4)
    _, second = send_edition(readers)
    assert report(bounce_server, second[READER], FULL)[0] == 250
    assert suppressed() is None  # the first is older than 3 days
    _, third = send_edition(readers)
    assert report(bounce_server, third[READER], FULL)[0] == 250
    reason, detail = suppressed()
    assert reason == "soft_bounce" and "2 soft bounces within 3 days" in detail


def test_a_lifted_soft_bounce_suppression_starts_the_count_again(readers, bounce_server):
    for _ in range(3):
        _, got = send_edition(readers)
        assert report(bounce_server, got[READER], FULL)[0] == 250
    with session_scope() as s:
        row_id = s.scalar(sa.select(Suppression.id).where(Suppression.email == READER))
        suppression.lift(s, row_id, "the reader emptied their mailbox", actor="admin-test", by_admin=True)
    assert soft_bounces() == 0
    # One more full mailbox is one, not four: the lift is a fresh start.
    _, got = send_edition(readers)
    assert READER in got
    assert report(bounce_server, got[READER], FULL)[0] == 250
    assert suppressed() is None and soft_bounces() == 1


def my_data(email: str) -> dict:
    """The reader's own export, as «نزّل بياناتي» on their preferences page gives it."""
    from service.web.app import create_app

    with session_scope() as s:
        sub = s.scalar(sa.select(Subscriber).where(Subscriber.email == email))
    client = TestClient(create_app())
    url = prefs(sub)
    resp = client.post(url, data={"csrf_token": prefs_csrf(client, url), "action": "export"})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_the_readers_own_export_shows_their_suppression(readers, bounce_server):
    assert my_data(READER)["suppression"] is None
    for _ in range(3):
        _, got = send_edition(readers)
        assert report(bounce_server, got[READER], FULL)[0] == 250
    data = my_data(READER)
    with session_scope() as s:
        since = s.scalar(sa.select(Suppression.created_at).where(Suppression.email == READER))
    assert data["suppression"] == {"reason": "soft_bounce", "since": since.isoformat()}
    assert dt.datetime.fromisoformat(data["suppression"]["since"]).tzinfo is not None
    assert len(data["sent"]) == 3 and data["profile"]["status"] == "active"
    assert my_data(OTHER)["suppression"] is None  # theirs only


def test_the_hourly_purge_forgets_delivery_reports_past_the_window_and_keeps_bounces(pg_env):
    """A provider sends a delivery report per message: past SOFT_BOUNCE_DAYS they restart
    nothing, so the purge deletes them; bounces and complaints stay on record."""
    from service.usecases.subscribers import purge

    with session_scope() as s:
        add_subscribers(s, 1)
        sub_id = s.scalar(sa.select(Subscriber.id))
        old = utcnow() - dt.timedelta(days=get_settings().soft_bounce_days + 1)
        recent = utcnow() - dt.timedelta(days=1)
        for kind, at in [("delivered", old), ("delivered", old), ("delivered", recent), ("hard", old),
                         ("complaint", old)]:
            s.add(FeedbackEvent(source="ses", kind=kind, subscriber_id=sub_id, received_at=at))
    purge()
    with session_scope() as s:
        left = sorted((k, a > utcnow() - dt.timedelta(days=2))
                      for k, a in s.execute(sa.select(FeedbackEvent.kind, FeedbackEvent.received_at)))
    assert left == [("complaint", False), ("delivered", True), ("hard", False)]
