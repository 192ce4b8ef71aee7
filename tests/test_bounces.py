"""Bounces and complaints that come back by mail, end to end on PostgreSQL.

Each test sends a real edition through the real delivery path to the SMTP sink, takes
the VERP envelope sender the sink recorded, builds the report a receiving system would
(a Postfix-style DSN, an ARF abuse report from a mailbox provider), and delivers it over
SMTP (smtplib) to the bounce server on a free loopback port.  Then it reads what a
reader or an operator would notice: the ledger row, the suppression list, the reader's
status, and whether the next edition still goes to them.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from service.config import get_settings
from service.db import session_scope
from service.delivery.compose import one_off_bounce_address
from service.delivery.one_off import send_transactional
from service.delivery.planner import plan
from service.delivery.smtp_pool import close_all as close_connection
from service.inbound.reports import MAX_INBOUND_BYTES, handle_inbound
from service.inbound.smtp_server import BounceServer
from service.models import (
    AuditLog,
    Delivery,
    DeliveryStatus,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from tests.support.bounce_samples import arf, dsn, headers_of
from tests.support.delivery import (
    make_edition,
    planned_edition,
    renderer,
    run_all_batches,
    snapshot,
)
from tests.support.net import free_port
from tests.support.readers import reader

FBL = "fbl@nashra.example"


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def bounce_server(pg_env):
    server = BounceServer("127.0.0.1", free_port(), feedback_addresses=(FBL,))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sent(pg_env, smtp_sink):
    """Three readers were sent a digest and the relay said 250 to each: {address: Received}."""
    eid = planned_edition(3)
    run_all_batches(eid)
    got = smtp_sink.wait_for(3)
    assert len(got) == 3
    return {m.rcpt_tos[0]: m for m in got}


def deliver(port: int, rcpt: str, data: bytes) -> tuple[int, str]:
    """One message over SMTP from the null sender, as an MTA sends a DSN; the final reply."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo("mx.example.net")
        code, _ = smtp.mail("")
        assert code == 250
        code, msg = smtp.rcpt(rcpt)
        if code != 250:
            return code, msg.decode()
        try:
            code, msg = smtp.data(data)
        except smtplib.SMTPDataError as exc:  # smtplib raises for a refusal of DATA itself
            return exc.smtp_code, exc.smtp_error.decode()
        return code, msg.decode()


def row_of(address: str) -> Delivery:
    with session_scope() as s:
        return s.scalar(sa.select(Delivery).join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                        .where(Subscriber.email == address).order_by(Delivery.id))


def next_edition_recipients() -> set[str]:
    with session_scope() as s:
        eid = make_edition(s)
        plan(s, eid, renderer=renderer())
    with session_scope() as s:
        return set(s.scalars(sa.select(Subscriber.email).join(Delivery, Delivery.subscriber_id == Subscriber.id)
                             .where(Delivery.edition_id == eid)))


@contextmanager
def bounce_logs():
    """Our log lines while the block runs; asserts none of them carries an address."""
    with capture_logs() as logs:
        yield logs
    dumped = json.dumps(logs, default=str)
    assert "@example.com" not in dumped and "+b." not in dumped and "@nashra.example" not in dumped, dumped


def events(logs, prefix="bounce.") -> list[dict]:
    return [e for e in logs if e["event"].startswith(prefix)]


# ---------------------------------------------------------------- what works


def test_hard_bounce_after_250_fails_the_row_suppresses_and_the_next_edition_leaves_them_out(sent, bounce_server):
    original = sent["reader1@example.com"]
    verp = original.mail_from
    assert verp.startswith("newsletter+b.")
    with bounce_logs() as logs:
        code, reply = deliver(bounce_server.port, verp, dsn(verp, original.data))
    assert (code, reply) == (250, "2.0.0 hard_bounce")

    row = row_of("reader1@example.com")
    assert row.status == DeliveryStatus.failed and row.smtp_code == 550
    assert "5.1.1" in row.smtp_reply and "User unknown" in row.smtp_reply
    assert "reader1@example.com" not in row.smtp_reply  # scrubbed, like every stored reply
    with session_scope() as s:
        sup = s.scalar(sa.select(Suppression).where(Suppression.email == "reader1@example.com"))
        assert sup.reason == "hard_bounce"
        actions = set(s.scalars(sa.select(AuditLog.action).where(AuditLog.actor == "bounces")))
        assert actions == {"suppress", "bounce.hard_bounce"}
    (line,) = events(logs)
    assert line["event"] == "bounce.hard_bounce" and line["delivery_id"] == row.id and line["status"] == "5.1.1"
    # the other readers' rows are untouched
    assert row_of("reader0@example.com").status == DeliveryStatus.sent

    # The relay sends the same DSN again (it does): nothing more happens.
    before = snapshot()
    code, reply = deliver(bounce_server.port, verp, dsn(verp, original.data))
    assert code == 250 and snapshot() == before

    assert next_edition_recipients() == {"reader0@example.com", "reader2@example.com"}


def test_complaint_suppresses_unsubscribes_and_the_next_edition_leaves_them_out(sent, bounce_server):
    original = sent["reader2@example.com"]
    verp = original.mail_from
    with bounce_logs() as logs:
        code, _ = deliver(bounce_server.port, verp, arf(verp, original.data, verp))
    assert code == 250
    with session_scope() as s:
        sub = s.scalar(sa.select(Subscriber).where(Subscriber.email == "reader2@example.com"))
        assert sub.status == SubscriberStatus.unsubscribed and sub.token_version == 2  # old links dead
        assert s.scalar(sa.select(Suppression.reason).where(Suppression.email == sub.email)) == "complaint"
        assert s.scalar(sa.select(AuditLog).where(AuditLog.action == "complaint")).target.startswith("delivery:")
    assert row_of("reader2@example.com").status == DeliveryStatus.sent  # it was delivered; they complained
    (line,) = events(logs)
    assert line["event"] == "bounce.complaint" and line["feedback_type"] == "abuse"

    before = snapshot()
    assert deliver(bounce_server.port, verp, arf(verp, original.data, verp))[0] == 250
    assert snapshot() == before
    assert next_edition_recipients() == {"reader0@example.com", "reader1@example.com"}


def test_complaint_to_the_feedback_address_is_mapped_through_the_original_return_path(sent, bounce_server):
    original = sent["reader0@example.com"]
    code, reply = deliver(bounce_server.port, FBL, arf(FBL, original.data, original.mail_from))
    assert (code, reply) == (250, "2.0.0 complaint")
    with session_scope() as s:
        assert s.scalar(sa.select(Subscriber.status).where(Subscriber.email == "reader0@example.com")) \
            == SubscriberStatus.unsubscribed
    # Mapped through the Message-ID alone (a provider that strips Return-Path) works too.
    other = sent["reader1@example.com"]
    without_path = headers_of(other.data)
    report = arf(FBL, without_path, "x").replace(b"Return-Path: <x>\r\n", b"")
    assert deliver(bounce_server.port, FBL, report) == (250, "2.0.0 complaint")
    assert "reader1@example.com" not in next_edition_recipients()


def test_delayed_dsn_is_noted_on_the_row_without_changing_its_status(sent, bounce_server):
    original = sent["reader0@example.com"]
    verp = original.mail_from
    report = dsn(verp, original.data, action="delayed", status="4.4.7",
                 diagnostic="smtp; 451 4.4.7 <reader0@example.com> mailbox temporarily unavailable")
    assert deliver(bounce_server.port, verp, report) == (250, "2.0.0 soft_bounce")
    row = row_of("reader0@example.com")
    assert row.status == DeliveryStatus.sent and row.smtp_code == 250
    assert "delayed 4.4.7" in row.smtp_reply and "reader0@example.com" not in row.smtp_reply
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Suppression)) == 0
    before = snapshot()
    assert deliver(bounce_server.port, verp, report)[0] == 250
    assert snapshot() == before
    assert "reader0@example.com" in next_edition_recipients()


def test_a_full_mailbox_is_a_soft_bounce_noted_on_the_row_and_not_suppressed(sent, bounce_server):
    # 5.2.2 is "full for now": the soft-bounce policy (test_soft_bounce_policy.py) decides
    # when it is for good.
    original = sent["reader0@example.com"]
    verp = original.mail_from
    report = dsn(verp, original.data, status="5.2.2", diagnostic="smtp; 552 5.2.2 mailbox full")
    assert deliver(bounce_server.port, verp, report) == (250, "2.0.0 soft_bounce")
    row = row_of("reader0@example.com")
    assert row.status == DeliveryStatus.sent and "5.2.2" in row.smtp_reply
    assert "reader0@example.com" in next_edition_recipients()  # a full mailbox may empty


def test_out_of_office_reply_is_ignored_with_one_log_line(sent, bounce_server):
    verp = sent["reader0@example.com"].mail_from
    ooo = (
        b"From: reader0@example.com\r\nTo: " + verp.encode() + b"\r\n"
        b"Subject: =?utf-8?b?2K7Yp9ix2Kwg2KfZhNmF2YPYqtio?=\r\n"
        b"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        + "أنا خارج المكتب حتى الأحد.".encode() + b"\r\n"
    )
    before = snapshot()
    with bounce_logs() as logs:
        assert deliver(bounce_server.port, verp, ooo) == (250, "2.0.0 ignored")
    assert snapshot() == before
    (line,) = events(logs)
    assert line["event"] == "bounce.ignored" and line["reason"] == "auto-reply"


# ---------------------------------------------------------------- hostile input: refused, nothing changed


def test_forged_verp_signature_is_refused_at_rcpt_and_by_handle_inbound(sent, bounce_server):
    original = sent["reader1@example.com"]
    real = original.mail_from
    delivery_id = int(real.split("+b.")[1].split(".")[0])
    local, _, domain = real.partition("@")
    forged = local[:-10] + ("0" * 10 if local[-10:] != "0" * 10 else "1" * 10) + "@" + domain
    other_row = f"newsletter+b.{delivery_id + 1}.{local[-10:]}@{domain}"  # a real signature, wrong id
    before = snapshot()
    with bounce_logs() as logs:
        assert deliver(bounce_server.port, forged, dsn(forged, original.data))[0] == 550
        assert deliver(bounce_server.port, other_row, dsn(other_row, original.data))[0] == 550
        assert deliver(bounce_server.port, "postmaster@nashra.example", b"Subject: hi\r\n\r\nhi\r\n")[0] == 550
        with session_scope() as s:
            result = handle_inbound(s, forged, dsn(forged, original.data))
    assert result.outcome == "rejected" and "forged" in result.reason and not result.changed
    assert snapshot() == before
    assert [e["event"] for e in logs].count("bounce_server.rcpt_refused") == 3


def test_dsn_whose_original_headers_name_another_row_is_refused(sent, bounce_server):
    mine, theirs = sent["reader0@example.com"], sent["reader1@example.com"]
    verp = mine.mail_from
    before = snapshot()
    with bounce_logs() as logs:
        # Addressed to my own VERP (a reader knows it: it is their message's Return-Path),
        # but carrying another reader's Message-ID, to get them suppressed.
        code, reply = deliver(bounce_server.port, verp, dsn(verp, theirs.data))
        assert code == 554 and "another delivery" in reply
        # ... or another row's (validly signed) VERP as the original Return-Path.
        forged_original = b"Return-Path: <" + theirs.mail_from.encode() + b">\r\n" + headers_of(mine.data)
        assert deliver(bounce_server.port, verp, dsn(verp, forged_original))[0] == 554
    assert snapshot() == before
    assert [e["reason"] for e in events(logs)] == ["the original Message-ID names another delivery",
                                                   "the original headers name another delivery"]


def test_ten_megabyte_message_is_refused_while_it_streams_in(sent, bounce_server):
    original = sent["reader1@example.com"]
    verp = original.mail_from
    huge = dsn(verp, original.data) + b"X" * 76 + (b"\r\n" + b"X" * 76) * (10_000_000 // 78)
    assert len(huge) > 10_000_000
    before = snapshot()
    code, _ = deliver(bounce_server.port, verp, huge)
    assert code == 552
    with bounce_logs() as logs, session_scope() as s:
        result = handle_inbound(s, verp, huge)
    assert result.outcome == "rejected" and str(MAX_INBOUND_BYTES) in result.reason
    assert snapshot() == before
    assert events(logs)[0]["event"] == "bounce.rejected"


@pytest.mark.parametrize("body", [
    # says multipart/report but has no boundary
    b"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status\r\n\r\n"
    b"Action: failed\r\nStatus: 5.1.1\r\n",
    # cut short: the closing boundary never comes
    b"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=Q\r\n\r\n"
    b"--Q\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
    b"Action: failed\r\nStatus: 5.1.1\r\n",
    # a delivery-status report without its delivery-status part
    b"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=Q\r\n\r\n"
    b"--Q\r\nContent-Type: text/plain\r\n\r\nfailed 5.1.1\r\n--Q--\r\n",
], ids=["no-boundary", "truncated", "no-status-part"])
def test_broken_mime_in_a_bounce_is_still_read(sent, bounce_server, body):
    # Issue 21: real MTAs write broken MIME (about one real bounce in ten), and a bounce
    # handler must still read it.  These reports used to be refused with 554; broken
    # structure is not a contradiction, and the signed VERP address alone names the row.
    verp = sent["reader1@example.com"].mail_from
    with bounce_logs() as logs:
        assert deliver(bounce_server.port, verp, body) == (250, "2.0.0 hard_bounce")
    assert row_of("reader1@example.com").status == DeliveryStatus.failed
    assert _suppressed("reader1@example.com") == "hard_bounce"
    assert row_of("reader0@example.com").status == DeliveryStatus.sent  # only the addressed row
    (line,) = events(logs)
    assert line["event"] == "bounce.hard_bounce" and line["status"] == "5.1.1"


def test_bytes_with_no_header_block_are_refused(sent, bounce_server):
    # binary garbage, in lines short enough for SMTP: no mail at all
    body = b"\r\n".join(bytes(range(14, 256))[i:i + 60] + b"\x00\x01" for i in range(0, 240, 60)) * 4
    verp = sent["reader1@example.com"].mail_from
    before = snapshot()
    with bounce_logs() as logs:
        code, _ = deliver(bounce_server.port, verp, body)
    assert code == 554
    assert snapshot() == before
    (line,) = events(logs)
    assert line["event"] == "bounce.rejected" and line["reason"]


@pytest.mark.parametrize("block", [
    # a bare CR: one parser reads "delivered", another "failed"
    b"Final-Recipient: rfc822; reader1@example.com\r\nAction: delivered\rAction: failed\r\nStatus: 5.1.1\r\n",
    # a bare LF smuggling a second Status
    b"Final-Recipient: rfc822; reader1@example.com\r\nAction: failed\r\nStatus: 2.0.0\nStatus: 5.1.1\r\n",
    # a folded Status that is no status
    b"Final-Recipient: rfc822; reader1@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n 2.0.0\r\n",
    # a bare CR inside the diagnostic
    b"Final-Recipient: rfc822; reader1@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    b"Diagnostic-Code: smtp; 550 no\rStatus: 2.0.0\r\n",
    # an address where the action belongs (and it must not reach the log)
    b"Final-Recipient: rfc822; reader1@example.com\r\nAction: reader1@example.com\r\nStatus: 5.1.1\r\n",
], ids=["cr-action", "lf-status", "folded-status", "cr-diagnostic", "address-as-action"])
def test_report_with_cr_or_lf_inside_fields_is_refused(sent, bounce_server, block):
    original = sent["reader1@example.com"]
    verp = original.mail_from
    before = snapshot()
    with bounce_logs() as logs:
        code, _ = deliver(bounce_server.port, verp, dsn(verp, original.data, block=block))
    assert code == 554
    assert snapshot() == before
    assert events(logs)[0]["event"] == "bounce.rejected"


def test_bounce_for_a_reader_who_no_longer_exists_changes_nothing(sent, bounce_server):
    original = sent["reader1@example.com"]
    verp = original.mail_from
    with session_scope() as s:  # erased on request: their ledger rows go with them
        s.execute(sa.delete(Subscriber).where(Subscriber.email == "reader1@example.com"))
    before = snapshot()
    with bounce_logs() as logs:
        assert deliver(bounce_server.port, verp, dsn(verp, original.data)) == (250, "2.0.0 ignored")
        assert deliver(bounce_server.port, verp, arf(verp, original.data, verp)) == (250, "2.0.0 ignored")
    assert snapshot() == before
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Suppression)) == 0
    assert [e["reason"] for e in events(logs)] == ["no such delivery: the reader or the edition no longer exists"] * 2


def test_unsigned_complaint_to_the_feedback_address_is_refused(sent, bounce_server):
    """Without a VERP rcpt, only our signed headers can name the row."""
    original = sent["reader1@example.com"]
    forged_mid = headers_of(original.data).replace(b"Message-ID: <nashra.", b"Message-ID: <nashra.9")
    before = snapshot()
    code, reply = deliver(bounce_server.port, FBL, arf(FBL, forged_mid, "bounces@elsewhere.example"))
    assert code == 554 and "forged Message-ID" in reply
    # and a DSN (not a complaint) to the feedback address has no row to name
    assert deliver(bounce_server.port, FBL, dsn(FBL, original.data))[0] == 554
    assert snapshot() == before



def test_nashra_bounces_serve_applies_a_bounce_and_stops_on_sigterm(sent):
    """The command operators run (the `bounces` compose service), as a real process."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "bounces", "serve", "--port", str(port)],
        env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert "listening" in proc.stdout.readline()
        original = sent["reader2@example.com"]
        verp = original.mail_from
        deadline = time.monotonic() + 10
        while True:
            try:
                reply = deliver(port, verp, dsn(verp, original.data))
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert reply == (250, "2.0.0 hard_bounce")
        assert row_of("reader2@example.com").status == DeliveryStatus.failed
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        err = proc.stderr.read()
        assert "bounce.hard_bounce" in err and "reader2@example.com" not in err and "+b." not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_nashra_bounces_serve_on_a_taken_port_is_a_clear_error(pg_env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "service", "bounces", "serve", "--port", str(port)],
                              env=os.environ.copy(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- one-off mails (no ledger row)


def _one_off(smtp_sink, kind: str, email: str) -> tuple[int, object]:
    """A reader in the state `kind` is sent to, that mail really sent: (their id, Received)."""
    status = SubscriberStatus.pending if kind == "confirm" else SubscriberStatus.active
    close_connection()
    with session_scope() as s:
        sub = reader(s, email, status=status)
        assert send_transactional(s, kind, sub.id)
        sub_id = sub.id
    close_connection()
    [got] = [m for m in smtp_sink.messages if m.rcpt_tos == [email]]
    return sub_id, got


def _suppressed(email: str) -> str | None:
    with session_scope() as s:
        return s.scalar(sa.select(Suppression.reason).where(Suppression.email == email))


@pytest.mark.parametrize("kind", ["confirm", "welcome"])
def test_hard_bounce_of_a_confirmation_or_welcome_suppresses_the_address(pg_env, smtp_sink, bounce_server, kind):
    sub_id, original = _one_off(smtp_sink, kind, "typo@example.com")
    verp = original.mail_from
    assert verp.startswith(f"newsletter+s.{sub_id}.")  # signed, and no ledger row behind it
    with bounce_logs() as logs:
        assert deliver(bounce_server.port, verp, dsn(verp, original.data)) == (250, "2.0.0 hard_bounce")
    assert "+s." not in json.dumps(logs, default=str)
    assert _suppressed("typo@example.com") == "hard_bounce"
    with session_scope() as s:
        entry = s.scalar(sa.select(AuditLog).where(AuditLog.action == "bounce.hard_bounce"))
        assert (entry.actor, entry.target) == ("bounces", f"subscriber:{sub_id}")
        assert entry.details["one_off"] == kind and entry.details["status"] == "5.1.1"
    (line,) = events(logs)
    assert line["event"] == "bounce.hard_bounce" and line["subscriber_id"] == sub_id and line["one_off"] == kind

    # The address gets nothing more: not this mail again, nor the next edition.
    with session_scope() as s:
        assert send_transactional(s, kind, sub_id) is False
    if kind == "welcome":
        assert "typo@example.com" not in next_edition_recipients()

    # The relay sends the same DSN again: nothing more happens.
    before = snapshot()
    assert deliver(bounce_server.port, verp, dsn(verp, original.data))[0] == 250
    assert snapshot() == before


def test_a_welcome_to_a_full_mailbox_or_delayed_does_not_suppress(pg_env, smtp_sink, bounce_server):
    _, original = _one_off(smtp_sink, "welcome", "full@example.com")
    verp = original.mail_from
    full = dsn(verp, original.data, status="5.2.2", diagnostic="smtp; 552 5.2.2 mailbox full")
    late = dsn(verp, original.data, action="delayed", status="4.4.7", diagnostic="smtp; 451 4.4.7 try later")
    before = snapshot()
    assert deliver(bounce_server.port, verp, full) == (250, "2.0.0 soft_bounce")
    assert deliver(bounce_server.port, verp, late) == (250, "2.0.0 soft_bounce")
    assert snapshot() == before and _suppressed("full@example.com") is None
    assert "full@example.com" in next_edition_recipients()


def test_complaint_about_a_welcome_suppresses_and_unsubscribes(pg_env, smtp_sink, bounce_server):
    sub_id, original = _one_off(smtp_sink, "welcome", "angry@example.com")
    verp = original.mail_from
    # Straight to its VERP address, or to the feedback address through the original Return-Path.
    assert deliver(bounce_server.port, FBL, arf(FBL, original.data, verp)) == (250, "2.0.0 complaint")
    with session_scope() as s:
        sub = s.get(Subscriber, sub_id)
        assert sub.status is SubscriberStatus.unsubscribed
    assert _suppressed("angry@example.com") == "complaint"
    before = snapshot()
    assert deliver(bounce_server.port, verp, arf(verp, original.data, verp)) == (250, "2.0.0 complaint")
    assert snapshot() == before  # already done: nothing more


def test_a_badly_signed_one_off_address_is_refused(pg_env, smtp_sink, bounce_server):
    sub_id, original = _one_off(smtp_sink, "confirm", "someone@example.com")
    real = original.mail_from
    local, _, domain = real.partition("@")
    sig = local[-10:]
    forged = local[:-10] + ("0" * 10 if sig != "0" * 10 else "1" * 10) + "@" + domain
    other_reader = f"newsletter+s.{sub_id + 1}.{sig}@{domain}"  # a real signature, someone else
    as_editor = f"newsletter+e.{sub_id}.{sig}@{domain}"  # the tag is signed too
    before = snapshot()
    with bounce_logs() as logs:
        for address in (forged, other_reader, as_editor):
            assert deliver(bounce_server.port, address, dsn(address, original.data))[0] == 550, address
        with session_scope() as s:
            result = handle_inbound(s, forged, dsn(forged, original.data))
        # A complaint to the feedback address whose embedded Return-Path is forged.
        assert deliver(bounce_server.port, FBL, arf(FBL, original.data, forged))[0] == 554
    assert "+s." not in json.dumps(logs, default=str) and "+e." not in json.dumps(logs, default=str)
    assert result.outcome == "rejected" and "forged" in result.reason and not result.changed
    assert snapshot() == before and _suppressed("someone@example.com") is None
    assert [e["event"] for e in logs].count("bounce_server.rcpt_refused") == 3


def test_a_bounce_of_an_editors_test_copy_is_taken_and_changes_nothing(pg_env, smtp_sink, bounce_server):
    verp = one_off_bounce_address(get_settings(), editor_id=7)
    before = snapshot()
    original = b"Message-ID: <nashra.test.0123456789abcdef0123@nashra.example>\r\nSubject: x\r\n\r\nx\r\n"
    assert deliver(bounce_server.port, verp, dsn(verp, original)) == (250, "2.0.0 ignored")
    assert snapshot() == before
