"""When readers hear from us: each reader's digest hour (and weekly day) as *slots*.

A reader picks one of a short list of local hours (DIGEST_HOURS, which always holds
DIGEST_DAILY_AT's hour, the default) and, for the weekly digest, a day of the week, on
their own clock (subscribers.time_zone; None = TIMEZONE: service/subscribers/clocks.py).
Their digest is due at hour:MM on that date in their zone, MM being DIGEST_DAILY_AT's
minute, turned into an instant with zoneinfo at that date: DST included, so a Berlin
reader's 07:00 leaves at 06:00 UTC in winter and 05:00 UTC in summer.  A wall time a
DST change skips (the clock jumps from 00:00 to 01:00) leaves at the jump; one it
repeats (23:00 twice when the clock falls back) leaves at the first of the two (fold=0).

A slot is one (digest newsletter, UTC instant at minute MM): that newsletter's digest
for every reader on it whose due instant falls in the hour that starts there, whatever
their zone.  Readers in zones
a whole number of hours from UTC are due exactly at a slot; a reader whose zone is not
(Asia/Kolkata +5:30, Asia/Tehran, Australia/Adelaide, Asia/Kathmandu +5:45) is in the
slot that starts before their hour: a Kolkata reader's 07:00 digest leaves at 06:30
their time, never after the hour they chose.  One edition per slot (its idempotency key
names the newsletter by its slug, the UTC hour — and UTC weekday for a weekly digest —
and the UTC date: `digest:daily:u06:2026-04-02`, the very key the site's first two
digests had before there were several newsletters, so an upgrade does not send a slot
twice), so a slot fired twice is still one digest, rendered once per variant.

Each digest newsletter has its own default hour and day (Newsletter.default_hour /
default_weekday; None: the site's) and its readers their own choices for it
(Subscription.digest_hour / digest_weekday): the conditions here name Subscription's
columns, and whoever runs them joins the reader's subscription to that newsletter.
A hidden (retired) newsletter makes no slots.

Its window starts where the previous edition of the same newsletter and UTC hour (and
weekday) ended (editions/digests.py), so no article falls between two digests of the readers who stay
in that slot.  A reader whose clock changed (DST) moves to another UTC slot: moving an
hour later would leave an hour of articles in neither digest, so such a slot's window
reaches back by the shift (`catch_back`): those readers may see an hour's article twice,
never miss one.

`due_slots(now, newsletters)` is what beat's tick asks: the slots due at or before `now` and at most
DIGEST_MAX_LATE_HOURS ago.  A slot missed while workers (or beat) were down is still in
that list when they come back, and its key is not yet taken: it goes once, late by the
outage plus at most one tick.  Past the bound it is not sent late; the slot's next
digest starts where its last one ended, so its articles are not lost.

Readers who never chose keep None in the database and follow the newsletter's defaults;
so do readers whose hour an operator removed from DIGEST_HOURS (they are in the default
hour's slot).
Editions made before slots were UTC instants carry {"hour", "weekday"} in their params
and are still planned by that older rule (site-local hours: hours.legacy_condition).
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

import sqlalchemy as sa

from service.config import Settings, get_settings
from service.models import (
    Frequency,
    Newsletter,
    NewsletterKind,
    Subscriber,
    SubscriberStatus,
    Subscription,
)
from service.newsletters import catalogue
from service.subscribers import clocks
from service.subscribers.hours import (
    hour_condition,
    legacy_condition,
    newsletter_hour,
    newsletter_weekday,
    not_paused,
    offered_hours,
    slot_minute,
    weekday_condition,
)

HOUR = dt.timedelta(hours=1)
SETTLED = dt.timedelta(hours=3)  # longer than any clock change (DST shifts are 1 h, Troll's 2 h)
PERIOD_DAYS = {Frequency.daily: 1, Frequency.weekly: 7}


def due_at(date: dt.date, hour: int, settings: Settings | None = None,
           tz: dt.tzinfo | None = None) -> dt.datetime:
    """The instant (UTC) of hour:MM on `date` in `tz` (default TIMEZONE; see the module
    doc for DST)."""
    settings = settings or get_settings()
    local = dt.datetime.combine(date, dt.time(hour, slot_minute(settings)), tzinfo=tz or settings.tz)
    # A wall time in a gap maps, with fold=0, to the offset before it: the jump's instant.
    return local.astimezone(dt.UTC)


def slot_start(instant: dt.datetime, settings: Settings | None = None) -> dt.datetime:
    """The slot an instant falls in: the last HH:MM UTC at or before it."""
    minute = slot_minute(settings)
    at = instant.astimezone(dt.UTC).replace(minute=minute, second=0, microsecond=0)
    return at - HOUR if at > instant else at


@dataclass(frozen=True)
class DigestRef:
    """The digest newsletter a slot is of: what its key, its readers and its window need,
    as a hashable value (beat's cached conditions, the preview's dicts)."""

    id: int | None  # None: the site's own `daily` / `weekly`, found by slug in SQL
    slug: str
    frequency: Frequency
    default_hour: int | None = None  # None: DIGEST_DAILY_AT's hour
    default_weekday: int | None = None  # None: DIGEST_WEEKLY_DAY

    @classmethod
    def of(cls, newsletter: Newsletter) -> DigestRef:
        if newsletter.kind is not NewsletterKind.digest or newsletter.frequency not in PERIOD_DAYS:
            raise ValueError(f"newsletter {newsletter.slug!r} is not a daily or weekly digest")
        return cls(newsletter.id, newsletter.slug, Frequency(newsletter.frequency), newsletter.default_hour,
                   newsletter.default_weekday)

    @classmethod
    def site(cls, frequency: Frequency | str) -> DigestRef:
        """The site's own digest of a cadence, on the site's defaults (callers without a
        session; those with one use `digest_ref`, which reads the newsletter's own)."""
        frequency = Frequency(frequency)
        if frequency not in PERIOD_DAYS:
            raise ValueError(f"no digest for frequency {frequency.value!r}")
        return cls(None, catalogue.DAILY if frequency is Frequency.daily else catalogue.WEEKLY, frequency)

    def id_expr(self) -> int | sa.ScalarSelect:
        """Its id in SQL (looked up by slug when this value was made without one)."""
        if self.id is not None:
            return self.id
        return sa.select(Newsletter.id).where(Newsletter.slug == self.slug).scalar_subquery()

    def hour(self, settings: Settings | None = None) -> int:
        return newsletter_hour(self, settings)

    def weekday(self, settings: Settings | None = None) -> int | None:
        return newsletter_weekday(self, settings) if self.frequency is Frequency.weekly else None


def as_ref(newsletter: DigestRef | Newsletter | Frequency | str) -> DigestRef:
    """A slot's newsletter from what callers hold: the value itself, a Newsletter row, or a
    frequency (the site's own digest of it)."""
    if isinstance(newsletter, DigestRef):
        return newsletter
    if isinstance(newsletter, Newsletter):
        return DigestRef.of(newsletter)
    return DigestRef.site(newsletter)


def digest_ref(session, newsletter: DigestRef | Newsletter | Frequency | str) -> DigestRef:
    """As `as_ref`, with a frequency (or a ref made without an id) read from the database:
    the newsletter's own id and defaults."""
    ref = as_ref(newsletter)
    if ref.id is not None:
        return ref
    found = catalogue.by_slug(session, ref.slug)
    return DigestRef.of(found) if found is not None else ref


def digest_refs(session) -> list[DigestRef]:
    """Every visible daily or weekly digest newsletter (hidden ones make nothing new)."""
    return [DigestRef.of(n) for n in catalogue.every(session)
            if n.kind is NewsletterKind.digest and n.frequency in PERIOD_DAYS]


@dataclass(frozen=True)
class Slot:
    newsletter: DigestRef  # a Frequency given here means the site's own digest of it
    at: dt.datetime  # UTC, at minute MM: when the slot's digest leaves

    def __post_init__(self) -> None:
        if not isinstance(self.newsletter, DigestRef):
            object.__setattr__(self, "newsletter", as_ref(self.newsletter))

    @property
    def frequency(self) -> Frequency:
        return self.newsletter.frequency

    @property
    def code(self) -> str:
        """The slot's name in its key: u06 (daily, 06:MM UTC), d0u06 (weekly, Monday in UTC)."""
        if self.frequency is Frequency.weekly:
            return f"d{self.at.weekday()}u{self.at.hour:02d}"
        return f"u{self.at.hour:02d}"

    @property
    def key(self) -> str:
        # `digest:daily:…` and `digest:weekly:…` are the keys these two had when they were
        # the only digests (their slugs are their frequencies): same slot, same key.
        return f"digest:{self.newsletter.slug}:{self.code}:{self.at.date().isoformat()}"

    @property
    def chain_pattern(self) -> str:
        """LIKE pattern of this slot's editions on every date (the window chain)."""
        return f"digest:{self.newsletter.slug}:{self.code}:%"

    def due(self, settings: Settings | None = None) -> dt.datetime:
        return self.at

    def params(self, settings: Settings | None = None) -> dict:
        """The edition's params["slot"]: enough to pick its readers with no other lookup
        (the newsletter's defaults as they were when the slot was made)."""
        out = {"at": self.at.isoformat(), "frequency": self.frequency.value, "newsletter": self.newsletter.slug,
               "default_hour": self.newsletter.hour(settings)}
        if self.frequency is Frequency.weekly:
            out["default_weekday"] = self.newsletter.weekday(settings)
        return out

    # The slot on the newsroom's clock (TIMEZONE): how the editors' preview names it.
    def site_local(self, settings: Settings | None = None) -> dt.datetime:
        return self.at.astimezone((settings or get_settings()).tz)

    @property
    def date(self) -> dt.date:
        return self.site_local().date()

    @property
    def hour(self) -> int:
        return self.site_local().hour

    @property
    def weekday(self) -> int | None:
        return self.site_local().weekday() if self.frequency is Frequency.weekly else None

    @property
    def legacy_key(self) -> str:
        """The key this slot's digest had when slots were hours on the site's clock: a
        digest made under it before an upgrade is this one (not sent twice that day)."""
        return f"digest:{self.newsletter.slug}:{self.page_code}:{self.date.isoformat()}"

    @property
    def page_code(self) -> str:
        """h07 / d5h07: the hour (and day) in TIMEZONE, as the editors' page selects it."""
        if self.frequency is Frequency.weekly:
            return f"d{self.weekday}h{self.hour:02d}"
        return f"h{self.hour:02d}"


def slot_of(newsletter: DigestRef | Newsletter | Frequency | str, date: dt.date, hour: int,
            settings: Settings | None = None, tz: dt.tzinfo | None = None) -> Slot:
    """The slot of the readers of `hour` on local `date` in `tz` (default TIMEZONE)."""
    return Slot(as_ref(newsletter), slot_start(due_at(date, hour, settings, tz), settings))


@functools.lru_cache(maxsize=256)
def _hits(at: dt.datetime, hours: tuple[int, ...], minute: int, site: str) -> tuple[tuple[int, dt.date, str], ...]:
    """(hour, local date, zone) of every zone and offered hour whose due instant falls in
    the slot starting at `at` (cached: beat asks about the same few slots every tick)."""
    end = at + HOUR
    out = []
    names = clocks.zone_names() if site in clocks.known_zones() else (*clocks.zone_names(), site)
    offered = set(hours)
    for name in names:
        tz = clocks.zone_object(name)
        first, last = at.astimezone(tz), (end - dt.timedelta(microseconds=1)).astimezone(tz)
        if (at - SETTLED).astimezone(tz).utcoffset() == first.utcoffset() == last.utcoffset():
            # No clock change inside the hour, nor just before it (a wall time the change
            # skipped leaves right after it): the one local HH:MM in the hour is the only
            # candidate (checked below: a repeated wall time leaves at its first instance).
            wall = first.replace(tzinfo=None)
            start = wall.replace(minute=minute, second=0, microsecond=0)
            start = start if start >= wall else start + HOUR
            candidates = [(start.date(), start.hour)] if start.hour in offered else []
        else:  # the clock changes inside the hour: try both dates and every offered hour
            candidates = [(date, hour) for date in {first.date(), last.date()} for hour in hours]
        for date, hour in candidates:
            due = dt.datetime.combine(date, dt.time(hour, minute), tzinfo=tz).astimezone(dt.UTC)
            if at <= due < end:
                out.append((hour, date, name))
    return tuple(out)


def hits(slot_at: dt.datetime, settings: Settings | None = None,
         newsletter=None) -> tuple[tuple[int, dt.date, str], ...]:
    """(hour, local date, zone) of every reader's hour (those offered for `newsletter`:
    its default hour is one) whose due instant falls in the slot starting at `slot_at`."""
    settings = settings or get_settings()
    return _hits(slot_at.astimezone(dt.UTC), tuple(offered_hours(settings, newsletter)), slot_minute(settings),
                 settings.timezone)


def _params_ref(slot_params: dict, newsletter=None) -> DigestRef:
    """The defaults a slot's readers are picked by: those its params carry (the
    newsletter's when the slot was made), else the newsletter's, else the site's."""
    frequency = Frequency.weekly if slot_params.get("frequency") == Frequency.weekly.value else Frequency.daily
    own = newsletter if newsletter is not None and not isinstance(newsletter, Settings) else None
    hour = slot_params.get("default_hour", getattr(own, "default_hour", None))
    weekday = slot_params.get("default_weekday", getattr(own, "default_weekday", None))
    slug = slot_params.get("newsletter") or getattr(own, "slug", None) or DigestRef.site(frequency).slug
    return DigestRef(getattr(own, "id", None), str(slug), frequency,
                     hour if isinstance(hour, int) and not isinstance(hour, bool) and hour in range(24) else None,
                     weekday if isinstance(weekday, int) and not isinstance(weekday, bool) and weekday in range(7)
                     else None)


def audience_condition(slot_params: dict | None, newsletter=None,
                       settings: Settings | None = None) -> sa.ColumnElement[bool]:
    """The readers of an edition's params["slot"], as SQL on Subscriber and the reader's
    Subscription to the edition's `newsletter` (the caller joins it); None: every reader
    of the newsletter (an unscheduled digest, `nashra digest send --now`)."""
    if isinstance(newsletter, Settings):  # the older (slot_params, settings) call
        newsletter, settings = None, newsletter
    return slot_condition(slot_params, settings, newsletter) if slot_params else sa.true()


def slot_condition(slot_params: dict, settings: Settings | None = None, newsletter=None) -> sa.ColumnElement[bool]:
    """The readers of a slot (an edition's params["slot"]), on their own clocks."""
    ref = _params_ref(slot_params, newsletter)
    defaults = (ref.default_hour, ref.default_weekday)
    if "at" not in slot_params:
        return legacy_condition(slot_params, settings, ref)
    weekly = ref.frequency is Frequency.weekly
    if settings is None or settings is get_settings():  # the usual case, built once per slot (a clause is immutable)
        return _slot_condition(str(slot_params["at"]), weekly, defaults, id(get_settings()))
    return _build_slot_condition(dt.datetime.fromisoformat(slot_params["at"]), weekly, ref, settings)


@functools.lru_cache(maxsize=64)
def _slot_condition(at: str, weekly: bool, defaults: tuple[int | None, int | None],
                    settings_id: int) -> sa.ColumnElement[bool]:
    ref = DigestRef(None, "", Frequency.weekly if weekly else Frequency.daily, *defaults)
    return _build_slot_condition(dt.datetime.fromisoformat(at), weekly, ref, get_settings())


def _build_slot_condition(at: dt.datetime, weekly: bool, ref: DigestRef,
                          settings: Settings) -> sa.ColumnElement[bool]:
    groups: dict[tuple[int, int | None], list[str]] = {}
    for hour, date, name in hits(at, settings, ref):
        groups.setdefault((hour, date.weekday() if weekly else None), []).append(name)
    if not groups:
        return sa.false()
    conds = []
    for (hour, weekday), names in sorted(groups.items(), key=lambda g: (g[0][0], g[0][1] or 0)):
        parts = [clocks.in_zones(names, settings), hour_condition(hour, settings, ref)]
        if weekday is not None:
            parts.append(weekday_condition(weekday, settings, ref))
        conds.append(sa.and_(*parts))
    return sa.or_(*conds)


def on_newsletter(ref: DigestRef) -> list[sa.ColumnElement[bool]]:
    """SQL: the reader's subscription to this newsletter (joined through its two keys)."""
    return [Subscription.subscriber_id == Subscriber.id, Subscription.newsletter_id == ref.id_expr()]


def catch_back(session, slot: Slot, settings: Settings | None = None) -> dt.timedelta:
    """How far before its chained start this slot's window must reach: readers whose
    previous digest (a period ago on their clock) left in an earlier UTC slot than this
    one's predecessor — a DST change moved them an hour later — would miss the hour in
    between.  Only zones that shifted are looked up, and only when some have readers."""
    settings = settings or get_settings()
    period = dt.timedelta(days=PERIOD_DAYS[slot.frequency])
    shifted: dict[str, dt.timedelta] = {}
    for hour, date, name in hits(slot.at, settings, slot.newsletter):
        before = slot_start(due_at(date - period, hour, settings, clocks.zone_object(name)), settings)
        gap = (slot.at - period) - before
        if gap > dt.timedelta(0):
            shifted[name] = max(gap, shifted.get(name, dt.timedelta(0)))
    if not shifted:
        return dt.timedelta(0)
    used = set(session.scalars(sa.select(Subscriber.time_zone).distinct().where(
        *on_newsletter(slot.newsletter), Subscriber.status == SubscriberStatus.active,
        clocks.in_zones(shifted, settings))))
    if None in used:
        used.add(settings.timezone)
    return max((gap for name, gap in shifted.items() if name in used), default=dt.timedelta(0))


def local_date(now: dt.datetime, settings: Settings | None = None) -> dt.date:
    return now.astimezone((settings or get_settings()).tz).date()


def default_slot(newsletter: DigestRef | Newsletter | Frequency | str, now: dt.datetime,
                 settings: Settings | None = None) -> Slot:
    """The slot of the newsletter's readers who never chose, on `now`'s local date
    (`nashra digest send`)."""
    settings = settings or get_settings()
    ref = as_ref(newsletter)
    date = local_date(now, settings)
    if ref.frequency is Frequency.weekly:
        # Their day (the newsletter's), today or the next one: made ahead of its time, the
        # slot's beat edition is then the week after's (its window chains on this one).
        date = date + dt.timedelta(days=(ref.weekday(settings) - date.weekday()) % 7)
    return slot_of(ref, date, ref.hour(settings), settings)


def due_slots(now: dt.datetime, settings: Settings | None = None,
              newsletters: list[DigestRef] | None = None) -> list[Slot]:
    """Every slot of `newsletters` (default: the site's daily and weekly digests) due at or
    before `now`, at most DIGEST_MAX_LATE_HOURS ago, oldest first."""
    settings = settings or get_settings()
    refs = newsletters if newsletters is not None else [DigestRef.site(Frequency.daily),
                                                         DigestRef.site(Frequency.weekly)]
    last = slot_start(now, settings)
    found = []
    for back in range(settings.digest_max_late_hours, -1, -1):
        at = last - back * HOUR
        if not at <= now < at + dt.timedelta(hours=settings.digest_max_late_hours):
            continue
        found.extend(Slot(ref, at) for ref in refs if hits(at, settings, ref))
    return found


def _readers_probe(slot: Slot, now: dt.datetime, settings: Settings | None) -> sa.Exists:
    return sa.exists().where(
        *on_newsletter(slot.newsletter), Subscriber.status == SubscriberStatus.active,
        slot_condition(slot.params(settings), settings), not_paused(now))


def has_readers(session, slot: Slot, now: dt.datetime, settings: Settings | None = None) -> bool:
    """Whether anyone would get this slot's digest."""
    return bool(session.scalar(sa.select(_readers_probe(slot, now, settings))))


def with_readers(session, slots: list[Slot], now: dt.datetime, settings: Settings | None = None) -> list[Slot]:
    """The slots someone would get, in one query (beat asks about several every tick, and
    most UTC hours are some zone's offered hour while few have readers)."""
    if not slots:
        return []
    found = session.execute(sa.select(*[_readers_probe(slot, now, settings) for slot in slots])).one()
    return [slot for slot, yes in zip(slots, found, strict=True) if yes]
