"""The rules every piece of feedback is applied by, whatever brought it.

A DSN at the bounce server, a bounce read from a mailbox, an SES notification, a Mailgun,
Postmark or SendGrid event: each is turned by its reader into one `Feedback` and the row
it is about (or, for a one-off mail, the reader), and goes through `apply`:

| kind        | the ledger row                         | the address                              |
|-------------|----------------------------------------|------------------------------------------|
| `hard`      | `failed`                               | suppressed (`hard_bounce`)               |
| `soft`      | noted (the relay may still be trying)  | suppressed (`soft_bounce`) at the        |
|             |                                        | SOFT_BOUNCE_LIMIT-th edition within      |
|             |                                        | SOFT_BOUNCE_DAYS                         |
| `failed`    | `failed` (mailbox full for good, too   | kept: a 5.x.x that is not about the      |
|             | big, content policy)                   | address                                  |
| `refusal`   | `failed`, the reply says "refused us"  | kept: the receiver refused *our* sender  |
|             |                                        | (5.1.8, 5.7.x about the sender, SPF/DMARC)|
| `complaint` | unchanged                              | abuse/fraud: suppressed (`complaint`)    |
|             |                                        | and unsubscribed; opt-out: unsubscribed  |
| `delivered` | unchanged                              | the soft-bounce count starts again       |
|             |                                        | (as it does when an admin lifts the      |
|             |                                        | address's suppression)                   |

Every write is conditional, and a provider's event id (hashed into
`feedback_events.event_key`) is taken once, so the same report twice changes nothing
more.  The caller owns the transaction; nothing here commits.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.config import Settings, get_settings
from service.db import insert_ignoring
from service.delivery.compose import message_id
from service.delivery.verdicts import scrub
from service.logs import get_logger
from service.models import Delivery, DeliveryStatus, FeedbackEvent, Subscriber, audit, utcnow
from service.subscribers.lifecycle import unsubscribe
from service.subscribers.suppression import LIFTED, suppress

log = get_logger(__name__)

ACTOR = "bounces"
KINDS = ("hard", "soft", "failed", "refusal", "complaint", "delivered")
SOURCES = ("smtp", "imap", "ses", "mailgun", "postmark", "sendgrid")
# What starts the soft-bounce count again: a delivery report, or an admin lifting the
# address's suppression (service/subscribers/suppression.py records that as an event too).
RESTARTS = ("delivered", LIFTED[1])
# Complaints that end the reader's mail and keep the address out; an opt-out report
# (the mailbox provider's own "unsubscribe" button) only unsubscribes them.
SUPPRESSING_COMPLAINTS = frozenset({"abuse", "fraud", "virus"})
COMPLAINT_TYPES = SUPPRESSING_COMPLAINTS | {"opt-out"}

# A bounce can end these rows: the message was (or may have been) handed over, or is
# waiting to be sent again after a crash.  A `claimed` row belongs to a worker right
# now; suppression alone stops it at the worker's re-check.
_ENDABLE = (DeliveryStatus.sent, DeliveryStatus.unknown, DeliveryStatus.queued, DeliveryStatus.retry)
# A note about a delay only makes sense on a row whose message the relay accepted.
_NOTABLE = (DeliveryStatus.sent, DeliveryStatus.unknown)
_OUR_MESSAGE_ID = re.compile(r"^<nashra\.(\d{1,18})\.(\d{1,18})\.[0-9a-f]{10}@[^<>\s]+>$", re.IGNORECASE)
_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


@dataclass(frozen=True)
class Feedback:
    """What one report says about one message (or one reader), from any source."""

    kind: str  # one of KINDS
    source: str  # one of SOURCES
    status: str | None = None  # the enhanced status code, e.g. "5.1.1"
    diagnostic: str = ""  # what the report said, for the row's reply: one line, scrubbed of addresses
    smtp_code: int | None = None
    feedback_type: str | None = None  # complaints: abuse | fraud | opt-out …
    event_id: str | None = None  # the provider's own id for the event (idempotency)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown feedback kind {self.kind!r}")
        if self.source not in SOURCES:
            raise ValueError(f"unknown feedback source {self.source!r}")
        if self.status is not None and not _STATUS.match(self.status):
            object.__setattr__(self, "status", None)
        object.__setattr__(self, "diagnostic", " ".join(scrub(self.diagnostic or "").split())[:400])


@dataclass(frozen=True)
class InboundResult:
    """What one report did.  `changed` is False for a repeat or a refusal."""

    outcome: str  # hard_bounce | soft_bounce | failed | refused_us | complaint | delivered | ignored | rejected
    delivery_id: int | None = None
    changed: bool = False
    reason: str = ""
    status: str | None = None
    details: dict = field(default_factory=dict)


class Forged(Exception):
    """The report names a message of ours with an id we did not sign."""


# ---------------------------------------------------------------- which message


def message_id_pair(mid: str, settings: Settings | None = None) -> tuple[int, int] | None:
    """(edition id, subscriber id) from one of our ledger Message-IDs, HMAC-checked; None
    when it is not of our shape.  Raises Forged for our shape with a wrong signature."""
    mid = mid.strip()
    if not mid.startswith("<"):
        mid = f"<{mid}>"
    m = _OUR_MESSAGE_ID.match(mid)
    if not m:
        return None
    pair = int(m[1]), int(m[2])
    if not hmac.compare_digest(mid.lower(), message_id(settings or get_settings(), *pair).lower()):
        raise Forged("a Message-ID of our shape with a bad signature")
    return pair


def row_by_message_id(session: Session, mid: str, settings: Settings | None = None) -> Delivery | None:
    """The ledger row one of our Message-IDs names (locked), or None.  Raises Forged."""
    pair = message_id_pair(mid, settings)
    if pair is None:
        return None
    return locked_row(session, Delivery.edition_id == pair[0], Delivery.subscriber_id == pair[1])


def locked_row(session: Session, *where) -> Delivery | None:
    # Locked: the same report arriving twice at once is applied once.
    return session.scalar(sa.select(Delivery).where(*where).with_for_update())


# ---------------------------------------------------------------- applying it


def _event_key(fb: Feedback) -> str | None:
    if not fb.event_id:
        return None
    return hashlib.sha256(f"{fb.source}\x00{fb.event_id}".encode()).hexdigest()


def _first_time(session: Session, fb: Feedback, sub: Subscriber, row: Delivery | None) -> bool:
    """Record the event; False when this provider event was applied before."""
    table = FeedbackEvent.__table__
    values = {"received_at": utcnow(), "source": fb.source, "kind": fb.kind, "subscriber_id": sub.id,
              "edition_id": row.edition_id if row is not None else None,
              "delivery_id": row.id if row is not None else None, "status": fb.status,
              "event_key": _event_key(fb)}
    if values["event_key"] is None:
        session.execute(sa.insert(table).values(**values))
        return True
    new = session.execute(insert_ignoring(session, table, ["event_key"]).values(**values).returning(table.c.id))
    return new.scalar() is not None


def apply(session: Session, fb: Feedback, sub: Subscriber, row: Delivery | None = None, *,
          target: str | None = None, ids: dict | None = None, settings: Settings | None = None) -> InboundResult:
    """Apply one piece of feedback about `row` (a ledger row of `sub`'s) or, for a one-off
    mail with no row, about the reader `sub` (`target` names the mail for the audit)."""
    settings = settings or get_settings()
    ids = dict(ids or {})
    ids.setdefault("subscriber_id", sub.id)
    if row is not None:
        ids.setdefault("edition_id", row.edition_id)
    ids["source"] = fb.source
    target = target or (f"delivery:{row.id}" if row is not None else f"subscriber:{sub.id}")
    row_id = row.id if row is not None else None
    if not _first_time(session, fb, sub, row):
        return InboundResult(_OUTCOME[fb.kind], row_id, False, reason="this event was applied before",
                             status=fb.status, details=ids)
    if fb.kind == "complaint":
        return _complaint(session, fb, sub, row_id, target, ids)
    if fb.kind == "delivered":
        return InboundResult("delivered", row_id, True, status=fb.status, details=ids)
    if fb.kind == "soft":
        return _soft(session, fb, sub, row, target, ids, settings)
    return _failed(session, fb, sub, row, target, ids)


_OUTCOME = {"hard": "hard_bounce", "soft": "soft_bounce", "failed": "failed", "refusal": "refused_us",
            "complaint": "complaint", "delivered": "delivered"}


def _fail_row(session: Session, row: Delivery, fb: Feedback, what: str) -> bool:
    reply = f"{what} after acceptance: {fb.diagnostic or fb.status or fb.source}"
    # Conditional, like every ledger write: a row already ended stays as it is.
    return bool(session.execute(
        sa.update(Delivery)
        .where(Delivery.id == row.id, Delivery.status.in_([s.value for s in _ENDABLE]))
        .values(status=DeliveryStatus.failed, smtp_code=fb.smtp_code, smtp_reply=" ".join(reply.split())[:1000],
                updated_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount)


def _failed(session, fb: Feedback, sub: Subscriber, row: Delivery | None, target: str, ids: dict) -> InboundResult:
    outcome = _OUTCOME[fb.kind]
    what = {"hard": "bounced", "failed": "failed", "refusal": "refused our sender"}[fb.kind]
    moved = _fail_row(session, row, fb, what) if row is not None else False
    added = False
    if fb.kind == "hard":
        added = suppress(session, sub.email, "hard_bounce", detail=f"{fb.source} {fb.status or 'hard'} for {target}",
                         actor=ACTOR)
    if fb.kind == "refusal":
        # Never the reader's fault: the receiver refused *us* (our sender address, SPF,
        # DKIM, DMARC, our reputation).  Operators see it in the log and the metrics.
        log.warning("bounce.refused_us", status=fb.status, **ids)
    changed = bool(moved or added)
    if changed:
        audit(session, ACTOR, f"bounce.{outcome}", target, status=fb.status, row_failed=bool(moved),
              suppressed=added, **ids)
    return InboundResult(outcome, row.id if row is not None else None, changed, status=fb.status, details=ids)


def soft_count(session: Session, subscriber_id: int, settings: Settings, now: dt.datetime | None = None) -> int:
    """Different editions that soft-bounced for this reader within SOFT_BOUNCE_DAYS, since
    their last delivery report (or the last lift of their suppression)."""
    now = now or utcnow()
    fe = FeedbackEvent.__table__
    since = now - dt.timedelta(days=settings.soft_bounce_days)
    last_ok = session.scalar(sa.select(sa.func.max(fe.c.received_at))
                             .where(fe.c.subscriber_id == subscriber_id, fe.c.kind.in_(RESTARTS)))
    if last_ok is not None:
        if last_ok.tzinfo is None:
            last_ok = last_ok.replace(tzinfo=dt.UTC)
        since = max(since, last_ok)
    return session.scalar(sa.select(sa.func.count(sa.distinct(fe.c.edition_id)))
                          .where(fe.c.subscriber_id == subscriber_id, fe.c.kind == "soft",
                                 fe.c.received_at >= since)) or 0


def _soft(session, fb: Feedback, sub: Subscriber, row: Delivery | None, target: str, ids: dict,
          settings: Settings) -> InboundResult:
    noted = False
    if row is not None:
        before = f"{row.smtp_code} accepted" if row.smtp_code else "handed over"
        note = " ".join(f"{before}; later {fb.diagnostic or fb.status or 'a soft bounce'}".split())[:1000]
        noted = bool(session.execute(
            sa.update(Delivery)
            .where(Delivery.id == row.id, Delivery.status.in_([s.value for s in _NOTABLE]),
                   Delivery.smtp_reply.is_distinct_from(note))
            .values(smtp_reply=note, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount)
    count = soft_count(session, sub.id, settings)
    added = False
    if count >= settings.soft_bounce_limit:
        added = suppress(session, sub.email, "soft_bounce",
                         detail=f"{count} soft bounces within {settings.soft_bounce_days} days (last: {target})",
                         actor=ACTOR)
        if added:
            audit(session, ACTOR, "bounce.soft_limit", target, status=fb.status, soft_bounces=count, **ids)
    return InboundResult("soft_bounce", row.id if row is not None else None, bool(noted or added), status=fb.status,
                         details={**ids, "soft_bounces": count, "suppressed": added})


def _complaint(session, fb: Feedback, sub: Subscriber, row_id: int | None, target: str, ids: dict) -> InboundResult:
    ftype = (fb.feedback_type or "abuse").lower()
    added = False
    if ftype in SUPPRESSING_COMPLAINTS:
        added = suppress(session, sub.email, "complaint", detail=f"{fb.source} {ftype} complaint about {target}",
                         actor=ACTOR)
    left = unsubscribe(session, sub, actor=ACTOR)
    changed = bool(added or left)
    if changed:
        audit(session, ACTOR, "complaint", target, feedback_type=ftype, suppressed=added, unsubscribed=left, **ids)
    return InboundResult("complaint", row_id, changed, details={**ids, "feedback_type": ftype})


FORGET_BATCH = 10_000


def forget_old_reports(session: Session, settings: Settings | None = None, now: dt.datetime | None = None) -> int:
    """Delete one batch of delivery reports (and lift marks) older than SOFT_BOUNCE_DAYS:
    they only ever restart a soft-bounce count inside that window, and a provider sends one
    per message, so kept for ever they would outgrow the ledger.  Bounces and complaints
    stay.  Returns how many went; the caller commits and calls again while it is a batch."""
    settings = settings or get_settings()
    cutoff = (now or utcnow()) - dt.timedelta(days=settings.soft_bounce_days)
    fe = FeedbackEvent.__table__
    ids = sa.select(fe.c.id).where(fe.c.kind.in_(RESTARTS), fe.c.received_at < cutoff).limit(FORGET_BATCH)
    return session.execute(sa.delete(fe).where(fe.c.id.in_(ids.scalar_subquery()))).rowcount or 0

