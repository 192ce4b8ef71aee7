"""Provider webhooks end to end: SES (through SNS), Mailgun, Postmark and SendGrid.

Each test sends a real edition through the real delivery path to the SMTP sink, so the
ledger has rows and the Message-IDs Nashra really set.  Then it posts what each provider
documents — built here, signed with keys the test makes (SNS: a certificate the test's
CA issued, served over HTTPS on loopback under `sns.us-east-1.amazonaws.com`) — to the
real app (TestClient), and reads what a reader or an operator would notice: the ledger
row, the suppression list, the reader's status, the feedback events.  Refused requests
(forged, replayed, stale, a certificate from elsewhere, wrong credentials) must answer
4xx and change nothing; the same event twice must change nothing more.  A Hypothesis
property posts hostile bodies and headers to every provider: never a 5xx, no change.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import uuid
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from service.config import get_settings, reset_settings
from service.db import session_scope
from service.delivery.compose import message_id
from service.inbound.webhooks import sendgrid, ses, sns
from service.models import AuditLog, Delivery, FeedbackEvent, Subscriber, Suppression
from service.web.app import create_app
from tests.support import sns as fake_sns
from tests.support.delivery import planned_edition, run_all_batches
from tests.test_hardening_fuzz import FUZZ, text

MAILGUN_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
POSTMARK_USER, POSTMARK_PASSWORD = "nashra-hooks", "correct horse battery staple"
EVIL_HOSTS = ("evil.example", "sns.us-east-1.amazonaws.com.evil.example", "sns.amazonaws.com")


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def sns_keys():
    return fake_sns.SnsKeys()  # three RSA keys: made once for the module


@pytest.fixture(scope="module")
def sendgrid_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def hooks(pg_env, smtp_sink, monkeypatch, tmp_path, sns_keys, sendgrid_key):
    """Every provider configured, the SNS host on loopback, three readers sent an edition."""
    public = sendgrid_key.public_key().public_bytes(serialization.Encoding.DER,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)
    monkeypatch.setenv("SES_TOPIC_ARNS", f"arn:aws:sns:eu-west-1:123456789012:other,{fake_sns.TOPIC}")
    monkeypatch.setenv("MAILGUN_WEBHOOK_SIGNING_KEY", MAILGUN_KEY)
    monkeypatch.setenv("POSTMARK_WEBHOOK_USER", POSTMARK_USER)
    monkeypatch.setenv("POSTMARK_WEBHOOK_PASSWORD", POSTMARK_PASSWORD)
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", base64.b64encode(public).decode())
    reset_settings()
    server = fake_sns.SnsServer(sns_keys, tmp_path)
    server.start()
    fetched: list[str] = []

    class Spy(sns.Fetcher):
        def get(self, url, limit=sns.MAX_CERT_BYTES):
            fetched.append(url)
            return super().get(url, limit)

    real = server.fetcher(*EVIL_HOSTS)
    monkeypatch.setattr(sns, "FETCHER", Spy(verify=real.verify, resolve=real.resolve))
    sns.forget_certificates()

    eid = planned_edition(3)
    run_all_batches(eid)
    assert len(smtp_sink.wait_for(3)) == 3
    with session_scope() as s:
        readers = s.execute(sa.select(Subscriber.id, Subscriber.email).order_by(Subscriber.id)).all()
    settings = get_settings()
    yield SimpleNamespace(
        client=TestClient(create_app(), raise_server_exceptions=False), server=server, fetched=fetched,
        edition=eid, ids=[r.id for r in readers], emails=[r.email for r in readers],
        mids=[message_id(settings, eid, r.id) for r in readers], sns_key=sns_keys.signing_key,
        sendgrid_key=sendgrid_key)
    server.stop()
    sns.forget_certificates()


def snapshot() -> tuple:
    """What a webhook may change: the ledger, suppressions, readers, feedback and audit."""
    with session_scope() as s:
        return (
            sorted(s.execute(sa.select(Delivery.id, Delivery.status, Delivery.smtp_reply)).all()),
            sorted(s.execute(sa.select(Suppression.email, Suppression.reason)).all()),
            sorted(s.execute(sa.select(Subscriber.id, Subscriber.status)).all()),
            sorted(s.execute(sa.select(FeedbackEvent.source, FeedbackEvent.kind, FeedbackEvent.delivery_id)).all()),
            s.scalar(sa.select(sa.func.count()).select_from(AuditLog)),
        )


def row_status(h, i: int) -> str:
    with session_scope() as s:
        return s.scalar(sa.select(Delivery.status).where(Delivery.edition_id == h.edition,
                                                         Delivery.subscriber_id == h.ids[i])).value


def suppression(h, i: int) -> str | None:
    with session_scope() as s:
        return s.scalar(sa.select(Suppression.reason).where(Suppression.email == h.emails[i]))


def reader_status(h, i: int) -> str:
    with session_scope() as s:
        return s.scalar(sa.select(Subscriber.status).where(Subscriber.id == h.ids[i])).value


def feedback_kinds(h, i: int) -> list[str]:
    with session_scope() as s:
        return sorted(s.scalars(sa.select(FeedbackEvent.kind).where(FeedbackEvent.subscriber_id == h.ids[i])))


def post_ses(h, message: dict, **headers):
    return h.client.post("/webhooks/ses", content=json.dumps(message).encode(),
                         headers={"Content-Type": "text/plain; charset=UTF-8",
                                  "x-amz-sns-message-type": message.get("Type", "Notification"),
                                  "x-amz-sns-topic-arn": message.get("TopicArn", ""), **headers})


def mailgun_body(event_data: dict, *, key: str = MAILGUN_KEY, timestamp: int | None = None,
                 token: str | None = None) -> bytes:
    timestamp = str(timestamp if timestamp is not None else int(dt.datetime.now(dt.UTC).timestamp()))
    token = token or secrets.token_hex(25)
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps({"signature": {"timestamp": timestamp, "token": token, "signature": signature},
                       "event-data": event_data}).encode()


def post_mailgun(h, body: bytes):
    return h.client.post("/webhooks/mailgun", content=body, headers={"Content-Type": "application/json"})


def mailgun_event(mid: str, event: str = "failed", *, severity: str = "permanent", reason: str = "bounce",
                  code: int = 550, enhanced: str = "5.1.1",
                  description: str = "The email account that you tried to reach does not exist.",
                  event_id: str | None = None) -> dict:
    """Mailgun's documented event-data (its sample, pointed at one of our messages)."""
    data = {
        "event": event, "id": event_id or secrets.token_urlsafe(16), "timestamp": 1521233195.375624,
        "log-level": "error" if event == "failed" else "info",
        "envelope": {"sender": "newsletter@nashra.example", "transport": "smtp", "targets": "reader@example.com"},
        "flags": {"is-routed": False, "is-authenticated": True, "is-system-test": False, "is-test-mode": False},
        "message": {"headers": {"to": "reader@example.com", "message-id": mid.strip("<>"),
                                "from": "Nashra <newsletter@nashra.example>", "subject": "نشرة الصباح"},
                    "attachments": [], "size": 111},
        "recipient": "reader@example.com", "recipient-domain": "example.com", "campaigns": [],
        "tags": [], "user-variables": {},
    }
    if event == "failed":
        data.update(severity=severity, reason=reason)
        data["delivery-status"] = {"attempt-no": 1, "message": "", "code": code, "description": description,
                                   "session-seconds": 0.0, "enhanced-code": enhanced, "mx-host": "mx.example.com"}
    if event == "delivered":
        data["delivery-status"] = {"tls": True, "mx-host": "mx.example.com", "code": 250, "description": "",
                                   "session-seconds": 0.4, "message": "OK", "attempt-no": 1}
    return data


def post_postmark(h, payload: dict, auth: tuple[str, str] | None = (POSTMARK_USER, POSTMARK_PASSWORD)):
    return h.client.post("/webhooks/postmark", content=json.dumps(payload).encode(), auth=auth,
                         headers={"Content-Type": "application/json"})


def postmark_bounce(mid: str | None, *, kind: str = "HardBounce", type_code: int = 1, via: str = "metadata",
                    details: str = "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
                    record: str = "Bounce", own_id: int | None = None) -> dict:
    payload = {
        "RecordType": record, "MessageStream": "outbound", "ID": own_id or secrets.randbelow(10**15),
        "Type": kind, "TypeCode": type_code, "Name": "Hard bounce", "Tag": "digest",
        "MessageID": str(uuid.uuid4()), "Metadata": {}, "ServerID": 23,
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": details, "Email": "reader@example.com", "From": "newsletter@nashra.example",
        "BouncedAt": "2026-03-28T16:33:54.9070259Z", "DumpAvailable": True, "Inactive": True,
        "CanActivate": True, "Subject": "نشرة الصباح",
    }
    if mid and via == "metadata":
        payload["Metadata"] = {"nashra_message_id": mid}
    elif mid:
        payload["Headers"] = [{"Name": "Message-ID", "Value": mid}, {"Name": "X-Mailer", "Value": "Nashra"}]
    return payload


def sendgrid_headers(h, body: bytes, *, timestamp: int | None = None, key=None) -> dict:
    timestamp = str(timestamp if timestamp is not None else int(dt.datetime.now(dt.UTC).timestamp()))
    signature = (key or h.sendgrid_key).sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"Content-Type": "application/json", sendgrid.SIGNATURE: base64.b64encode(signature).decode(),
            sendgrid.TIMESTAMP: timestamp}


def post_sendgrid(h, events: list, **kw):
    body = json.dumps(events).encode()
    return h.client.post("/webhooks/sendgrid", content=body, headers=sendgrid_headers(h, body, **kw))


def sendgrid_event(mid: str, event: str, **extra) -> dict:
    return {"email": "reader@example.com", "timestamp": int(dt.datetime.now(dt.UTC).timestamp()),
            "smtp-id": mid, "event": event, "category": ["digest"], "sg_event_id": secrets.token_urlsafe(16),
            "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0", **extra}


# ---------------------------------------------------------------- SES through SNS


def test_ses_bounce_complaint_and_delivery_reach_their_rows_once(hooks):
    h = hooks
    bounce = fake_sns.notification(fake_sns.ses_bounce(h.mids[0]), h.sns_key)
    with capture_logs() as logs:
        answer = post_ses(h, bounce)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcomes"] == {"hard_bounce": 1}
    assert row_status(h, 0) == "failed" and suppression(h, 0) == "hard_bounce"
    assert feedback_kinds(h, 0) == ["hard"]
    line = next(e for e in logs if e["event"] == "webhook.hard_bounce")
    assert line["subscriber_id"] == h.ids[0] and line["provider"] == "ses"
    assert not any("@example.com" in json.dumps(e, default=str) for e in logs)

    before = snapshot()
    again = post_ses(h, bounce)  # SNS retries with the very same message
    assert again.status_code == 200 and again.json()["changed"] == 0
    assert snapshot() == before

    complaint = fake_sns.notification(fake_sns.ses_complaint(h.mids[1]), h.sns_key)
    assert post_ses(h, complaint).json()["outcomes"] == {"complaint": 1}
    assert suppression(h, 1) == "complaint" and reader_status(h, 1) == "unsubscribed"
    assert row_status(h, 1) == "sent"

    delivery = fake_sns.notification(fake_sns.ses_delivery(h.mids[2]), h.sns_key, version="2")
    assert post_ses(h, delivery).json()["outcomes"] == {"delivered": 1}
    assert feedback_kinds(h, 2) == ["delivered"] and row_status(h, 2) == "sent" and suppression(h, 2) is None
    # One certificate fetch for all of them: it is kept by URL.
    assert h.fetched == [fake_sns.CERT_URL]


def test_ses_event_publishing_and_a_second_topic_are_one_bounce(hooks):
    """A configuration set's event destination (`eventType`) carries the same bounce as
    the identity's notification (`notificationType`): SES's feedbackId takes it once."""
    h = hooks
    event = fake_sns.ses_bounce(h.mids[0], key="eventType", feedback_id="0100-same-feedback-000000")
    assert post_ses(h, fake_sns.notification(event, h.sns_key)).json()["changed"] == 1
    before = snapshot()
    notified = fake_sns.ses_bounce(h.mids[0], feedback_id="0100-same-feedback-000000")
    answer = post_ses(h, fake_sns.notification(notified, h.sns_key, version="2"))
    assert answer.status_code == 200 and answer.json()["changed"] == 0
    assert snapshot() == before


def test_ses_refusal_of_our_sender_and_a_full_mailbox_are_not_the_readers_fault(hooks):
    h = hooks
    refused = fake_sns.ses_bounce(h.mids[0], status="5.1.8",
                                  diagnostic="smtp; 553 5.1.8 <newsletter@nashra.example>: Sender address rejected: "
                                             "Domain not found")
    assert post_ses(h, fake_sns.notification(refused, h.sns_key)).json()["outcomes"] == {"refused_us": 1}
    assert row_status(h, 0) == "failed" and suppression(h, 0) is None and reader_status(h, 0) == "active"
    full = fake_sns.ses_bounce(h.mids[1], bounce_type="Transient", subtype="MailboxFull", status="4.2.2",
                               diagnostic="smtp; 452 4.2.2 mailbox full")
    assert post_ses(h, fake_sns.notification(full, h.sns_key)).json()["outcomes"] == {"soft_bounce": 1}
    assert row_status(h, 1) == "sent" and suppression(h, 1) is None and feedback_kinds(h, 1) == ["soft"]


def test_ses_subscription_is_confirmed_only_for_a_listed_topic(hooks):
    h = hooks
    answer = post_ses(h, fake_sns.confirmation(h.sns_key))
    assert answer.status_code == 200 and answer.json() == {"status": "subscription confirmed"}
    assert any(p.startswith("/?Action=ConfirmSubscription&TopicArn=") for p in h.server.requests)

    h.fetched.clear()
    stranger = fake_sns.confirmation(h.sns_key, topic="arn:aws:sns:us-east-1:999999999999:someone-else")
    assert post_ses(h, stranger).status_code == 403
    assert h.fetched == []  # not even the certificate: the topic is checked first

    elsewhere = fake_sns.confirmation(h.sns_key, subscribe_host="evil.example")
    assert post_ses(h, elsewhere).status_code == 403  # signed, but the URL leaves Amazon
    assert not any("evil.example" in url for url in h.fetched)


@pytest.mark.parametrize("cert_url", [
    "https://evil.example" + fake_sns.CERT_PATH,
    "https://sns.us-east-1.amazonaws.com.evil.example" + fake_sns.CERT_PATH,
    "https://sns.amazonaws.com" + fake_sns.CERT_PATH,
    "http://sns.us-east-1.amazonaws.com" + fake_sns.CERT_PATH,
    "https://sns.us-east-1.amazonaws.com:8443" + fake_sns.CERT_PATH,
    "https://user@sns.us-east-1.amazonaws.com" + fake_sns.CERT_PATH,
    "https://sns.us-east-1.amazonaws.com/not-a-certificate",
    "file:///etc/passwd",
])
def test_ses_certificate_from_anywhere_but_sns_is_never_fetched(hooks, cert_url):
    h = hooks
    before = snapshot()
    message = fake_sns.notification(fake_sns.ses_bounce(h.mids[0]), h.sns_key, cert_url=cert_url)
    answer = post_ses(h, message)
    assert answer.status_code == 403, answer.text
    assert h.fetched == [] and snapshot() == before


def test_ses_forged_stale_or_tampered_messages_change_nothing(hooks):
    h = hooks
    before = snapshot()
    attacker = fake_sns.new_key()
    forged = fake_sns.notification(fake_sns.ses_bounce(h.mids[0]), attacker)
    assert post_ses(h, forged).status_code == 403
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    stale = fake_sns.notification(fake_sns.ses_bounce(h.mids[0]), h.sns_key, when=old)
    assert post_ses(h, stale).status_code == 403
    tampered = fake_sns.notification(fake_sns.ses_delivery(h.mids[0]), h.sns_key)
    tampered["Message"] = json.dumps(fake_sns.ses_bounce(h.mids[0]))
    assert post_ses(h, tampered).status_code == 403
    mismatched = fake_sns.notification(fake_sns.ses_bounce(h.mids[0]), h.sns_key)
    assert post_ses(h, mismatched, **{"x-amz-sns-message-type": "SubscriptionConfirmation"}).status_code == 400
    assert snapshot() == before


def test_ses_mapping_of_bounce_types():
    def kind(**kw):
        event = ses._event(fake_sns.ses_bounce("<x@y>", **kw), "sns-id")
        return event.feedback.kind if event.feedback else None

    assert kind() == "hard"
    assert kind(subtype="NoEmail", status=None, diagnostic=None) == "hard"
    assert kind(subtype="Suppressed", status="5.1.1", diagnostic="Amazon SES has suppressed sending") == "hard"
    assert kind(subtype="General", status=None, diagnostic=None) == "hard"
    assert kind(subtype="MailboxFull", status="5.2.2", diagnostic="smtp; 552 5.2.2 mailbox full") == "soft"
    assert kind(subtype="MessageTooLarge", status="5.3.4", diagnostic="smtp; 552 5.3.4 message too big") == "failed"
    assert kind(subtype="ContentRejected", status="5.7.1", diagnostic="smtp; 550 5.7.1 content rejected") == "failed"
    assert kind(status="5.7.1", diagnostic="smtp; 550 5.7.1 Service unavailable, Client host [192.0.2.1] "
                                          "blocked using Spamhaus") == "refusal"
    assert kind(bounce_type="Transient", subtype="General", status="4.4.7", diagnostic="delivery time expired") == "soft"
    assert kind(bounce_type="Transient", subtype="General", status="4.7.1",
                diagnostic="smtp; 451 4.7.1 sender address rejected") is None
    assert kind(bounce_type="Undetermined", subtype="Undetermined", status=None, diagnostic=None) == "soft"
    complaint = ses._event(fake_sns.ses_complaint("<x@y>", feedback_type="not-spam"), "sns-id")
    assert complaint.feedback is None
    assert ses._event(fake_sns.ses_complaint("<x@y>", feedback_type=None), "id").feedback.feedback_type == "abuse"


# ---------------------------------------------------------------- Mailgun


def test_mailgun_events_map_and_repeat_harmlessly(hooks):
    h = hooks
    answer = post_mailgun(h, mailgun_body(mailgun_event(h.mids[0], event_id="mg-event-1")))
    assert answer.status_code == 200 and answer.json()["outcomes"] == {"hard_bounce": 1}
    assert row_status(h, 0) == "failed" and suppression(h, 0) == "hard_bounce"
    before = snapshot()
    # Mailgun retries an event with a new signature: the same event id, nothing more.
    again = post_mailgun(h, mailgun_body(mailgun_event(h.mids[0], event_id="mg-event-1")))
    assert again.status_code == 200 and again.json()["changed"] == 0 and snapshot() == before

    assert post_mailgun(h, mailgun_body(mailgun_event(h.mids[1], "complained"))).json()["outcomes"] == {"complaint": 1}
    assert suppression(h, 1) == "complaint" and reader_status(h, 1) == "unsubscribed"
    assert post_mailgun(h, mailgun_body(mailgun_event(h.mids[2], "delivered"))).json()["outcomes"] == {"delivered": 1}
    soft = mailgun_event(h.mids[2], severity="temporary", reason="generic", code=452, enhanced="4.2.2",
                         description="Mailbox full")
    assert post_mailgun(h, mailgun_body(soft)).json()["outcomes"] == {"soft_bounce": 1}
    assert feedback_kinds(h, 2) == ["delivered", "soft"] and row_status(h, 2) == "sent"
    opened = mailgun_event(h.mids[2], "opened")
    assert post_mailgun(h, mailgun_body(opened)).json() == {"status": "ignored", "events": 1, "changed": 0,
                                                           "outcomes": {"ignored": 1}}


def test_mailgun_unsubscribed_is_an_opt_out_not_a_suppression(hooks):
    h = hooks
    assert post_mailgun(h, mailgun_body(mailgun_event(h.mids[0], "unsubscribed"))).status_code == 200
    assert reader_status(h, 0) == "unsubscribed" and suppression(h, 0) is None


def test_mailgun_forged_stale_and_replayed_requests_change_nothing(hooks):
    h = hooks
    before = snapshot()
    assert post_mailgun(h, mailgun_body(mailgun_event(h.mids[0]), key="key-not-ours")).status_code == 403
    stale = int(dt.datetime.now(dt.UTC).timestamp()) - 600
    assert post_mailgun(h, mailgun_body(mailgun_event(h.mids[0]), timestamp=stale)).status_code == 403
    unsigned = json.dumps({"event-data": mailgun_event(h.mids[0])}).encode()
    assert post_mailgun(h, unsigned).status_code == 403
    assert snapshot() == before

    # The signature covers only timestamp + token: a captured one carrying other events
    # is refused because its token was taken.
    token = secrets.token_hex(25)
    first = mailgun_body(mailgun_event(h.mids[2], "delivered"), token=token)
    assert post_mailgun(h, first).status_code == 200
    signed = json.loads(first)["signature"]
    replay = json.dumps({"signature": signed, "event-data": mailgun_event(h.mids[0])}).encode()
    after_first = snapshot()
    assert post_mailgun(h, replay).status_code == 403
    assert post_mailgun(h, first).status_code == 403
    assert snapshot() == after_first and suppression(h, 0) is None


# ---------------------------------------------------------------- Postmark


def test_postmark_events_map_and_repeat_harmlessly(hooks):
    h = hooks
    bounce = postmark_bounce(h.mids[0], own_id=4323372036854775807)
    answer = post_postmark(h, bounce)
    assert answer.status_code == 200 and answer.json()["outcomes"] == {"hard_bounce": 1}
    assert row_status(h, 0) == "failed" and suppression(h, 0) == "hard_bounce"
    before = snapshot()
    assert post_postmark(h, bounce).json()["changed"] == 0 and snapshot() == before

    complaint = postmark_bounce(h.mids[1], kind="SpamComplaint", type_code=100001, record="SpamComplaint",
                                via="headers")
    assert post_postmark(h, complaint).json()["outcomes"] == {"complaint": 1}
    assert suppression(h, 1) == "complaint" and reader_status(h, 1) == "unsubscribed"

    delivery = {"RecordType": "Delivery", "ServerID": 23, "MessageStream": "outbound",
                "MessageID": str(uuid.uuid4()), "Recipient": "reader@example.com", "Tag": "digest",
                "DeliveredAt": "2026-03-28T16:33:54.9070259Z", "Details": "smtp;250 2.0.0 OK",
                "Metadata": {"nashra_message_id": h.mids[2]}}
    assert post_postmark(h, delivery).json()["outcomes"] == {"delivered": 1}
    assert post_postmark(h, delivery).json()["changed"] == 0
    assert feedback_kinds(h, 2) == ["delivered"]

    change = {"RecordType": "SubscriptionChange", "MessageID": str(uuid.uuid4()), "ServerID": 23,
              "MessageStream": "outbound", "ChangedAt": "2026-03-28T16:40:00Z", "Recipient": "reader@example.com",
              "Origin": "Recipient", "SuppressSending": True, "SuppressionReason": "ManualSuppression",
              "Tag": "digest", "Metadata": {"nashra_message_id": h.mids[2]}}
    assert post_postmark(h, change).json()["outcomes"] == {"complaint": 1}
    assert reader_status(h, 2) == "unsubscribed" and suppression(h, 2) is None

    no_id = postmark_bounce(None)
    assert post_postmark(h, no_id).json()["status"] == "ignored"


def test_postmark_refuses_wrong_credentials(hooks):
    h = hooks
    before = snapshot()
    for auth in (None, (POSTMARK_USER, "wrong"), ("someone", POSTMARK_PASSWORD), ("", "")):
        answer = post_postmark(h, postmark_bounce(h.mids[0]), auth=auth)
        assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Basic")
    answer = h.client.post("/webhooks/postmark", content=json.dumps(postmark_bounce(h.mids[0])).encode(),
                           headers={"Authorization": "Basic !!!not-base64"})
    assert answer.status_code == 401
    assert snapshot() == before


# ---------------------------------------------------------------- SendGrid


def test_sendgrid_batch_maps_every_event_once(hooks):
    h = hooks
    batch = [
        sendgrid_event(h.mids[0], "processed"),
        sendgrid_event(h.mids[0], "bounce", reason="500 unknown recipient", status="5.0.0", type="bounce"),
        sendgrid_event(h.mids[1], "spamreport"),
        sendgrid_event(h.mids[2], "deferred", response="400 try again later", attempt="5"),
        sendgrid_event(h.mids[2], "delivered", response="250 OK"),
        sendgrid_event(h.mids[2], "open", useragent="Mozilla/5.0", ip="192.0.2.1"),
        sendgrid_event(h.mids[2], "reader2@example.com"),  # whatever a payload holds, no address is logged
    ]
    with capture_logs() as logs:
        answer = post_sendgrid(h, batch)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcomes"] == {"complaint": 1, "delivered": 1, "hard_bounce": 1, "ignored": 3,
                                         "soft_bounce": 1}
    assert len([e for e in logs if e["event"].startswith("webhook.")]) == len(batch)  # one line per event
    assert not any("@" in json.dumps(e, default=str) for e in logs)
    assert row_status(h, 0) == "failed" and suppression(h, 0) == "hard_bounce"
    assert suppression(h, 1) == "complaint" and reader_status(h, 1) == "unsubscribed"
    assert feedback_kinds(h, 2) == ["delivered", "soft"] and suppression(h, 2) is None
    before = snapshot()
    again = post_sendgrid(h, batch)  # SendGrid retries the batch, signed anew
    assert again.status_code == 200 and again.json()["changed"] == 0 and snapshot() == before


def test_sendgrid_forged_stale_or_altered_batches_change_nothing(hooks):
    h = hooks
    before = snapshot()
    batch = [sendgrid_event(h.mids[0], "bounce", reason="550 5.1.1 user unknown", status="5.1.1", type="bounce")]
    assert post_sendgrid(h, batch, key=ec.generate_private_key(ec.SECP256R1())).status_code == 403
    stale = int(dt.datetime.now(dt.UTC).timestamp()) - 600
    assert post_sendgrid(h, batch, timestamp=stale).status_code == 403
    body = json.dumps(batch).encode()
    headers = sendgrid_headers(h, body)
    altered = body.replace(b"bounce", b"spamreport", 1)
    assert h.client.post("/webhooks/sendgrid", content=altered, headers=headers).status_code == 403
    assert h.client.post("/webhooks/sendgrid", content=body, headers={"Content-Type": "application/json"}
                         ).status_code == 403
    assert snapshot() == before


# ---------------------------------------------------------------- every provider


def test_a_forged_message_id_is_refused_and_a_stranger_ignored(hooks):
    h = hooks
    before = snapshot()
    forged = f"<nashra.{h.edition}.{h.ids[0]}.0123456789@nashra.example>"
    assert post_mailgun(h, mailgun_body(mailgun_event(forged))).status_code == 400
    assert post_postmark(h, postmark_bounce(forged)).status_code == 400
    batch = [sendgrid_event(h.mids[1], "spamreport"), sendgrid_event(forged, "spamreport")]
    assert post_sendgrid(h, batch).status_code == 400  # the whole batch: nothing of it applied
    assert post_ses(h, fake_sns.notification(fake_sns.ses_bounce(forged), h.sns_key)).status_code == 400
    assert snapshot() == before

    stranger = "<20130503182626.18666.16540@sandbox.mailgun.org>"
    answer = post_mailgun(h, mailgun_body(mailgun_event(stranger)))
    assert answer.status_code == 200 and answer.json()["status"] == "ignored"
    gone = message_id(get_settings(), h.edition + 1000, h.ids[0])  # ours, for no row that exists
    answer = post_sendgrid(h, [sendgrid_event(gone, "spamreport")])
    assert answer.status_code == 200 and answer.json()["status"] == "ignored"
    assert snapshot() == before


def test_unconfigured_or_unknown_providers_are_not_found(pg_env):
    reset_settings()
    client = TestClient(create_app(), raise_server_exceptions=False)
    for provider in ("ses", "mailgun", "postmark", "sendgrid", "sparkpost", "..%2Fapi"):
        assert client.post(f"/webhooks/{provider}", content=b"{}").status_code == 404, provider


def test_a_body_over_a_megabyte_is_refused(hooks):
    h = hooks
    huge = b"[" + b" " * (1024 * 1024) + b"]"
    assert h.client.post("/webhooks/sendgrid", content=huge, headers=sendgrid_headers(h, huge)).status_code == 413
    # A batch SendGrid really sends (hundreds of KB) is read.
    events = [sendgrid_event(f"<stranger.{i}@example.net>", "delivered", response="250 OK " + "x" * 400)
              for i in range(1200)]
    assert 600_000 < len(json.dumps(events)) < 1024 * 1024
    assert post_sendgrid(h, events).json()["events"] == 1200


# ---------------------------------------------------------------- hostile input


json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                        text, st.sampled_from(["", "failed", "bounce", "Bounce", "Permanent", "5.1.1", "<x@y>"]))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                 st.dictionaries(text, inner, max_size=4)),
                          max_leaves=15)


def _replace_in(template: object, value: object, path: list[int]) -> object:
    """`template` with the node chosen by `path` (indices into its nodes) replaced by `value`."""
    if not path:
        return value
    if isinstance(template, dict) and template:
        keys = sorted(template)
        key = keys[path[0] % len(keys)]
        return {**template, key: _replace_in(template[key], value, path[1:])}
    if isinstance(template, list) and template:
        i = path[0] % len(template)
        return [*template[:i], _replace_in(template[i], value, path[1:]), *template[i + 1:]]
    return value


def _dumps(value: object) -> bytes:
    return json.dumps(value, default=str).encode("utf-8", "surrogatepass")


@pytest.mark.parametrize("provider", ["ses", "mailgun", "postmark", "sendgrid"])
def test_hostile_requests_never_answer_5xx_and_change_nothing(hooks, provider):
    h = hooks
    forged = f"<nashra.{h.edition}.{h.ids[0]}.abcdefabcd@nashra.example>"
    templates = {
        "mailgun": mailgun_event(forged),
        "postmark": postmark_bounce(forged),
        "sendgrid": [sendgrid_event(forged, "bounce", reason="550 5.1.1 user unknown", status="5.1.1",
                                    type="bounce")],
        "ses": fake_sns.ses_bounce(forged),
    }
    before = snapshot()

    def signed_request(provider: str, payload: object = None, raw: bytes | None = None) -> tuple[bytes, dict]:
        """A hostile payload (or raw bytes) signed or authorised as the provider would: it
        gets past the door and reaches the readers of events."""
        if provider == "mailgun":  # the signature sits inside the JSON: raw bytes cannot carry one
            return mailgun_body(payload if raw is None else raw.decode("latin-1")), {}
        if provider == "postmark":
            auth = base64.b64encode(f"{POSTMARK_USER}:{POSTMARK_PASSWORD}".encode()).decode()
            return (_dumps(payload) if raw is None else raw), {"Authorization": f"Basic {auth}"}
        if provider == "sendgrid":
            body = _dumps(payload) if raw is None else raw
            return body, sendgrid_headers(h, body)
        inner = _dumps(payload) if raw is None else raw
        message = fake_sns.notification(inner.decode("utf-8", "replace"), h.sns_key)
        return json.dumps(message).encode(), {"x-amz-sns-message-type": "Notification"}

    header_values = st.one_of(text, st.sampled_from(["", "0", "9" * 40, "Basic", "Notification", "\x00",
                                                     "SubscriptionConfirmation"]))
    hostile_headers = st.dictionaries(
        st.sampled_from(["authorization", sendgrid.SIGNATURE, sendgrid.TIMESTAMP, "x-amz-sns-message-type",
                         "content-type", "content-encoding"]),
        header_values, max_size=3)

    @FUZZ
    @given(how=st.sampled_from(["signed json", "signed bytes", "headers", "json", "bytes"]),
           raw=st.binary(max_size=600), value=json_value, path=st.lists(st.integers(0, 50), max_size=5),
           extra=hostile_headers)
    def run(how, raw, value, path, extra):
        headers: dict = {}
        if how == "bytes":
            body = raw
        elif how == "json":
            body = _dumps(_replace_in(templates[provider], value, path))
        elif how == "signed json":
            body, headers = signed_request(provider, _replace_in(templates[provider], value, path))
        elif how == "signed bytes":
            body, headers = signed_request(provider, raw=raw)
        else:
            body, headers = signed_request(provider, templates[provider])
            headers = {**headers, **extra}
        sendable = {k: v.encode("ascii", "replace").decode() for k, v in headers.items()
                    if not any(c in v for c in "\x00\r\n")}
        answer = h.client.post(f"/webhooks/{provider}", content=body, headers=sendable)
        assert answer.status_code < 500, (provider, how, answer.status_code, answer.text[:300])

    run()
    assert snapshot() == before
