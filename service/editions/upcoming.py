"""The next scheduled digest, as it would be made now: what the digest preview shows.

Beat sends the daily digest at DIGEST_DAILY_AT local time and the weekly one at the same
time on DIGEST_WEEKLY_DAY (service/jobs/app.py).  `upcoming_digest` makes the edition
that beat would make at that moment — the same `create_digest`, its window chained on
the last scheduled digest, holding what has been ingested so far — inside the caller's
transaction, which the caller rolls back: previewing writes nothing.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from service.config import Settings, get_settings
from service.editions.digests import create_digest
from service.models import Edition, Frequency, utcnow


def next_send_at(frequency: Frequency | str, now: dt.datetime | None = None,
                 settings: Settings | None = None) -> dt.datetime:
    """When beat next sends this frequency's digest (UTC), strictly after `now`."""
    settings = settings or get_settings()
    frequency = Frequency(frequency)
    now = now or utcnow()
    hour, minute = (int(x) for x in settings.digest_daily_at.split(":"))
    local = now.astimezone(settings.tz)
    at = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if frequency is Frequency.weekly:
        at += dt.timedelta(days=(settings.digest_weekly_day - at.weekday()) % 7)
        step = dt.timedelta(days=7)
    else:
        step = dt.timedelta(days=1)
    while at <= local:
        at += step
    # Built in local wall time, then normalised: a DST change between now and then moves it.
    return at.replace(tzinfo=None).replace(tzinfo=settings.tz).astimezone(dt.UTC)


def upcoming_digest(session: Session, frequency: Frequency | str,
                    now: dt.datetime | None = None) -> tuple[Edition | None, dt.datetime]:
    """(the edition beat would make at its next send — None when nothing is in its window
    yet —, that send time).  The caller rolls the session back."""
    frequency = Frequency(frequency)
    send_at = next_send_at(frequency, now)
    edition, created = create_digest(session, frequency, now=send_at, scheduled=True)
    if edition is not None and not created:
        # That day's digest was made already (`nashra digest send` before its time): the
        # next one is the one after.
        step = dt.timedelta(days=7 if frequency is Frequency.weekly else 1)
        send_at = next_send_at(frequency, send_at + step - dt.timedelta(minutes=1))
        edition, _ = create_digest(session, frequency, now=send_at, scheduled=True)
    return edition, send_at
