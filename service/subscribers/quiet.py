"""A reader's quiet night, their daily cap and their pause, as rules on plain values.

Quiet hours and the cap are a reader's choices for one alerts newsletter (their
Subscription to it: service/newsletters/membership.py); the pause is the reader's own,
whatever they read.  Quiet hours are two local hours, on the reader's own clock
(subscribers.time_zone, None = TIMEZONE: service/subscribers/clocks.py): alerts from
quiet_start up to quiet_end are not sent then.  The window may span midnight (22 → 7 is ten hours); start == end is no
window.  `quiet_mode` says what becomes of such an alert: "hold" (kept, and sent with the
others in one short catch-up mail when the window ends: service/editions/catchup.py) or
"drop" (not sent).  An editor may mark an alert as overriding quiet hours.

The cap is a number of alerts per day (the site's day, TIMEZONE: the batch counts one
day for all the readers of a group of outcomes); past it an alert is not sent (the reader
finds the story in their digest).  A pause stops every mail until it ends, then mail
resumes by itself.

The batch decides all three right before a message would go, from the state it re-reads
for every group of readers (`decide`), with no query of its own.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

import sqlalchemy as sa

from service.config import get_settings
from service.models import Subscription
from service.subscribers import clocks

MODES = ("hold", "drop")
OVERRIDE = "override_quiet_hours"  # in an alert's params: an editor decided it may not wait
PAUSE_WEEKS = (1, 2, 4)
CAPS = (1, 2, 3, 5, 10)


def in_window(start: int | None, end: int | None, hour: int) -> bool:
    """Whether local `hour` falls in the quiet window [start, end)."""
    if start is None or end is None or start == end:
        return False
    if start < end:
        return start <= hour < end
    return hour >= start or hour < end  # over midnight


def quiet_now(hour: int) -> sa.ColumnElement[bool]:
    """SQL: the subscription (joined by the caller) is in its quiet hours at local `hour`
    (the same rule as in_window)."""
    s, e = Subscription.quiet_start, Subscription.quiet_end
    return sa.and_(
        s.is_not(None), e.is_not(None), s != e,
        sa.or_(sa.and_(s < e, s <= hour, e > hour), sa.and_(s > e, sa.or_(s <= hour, e > hour))),
    )


@functools.lru_cache(maxsize=8)
def _quiet_in(groups: tuple[tuple[int, tuple[str, ...]], ...], settings_id: int) -> sa.ColumnElement[bool]:
    settings = get_settings()
    return sa.or_(*(sa.and_(clocks.in_zones(names, settings), quiet_now(hour)) for hour, names in groups))


def quiet_at(now: dt.datetime) -> sa.ColumnElement[bool]:
    """SQL: the subscription (joined by the caller, with its Subscriber) is in its quiet
    hours at `now`, on the reader's own clock (zones grouped
    by the hour their clocks show; the same rule as in_window).  The clause is built again
    only when some zone's hour has turned."""
    groups = clocks.zones_by(now, lambda t: t.hour)
    return _quiet_in(tuple((hour, tuple(names)) for hour, names in sorted(groups.items())), id(get_settings()))


@dataclass(frozen=True)
class Withheld:
    status: str  # "held" or "skipped"
    reason: str


PAUSED = Withheld("skipped", "paused by the reader")
HELD = Withheld("held", "held for the reader's quiet hours")
DROPPED = Withheld("skipped", "the reader's quiet hours (they chose not to get these later)")
CAPPED = Withheld("skipped", "the reader's daily alert cap was reached")


def decide(kind: str, *, now: dt.datetime, local: dt.datetime, paused_until: dt.datetime | None,
           quiet_start: int | None, quiet_end: int | None, quiet_mode: str | None, alert_cap: int | None,
           alerts_day: dt.date | None, alerts_today: int, override_quiet: bool = False,
           day: dt.date | None = None) -> Withheld | None:
    """Why this message must not go now (None: send it).  `local` is `now` on the reader's
    clock; `day` the cap's day (default: local's)."""
    if paused_until is not None and paused_until > now:
        return PAUSED
    if kind != "alert":
        return None
    if not override_quiet and in_window(quiet_start, quiet_end, local.hour):
        return DROPPED if quiet_mode == "drop" else HELD
    if alert_cap is not None and alerts_day == (day or local.date()) and alerts_today >= alert_cap:
        return CAPPED
    return None
