"""The next scheduled digests, as they would be made now: what the digest preview shows.

Beat makes one digest per slot (service/editions/schedule.py): a frequency and a UTC
hour, holding every reader whose own hour (and, weekly, day) on their own clock falls
there.  `upcoming_slots` lists the next slot of every group of readers (a zone, an hour,
a day), soonest first, with its readers (counted with the planner's rule), and always
the slot of readers who never chose; `slot_digest` makes the edition beat would make at
that slot's time — the same `create_digest`, its window chained on that slot's last
edition, holding what has been ingested so far — inside the caller's transaction, which
the caller rolls back: previewing writes nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.config import Settings, get_settings
from service.editions.digests import create_digest
from service.editions.keys import existing
from service.editions.schedule import Slot, slot_condition, slot_of
from service.models import Edition, Frequency, Subscriber, SubscriberStatus, Suppression, utcnow
from service.subscribers import clocks
from service.subscribers.hours import default_hour, effective_hour, effective_weekday, not_paused

LOOKAHEAD = 3  # occurrences of a slot tried past one already made (`nashra digest send` ahead of its time)


@dataclass(frozen=True)
class UpcomingSlot:
    slot: Slot
    send_at: dt.datetime  # UTC
    readers: int  # who planning it now would reach (the planner's rule)


def _occurrences(frequency: Frequency, hour: int, weekday: int | None, now: dt.datetime, settings: Settings,
                 tz: dt.tzinfo):
    """The slots of local hour (and day) in `tz`, the first one due strictly after `now`."""
    today = now.astimezone(tz).date() - dt.timedelta(days=1)  # yesterday's hour may still be ahead in UTC terms
    if frequency is Frequency.weekly:
        date, step = today + dt.timedelta(days=(weekday - today.weekday()) % 7), dt.timedelta(days=7)
    else:
        date, step = today, dt.timedelta(days=1)
    while True:
        slot = slot_of(frequency, date, hour, settings, tz)
        if slot.at > now:
            yield slot
        date += step


def next_slot(session: Session | None, frequency: Frequency | str, hour: int, weekday: int | None = None,
              now: dt.datetime | None = None, settings: Settings | None = None,
              taken: set[str] | None = None, zone: str | None = None) -> Slot:
    """The next slot of local `hour` (and, weekly, `weekday`) in `zone` (default TIMEZONE)
    due strictly after `now` whose edition is not made yet (a slot `nashra digest send`
    made ahead of its time is followed by the one after; `taken`: the editions' keys
    already looked up, else asked of `session`)."""
    settings = settings or get_settings()
    frequency = Frequency(frequency)
    now = now or utcnow()
    if frequency is Frequency.weekly:
        weekday = settings.digest_weekly_day if weekday is None else weekday
    else:
        weekday = None
    occurrences = _occurrences(frequency, hour, weekday, now, settings, clocks.zone(zone, settings))
    slot = next(occurrences)
    for _ in range(LOOKAHEAD):
        made = slot.key in taken if taken is not None else session is not None and existing(session, slot.key)
        if not made:
            break
        slot = next(occurrences)
    return slot


def _audience(frequency: Frequency) -> list:
    """The planner's rule (service/delivery/planner.py): confirmed, not suppressed, not paused."""
    return [Subscriber.status == SubscriberStatus.active, Subscriber.frequency == frequency,
            ~sa.exists().where(Suppression.email == Subscriber.email), not_paused(utcnow())]


def _reader_groups(session: Session, frequency: Frequency) -> list[tuple[str | None, int | None, int | None, int]]:
    """(time_zone, digest_hour, digest_weekday, readers) of the readers the planner would mail now."""
    stmt = (sa.select(Subscriber.time_zone, Subscriber.digest_hour, Subscriber.digest_weekday, sa.func.count())
            .where(*_audience(frequency))
            .group_by(Subscriber.time_zone, Subscriber.digest_hour, Subscriber.digest_weekday))
    return [(z, h, w, n) for z, h, w, n in session.execute(stmt).all()]


def readers_of(session: Session, slot: Slot, settings: Settings | None = None) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(Subscriber).where(
        *_audience(slot.frequency), slot_condition(slot.params(), settings))) or 0


def upcoming_slots(session: Session, frequency: Frequency | str, now: dt.datetime | None = None,
                   settings: Settings | None = None) -> list[UpcomingSlot]:
    """The next slot of every group of readers of `frequency` (their zone, hour and day)
    and of the readers who never chose, soonest first, each with its readers."""
    settings = settings or get_settings()
    frequency = Frequency(frequency)
    now = now or utcnow()
    weekly = frequency is Frequency.weekly
    wanted: dict[tuple[str, int, int | None], int] = {}
    for zone, hour, weekday, n in _reader_groups(session, frequency):
        group = (clocks.name_of(zone, settings), effective_hour(hour, settings),
                 effective_weekday(weekday, settings) if weekly else None)
        wanted[group] = wanted.get(group, 0) + n
    default = (settings.timezone, default_hour(settings), settings.digest_weekly_day if weekly else None)
    wanted.setdefault(default, 0)
    candidates = [slot for zone, hour, weekday in wanted
                  for slot, _ in zip(_occurrences(frequency, hour, weekday, now, settings, clocks.zone(zone, settings)),
                                     range(LOOKAHEAD + 1), strict=False)]
    taken = set(session.scalars(sa.select(Edition.idempotency_key).where(  # one query, not one per slot
        Edition.idempotency_key.in_(sorted({c.key for c in candidates})))))
    readers: dict[Slot, int] = {}
    for (zone, hour, weekday), n in wanted.items():
        slot = next_slot(session, frequency, hour, weekday, now, settings, taken, zone)
        readers[slot] = readers.get(slot, 0) + n
    found = [UpcomingSlot(slot, slot.due(settings), n) for slot, n in readers.items()]
    return sorted(found, key=lambda u: u.send_at)


def slot_digest(session: Session, slot: Slot) -> Edition | None:
    """The edition beat would make for `slot` at its time, with what is ingested so far
    (None when nothing is in its window yet).  The caller rolls the session back."""
    edition, _ = create_digest(session, slot.frequency, now=slot.due(), scheduled=True, slot=slot)
    return edition
