"""Postmark's webhooks: Bounce, SpamComplaint, Delivery, SubscriptionChange.

Postmark signs nothing: it sends the HTTP basic-auth credentials written into the
webhook's URL (`https://USER:PASSWORD@…/webhooks/postmark`), compared here in constant
time with POSTMARK_WEBHOOK_USER and POSTMARK_WEBHOOK_PASSWORD.  There is no timestamp to
bound a replay: whoever holds the credentials (they travel inside TLS) can post again,
and what keeps a repeat harmless is Postmark's own `ID` for the event, taken once.

Which message: Postmark's `MessageID` is its own, not ours.  Ours is read from the
event's `Metadata.nashra_message_id` (what a `X-PM-Metadata-nashra_message_id` header on
the sent mail puts there) or from a `Message-ID` entry in `Headers` when Postmark includes
them; an event with neither is ignored (the README says how to pass it through).

| Postmark says                                      | Feedback                         |
|----------------------------------------------------|----------------------------------|
| Bounce HardBounce, BadEmailAddress                 | hard (refusal if its words say our sender) |
| Bounce SoftBounce, Transient, DnsError             | soft (None when about our sender) |
| Bounce SpamNotification, VirusNotification, Blocked, ContentRelated … | failed (or refusal by its words) |
| Bounce DMARCPolicy                                 | refusal                          |
| Bounce / SpamComplaint SpamComplaint               | complaint (abuse)                |
| Bounce Unsubscribe                                 | complaint (opt-out)              |
| Delivery                                           | delivered                        |
| SubscriptionChange SuppressSending true            | HardBounce: hard; SpamComplaint: complaint; otherwise an opt-out |
| anything else (AutoResponder, Subscribe, reactivation …) | nothing                    |
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac

from service.config import Settings
from service.inbound.actions import Feedback
from service.inbound.webhooks.common import (
    Event,
    Parsed,
    Refused,
    enhanced_status,
    event_id,
    judge,
    load_json,
    name,
    obj,
    seq,
    smtp_code,
    text,
)

NAME = "postmark"
_HARD = {"HardBounce", "BadEmailAddress"}
_SOFT = {"SoftBounce", "Transient", "DnsError"}
_FAILED = {"SpamNotification", "VirusNotification", "Blocked", "ContentRelated", "SMTPApiError"}
_CHALLENGE = 'Basic realm="nashra-webhooks"'


def configured(settings: Settings) -> bool:
    return bool(settings.postmark_webhook_user and settings.postmark_webhook_password)


def _authorised(header: str, settings: Settings) -> bool:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or len(encoded) > 1000:
        return False
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return False
    # Both compared, always: how long the answer takes says nothing about which was wrong.
    right_user = hmac.compare_digest(user, settings.postmark_webhook_user.encode())
    right_password = hmac.compare_digest(password, settings.postmark_webhook_password.encode())
    return bool(sep) and right_user and right_password


def parse(headers: dict[str, str], body: bytes, settings: Settings, now: dt.datetime) -> Parsed:
    if not _authorised(headers.get("authorization", ""), settings):
        raise Refused(401, "wrong or missing Postmark credentials", {"WWW-Authenticate": _CHALLENGE})
    payload = load_json(body)
    if not isinstance(payload, dict):
        raise Refused(400, "a Postmark webhook posts one JSON object")
    return Parsed([_event(payload)])


def _message_id(payload: dict) -> str | None:
    mid = text(obj(payload.get("Metadata")).get("nashra_message_id"), 400)
    if mid:
        return mid
    for header in seq(payload.get("Headers")):
        header = obj(header)
        if text(header.get("Name"), 100).lower() == "message-id":
            return text(header.get("Value"), 400) or None
    return None


def _event(payload: dict) -> Event:
    record = text(payload.get("RecordType"), 40)
    mid = _message_id(payload)
    pm_id = text(payload.get("MessageID"), 200)
    own_id = payload.get("ID")
    own_id = str(own_id) if isinstance(own_id, int | str) and not isinstance(own_id, bool) else ""
    if record in ("Bounce", "SpamComplaint"):
        eid = event_id(record, own_id[:100]) or event_id(record, pm_id)
        return Event(record, mid, *_bounce(payload, eid))
    if record == "Delivery":
        reply = text(payload.get("Details"), 400)
        return Event(record, mid, Feedback("delivered", NAME, diagnostic=reply, smtp_code=smtp_code(reply),
                                           event_id=event_id("delivery", pm_id)))
    if record == "SubscriptionChange":
        return Event(record, mid, *_subscription(payload, pm_id))
    return Event(record, mid, None, f"Postmark {name(record)} is not a bounce, complaint or delivery")


def _bounce(payload: dict, eid: str | None) -> tuple[Feedback | None, str]:
    btype = text(payload.get("Type"), 60)
    if btype == "SpamComplaint":
        return Feedback("complaint", NAME, feedback_type="abuse", event_id=eid), ""
    if btype == "Unsubscribe":
        return Feedback("complaint", NAME, feedback_type="opt-out", event_id=eid), ""
    words = " ".join(filter(None, (text(payload.get("Details"), 400), text(payload.get("Description"), 200))))
    status = enhanced_status(words)
    if btype == "DMARCPolicy":
        kind = "refusal"
    elif btype in _HARD:
        # Postmark's verdict unless its words say the receiver refused *us*.
        kind = "refusal" if judge(status, words, temporary=False, default="hard") == "refusal" else "hard"
    elif btype in _SOFT:
        kind = judge(status, words, temporary=True, default="soft")
        if kind is None:
            return None, "a temporary bounce caused by our sender, not the reader"
    elif btype in _FAILED:
        kind = "refusal" if judge(status, words, temporary=False, default="failed") == "refusal" else "failed"
    else:
        return None, f"a Postmark {name(btype)} is not about the reader's address"
    return Feedback(kind, NAME, status=status, diagnostic=f"Postmark {btype} {words}",
                    smtp_code=smtp_code(words), event_id=eid), ""


def _subscription(payload: dict, pm_id: str) -> tuple[Feedback | None, str]:
    if payload.get("SuppressSending") is not True:
        # A reactivation in Postmark does not lift our suppression: `nashra suppressions lift` does.
        return None, "a reactivation at Postmark"
    reason = text(payload.get("SuppressionReason"), 60)
    eid = event_id("subscription", pm_id, reason or "-", text(payload.get("ChangedAt"), 40) or "-")
    if reason == "HardBounce":
        return Feedback("hard", NAME, diagnostic="Postmark suppressed the address after a hard bounce",
                        event_id=eid), ""
    if reason == "SpamComplaint":
        return Feedback("complaint", NAME, feedback_type="abuse", event_id=eid), ""
    return Feedback("complaint", NAME, feedback_type="opt-out", event_id=eid), ""
