"""A reader's hours, as the settings offer them and as SQL picks readers by them.

DIGEST_HOURS is the short list of local hours (on the reader's own clock:
service/subscribers/clocks.py) a reader may choose for their digest; DIGEST_DAILY_AT's hour is always among them and is the default; every hour's
digest leaves at DIGEST_DAILY_AT's minute.  A reader's hour or weekly day left empty
(None) follows the default, and so does an hour an operator has since taken off the list.
The slots beat sends are service/editions/schedule.py.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from service.config import Settings, get_settings
from service.models import Subscriber

WEEKDAYS_AR = ("الاثنين", "الثلاثاء", "الأربعاء", "الخميس", "الجمعة", "السبت", "الأحد")  # Monday = 0


def default_hour(settings: Settings | None = None) -> int:
    return int((settings or get_settings()).digest_daily_at.split(":")[0])


def slot_minute(settings: Settings | None = None) -> int:
    return int((settings or get_settings()).digest_daily_at.split(":")[1])


def offered_hours(settings: Settings | None = None) -> list[int]:
    """The hours a reader may choose, in order; the default hour always among them."""
    settings = settings or get_settings()
    return sorted({*settings.digest_hours, default_hour(settings)})


def hour_condition(hour: int, settings: Settings | None = None) -> sa.ColumnElement[bool]:
    """The readers of local `hour`: those who chose it, and for the default hour those who
    never chose or chose an hour since taken off the list."""
    settings = settings or get_settings()
    if hour == default_hour(settings):
        return sa.or_(Subscriber.digest_hour.is_(None), Subscriber.digest_hour == hour,
                      Subscriber.digest_hour.not_in(offered_hours(settings)))
    return Subscriber.digest_hour == hour


def weekday_condition(weekday: int, settings: Settings | None = None) -> sa.ColumnElement[bool]:
    """The weekly readers of local `weekday` (the default day's: those who never chose too)."""
    settings = settings or get_settings()
    if weekday == settings.digest_weekly_day:
        return sa.or_(Subscriber.digest_weekday.is_(None), Subscriber.digest_weekday == weekday)
    return Subscriber.digest_weekday == weekday


def legacy_condition(slot_params: dict | None, settings: Settings | None = None) -> sa.ColumnElement[bool]:
    """The readers of a slot made before slots were UTC instants ({"hour", "weekday"} in
    TIMEZONE, every reader on the site's clock); None: every reader of the frequency."""
    if not slot_params:
        return sa.true()
    settings = settings or get_settings()
    conds = [hour_condition(int(slot_params["hour"]), settings)]
    weekday = slot_params.get("weekday")
    if weekday is not None:
        conds.append(weekday_condition(int(weekday), settings))
    return sa.and_(*conds)


def not_paused(now: dt.datetime) -> sa.ColumnElement[bool]:
    """Readers whose pause (if any) is over: a pause resumes by itself."""
    return sa.or_(Subscriber.paused_until.is_(None), Subscriber.paused_until <= now)


def effective_hour(digest_hour: int | None, settings: Settings | None = None) -> int:
    settings = settings or get_settings()
    return digest_hour if digest_hour in offered_hours(settings) else default_hour(settings)


def effective_weekday(digest_weekday: int | None, settings: Settings | None = None) -> int:
    settings = settings or get_settings()
    return digest_weekday if digest_weekday in range(7) else settings.digest_weekly_day
