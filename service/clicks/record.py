"""Clicks per link and UTC hour: one upserted row per (link, hour), nothing about who."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.models import ClickCount

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def hour_of(now: dt.datetime) -> dt.datetime:
    return now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def count(session: Session, link_id: int, now: dt.datetime, *, ignored: bool = False) -> None:
    """One click on `link_id` (a scanner's or a prefetch's when `ignored`).

    An upsert, so two clicks at once on the same link add up instead of failing each
    other: INSERT … ON CONFLICT (link_id, hour) DO UPDATE SET clicks = clicks + 1.
    """
    table = ClickCount.__table__
    insert = _INSERTS[session.get_bind().dialect.name](table).values(
        link_id=link_id, hour=hour_of(now), clicks=0 if ignored else 1, ignored=1 if ignored else 0
    )
    column = table.c.ignored if ignored else table.c.clicks
    session.execute(insert.on_conflict_do_update(index_elements=[table.c.link_id, table.c.hour],
                                                 set_={column.name: column + 1}))
