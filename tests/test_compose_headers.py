"""One composer for every message: the headers each kind carries (service/delivery/compose.py's
table), a DKIM signature that verifies on all of them; the confirmation, the welcome and the
editors' test copy as a real SMTP peer receives them (PostgreSQL behind); and one-off VERP
addresses the bounce reader neither mistakes for a ledger row nor calls forged."""

from __future__ import annotations

import base64
import email
import email.policy
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.config import get_settings, reset_settings
from service.db import session_scope
from service.delivery.compose import (
    bounce_address,
    compose,
    compose_one,
    delivery_for_bounce,
    one_off_bounce_address,
    one_off_for_bounce,
    prepare,
    send_composed,
)
from service.delivery.one_off import send_transactional
from service.delivery.smtp_pool import close_all as close_connection
from service.inbound.reports import handle_inbound
from service.models import Delivery, Section, Subscriber, SubscriberStatus, Suppression
from service.rendering.render import render_variant
from service.rendering.viewmodels import PREFERENCES_URL, UNSUBSCRIBE_URL, RenderedVariant
from service.staff.editors import create_editor
from service.usecases.alerts import send_test_alert
from service.web.auth import EditorIdentity
from tests.support import email_samples as samples
from tests.support.net import free_port
from tests.support.readers import reader

SELECTOR = "nashra"
DOMAIN = "nashra.example"  # of the default MAIL_FROM
HTML = f'<p dir="rtl">مرحبا <a href="{UNSUBSCRIBE_URL}">إلغاء</a> <a href="{PREFERENCES_URL}">تفضيلات</a></p>'
TEXT = f"مرحبا\n\u200f{UNSUBSCRIBE_URL}\n\u200f{PREFERENCES_URL}\n"
FBL = "fbl@nashra.example"
ALERT = {"headline": "عاجل: زلزال بقوة 5 درجات يضرب شمال المغرب",
         "url": "https://news.example/world/2021/11/24/quake", "summary": "لا أنباء عن إصابات حتى الآن."}


# ---------------------------------------------------------------- helpers


def enable_dkim(tmp_path: Path, monkeypatch) -> Callable:
    """Generate a DKIM key, configure the service to sign with it, return a dnsfunc for dkim.verify."""
    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    pub = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"], check=True,
                         capture_output=True).stdout
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(pub)
    monkeypatch.setenv("DKIM_SELECTOR", SELECTOR)
    monkeypatch.setenv("DKIM_PRIVATE_KEY_PATH", str(key))
    reset_settings()

    def dns(name, timeout=5):
        assert name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode()
        return record

    return dns


def assert_dkim_verifies(data: bytes, dns) -> set[str]:
    """The signature is first, verifies, and breaks when the body changes; returns the signed header names."""
    import dkim

    assert data.startswith(b"DKIM-Signature:")
    assert dkim.verify(data, dnsfunc=dns)
    tampered = data.replace(b"Content-Transfer-Encoding: base64\r\n\r\n", b"Content-Transfer-Encoding: base64\r\n\r\nA", 1)
    assert not dkim.verify(tampered, dnsfunc=dns)
    sig = email.message_from_bytes(data, policy=email.policy.compat32)["DKIM-Signature"]
    return {h.strip().lower() for h in sig.split("h=")[1].split(";")[0].replace("\r\n", "").split(":")}


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def assert_our_message_id(msg, kind: str) -> None:
    assert re.fullmatch(rf"<nashra\.{kind}\.[0-9a-f]{{20}}@{re.escape(DOMAIN)}>", msg["Message-ID"]), msg["Message-ID"]


def _report(to: str, report_type: str, report: bytes, original: bytes) -> bytes:
    """A multipart/report as an MTA (DSN) or a feedback loop (ARF) sends one."""
    original_type = b"text/rfc822-headers" if report_type == "delivery-status" else b"message/rfc822"
    if report_type == "delivery-status":
        original = original.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    return (
        b"From: MAILER-DAEMON@mx.example.net\r\nTo: " + to.encode() + b"\r\nSubject: report\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=" + report_type.encode()
        + b'; boundary="r.1"\r\n\r\n--r.1\r\nContent-Type: text/plain\r\n\r\nA report.\r\n'
        b"\r\n--r.1\r\nContent-Type: message/" + report_type.encode() + b"\r\n\r\n" + report
        + b"\r\n--r.1\r\nContent-Type: " + original_type + b"\r\n\r\n" + original + b"\r\n--r.1--\r\n"
    )


def dsn(verp: str, original: bytes) -> bytes:
    status = (b"Reporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822; r@example.com\r\n"
              b"Action: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\r\n")
    return _report(verp, "delivery-status", status, original)


def arf(to: str, original: bytes, return_path: str) -> bytes:
    feedback = (b"Feedback-Type: abuse\r\nUser-Agent: ISP-FBL/2.1\r\nVersion: 1\r\n"
                b"Original-Mail-From: <" + return_path.encode() + b">\r\n")
    return _report(to, "feedback-report", feedback, b"Return-Path: <" + return_path.encode() + b">\r\n" + original)


# ---------------------------------------------------------------- the table, kind by kind

# kind: (List-Unsubscribe pair, Precedence: bulk, List-Id, marked as a test)
EXPECTED = {
    "digest": (True, True, "<digest.nashra.example>", False),
    "alert": (True, True, "<alerts.nashra.example>", False),
    "correction": (True, True, "<digest.nashra.example>", False),
    "welcome": (True, False, "<digest.nashra.example>", False),
    "confirm": (False, False, "<digest.nashra.example>", False),
    "test": (False, False, "<alerts.nashra.example>", True),
}


def _compose(kind: str):
    """One message of `kind`, the way its production caller builds it."""
    settings = get_settings()
    if kind in ("digest", "alert", "correction"):  # a ledger row (service/delivery/batch.py)
        tpl = prepare(7, kind, "all", "خبر اليوم", HTML, TEXT, settings=settings)
        return compose(tpl, delivery_id=11, subscriber_id=5, token_version=2, to_addr="r@example.com",
                       settings=settings)
    if kind == "test":  # an editor's copy (service/usecases/alerts.py)
        variant = render_variant("alert", samples.all_contexts()["alert"])
        return compose_one("test", variant, to_addr="desk@example.com", editor_id=3, settings=settings)
    # confirm, welcome (service/editions/transactional.py)
    return compose_one(kind, RenderedVariant(subject="خبر اليوم", html=HTML, text=TEXT), to_addr="r@example.com",
                       subscriber_id=5, token_version=2, settings=settings)


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_every_kind_gets_its_headers_from_the_one_composer(kind, tmp_path, monkeypatch):
    dns = enable_dkim(tmp_path, monkeypatch)
    out = _compose(kind)
    msg = parse(out.data)
    unsubscribe, bulk, list_id, test = EXPECTED[kind]

    for name in ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "List-Id", "Feedback-ID"):
        assert len(msg.get_all(name) or []) == 1, name
    assert msg["Message-ID"] == out.message_id and out.message_id.endswith(f"@{DOMAIN}>")
    assert msg["List-Id"] == list_id
    assert msg["Feedback-ID"].endswith(f":{kind}:nashra:{DOMAIN}")
    assert ("List-Unsubscribe" in msg, "List-Unsubscribe-Post" in msg) == (unsubscribe, unsubscribe)
    if unsubscribe:
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        https, mailto = re.fullmatch(r"<([^>]+)>, <([^>]+)>", msg["List-Unsubscribe"]).groups()
        assert https.startswith(get_settings().public_url + "/unsubscribe/")
        assert mailto.startswith(f"mailto:unsubscribe@{DOMAIN}?subject=unsubscribe%20")
        assert https in msg.get_body(("html",)).get_content()  # the header and the body: one link
    assert (msg["Precedence"] == "bulk") is bulk
    assert ("X-Nashra-Test" in msg) is test
    assert msg["Subject"].startswith("[تجربة] ") is test
    assert "Return-Path" not in msg  # the receiving MTA writes it from the envelope sender

    if kind in ("digest", "alert", "correction"):
        assert delivery_for_bounce(out.envelope_from) == 11
        assert msg["Message-ID"].startswith("<nashra.7.5.")  # stable per ledger row
    elif kind == "test":
        assert one_off_for_bounce(out.envelope_from) == ("editor", 3)
    else:
        assert one_off_for_bounce(out.envelope_from) == ("subscriber", 5)
        assert_our_message_id(msg, kind)
    assert "r@example.com" not in out.envelope_from and "desk" not in out.envelope_from

    signed = assert_dkim_verifies(out.data, dns)
    assert {"from", "to", "subject", "date", "message-id", "list-id", "list-unsubscribe",
            "list-unsubscribe-post"} <= signed


@pytest.mark.parametrize("relays,carries", [
    ("smtp://127.0.0.1:1025", False),
    ("smtp+starttls://token:token@smtp.postmarkapp.com:587", True),
    ("smtp://127.0.0.1:1025,smtp+starttls://token:token@smtp-broadcasts.postmarkapp.com:587", True),
])
def test_only_mail_through_postmark_carries_its_message_id_as_postmark_metadata(relays, carries, monkeypatch):
    # Postmark replaces our Message-ID with its own; its webhooks find the ledger row
    # through this metadata header (service/inbound/webhooks/postmark.py).
    monkeypatch.setenv("SMTP_URL", relays)
    reset_settings()
    out = _compose("digest")
    msg = parse(out.data)
    assert msg.get("X-PM-Metadata-nashra_message_id") == (out.message_id if carries else None)


def test_subscribed_mail_without_a_reader_and_unknown_kinds_are_refused():
    tpl = prepare(None, "welcome", "one-off", "أهلاً", HTML, TEXT)
    with pytest.raises(ValueError, match="subscribed mail"):
        compose(tpl, to_addr="r@example.com")  # no reader: no unsubscribe link to give
    with pytest.raises(ValueError, match="unknown kind"):
        prepare(1, "newsletter", "all", "x", HTML, TEXT)
    with pytest.raises(ValueError, match="CR, LF"):
        compose(tpl, to_addr="r@example.com\r\nBcc: x@example.com", subscriber_id=1, token_version=1)


def test_a_one_off_message_id_is_new_every_time():
    one = _compose("welcome").message_id
    two = _compose("welcome").message_id
    assert one != two  # a second confirmation the reader asked for must not be folded away


# ---------------------------------------------------------------- VERP for one-offs


def test_one_off_verp_addresses_are_signed_and_never_a_ledger_row():
    settings = get_settings()
    sub = one_off_bounce_address(settings, subscriber_id=42)
    ed = one_off_bounce_address(settings, editor_id=42)
    assert sub.startswith("newsletter+s.42.") and sub.endswith(f"@{DOMAIN}")
    assert ed.startswith("newsletter+e.42.")
    assert one_off_for_bounce(sub) == ("subscriber", 42) and one_off_for_bounce(ed) == ("editor", 42)
    assert one_off_for_bounce(f"<{sub}>") == ("subscriber", 42)
    # the tag is signed: a subscriber's address cannot be turned into an editor's, nor the id changed
    assert one_off_for_bounce(sub.replace("+s.", "+e.")) is None
    assert one_off_for_bounce(sub.replace("+s.42.", "+s.43.")) is None
    # and the two families do not overlap
    assert delivery_for_bounce(sub) is None and delivery_for_bounce(ed) is None
    assert one_off_for_bounce(bounce_address(settings, 42)) is None
    with pytest.raises(ValueError):
        one_off_bounce_address(settings)


def test_the_bounce_reader_takes_reports_about_one_offs_for_their_reader_not_a_row(db_session):
    """No ledger row to touch: a DSN to a one-off's VERP address, or a complaint quoting a
    one-off, is read as about the reader it names (here one who no longer exists, so it
    changes nothing), never as about a ledger row, and not taken for a forgery
    (tests/test_bounces.py has the readers who do exist, over SMTP)."""
    welcome = _compose("welcome")
    original = welcome.data
    before = db_session.scalar(sa.select(sa.func.count()).select_from(Suppression))
    for rcpt, report in (
        (welcome.envelope_from, dsn(welcome.envelope_from, original)),
        (FBL, arf(FBL, original, welcome.envelope_from)),
    ):
        result = handle_inbound(db_session, rcpt, report)
        assert (result.outcome, result.reason, result.changed) == ("ignored", "the reader no longer exists", False)
        assert result.delivery_id is None and result.details["subscriber_id"] == 5
    assert db_session.scalar(sa.select(sa.func.count()).select_from(Suppression)) == before
    assert db_session.scalar(sa.select(sa.func.count()).select_from(Delivery)) == 0


# ---------------------------------------------------------------- confirmation and welcome, over SMTP


@pytest.fixture
def mail_env(pg_env, smtp_sink, tmp_path, monkeypatch):
    """PostgreSQL, the SMTP sink, DKIM on, and https links as in production: the dnsfunc."""
    monkeypatch.setenv("PUBLIC_URL", "https://news.example")
    dns = enable_dkim(tmp_path, monkeypatch)  # also reloads the settings
    close_connection()
    yield dns
    close_connection()


def _reader(status: SubscriberStatus) -> int:
    with session_scope() as s:
        sport = Section(slug="sport", name="رياضة", position=1)
        s.add(sport)
        s.flush()
        sub = reader(s, "reader@example.com", status=status, sections=[sport.id])
        return sub.id


def _send(kind: str, subscriber_id: int) -> None:
    with session_scope() as s:
        assert send_transactional(s, kind, subscriber_id)


def _common(got, kind: str, subscriber_id: int, dns) -> set[str]:
    """What every one-off carries: envelope, List-Id, Message-ID, a DKIM signature that verifies."""
    msg = got.message
    assert got.rcpt_tos == ["reader@example.com"] and msg["To"] == "reader@example.com"
    # VERP: signed, names the reader by id (never by address), and is no ledger row's
    assert one_off_for_bounce(got.mail_from) == ("subscriber", subscriber_id)
    assert got.mail_from.startswith("newsletter+s.") and "reader" not in got.mail_from
    assert delivery_for_bounce(got.mail_from) is None
    assert msg["List-Id"] == "<digest.nashra.example>"
    assert_our_message_id(msg, kind)
    assert msg["Date"] and msg["Subject"] and "نشرة" in str(msg["From"])
    return assert_dkim_verifies(got.data, dns)  # as received, after the SMTP trip


def test_the_welcome_mail_carries_one_click_unsubscribe_verp_and_dkim(mail_env, smtp_sink):
    sub_id = _reader(SubscriberStatus.active)
    _send("welcome", sub_id)
    [got] = smtp_sink.wait_for(1, timeout=10)
    signed = _common(got, "welcome", sub_id, mail_env)
    msg = got.message

    https, mailto = re.fullmatch(r"<([^>]+)>, <([^>]+)>", msg["List-Unsubscribe"]).groups()
    assert https.startswith("https://news.example/unsubscribe/")
    token = https.rsplit("/", 1)[1]
    assert mailto == f"mailto:unsubscribe@nashra.example?subject=unsubscribe%20{token}"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert {"list-unsubscribe", "list-unsubscribe-post"} <= signed  # RFC 8058 §4
    assert "Precedence" not in msg
    # the body's link and the header's are the same token
    assert f'href="{https}"' in msg.get_body(("html",)).get_content()
    assert "https://news.example/preferences/" in msg.get_body(("plain",)).get_content()

    # and the header's URL is a working one-click endpoint: a mail client's bare POST
    from service.web.app import create_app

    with TestClient(create_app()) as client:
        resp = client.post(https.removeprefix("https://news.example"), content=b"List-Unsubscribe=One-Click",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 200
    with session_scope() as s:
        assert s.get(Subscriber, sub_id).status is SubscriberStatus.unsubscribed


def test_the_confirmation_carries_verp_list_id_and_dkim_but_no_unsubscribe(mail_env, smtp_sink):
    sub_id = _reader(SubscriberStatus.pending)
    _send("confirm", sub_id)
    _send("confirm", sub_id)  # the reader asked again
    first, second = smtp_sink.wait_for(2, timeout=10)
    for got in (first, second):
        signed = _common(got, "confirm", sub_id, mail_env)
        msg = got.message
        # not subscribed yet: nothing to unsubscribe from (service/delivery/compose.py)
        assert "List-Unsubscribe" not in msg and "List-Unsubscribe-Post" not in msg
        assert "list-unsubscribe" in signed  # signed as absent: nobody can add one on the way
        assert "https://news.example/confirm/" in msg.get_body(("plain",)).get_content()
    # a second confirmation is a new message, not a duplicate a mail client would fold
    assert first.message["Message-ID"] != second.message["Message-ID"]


# ---------------------------------------------------------------- the editors' test copy, over SMTP


def test_the_test_copy_is_composed_signed_and_marked(pg_env, smtp_sink, tmp_path, monkeypatch):
    dns = enable_dkim(tmp_path, monkeypatch)
    close_connection()
    with session_scope() as s:
        row, _ = create_editor(s, "سلمى", "editor")
        s.flush()
        editor = EditorIdentity(row.id, row.name, row.role.value)
    preview = send_test_alert(ALERT, "Desk@Example.com", editor)
    [got] = smtp_sink.wait_for(1, timeout=10)
    msg = got.message
    assert got.rcpt_tos == ["desk@example.com"]
    assert one_off_for_bounce(got.mail_from) == ("editor", editor.id)
    assert msg["Subject"] == "[تجربة] " + preview.subject  # marked once
    assert msg["X-Nashra-Test"] == "editor-copy"
    assert msg["List-Id"] == "<alerts.nashra.example>"
    assert "List-Unsubscribe" not in msg and "List-Unsubscribe-Post" not in msg and "Precedence" not in msg
    assert_our_message_id(msg, "test")
    assert ALERT["headline"] in msg.get_body(("html",)).get_content()
    assert "x-nashra-test" in assert_dkim_verifies(got.data, dns)
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Subscriber)) == 0


def test_the_demo_capture_server_is_reached_through_the_same_sender(tmp_path, monkeypatch):
    from service.demo.capture import CaptureServer

    port = free_port()
    server = CaptureServer(tmp_path / "outbox", port=port)
    server.start()
    try:
        monkeypatch.setenv("SMTP_URL", f"smtp://127.0.0.1:{port}")
        reset_settings()
        close_connection()
        message = _compose("welcome")
        assert send_composed(message, "r@example.com").code == 250
    finally:
        close_connection()
        server.stop()
    [eml] = (tmp_path / "outbox").glob("*.eml")
    saved = parse(eml.read_bytes())
    assert saved["Message-ID"] == message.message_id
    assert saved["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
