"""Readers as tests make them: a subscriber row and their newsletters.

`reader(session, email, …)` speaks the older one-subscription words most tests were
written in — frequency daily|weekly|none, alerts yes/no, sections, digest hour and day,
quiet hours, cap — and maps them onto the `daily`, `weekly` and `alerts` newsletters the
way migration 0008 mapped real readers; `newsletters=` names others.  Like before, a
reader made without saying gets the daily digest and alerts.
"""

from __future__ import annotations

import sqlalchemy as sa

from service.models import Newsletter, Subscriber, SubscriberStatus, Subscription, utcnow
from service.newsletters import catalogue

DIGEST = ("sections", "digest_hour", "digest_weekday")
ALERTS = ("quiet_start", "quiet_end", "quiet_mode", "alert_cap", "alerts_day", "alerts_today")


def _ids(conn) -> dict[str, int]:
    return dict(conn.execute(sa.select(Newsletter.slug, Newsletter.id)).all())


def reader(session, email: str, *, status: SubscriberStatus | str = SubscriberStatus.active,
           frequency: str = "daily", alerts: bool = True, newsletters: list[str] | None = None,
           **fields) -> Subscriber:
    """One reader (flushed: it has its id) on the newsletters the words name."""
    choices = {k: fields.pop(k) for k in (*DIGEST, *ALERTS) if k in fields}
    sub = Subscriber(email=email, status=SubscriberStatus(status), **fields)
    session.add(sub)
    session.flush()
    ids = _ids(session)
    slugs = newsletters if newsletters is not None else catalogue.legacy_slugs(frequency, alerts)
    for slug in slugs:
        digest = slug != catalogue.ALERTS and session.get(Newsletter, ids[slug]).kind.value == "digest"
        own = {k: v for k, v in choices.items() if k in (DIGEST if digest else ALERTS)}
        own["sections"] = list(own.get("sections") or []) if digest else []
        own.setdefault("quiet_mode", "hold")
        own.setdefault("alerts_today", 0)
        session.add(Subscription(newsletter_id=ids[slug], subscriber_id=sub.id, **own))
    session.flush()
    return sub


def subscribe_all(conn, subscriber_ids: list[int] | None = None, *, frequency: str = "daily",
                  alerts: bool = True, sections: list | None = None) -> None:
    """Bulk: put readers already inserted (all of them, or these ids) on the newsletters the
    words name, in one INSERT … SELECT per newsletter."""
    ids = _ids(conn)
    now = utcnow()
    for slug in catalogue.legacy_slugs(frequency, alerts):
        picked = sa.select(sa.literal(ids[slug]), Subscriber.id,
                           sa.literal(sections or [] if slug != catalogue.ALERTS else [],
                                      type_=Subscription.__table__.c.sections.type),
                           sa.literal("hold"), sa.literal(0), sa.literal(now, type_=Subscription.__table__.c.created_at.type))
        if subscriber_ids is not None:
            picked = picked.where(Subscriber.id.in_(subscriber_ids))
        conn.execute(sa.insert(Subscription).from_select(
            ["newsletter_id", "subscriber_id", "sections", "quiet_mode", "alerts_today", "created_at"], picked))
