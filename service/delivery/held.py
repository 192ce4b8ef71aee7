"""The catch-up edition's audience: readers whose quiet hours held alerts, now awake.

An alert a reader's quiet hours held is a `held` ledger row of that alert (the batch
decided it: service/subscribers/quiet.py).  When their window ends, beat's tick makes a
catch-up edition (service/editions/catchup.py) naming the alerts held lately; planning it
writes, like every plan, one INSERT … SELECT per chunk of subscriber ids: one row per
reader who has held rows of those alerts, active, not paused and not suppressed, still
on the alert's newsletter and out of their quiet hours for it now (each held row is
looked at with the reader's subscription to its own alert's newsletter: quiet hours are
per newsletter).  The catch-up names no newsletter itself: it carries the alerts of
whichever alerts newsletters held them.  The row's variant is the list of *their*
held alerts ("[12,15]"), so the mail is rendered once per distinct list, and the batch
sends it like any other edition (claims, re-checks, grouped outcomes).

In the same transaction the held rows the new rows list become `bundled`: each held
alert reaches a reader once, in one catch-up.  A row held after the INSERT (an alert
still going out) is not in its reader's list and stays `held` for the next catch-up.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from service.db import insert_ignoring
from service.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Suppression,
    utcnow,
)
from service.subscribers.hours import not_paused
from service.subscribers.quiet import quiet_at

D = Delivery.__table__


def _listed_ids(variant: sa.ColumnElement, edition_id: sa.ColumnElement) -> sa.ColumnElement[bool]:
    """Whether "[12,15]" lists `edition_id`: ",12,15," LIKE "%,12,%" (the same on both databases)."""
    inner = sa.func.substr(variant, 2, sa.func.length(variant) - 2, type_=sa.Text)
    return (sa.literal(",") + inner + sa.literal(",")).like(
        sa.literal("%,") + sa.cast(edition_id, sa.Text) + sa.literal(",%"))


def insert_catchup_audience(session: Session, edition: Edition, after: int, through: int) -> int:
    """The catch-up's ledger rows among subscribers after < id <= through; how many were new."""
    alerts = [int(i) for i in (edition.params or {}).get("alerts", []) if isinstance(i, int)]
    if not alerts:
        return 0
    now = utcnow()
    dialect = session.get_bind().dialect.name
    as_text = sa.cast(Delivery.edition_id, sa.Text)
    if dialect == "postgresql":
        joined = sa.func.string_agg(as_text, postgresql.aggregate_order_by(sa.literal(","), Delivery.edition_id),
                                    type_=sa.Text)
    else:
        joined = sa.func.group_concat(as_text, ",", type_=sa.Text)
    variant = sa.literal("[") + joined + sa.literal("]")
    alert = sa.orm.aliased(Edition, name="held_alert")
    audience = (
        sa.select(
            sa.literal(edition.id),
            Delivery.subscriber_id,
            variant,
            sa.literal(DeliveryStatus.queued.value),
            sa.literal(0),
            sa.literal(now, type_=D.c.updated_at.type),
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        # The held row's alert, and the reader's subscription to its newsletter (gone: they
        # left it, and the held alert with it).
        .join(alert, alert.id == Delivery.edition_id)
        .join(Subscription, sa.and_(Subscription.subscriber_id == Delivery.subscriber_id,
                                    Subscription.newsletter_id == alert.newsletter_id))
        .where(
            Delivery.status == DeliveryStatus.held,
            Delivery.edition_id.in_(alerts),
            Subscriber.status == SubscriberStatus.active,
            ~sa.exists().where(Suppression.email == Subscriber.email),
            not_paused(now),
            ~quiet_at(now),
            Subscriber.id > after,
            Subscriber.id <= through,
        )
        .group_by(Delivery.subscriber_id)
    )
    cols = ["edition_id", "subscriber_id", "variant", "status", "attempts", "updated_at"]
    stmt = insert_ignoring(session, D, ["edition_id", "subscriber_id"]).from_select(cols, audience)
    inserted = session.execute(stmt.execution_options(preserve_rowcount=True)).rowcount
    mine = D.alias("catchup_row")
    session.execute(
        sa.update(D)
        .where(
            D.c.status == DeliveryStatus.held.value,
            D.c.edition_id.in_(alerts),
            D.c.subscriber_id > after,
            D.c.subscriber_id <= through,
            sa.exists().where(mine.c.edition_id == edition.id, mine.c.subscriber_id == D.c.subscriber_id,
                              _listed_ids(mine.c.variant, D.c.edition_id)),
        )
        .values(status=DeliveryStatus.bundled.value, smtp_reply=f"in catch-up edition {edition.id}", updated_at=now)
    )
    return inserted
