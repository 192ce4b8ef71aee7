"""A reader's hours, as the settings offer them and as SQL picks readers by them.

DIGEST_HOURS is the short list of local hours (TIMEZONE) a reader may choose for their
digest; DIGEST_DAILY_AT's hour is always among them and is the default; every hour's
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


def audience_condition(slot_params: dict | None, settings: Settings | None = None) -> sa.ColumnElement[bool]:
    """The readers of a slot (an edition's params["slot"]); None: every reader of the
    frequency (an unscheduled digest, `nashra digest send --now`)."""
    if not slot_params:
        return sa.true()
    settings = settings or get_settings()
    hour = int(slot_params["hour"])
    conds = []
    if hour == default_hour(settings):
        conds.append(sa.or_(Subscriber.digest_hour.is_(None), Subscriber.digest_hour == hour,
                            Subscriber.digest_hour.not_in(offered_hours(settings))))
    else:
        conds.append(Subscriber.digest_hour == hour)
    weekday = slot_params.get("weekday")
    if weekday is not None:
        weekday = int(weekday)
        if weekday == settings.digest_weekly_day:
            conds.append(sa.or_(Subscriber.digest_weekday.is_(None), Subscriber.digest_weekday == weekday))
        else:
            conds.append(Subscriber.digest_weekday == weekday)
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
