"""When readers hear from us: each reader's digest hour (and weekly day) as *slots*.

A reader picks one of a short list of local hours (DIGEST_HOURS, which always holds
DIGEST_DAILY_AT's hour, the default) and, for the weekly digest, a day of the week.  A
slot is one (frequency, local date, hour[, weekday]): the digest of every reader who
chose that hour (and that day), due at hour:MM on that date in TIMEZONE, MM being
DIGEST_DAILY_AT's minute.  One edition per slot (its idempotency key names the slot and
the date), so a slot fired twice — two beats, a tick re-run, `nashra digest send` at the
same time — is still one digest; its window starts where the previous edition of the
same slot ended (editions/digests.py), so no article falls between two of a reader's
digests.

Local times are turned into instants with zoneinfo at the slot's own date, so a slot
leaves at its wall-clock hour on both sides of a DST change.  A wall time a DST change
skips (the clock jumps from 00:00 to 01:00) leaves at the jump; one it repeats (23:00
twice when the clock falls back) leaves at the first of the two (fold=0).

`due_slots(now)` is what beat's tick asks: the slots due at or before `now` and at most
DIGEST_MAX_LATE_HOURS ago.  A slot missed while workers (or beat) were down is still in
that list when they come back, and its key is not yet taken: it goes once, late by the
outage plus at most one tick.  Past the bound it is not sent late; the slot's next
digest starts where its last one ended, so its articles are not lost.

Readers who never chose keep None in the database and follow the defaults; so do readers
whose hour an operator removed from DIGEST_HOURS (they are in the default hour's slot).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from service.config import Settings, get_settings
from service.models import Frequency, Subscriber, SubscriberStatus
from service.subscribers.hours import (
    audience_condition,
    default_hour,
    not_paused,
    offered_hours,
    slot_minute,
)


def due_at(date: dt.date, hour: int, settings: Settings | None = None) -> dt.datetime:
    """The instant (UTC) of hour:MM on `date` in TIMEZONE (see the module doc for DST)."""
    settings = settings or get_settings()
    local = dt.datetime.combine(date, dt.time(hour, slot_minute(settings)), tzinfo=settings.tz)
    # A wall time in a gap maps, with fold=0, to the offset before it: the jump's instant.
    return local.astimezone(dt.UTC)


@dataclass(frozen=True)
class Slot:
    frequency: Frequency
    date: dt.date  # local date in TIMEZONE
    hour: int
    weekday: int | None = None  # weekly only: the readers' day (0 = Monday)

    @property
    def code(self) -> str:
        if self.frequency is Frequency.weekly:
            return f"d{self.weekday}h{self.hour:02d}"
        return f"h{self.hour:02d}"

    @property
    def key(self) -> str:
        return f"digest:{self.frequency.value}:{self.code}:{self.date.isoformat()}"

    @property
    def chain_pattern(self) -> str:
        """LIKE pattern of this slot's editions on every date (the window chain)."""
        return f"digest:{self.frequency.value}:{self.code}:%"

    def due(self, settings: Settings | None = None) -> dt.datetime:
        return due_at(self.date, self.hour, settings)

    def params(self) -> dict:
        out: dict = {"hour": self.hour}
        if self.weekday is not None:
            out["weekday"] = self.weekday
        return out


def local_date(now: dt.datetime, settings: Settings | None = None) -> dt.date:
    return now.astimezone((settings or get_settings()).tz).date()


def default_slot(frequency: Frequency | str, now: dt.datetime, settings: Settings | None = None) -> Slot:
    """The slot of readers who never chose, on `now`'s local date (`nashra digest send`)."""
    settings = settings or get_settings()
    frequency = Frequency(frequency)
    weekday = settings.digest_weekly_day if frequency is Frequency.weekly else None
    return Slot(frequency, local_date(now, settings), default_hour(settings), weekday)


def due_slots(now: dt.datetime, settings: Settings | None = None) -> list[Slot]:
    """Every slot due at or before `now`, at most DIGEST_MAX_LATE_HOURS ago, oldest first."""
    settings = settings or get_settings()
    late = dt.timedelta(hours=settings.digest_max_late_hours)
    today = local_date(now, settings)
    found = []
    for date in (today - dt.timedelta(days=1), today):  # the bound is under a day
        for hour in offered_hours(settings):
            at = due_at(date, hour, settings)
            if not at <= now < at + late:
                continue
            found.append((at, Slot(Frequency.daily, date, hour)))
            found.append((at, Slot(Frequency.weekly, date, hour, date.weekday())))
    return [slot for _, slot in sorted(found, key=lambda x: (x[0], x[1].frequency.value))]


def has_readers(session, slot: Slot, now: dt.datetime, settings: Settings | None = None) -> bool:
    """Whether anyone would get this slot's digest (one index probe: `ix_subscribers_digest_slot`)."""
    return bool(session.scalar(sa.select(sa.exists().where(
        Subscriber.status == SubscriberStatus.active, Subscriber.frequency == slot.frequency,
        audience_condition(slot.params(), settings), not_paused(now)))))
