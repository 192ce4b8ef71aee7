"""A reader's hours, as the settings offer them and as SQL picks readers by them.

DIGEST_HOURS is the short list of local hours (on the reader's own clock:
service/subscribers/clocks.py) a reader may choose for their digest; every hour's
digest leaves at DIGEST_DAILY_AT's minute.  Each digest newsletter has a default hour
and weekly day (Newsletter.default_hour / default_weekday; None: DIGEST_DAILY_AT's hour
and DIGEST_WEEKLY_DAY), and its default hour is always among the hours offered for it.
A reader's choices are per newsletter (Subscription.digest_hour / digest_weekday): left
empty (None) they follow the newsletter's default, and so does an hour an operator has
since taken off the list.  The SQL conditions here name `Subscription`'s columns: the
caller joins the reader's subscription to the newsletter in question.
The slots beat sends are service/editions/schedule.py.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from service.config import Settings, get_settings
from service.models import Subscriber, Subscription

WEEKDAYS_AR = ("الاثنين", "الثلاثاء", "الأربعاء", "الخميس", "الجمعة", "السبت", "الأحد")  # Monday = 0


def default_hour(settings: Settings | None = None) -> int:
    return int((settings or get_settings()).digest_daily_at.split(":")[0])


def slot_minute(settings: Settings | None = None) -> int:
    return int((settings or get_settings()).digest_daily_at.split(":")[1])


def newsletter_hour(newsletter=None, settings: Settings | None = None) -> int:
    """A digest newsletter's default hour (anything with `default_hour`: a Newsletter, a
    slot's schedule.DigestRef; None: the site's)."""
    own = getattr(newsletter, "default_hour", None)
    return own if own in range(24) else default_hour(settings)


def newsletter_weekday(newsletter=None, settings: Settings | None = None) -> int:
    """A weekly newsletter's default day (0 = Monday); the site's DIGEST_WEEKLY_DAY if it has none."""
    own = getattr(newsletter, "default_weekday", None)
    return own if own in range(7) else (settings or get_settings()).digest_weekly_day


def offered_hours(settings: Settings | None = None, newsletter=None) -> list[int]:
    """The hours a reader may choose (for `newsletter`), in order; the default hour (the
    newsletter's) always among them."""
    settings = settings or get_settings()
    return sorted({*settings.digest_hours, default_hour(settings), newsletter_hour(newsletter, settings)})


def hour_condition(hour: int, settings: Settings | None = None, newsletter=None) -> sa.ColumnElement[bool]:
    """The subscriptions of local `hour`: those who chose it, and for the newsletter's
    default hour those who never chose or chose an hour since taken off the list."""
    settings = settings or get_settings()
    if hour == newsletter_hour(newsletter, settings):
        return sa.or_(Subscription.digest_hour.is_(None), Subscription.digest_hour == hour,
                      Subscription.digest_hour.not_in(offered_hours(settings, newsletter)))
    return Subscription.digest_hour == hour


def weekday_condition(weekday: int, settings: Settings | None = None, newsletter=None) -> sa.ColumnElement[bool]:
    """The weekly subscriptions of local `weekday` (the default day's: those who never chose too)."""
    settings = settings or get_settings()
    if weekday == newsletter_weekday(newsletter, settings):
        return sa.or_(Subscription.digest_weekday.is_(None), Subscription.digest_weekday == weekday)
    return Subscription.digest_weekday == weekday


def legacy_condition(slot_params: dict | None, settings: Settings | None = None,
                     newsletter=None) -> sa.ColumnElement[bool]:
    """The readers of a slot made before slots were UTC instants ({"hour", "weekday"} in
    TIMEZONE, every reader on the site's clock); None: every reader of the newsletter."""
    if not slot_params:
        return sa.true()
    settings = settings or get_settings()
    conds = [hour_condition(int(slot_params["hour"]), settings, newsletter)]
    weekday = slot_params.get("weekday")
    if weekday is not None:
        conds.append(weekday_condition(int(weekday), settings, newsletter))
    return sa.and_(*conds)


def not_paused(now: dt.datetime) -> sa.ColumnElement[bool]:
    """Readers whose pause (if any) is over: a pause resumes by itself."""
    return sa.or_(Subscriber.paused_until.is_(None), Subscriber.paused_until <= now)


def effective_hour(digest_hour: int | None, settings: Settings | None = None, newsletter=None) -> int:
    """The hour a reader's digest (of `newsletter`) leaves at, on their clock."""
    settings = settings or get_settings()
    if digest_hour in offered_hours(settings, newsletter):
        return digest_hour
    return newsletter_hour(newsletter, settings)


def effective_weekday(digest_weekday: int | None, settings: Settings | None = None, newsletter=None) -> int:
    settings = settings or get_settings()
    return digest_weekday if digest_weekday in range(7) else newsletter_weekday(newsletter, settings)
