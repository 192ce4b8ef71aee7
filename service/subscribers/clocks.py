"""A reader's own clock: the IANA zone their digest hour, weekday and quiet hours are in.

`subscribers.time_zone` holds the name the reader's browser gave (or they picked, or a
CSV carried); None means the site's TIMEZONE, so readers who never said follow it if it
changes.  Every name is checked against zoneinfo's list before it is stored (`check`),
so a stored name always loads.

SQL cannot turn an instant into a local hour on both databases (SQLite has no zones), so
the rules that pick readers by their local hour work the other way round: for a given
instant, the zones are grouped by what their clocks say then (`zones_by`), and a reader
matches a group when their zone is in it (`in_zones`).  Every known zone is grouped, not
only the zones in use: the condition then depends on the instant alone and is the same
whenever it is evaluated (beat's tick, the planner a second later, the preview).
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo
from collections.abc import Callable, Hashable, Iterable

import sqlalchemy as sa

from service.config import Settings, get_settings
from service.models import Subscriber
from service.subscribers.errors import InvalidInput

MSG_ZONE = "اختر منطقتك الزمنية من القائمة (مثل Asia/Amman أو Europe/Berlin)."
MAX_LEN = 64  # subscribers.time_zone is VARCHAR(64)


@functools.lru_cache(maxsize=1)
def known_zones() -> frozenset[str]:
    """Every IANA name this machine's zoneinfo knows (read from disk once per process)."""
    return frozenset(zoneinfo.available_timezones())


@functools.lru_cache(maxsize=1)
def zone_names() -> tuple[str, ...]:
    """The names in order, for a form's list and for a stable SQL text."""
    return tuple(sorted(known_zones()))


@functools.lru_cache(maxsize=1)
def _zone_objects() -> dict[str, zoneinfo.ZoneInfo]:
    # Held here: ZoneInfo's own cache keeps only a few strongly, and reading a zone's file
    # again for each of ~600 zones at every tick was most of beat's CPU.
    return {name: zoneinfo.ZoneInfo(name) for name in zone_names()}


def zone_object(name: str) -> zoneinfo.ZoneInfo:
    found = _zone_objects().get(name)
    return found if found is not None else zoneinfo.ZoneInfo(name)


def check(raw: object) -> str | None:
    """A reader's zone as a form, a JSON body or a CSV cell gives it: a known IANA name,
    None for empty (the site's TIMEZONE), or InvalidInput("time_zone")."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if not isinstance(raw, str) or len(raw) > MAX_LEN:
        raise InvalidInput("time_zone", MSG_ZONE)
    name = raw.strip()
    if name not in known_zones():
        raise InvalidInput("time_zone", MSG_ZONE)
    return name


def zone(name: str | None, settings: Settings | None = None) -> zoneinfo.ZoneInfo:
    """The reader's zone (the site's for None or, defensively, a name this machine lacks)."""
    settings = settings or get_settings()
    if name and name in known_zones():
        return zone_object(name)
    return settings.tz


def name_of(name: str | None, settings: Settings | None = None) -> str:
    """The zone's name as the reader's pages show it: theirs, or the site's."""
    settings = settings or get_settings()
    return name if name and name in known_zones() else settings.timezone


def local(now: dt.datetime, name: str | None, settings: Settings | None = None) -> dt.datetime:
    return now.astimezone(zone(name, settings))


def _all_zone_names(settings: Settings) -> Iterable[str]:
    yield from zone_names()
    if settings.timezone not in known_zones():  # a TIMEZONE zoneinfo loads but does not list
        yield settings.timezone


def zones_by(now: dt.datetime, key: Callable[[dt.datetime], Hashable],
             settings: Settings | None = None) -> dict[Hashable, list[str]]:
    """Every zone grouped by `key(now in that zone)` (e.g. the local hour)."""
    settings = settings or get_settings()
    out: dict[Hashable, list[str]] = {}
    for name in _all_zone_names(settings):
        out.setdefault(key(now.astimezone(zone_object(name))), []).append(name)
    return out


def in_zones(names: Iterable[str], settings: Settings | None = None) -> sa.ColumnElement[bool]:
    """SQL: the reader's zone is one of `names` (None counts as the site's TIMEZONE)."""
    settings = settings or get_settings()
    names = sorted(set(names))
    if not names:
        return sa.false()
    if settings.timezone in names:
        return sa.or_(Subscriber.time_zone.is_(None), Subscriber.time_zone.in_(names))
    # Never NULL (a NULL zone IN (…) is NULL in SQL): the rule may be negated (`~quiet_at`).
    return sa.and_(Subscriber.time_zone.is_not(None), Subscriber.time_zone.in_(names))
