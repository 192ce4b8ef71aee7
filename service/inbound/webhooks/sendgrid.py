"""SendGrid's signed Event Webhook: a JSON array of events per POST.

Verified as SendGrid documents it: the ECDSA (P-256, SHA-256) signature in
`X-Twilio-Email-Event-Webhook-Signature` (base64 DER) over the bytes of
`X-Twilio-Email-Event-Webhook-Timestamp` followed by the raw body, checked with the
verification key from SendGrid's settings (SENDGRID_WEBHOOK_PUBLIC_KEY: the base64 DER
public key it shows; a PEM block is read too).  The timestamp must be within
WEBHOOK_MAX_AGE_SECONDS of now; a replay inside that window repeats events whose
`sg_event_id` was taken already, and changes nothing.

| SendGrid says                            | Feedback                                    |
|------------------------------------------|---------------------------------------------|
| bounce, type bounce                      | the classifier on `status` and `reason`; hard when they say nothing |
| bounce, type blocked                     | soft; refusal when it is about our sender    |
| dropped Bounced Address / Invalid        | hard                                        |
| dropped Spam Reporting Address           | complaint (abuse)                           |
| dropped Unsubscribed Address             | complaint (opt-out)                         |
| dropped (other reasons)                  | failed                                      |
| deferred                                 | soft (None when it is about our sender)     |
| delivered                                | delivered                                   |
| spamreport                               | complaint (abuse)                           |
| unsubscribe, group_unsubscribe           | complaint (opt-out)                         |

Which message: `smtp-id` (the Message-ID SendGrid saw) or a custom argument
`nashra_message_id` when the sender set one.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import re

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from service.config import Settings
from service.inbound.actions import Feedback
from service.inbound.webhooks.common import (
    MAX_EVENTS,
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
from service.logs import get_logger

log = get_logger(__name__)

NAME = "sendgrid"
SIGNATURE = "x-twilio-email-event-webhook-signature"
TIMESTAMP = "x-twilio-email-event-webhook-timestamp"
_PEM_LINES = re.compile(r"-----[A-Z ]+-----|\s")


def configured(settings: Settings) -> bool:
    return bool(settings.sendgrid_webhook_public_key)


@functools.lru_cache(maxsize=4)
def _key(setting: str) -> ec.EllipticCurvePublicKey | None:
    try:
        key = serialization.load_der_public_key(base64.b64decode(_PEM_LINES.sub("", setting), validate=True))
    except (binascii.Error, ValueError, UnsupportedAlgorithm):
        return None
    return key if isinstance(key, ec.EllipticCurvePublicKey) else None


def parse(headers: dict[str, str], body: bytes, settings: Settings, now: dt.datetime) -> Parsed:
    key = _key(settings.sendgrid_webhook_public_key)
    if key is None:
        log.error("webhook.misconfigured", provider=NAME, setting="SENDGRID_WEBHOOK_PUBLIC_KEY")
        raise Refused(403, "SENDGRID_WEBHOOK_PUBLIC_KEY is not an ECDSA public key")
    timestamp = headers.get(TIMESTAMP, "")
    try:
        signature = base64.b64decode(headers.get(SIGNATURE, ""), validate=True)
    except (binascii.Error, ValueError):
        raise Refused(403, "the SendGrid signature is not base64") from None
    if not signature or not timestamp.isascii():
        raise Refused(403, "no SendGrid signature")
    try:
        key.verify(signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise Refused(403, "the SendGrid signature does not verify") from None
    check_age(from_epoch(timestamp), now, settings.webhook_max_age_seconds, "the SendGrid batch")
    events = load_json(body)
    if not isinstance(events, list) or len(events) > MAX_EVENTS:
        raise Refused(400, "a SendGrid batch is a JSON array of events")
    return Parsed([_event(obj(e)) for e in events])


def _event(data: dict) -> Event:
    kind = text(data.get("event"), 40)
    mid = text(data.get("nashra_message_id"), 400) or text(data.get("smtp-id"), 400) or None
    eid = event_id("event", text(data.get("sg_event_id"), 200))
    reason = text(data.get("reason"), 400)
    if kind == "bounce":
        status = enhanced_status(text(data.get("status"), 20), reason)
        if text(data.get("type"), 20) == "blocked":
            # A block is the receiver's policy of the moment: soft, or a refusal of us.
            verdict = "refusal" if judge(status, reason, temporary=False, default="soft") == "refusal" else "soft"
        else:
            verdict = judge(status, reason, temporary=False, default="hard")
        return Event(kind, mid, Feedback(verdict, NAME, status=status, diagnostic=f"SendGrid bounce {reason}",
                                         smtp_code=smtp_code(reason), event_id=eid))
    if kind == "dropped":
        return Event(kind, mid, _dropped(reason, eid))
    if kind == "deferred":
        response = text(data.get("response"), 400)
        status = enhanced_status(response)
        verdict = judge(status, response, temporary=True, default="soft")
        if verdict is None:
            return Event(kind, mid, None, "a deferral caused by our sender, not the reader")
        return Event(kind, mid, Feedback(verdict, NAME, status=status, diagnostic=f"SendGrid deferred {response}",
                                         smtp_code=smtp_code(response), event_id=eid))
    if kind == "delivered":
        response = text(data.get("response"), 400)
        return Event(kind, mid, Feedback("delivered", NAME, diagnostic=response, smtp_code=smtp_code(response),
                                         event_id=eid))
    if kind == "spamreport":
        return Event(kind, mid, Feedback("complaint", NAME, feedback_type="abuse", event_id=eid))
    if kind in ("unsubscribe", "group_unsubscribe"):
        return Event(kind, mid, Feedback("complaint", NAME, feedback_type="opt-out", event_id=eid))
    return Event(kind, mid, None, f"SendGrid {name(kind)} is not a bounce, complaint or delivery")


def _dropped(reason: str, eid: str | None) -> Feedback:
    lowered = reason.lower()
    if "bounced address" in lowered or lowered.startswith("invalid"):
        return Feedback("hard", NAME, diagnostic=f"SendGrid dropped: {reason}", event_id=eid)
    if "spam reporting address" in lowered:
        return Feedback("complaint", NAME, feedback_type="abuse", event_id=eid)
    if "unsubscribed address" in lowered:
        return Feedback("complaint", NAME, feedback_type="opt-out", event_id=eid)
    return Feedback("failed", NAME, diagnostic=f"SendGrid dropped: {reason}", event_id=eid)
