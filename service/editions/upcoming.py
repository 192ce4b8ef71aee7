"""The next scheduled digests, as they would be made now: what the digest preview shows.

Beat makes one digest per slot (service/editions/schedule.py): a digest newsletter and
a UTC hour, holding every reader on it whose own hour (and, weekly, day) for it on their
own clock falls there.  `upcoming_slots` lists a newsletter's next slot of every group of
its readers (a zone, an hour, a day), soonest first, with its readers (counted with the
planner's rule), and always the slot of readers who never chose (the newsletter's
default hour and day); `slot_digest` makes the edition beat would make at
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
from service.editions.schedule import (
    DigestRef,
    Slot,
    as_ref,
    digest_ref,
    on_newsletter,
    slot_condition,
    slot_of,
)
from service.models import (
    Edition,
    Frequency,
    Newsletter,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Suppression,
    utcnow,
)
from service.subscribers import clocks
from service.subscribers.hours import effective_hour, effective_weekday, not_paused

Digest = DigestRef | Newsletter | Frequency | str  # a digest newsletter, or a frequency: the site's own of it

LOOKAHEAD = 3  # occurrences of a slot tried past one already made (`nashra digest send` ahead of its time)


@dataclass(frozen=True)
class UpcomingSlot:
    slot: Slot
    send_at: dt.datetime  # UTC
    readers: int  # who planning it now would reach (the planner's rule)


def _ref(session: Session | None, newsletter: Digest) -> DigestRef:
    """The newsletter's own defaults when there is a session to read them from."""
    return digest_ref(session, newsletter) if session is not None else as_ref(newsletter)


def _occurrences(ref: DigestRef, hour: int, weekday: int | None, now: dt.datetime, settings: Settings,
                 tz: dt.tzinfo):
    """The slots of local hour (and day) in `tz`, the first one due strictly after `now`."""
    frequency = ref.frequency
    today = now.astimezone(tz).date() - dt.timedelta(days=1)  # yesterday's hour may still be ahead in UTC terms
    if frequency is Frequency.weekly:
        date, step = today + dt.timedelta(days=(weekday - today.weekday()) % 7), dt.timedelta(days=7)
    else:
        date, step = today, dt.timedelta(days=1)
    while True:
        slot = slot_of(ref, date, hour, settings, tz)
        if slot.at > now:
            yield slot
        date += step


def next_slot(session: Session | None, newsletter: Digest, hour: int, weekday: int | None = None,
              now: dt.datetime | None = None, settings: Settings | None = None,
              taken: set[str] | None = None, zone: str | None = None) -> Slot:
    """The next slot of the newsletter's readers of local `hour` (and, weekly, `weekday`;
    None: the newsletter's day) in `zone` (default TIMEZONE) due strictly after `now` whose
    edition is not made yet (a slot `nashra digest send` made ahead of its time is followed
    by the one after; `taken`: the editions' keys already looked up, else asked of `session`)."""
    settings = settings or get_settings()
    ref = _ref(session, newsletter)
    now = now or utcnow()
    if ref.frequency is Frequency.weekly:
        weekday = ref.weekday(settings) if weekday is None else weekday
    else:
        weekday = None
    occurrences = _occurrences(ref, hour, weekday, now, settings, clocks.zone(zone, settings))
    slot = next(occurrences)
    for _ in range(LOOKAHEAD):
        made = slot.key in taken if taken is not None else session is not None and existing(session, slot.key)
        if not made:
            break
        slot = next(occurrences)
    return slot


def _audience(ref: DigestRef) -> list:
    """The planner's rule (service/delivery/planner.py): on the newsletter, confirmed, not
    suppressed, not paused."""
    return [*on_newsletter(ref), Subscriber.status == SubscriberStatus.active,
            ~sa.exists().where(Suppression.email == Subscriber.email), not_paused(utcnow())]


def _reader_groups(session: Session, ref: DigestRef) -> list[tuple[str | None, int | None, int | None, int]]:
    """(time_zone, digest_hour, digest_weekday, readers) of the newsletter's readers the planner would mail now."""
    stmt = (sa.select(Subscriber.time_zone, Subscription.digest_hour, Subscription.digest_weekday, sa.func.count())
            .select_from(Subscriber).join(Subscription, Subscription.subscriber_id == Subscriber.id)
            .where(*_audience(ref))
            .group_by(Subscriber.time_zone, Subscription.digest_hour, Subscription.digest_weekday))
    return [(z, h, w, n) for z, h, w, n in session.execute(stmt).all()]


def readers_of(session: Session, slot: Slot, settings: Settings | None = None) -> int:
    return session.scalar(
        sa.select(sa.func.count()).select_from(Subscriber).join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(*_audience(slot.newsletter), slot_condition(slot.params(settings), settings))) or 0


def upcoming_slots(session: Session, newsletter: Digest, now: dt.datetime | None = None,
                   settings: Settings | None = None) -> list[UpcomingSlot]:
    """The next slot of every group of the newsletter's readers (their zone, hour and day)
    and of its readers who never chose, soonest first, each with its readers."""
    settings = settings or get_settings()
    ref = _ref(session, newsletter)
    now = now or utcnow()
    weekly = ref.frequency is Frequency.weekly
    wanted: dict[tuple[str, int, int | None], int] = {}
    for zone, hour, weekday, n in _reader_groups(session, ref):
        group = (clocks.name_of(zone, settings), effective_hour(hour, settings, ref),
                 effective_weekday(weekday, settings, ref) if weekly else None)
        wanted[group] = wanted.get(group, 0) + n
    default = (settings.timezone, ref.hour(settings), ref.weekday(settings))
    wanted.setdefault(default, 0)
    candidates = [slot for zone, hour, weekday in wanted
                  for slot, _ in zip(_occurrences(ref, hour, weekday, now, settings, clocks.zone(zone, settings)),
                                     range(LOOKAHEAD + 1), strict=False)]
    taken = set(session.scalars(sa.select(Edition.idempotency_key).where(  # one query, not one per slot
        Edition.idempotency_key.in_(sorted({c.key for c in candidates})))))
    readers: dict[Slot, int] = {}
    for (zone, hour, weekday), n in wanted.items():
        slot = next_slot(session, ref, hour, weekday, now, settings, taken, zone)
        readers[slot] = readers.get(slot, 0) + n
    found = [UpcomingSlot(slot, slot.due(settings), n) for slot, n in readers.items()]
    return sorted(found, key=lambda u: u.send_at)


def slot_digest(session: Session, slot: Slot) -> Edition | None:
    """The edition beat would make for `slot` at its time, with what is ingested so far
    (None when nothing is in its window yet).  The caller rolls the session back."""
    edition, _ = create_digest(session, slot.newsletter, now=slot.due(), scheduled=True, slot=slot)
    return edition
