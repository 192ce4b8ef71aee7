"""The next scheduled digests, as they would be made now: what the digest preview shows.

Beat makes one digest per slot (service/editions/schedule.py): a frequency, a local hour
of DIGEST_HOURS and, for the weekly one, a day.  `upcoming_slots` lists the next
occurrence of every slot of a frequency, soonest first, with its readers (counted with
the planner's rule); `slot_digest` makes the edition beat would make at that slot's
time — the same `create_digest`, its window chained on that slot's last edition,
holding what has been ingested so far — inside the caller's transaction, which the
caller rolls back: previewing writes nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.config import Settings, get_settings
from service.editions.digests import create_digest
from service.editions.keys import existing
from service.editions.schedule import Slot, local_date
from service.models import Edition, Frequency, Subscriber, SubscriberStatus, Suppression, utcnow
from service.subscribers.hours import default_hour, not_paused, offered_hours

LOOKAHEAD = 3  # occurrences of a slot tried past one already made (`nashra digest send` ahead of its time)


@dataclass(frozen=True)
class UpcomingSlot:
    slot: Slot
    send_at: dt.datetime  # UTC
    readers: int  # who planning it now would reach (the planner's rule)


def next_slot(session: Session | None, frequency: Frequency | str, hour: int, weekday: int | None = None,
              now: dt.datetime | None = None, settings: Settings | None = None,
              taken: set[str] | None = None) -> Slot:
    """The next occurrence of this slot due strictly after `now` whose edition is not
    made yet (a slot `nashra digest send` made ahead of its time is followed by the one
    after; `taken`: the editions' keys already looked up, else asked of `session`)."""
    settings = settings or get_settings()
    frequency = Frequency(frequency)
    now = now or utcnow()
    today = local_date(now, settings)
    if frequency is Frequency.weekly:
        weekday = settings.digest_weekly_day if weekday is None else weekday
        date, step = today + dt.timedelta(days=(weekday - today.weekday()) % 7), dt.timedelta(days=7)
    else:
        weekday, date, step = None, today, dt.timedelta(days=1)
    slot = Slot(frequency, date, hour, weekday)
    while slot.due(settings) <= now:
        slot = Slot(frequency, slot.date + step, hour, weekday)
    for _ in range(LOOKAHEAD):
        made = slot.key in taken if taken is not None else session is not None and existing(session, slot.key)
        if not made:
            break
        slot = Slot(frequency, slot.date + step, hour, weekday)
    return slot


def _in_slot(hour: int | None, weekday: int | None, slot: Slot, settings: Settings) -> bool:
    """hours.audience_condition, for one (digest_hour, digest_weekday) pair of values."""
    if slot.hour == default_hour(settings):
        ok = hour is None or hour == slot.hour or hour not in offered_hours(settings)
    else:
        ok = hour == slot.hour
    if slot.weekday is not None:
        if slot.weekday == settings.digest_weekly_day:
            ok = ok and (weekday is None or weekday == slot.weekday)
        else:
            ok = ok and weekday == slot.weekday
    return ok


def _reader_groups(session: Session, frequency: Frequency) -> list[tuple[int | None, int | None, int]]:
    """(digest_hour, digest_weekday, readers) of the frequency's readers the planner would
    mail now: confirmed, not suppressed, not paused (service/delivery/planner.py)."""
    stmt = (sa.select(Subscriber.digest_hour, Subscriber.digest_weekday, sa.func.count())
            .where(Subscriber.status == SubscriberStatus.active, Subscriber.frequency == frequency,
                   ~sa.exists().where(Suppression.email == Subscriber.email), not_paused(utcnow()))
            .group_by(Subscriber.digest_hour, Subscriber.digest_weekday))
    return [(h, w, n) for h, w, n in session.execute(stmt).all()]


def readers_of(session: Session, slot: Slot, settings: Settings | None = None) -> int:
    settings = settings or get_settings()
    return sum(n for h, w, n in _reader_groups(session, slot.frequency) if _in_slot(h, w, slot, settings))


def upcoming_slots(session: Session, frequency: Frequency | str, now: dt.datetime | None = None,
                   settings: Settings | None = None) -> list[UpcomingSlot]:
    """The next occurrence of every slot of `frequency` (each offered hour; for the weekly
    digest each day too), soonest first, each with its readers (0 for most weekly ones)."""
    settings = settings or get_settings()
    frequency = Frequency(frequency)
    now = now or utcnow()
    groups = _reader_groups(session, frequency)
    days = range(7) if frequency is Frequency.weekly else (None,)
    step = dt.timedelta(days=7 if frequency is Frequency.weekly else 1)
    candidates = [Slot(frequency, first.date + k * step, first.hour, first.weekday)
                  for weekday in days for hour in offered_hours(settings)
                  for first in [next_slot(None, frequency, hour, weekday, now, settings)]
                  for k in range(LOOKAHEAD + 1)]
    taken = set(session.scalars(sa.select(Edition.idempotency_key).where(  # one query, not one per slot
        Edition.idempotency_key.in_([c.key for c in candidates]))))
    found = []
    for weekday in days:
        for hour in offered_hours(settings):
            slot = next_slot(session, frequency, hour, weekday, now, settings, taken)
            readers = sum(n for h, w, n in groups if _in_slot(h, w, slot, settings))
            found.append(UpcomingSlot(slot, slot.due(settings), readers))
    return sorted(found, key=lambda u: (u.send_at, u.slot.hour, u.slot.weekday or 0))


def slot_digest(session: Session, slot: Slot) -> Edition | None:
    """The edition beat would make for `slot` at its time, with what is ingested so far
    (None when nothing is in its window yet).  The caller rolls the session back."""
    edition, _ = create_digest(session, slot.frequency, now=slot.due(), scheduled=True, slot=slot)
    return edition
