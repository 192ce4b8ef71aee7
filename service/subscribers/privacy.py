"""A reader's data: what we keep, the copy they may take, and forgetting them.

* `export_data`: their profile, each newsletter they are on with their choices for it,
  their consent record, what was sent to them (each edition: kind, newsletter, title,
  subject, time, status) and their suppression if any (reason, since) — the JSON the
  preferences page offers.
* `forget`: the reader's row goes, and with it (foreign keys, ON DELETE CASCADE) their
  subscriptions, their ledger rows and their consent record; the audit log keeps its lines about them (an
  action, a time, `subscriber:<id>`, an id that now names nobody) but loses where they
  came from (the IP).  What stays is a keyed hash of the address (service/subscribers/
  hashes.py), so an old list cannot import them again; an address that was on the
  suppression list (a hard bounce, a complaint) leaves the list and is kept as a hash
  for the same reason, so nothing mails it either.
* `purge` (beat, hourly): unconfirmed signups older than PENDING_DAYS are deleted (they
  never became readers: nothing of them is kept, not even a hash); readers unsubscribed
  for UNSUBSCRIBED_DAYS are forgotten as above (a hash, reason `unsubscribed`).  The
  wait keeps what a late bounce or a repeated one-click unsubscribe still needs.

No address, IP or token is written to a log line here: ids and counts only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.config import get_settings
from service.logs import get_logger
from service.models import (
    AuditLog,
    Delivery,
    Edition,
    EditionVariant,
    Frequency,
    Newsletter,
    NewsletterKind,
    Section,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Suppression,
    audit,
    utcnow,
)
from service.newsletters import membership
from service.subscribers import clocks, consent, hashes
from service.subscribers.hours import WEEKDAYS_AR, effective_hour, effective_weekday

log = get_logger(__name__)

PURGE_BATCH = 500  # readers deleted per statement


def export_data(session: Session, sub: Subscriber) -> dict:
    """Everything we hold about this reader, as they may take it away."""
    names = dict(session.execute(sa.select(Section.id, Section.name)).all())
    sends = session.execute(
        sa.select(Delivery.edition_id, Edition.kind, Newsletter.slug, Edition.title, EditionVariant.subject,
                  Delivery.status, Delivery.sent_at, Delivery.updated_at, Edition.created_at)
        .join(Edition, Edition.id == Delivery.edition_id)
        .outerjoin(Newsletter, Newsletter.id == Edition.newsletter_id)
        .outerjoin(EditionVariant, (EditionVariant.edition_id == Delivery.edition_id)
                   & (EditionVariant.variant == Delivery.variant))
        .where(Delivery.subscriber_id == sub.id)
        .order_by(Delivery.edition_id)
    ).all()
    suppressed = session.execute(sa.select(Suppression.reason, Suppression.created_at)
                                 .where(Suppression.email == sub.email.lower())).first()
    return {
        "profile": {
            "email": sub.email,
            "status": sub.status.value,
            "paused_until": sub.paused_until.isoformat() if sub.paused_until else None,
            "subscribed_at": sub.created_at.isoformat() if sub.created_at else None,
            "confirmed_at": sub.confirmed_at.isoformat() if sub.confirmed_at else None,
            "unsubscribed_at": sub.unsubscribed_at.isoformat() if sub.unsubscribed_at else None,
            # The clock their hours are on: theirs, or the site's when they never chose.
            "time_zone": sub.time_zone,
            "timezone": clocks.name_of(sub.time_zone),
        },
        # Each newsletter they are on (a retired one too: the subscription is still theirs).
        "newsletters": [_subscription_data(s, names) for s in membership.of(session, sub.id)],
        "consent": consent.history(session, sub),
        "sent": [
            {"edition": edition_id, "kind": kind.value, "newsletter": newsletter, "title": title, "subject": subject,
             "status": status.value,
             "at": (sent_at or updated_at or created_at).isoformat() if (sent_at or updated_at or created_at) else None}
            for edition_id, kind, newsletter, title, subject, status, sent_at, updated_at, created_at in sends
        ],
        # On the suppression list (a bounce, a complaint, an admin's decision): no mail goes
        # to the address whatever the profile says.
        "suppression": ({"reason": suppressed.reason,
                         "since": suppressed.created_at.isoformat() if suppressed.created_at else None}
                        if suppressed is not None else None),
    }


def _subscription_data(subscription: Subscription, names: dict[int, str]) -> dict:
    """One newsletter the reader is on, with the choices its kind has (their own, or the
    newsletter's default they follow)."""
    newsletter = subscription.newsletter
    data = {"newsletter": newsletter.slug, "name": newsletter.name, "kind": newsletter.kind.value,
            "retired": newsletter.hidden,
            "since": subscription.created_at.isoformat() if subscription.created_at else None}
    if newsletter.kind is NewsletterKind.digest:
        data["frequency"] = newsletter.frequency.value if newsletter.frequency else None
        data["sections"] = [names.get(i, f"#{i}") for i in (subscription.sections or [])] or "all"
        data["digest_hour"] = effective_hour(subscription.digest_hour, newsletter=newsletter)
        if newsletter.frequency is Frequency.weekly:
            data["digest_weekday"] = WEEKDAYS_AR[effective_weekday(subscription.digest_weekday, newsletter=newsletter)]
    else:
        data["quiet_hours"] = ({"from": subscription.quiet_start, "to": subscription.quiet_end,
                                "held_alerts": subscription.quiet_mode}
                               if subscription.quiet_start is not None else None)
        data["alert_cap_per_day"] = subscription.alert_cap
    return data


def _scrub_audit(session: Session, subscriber_ids: list[int]) -> None:
    """The audit log's lines about these readers lose where they came from (an IP)."""
    names = [f"subscriber:{i}" for i in subscriber_ids]
    session.execute(sa.update(AuditLog).where(sa.or_(AuditLog.target.in_(names), AuditLog.actor.in_(names)))
                    .values(origin=None).execution_options(synchronize_session=False))


def _keep_hashes(session: Session, emails: list[str], reason: str) -> None:
    """Each address as a hash; one on the suppression list keeps that reason, as a hash only."""
    listed = dict(session.execute(sa.select(Suppression.email, Suppression.reason)
                                  .where(Suppression.email.in_(emails))).all())
    for email in emails:
        hashes.keep(session, email, listed.get(email, reason))
    if listed:
        session.execute(sa.delete(Suppression).where(Suppression.email.in_(list(listed)))
                        .execution_options(synchronize_session=False))


def forget(session: Session, sub: Subscriber, *, actor: str, reason: str = "forgotten") -> int:
    """Delete the reader and all that is theirs; keep only the keyed hash.  Returns their id."""
    subscriber_id = sub.id
    _keep_hashes(session, [sub.email], reason)
    _scrub_audit(session, [subscriber_id])
    session.delete(sub)
    session.flush()
    if actor == f"subscriber:{subscriber_id}":
        # Their own request: the line says that it happened, not from which address.
        session.add(AuditLog(actor=actor, action="subscriber.forget", target=actor, details={"reason": reason}))
    else:
        audit(session, actor, "subscriber.forget", f"subscriber:{subscriber_id}", reason=reason)
    log.info("subscriber_forgotten", subscriber_id=subscriber_id, reason=reason)
    return subscriber_id


def forget_address(session: Session, email: str, *, actor: str) -> int | None:
    """`nashra subscribers forget EMAIL`: the reader with that (normalised) address, if any,
    is forgotten; the address is kept as a hash either way, so no list brings it back.
    Returns the forgotten reader's id, or None when there was no such reader."""
    sub = session.scalar(sa.select(Subscriber).where(Subscriber.email == email).with_for_update())
    if sub is not None:
        return forget(session, sub, actor=actor)
    _keep_hashes(session, [email], "forgotten")
    audit(session, actor, "subscriber.forget", None, reason="forgotten", known=False)
    log.info("address_forgotten", known=False)
    return None


@dataclass
class PurgeReport:
    pending: int = 0  # unconfirmed signups deleted
    unsubscribed: int = 0  # long-unsubscribed readers forgotten (a hash kept)

    def as_dict(self) -> dict:
        return asdict(self)


def purge_batch(session: Session, now: dt.datetime | None = None) -> PurgeReport:
    """One batch of the hourly purge (at most PURGE_BATCH readers of each kind); the
    caller commits and calls again while it returns anything."""
    settings = get_settings()
    now = now or utcnow()
    report = PurgeReport()
    pending_before = now - dt.timedelta(days=settings.pending_days)
    rows = session.execute(
        sa.select(Subscriber.id, Subscriber.email, Subscriber.confirmed_at)
        .where(Subscriber.status == SubscriberStatus.pending,
               sa.func.coalesce(Subscriber.consented_at, Subscriber.created_at) < pending_before)
        .order_by(Subscriber.id).limit(PURGE_BATCH).with_for_update(skip_locked=True)
    ).all()
    if rows:
        # Never confirmed: nothing is kept.  A former reader who signed up again and did not
        # confirm is kept as a hash, as their unsubscription would have been.
        former = [email for _, email, confirmed in rows if confirmed is not None]
        ids = [i for i, _, _ in rows]
        if former:
            _keep_hashes(session, former, "unsubscribed")
        _scrub_audit(session, ids)
        session.execute(sa.delete(Subscriber).where(Subscriber.id.in_(ids)).execution_options(synchronize_session=False))
        report.pending = len(ids)
    left_before = now - dt.timedelta(days=settings.unsubscribed_days)
    rows = session.execute(
        sa.select(Subscriber.id, Subscriber.email)
        .where(Subscriber.status == SubscriberStatus.unsubscribed,
               sa.func.coalesce(Subscriber.unsubscribed_at, Subscriber.updated_at) < left_before)
        .order_by(Subscriber.id).limit(PURGE_BATCH).with_for_update(skip_locked=True)
    ).all()
    if rows:
        ids = [i for i, _ in rows]
        _keep_hashes(session, [email for _, email in rows], "unsubscribed")
        _scrub_audit(session, ids)
        session.execute(sa.delete(Subscriber).where(Subscriber.id.in_(ids)).execution_options(synchronize_session=False))
        report.unsubscribed = len(ids)
    if report.pending or report.unsubscribed:
        audit(session, "system", "subscribers.purge", None, pending=report.pending, unsubscribed=report.unsubscribed)
        log.info("subscribers_purged", pending=report.pending, unsubscribed=report.unsubscribed)
    return report
