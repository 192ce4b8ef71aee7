"""Amazon SES, through an SNS topic: bounces, complaints, deliveries (and delays).

The POST is an SNS message (sns.py verifies it: topic in SES_TOPIC_ARNS, recent,
signed by a certificate from an `sns.<region>.amazonaws.com` host).  A
`SubscriptionConfirmation` is confirmed by following its SubscribeURL; a `Notification`
carries the SES event as JSON in `Message` — `notificationType` for SES's own feedback
notifications, `eventType` for a configuration set's event destination; both read alike.

Which message: the Message-ID Nashra set, from `mail.headers` (the headers as sent to
SES) or else `mail.commonHeaders.messageId`.  SES's own `mail.messageId` is not ours.

| SES says                                         | Feedback                          |
|--------------------------------------------------|-----------------------------------|
| Bounce Permanent, NoEmail / Suppressed / OnAccountSuppressionList | hard             |
| Bounce Permanent, General (or other)             | the classifier on status and words; hard when it has none |
| Bounce Permanent, MailboxFull                    | soft                              |
| Bounce Permanent, MessageTooLarge / ContentRejected / AttachmentRejected | failed |
| Bounce Transient / Undetermined                  | soft (None when it is about our sender) |
| Complaint abuse / fraud / virus / other / none   | complaint (`other`, none: abuse)  |
| Complaint not-spam, auth-failure                 | nothing: not a reader complaining |
| Delivery                                         | delivered                         |
| DeliveryDelay                                    | soft, as a Transient bounce       |

A refusal of our sender (5.1.8, SPF, a blocklist…) is `refusal` whatever SES calls it.
The event id is SES's `feedbackId` (the same bounce through a notification *and* an event
destination is applied once), else SES's message id with the event type.
"""

from __future__ import annotations

import datetime as dt
import json

from service.config import Settings
from service.inbound.actions import COMPLAINT_TYPES, Feedback
from service.inbound.webhooks import sns
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

NAME = "ses"
_ADDRESS_GONE = {"noemail", "suppressed", "onaccountsuppressionlist"}
_MESSAGE_PROBLEM = {"messagetoolarge", "contentrejected", "attachmentrejected"}
# The most final answer wins when SES lists several recipients (ours have one).
_WEIGHT = {None: 0, "soft": 1, "failed": 2, "refusal": 3, "hard": 4}


def configured(settings: Settings) -> bool:
    return bool(settings.ses_topic_arns)


def parse(headers: dict[str, str], body: bytes, settings: Settings, now: dt.datetime) -> Parsed:
    message = load_json(body)
    if not isinstance(message, dict):
        raise Refused(400, "not an SNS message")
    declared = headers.get("x-amz-sns-message-type")
    if declared is not None and declared != message.get("Type"):
        raise Refused(400, "x-amz-sns-message-type does not match the message")
    sns.verify(message, settings.ses_topic_arns, now, settings.webhook_max_age_seconds)
    if message["Type"] == "SubscriptionConfirmation":
        sns.confirm(message)
        return Parsed(answer={"status": "subscription confirmed"})
    if message["Type"] == "UnsubscribeConfirmation":
        return Parsed(answer={"status": "unsubscribed from the topic; nothing to do"})
    try:
        ses_event = json.loads(message["Message"])
    except (ValueError, RecursionError):
        ses_event = None
    if not isinstance(ses_event, dict):
        # SES's test message when a topic is attached, or another service's: signed, not ours to read.
        return Parsed([Event("", None, None, "the notification is not an SES event")])
    return Parsed([_event(ses_event, message["MessageId"])])


def _message_id(mail: dict) -> str | None:
    for header in seq(mail.get("headers")):
        header = obj(header)
        if text(header.get("name"), 100).lower() == "message-id":
            return text(header.get("value"), 400) or None
    return text(obj(mail.get("commonHeaders")).get("messageId"), 400) or None


def _event(ses: dict, sns_message_id: str) -> Event:
    kind = text(ses.get("notificationType") or ses.get("eventType"), 40)
    mail = obj(ses.get("mail"))
    mid = _message_id(mail)
    ses_id = text(mail.get("messageId"), 200)
    if kind == "Bounce":
        bounce = obj(ses.get("bounce"))
        eid = event_id("feedback", text(bounce.get("feedbackId"), 200)) or event_id("sns", sns_message_id)
        return Event(kind, mid, *_bounce(bounce, eid))
    if kind == "Complaint":
        complaint = obj(ses.get("complaint"))
        ftype = text(complaint.get("complaintFeedbackType"), 40).lower() or "abuse"
        if ftype == "other":
            ftype = "abuse"  # a spam button without an ARF type: the reader complained
        if ftype not in COMPLAINT_TYPES:
            return Event(kind, mid, None, f"a {name(ftype)} report is not a reader's complaint")
        eid = event_id("feedback", text(complaint.get("feedbackId"), 200)) or event_id("sns", sns_message_id)
        return Event(kind, mid, Feedback("complaint", NAME, feedback_type=ftype, event_id=eid))
    if kind == "Delivery":
        delivery = obj(ses.get("delivery"))
        eid = event_id("delivery", ses_id) or event_id("sns", sns_message_id)
        reply = text(delivery.get("smtpResponse"), 400)
        return Event(kind, mid, Feedback("delivered", NAME, diagnostic=reply, smtp_code=smtp_code(reply),
                                         event_id=eid))
    if kind == "DeliveryDelay":
        delay = obj(ses.get("deliveryDelay"))
        recipient = obj(next(iter(seq(delay.get("delayedRecipients"))), None))
        words = " ".join([text(recipient.get("diagnosticCode"), 400), text(delay.get("delayType"), 60)])
        status = enhanced_status(text(recipient.get("status"), 20), words)
        verdict = judge(status, words, temporary=True, default="soft")
        eid = event_id("delay", ses_id, text(delay.get("timestamp"), 40)) or event_id("sns", sns_message_id)
        if verdict is None:
            return Event(kind, mid, None, "a delay caused by our sender, not the reader")
        return Event(kind, mid, Feedback(verdict, NAME, status=status, diagnostic=f"SES delay {words}",
                                         event_id=eid))
    return Event(kind, mid, None, f"SES {name(kind)} is not a bounce, complaint or delivery")


def _bounce(bounce: dict, eid: str | None) -> tuple[Feedback | None, str]:
    btype = text(bounce.get("bounceType"), 40)
    subtype = text(bounce.get("bounceSubType"), 60).lower()
    judged = []
    for recipient in seq(bounce.get("bouncedRecipients"))[:50] or [{}]:
        recipient = obj(recipient)
        words = text(recipient.get("diagnosticCode"), 400)
        status = enhanced_status(text(recipient.get("status"), 20), words)
        judged.append((_kind(btype, subtype, status, words), status, words))
    kind, status, words = max(judged, key=lambda j: _WEIGHT[j[0]])
    if kind is None:
        return None, "a temporary bounce caused by our sender, not the reader"
    diagnostic = f"SES {btype} {text(bounce.get('bounceSubType'), 60)} {words}"
    return Feedback(kind, NAME, status=status, diagnostic=diagnostic, smtp_code=smtp_code(words), event_id=eid), ""


def _kind(btype: str, subtype: str, status: str | None, words: str) -> str | None:
    if btype == "Permanent":
        verdict = judge(status, words, temporary=False, default="hard")
        if verdict == "refusal":
            return verdict  # whatever the subtype: the receiver refused us, not the address
        if subtype in _ADDRESS_GONE:
            return "hard"
        if subtype == "mailboxfull":
            return "soft"
        if subtype in _MESSAGE_PROBLEM:
            return "failed"
        return verdict
    # Transient, Undetermined: SES gave up for now; the soft-bounce policy decides later.
    return judge(status, words, temporary=True, default="soft")
