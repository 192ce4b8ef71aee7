"""Scheduled sends, once for every door (API, editor's pages, CLI): read a send time,
start what is due (beat's tick), move a scheduled edition or send it now.

Cancelling one is `usecases.editions.steer(…, "cancel")`, as for any edition: a draft
that is cancelled is never planned, so nothing goes.
"""

from __future__ import annotations

import datetime as dt

from service.config import get_settings
from service.db import session_scope
from service.dispatch import Dispatcher, current
from service.editions import scheduled
from service.editions.scheduled import NotScheduled, ScheduleError, is_scheduled
from service.logs import get_logger
from service.models import utcnow
from service.rendering import dates
from service.usecases.editions import steerable

log = get_logger(__name__)

__all__ = ["NotScheduled", "ScheduleError", "is_scheduled", "local_text", "parse_send_at", "reschedule", "start_due"]


def parse_send_at(text: str | None, now: dt.datetime | None = None, *, blank_is_now: bool = True) -> dt.datetime | None:
    """A send time as typed (ISO 8601; without an offset on the site's TIMEZONE) → UTC,
    checked (not gone, at most 30 days ahead).  None, or blank from a form: send now (the
    API says `blank_is_now=False`: a JSON "send_at": "" is a mistake, not "now")."""
    if text is None or (blank_is_now and not str(text).strip()):
        return None
    return scheduled.check(scheduled.parse(str(text), get_settings().tz), now)


def local_text(when: dt.datetime | None) -> str:
    """`2027-03-28 07:00 (Europe/Berlin)`: how the pages and the CLI show a send time."""
    if when is None:
        return ""
    settings = get_settings()
    return dates.local_time(when, settings.tz).strftime("%Y-%m-%d %H:%M") + f" ({settings.timezone})"


def start_due(now: dt.datetime | None = None, dispatcher: Dispatcher | None = None) -> list[int]:
    """Beat's tick (every DIGEST_CHECK_SECONDS): ask for the planning of every scheduled
    edition whose time has come.  The edition stays a draft until the planner takes it,
    so a lost message is asked for again at the next tick; planning twice is harmless."""
    dispatcher = dispatcher or current()
    now = now or utcnow()
    tick = dt.timedelta(seconds=2 * get_settings().digest_check_seconds)
    with session_scope() as session:  # a read first: most ticks find nothing to write
        due_ids = [e.id for e in scheduled.due(session, now)]
        missed = scheduled.missed(session, now, within=tick)
    if missed:  # said once, as it goes past MAX_LATE, not at every tick after
        log.warning("scheduled.missed", edition_ids=missed, max_late_hours=scheduled.MAX_LATE.seconds // 3600)
    started: list[int] = []
    if not due_ids:
        return started
    with session_scope(write=True) as session:  # SQLite: the write lock up front (see usecases.digests)
        for edition in scheduled.due(session, now, lock=True):  # again, locked: a cancel may have come between
            scheduled.release(edition, now)
            dispatcher.plan_edition(edition.id, edition.kind.value, session=session)
            started.append(edition.id)
            log.info("scheduled.start", edition_id=edition.id, kind=edition.kind.value,
                     late_seconds=round((now - edition.send_at).total_seconds()))
    return started


def reschedule(edition_id: int, send_at: str | None, *, actor: str, role: str,
               dispatcher: Dispatcher | None = None, now: dt.datetime | None = None) -> dt.datetime:
    """Move a scheduled edition to `send_at` (as typed), or send it now (None or blank).

    Raises NoSuchEdition, NotAllowed, ScheduleError (a bad time), NotScheduled (it already
    left, or was cancelled)."""
    when = parse_send_at(send_at, now)
    dispatcher = dispatcher or current()
    with session_scope() as session:
        steerable(session, edition_id, role)
        edition = scheduled.reschedule(session, edition_id, when, actor)
        if when is None:
            dispatcher.plan_edition(edition.id, edition.kind.value, session=session)
        result = edition.send_at
    log.info("scheduled.moved", edition_id=edition_id, now=when is None, actor=actor)
    return result
