"""Who is on which newsletter, with which choices (one `subscriptions` row each).

The row is the subscription: leaving deletes it, and a message of that newsletter still
queued finds no row when a worker claims it and is skipped (delivery/batch.py).  The
reader's row keeps what is theirs whatever they read: address, status, clock, pause.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.models import Newsletter, NewsletterKind, Subscription

# The choices a subscription carries, by newsletter kind (the rest stay at their defaults).
DIGEST_CHOICES = ("sections", "digest_hour", "digest_weekday")
ALERT_CHOICES = ("quiet_start", "quiet_end", "quiet_mode", "alert_cap")


def choices_for(kind: NewsletterKind) -> tuple[str, ...]:
    return DIGEST_CHOICES if kind is NewsletterKind.digest else ALERT_CHOICES


def of(session: Session, subscriber_id: int) -> list[Subscription]:
    """A reader's subscriptions, in the site's order of newsletters."""
    return list(session.scalars(
        sa.select(Subscription).join(Newsletter, Newsletter.id == Subscription.newsletter_id)
        .where(Subscription.subscriber_id == subscriber_id)
        .order_by(Newsletter.position, Newsletter.id)))


def find(session: Session, subscriber_id: int, newsletter_id: int) -> Subscription | None:
    return session.get(Subscription, (newsletter_id, subscriber_id))


def join(session: Session, subscriber_id: int, newsletter: Newsletter, **choices) -> Subscription:
    """Put the reader on `newsletter` (or change their choices if they are on it already);
    only the choices its kind has are taken."""
    allowed = set(choices_for(newsletter.kind))
    unknown = set(choices) - allowed - {"sections"}
    if unknown:
        raise TypeError(f"{newsletter.kind.value} newsletters have no {sorted(unknown)}")
    subscription = find(session, subscriber_id, newsletter.id)
    if subscription is None:
        subscription = Subscription(newsletter_id=newsletter.id, subscriber_id=subscriber_id, sections=[],
                                    quiet_mode="hold", alerts_today=0)
        session.add(subscription)
    for name, value in choices.items():
        if name in allowed:
            setattr(subscription, name, [] if name == "sections" and value is None else value)
    session.flush()
    return subscription


def leave(session: Session, subscriber_id: int, newsletter_id: int) -> int | None:
    """Take the reader off one newsletter.  How many they are still on, or None when they
    were not on it (a second click changes nothing)."""
    deleted = session.execute(sa.delete(Subscription).where(
        Subscription.subscriber_id == subscriber_id, Subscription.newsletter_id == newsletter_id)).rowcount
    if not deleted:
        return None
    return count(session, subscriber_id)


def leave_all(session: Session, subscriber_id: int) -> int:
    return session.execute(sa.delete(Subscription).where(Subscription.subscriber_id == subscriber_id)).rowcount


def count(session: Session, subscriber_id: int) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(Subscription)
                          .where(Subscription.subscriber_id == subscriber_id)) or 0

