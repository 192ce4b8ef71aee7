"""The catch-up edition («بينما كنت نائماً»): the alerts a reader's quiet hours held.

Beat's tick (usecases/digests.send_due) calls `create_catchup(now)`.  When some reader
out of their quiet hours now has `held` rows, it makes one edition for this local hour
(keyed `catchup:<date>:<hour>`: a second tick in the hour finds it), naming the held
alerts (at most CATCHUP_MAX, the newest; an editor's cancelled alert never).  Planning
it (delivery/held.py) gives each such reader one row whose variant is the list of their
own held alerts, rendered once per distinct list by `render_catchup`.

A held row older than HELD_MAX_AGE is news no more: it is closed as `skipped` instead.
"""

from __future__ import annotations

import datetime as dt
import json

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.config import get_settings
from service.editions import keys
from service.logs import get_logger
from service.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    EditionStatus,
    Subscriber,
    SubscriberStatus,
    Subscription,
    utcnow,
)
from service.rendering import contexts
from service.rendering.render import render_variant
from service.rendering.viewmodels import RenderedVariant
from service.subscribers.hours import not_paused
from service.subscribers.quiet import quiet_at

log = get_logger(__name__)

CATCHUP_MAX = 15  # alerts one catch-up lists (the variant, their ids, fits VARCHAR(200))
HELD_MAX_AGE = dt.timedelta(hours=24)
TITLE = "بينما كنت نائماً"


def catchup_key(now: dt.datetime) -> str:
    local = now.astimezone(get_settings().tz)
    return f"catchup:{local.date().isoformat()}:{local.hour:02d}"


def expire_old(session: Session, now: dt.datetime) -> int:
    return session.execute(
        sa.update(Delivery)
        .where(Delivery.status == DeliveryStatus.held, Delivery.updated_at < now - HELD_MAX_AGE)
        .values(status=DeliveryStatus.skipped, smtp_reply="held for the reader's quiet hours for over a day",
                updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount


def due_alerts(session: Session, now: dt.datetime) -> list[int]:
    """The newest alerts (ids, at most CATCHUP_MAX) held for a reader who is awake now: out
    of their quiet hours for the alert's newsletter, and still on it."""
    rows = session.scalars(
        sa.select(Delivery.edition_id)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .join(Edition, Edition.id == Delivery.edition_id)
        .join(Subscription, sa.and_(Subscription.subscriber_id == Delivery.subscriber_id,
                                    Subscription.newsletter_id == Edition.newsletter_id))
        .where(Delivery.status == DeliveryStatus.held, Delivery.updated_at >= now - HELD_MAX_AGE,
               Edition.kind == EditionKind.alert, Edition.status != EditionStatus.cancelled,
               Subscriber.status == SubscriberStatus.active,
               not_paused(now), ~quiet_at(now))
        .distinct()
        .order_by(Delivery.edition_id.desc())
        .limit(CATCHUP_MAX)
    )
    return sorted(rows)


def create_catchup(session: Session, now: dt.datetime | None = None) -> tuple[Edition | None, bool]:
    """This hour's catch-up edition, if some reader's held alerts are due; (edition, created)."""
    now = now or utcnow()
    key = catchup_key(now)
    found = keys.existing(session, key)
    if found is not None:
        return found, False
    expired = expire_old(session, now)
    if expired:
        log.info("catchup.expired_held", rows=expired)
    alerts = due_alerts(session, now)
    if not alerts:
        return None, False
    edition = Edition(kind=EditionKind.catchup, status=EditionStatus.draft, title=TITLE, idempotency_key=key,
                      params={"alerts": alerts}, window_start=now - HELD_MAX_AGE, window_end=now)
    return keys.add_keyed(session, edition)


def _ids(variant: str) -> list[int]:
    try:
        ids = json.loads(variant)
    except ValueError:
        return []
    return [i for i in ids if isinstance(i, int) and not isinstance(i, bool)] if isinstance(ids, list) else []


def render_catchup(session: Session, edition: Edition, variant: str, extra: dict | None = None) -> RenderedVariant | None:
    """One catch-up variant: the alerts its list names (of those the edition named), oldest first.
    `extra`: more for the template (the variant's web copy link)."""
    wanted = set(_ids(variant)) & set((edition.params or {}).get("alerts", []))
    if not wanted:
        return None
    alerts = session.scalars(
        sa.select(Edition).where(Edition.id.in_(wanted), Edition.kind == EditionKind.alert,
                                 Edition.status != EditionStatus.cancelled).order_by(Edition.id)
    ).all()
    items = [(a.params["headline"], a.params["url"], a.params.get("summary", ""), a.started_at or a.created_at)
             for a in alerts if (a.params or {}).get("headline") and (a.params or {}).get("url")]
    if not items:
        return None
    ctx = contexts.catchup_context(contexts.site_view(get_settings()), alerts=items)
    return render_variant("catchup", ctx | (extra or {}))
