"""Mailgun's webhooks (the JSON kind: `{"signature": {…}, "event-data": {…}}`).

Verified as Mailgun documents it: HMAC-SHA256, keyed with MAILGUN_WEBHOOK_SIGNING_KEY,
of `timestamp + token`, compared in constant time with `signature`.  The signature does
not cover `event-data`, so a captured request could carry other events under the same
signature: the timestamp must be within WEBHOOK_MAX_AGE_SECONDS of now, and the token is
taken once — recorded in the database (rate_counters) in the transaction that applies
the event, so it is remembered by every web process, with or without Redis, and a
request that fails does not use it up.

| Mailgun says                                    | Feedback                            |
|-------------------------------------------------|-------------------------------------|
| failed, permanent, reason suppress-bounce       | hard (Mailgun refused: bounced before) |
| failed, permanent, suppress-complaint / -unsubscribe | complaint (abuse / opt-out)    |
| failed, permanent (bounce, generic, …)          | the classifier on `delivery-status`; hard for a `bounce` that says nothing |
| failed, temporary                               | soft (None when it is about our sender) |
| complained                                      | complaint (abuse)                   |
| unsubscribed                                    | complaint (opt-out)                 |
| delivered                                       | delivered                           |

Which message: `event-data.message.headers.message-id` (Mailgun drops the angle brackets).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re

from service.config import Settings
from service.inbound.actions import Feedback
from service.inbound.webhooks.common import (
    Event,
    Parsed,
    Refused,
    check_age,
    enhanced_status,
    event_id,
    from_epoch,
    judge,
    load_json,
    name,
    obj,
    smtp_code,
    text,
)

NAME = "mailgun"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{10,200}$")
_SIGNATURE = re.compile(r"^[0-9a-fA-F]{64}$")


def configured(settings: Settings) -> bool:
    return bool(settings.mailgun_webhook_signing_key)


def parse(headers: dict[str, str], body: bytes, settings: Settings, now: dt.datetime) -> Parsed:
    payload = load_json(body)
    signed = obj(obj(payload).get("signature"))
    timestamp, token, signature = signed.get("timestamp"), signed.get("token"), signed.get("signature")
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        timestamp = str(timestamp)
    if not (isinstance(timestamp, str) and timestamp.isdigit() and len(timestamp) <= 12
            and isinstance(token, str) and _TOKEN.match(token)
            and isinstance(signature, str) and _SIGNATURE.match(signature)):
        raise Refused(403, "no Mailgun signature")
    key = settings.mailgun_webhook_signing_key.encode()
    expected = hmac.new(key, (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        raise Refused(403, "the Mailgun signature does not verify")
    max_age = settings.webhook_max_age_seconds
    check_age(from_epoch(timestamp), now, max_age, "the Mailgun event")
    # Remembered past the time the timestamp is accepted, from either side of now.
    nonce = ("mailgun-token", f"{timestamp}:{token}", 2 * max_age + 60)
    data = obj(obj(payload).get("event-data"))
    fallback = event_id("token", hashlib.sha256(token.encode()).hexdigest())
    return Parsed([_event(data, fallback)], nonce=nonce)


def _event(data: dict, fallback: str | None) -> Event:
    kind = text(data.get("event"), 40)
    mid = text(obj(obj(data.get("message")).get("headers")).get("message-id"), 400) or None
    eid = event_id("event", text(data.get("id"), 200)) or fallback
    if kind == "failed":
        return Event(kind, mid, *_failed(data, eid))
    if kind == "complained":
        return Event(kind, mid, Feedback("complaint", NAME, feedback_type="abuse", event_id=eid))
    if kind == "unsubscribed":
        return Event(kind, mid, Feedback("complaint", NAME, feedback_type="opt-out", event_id=eid))
    if kind == "delivered":
        status = obj(data.get("delivery-status"))
        reply = text(status.get("message"), 400)
        return Event(kind, mid, Feedback("delivered", NAME, diagnostic=reply,
                                         smtp_code=smtp_code(status.get("code")), event_id=eid))
    return Event(kind, mid, None, f"Mailgun {name(kind)} is not a bounce, complaint or delivery")


def _failed(data: dict, eid: str | None) -> tuple[Feedback | None, str]:
    severity = text(data.get("severity"), 20)
    reason = text(data.get("reason"), 60)
    if severity == "permanent" and reason == "suppress-complaint":
        return Feedback("complaint", NAME, feedback_type="abuse", event_id=eid), ""
    if severity == "permanent" and reason == "suppress-unsubscribe":
        return Feedback("complaint", NAME, feedback_type="opt-out", event_id=eid), ""
    status_block = obj(data.get("delivery-status"))
    words = " ".join(filter(None, (text(status_block.get("message"), 400),
                                   text(status_block.get("description"), 400))))
    status = enhanced_status(text(status_block.get("enhanced-code"), 20), words)
    code = smtp_code(status_block.get("code"))
    if severity == "permanent" and reason == "suppress-bounce":
        kind = "hard"
    elif severity == "permanent":
        kind = judge(status, words, temporary=False, default="hard" if reason == "bounce" else "failed")
    else:
        kind = judge(status, words, temporary=True, default="soft")
    if kind is None:
        return None, "a temporary failure caused by our sender, not the reader"
    return Feedback(kind, NAME, status=status, diagnostic=f"Mailgun {severity} {reason} {words}",
                    smtp_code=code, event_id=eid), ""
