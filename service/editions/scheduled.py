"""Editions that leave at a time an editor chose (`send_at`): alerts and special editions.

A scheduled edition is a draft with `send_at` (UTC).  Nothing plans it before then: the
planner refuses it (`not_yet`), the sweeper's "stalled drafts" leave it alone, and beat's
tick (every DIGEST_CHECK_SECONDS, `due`) asks for its planning once the instant has come,
marking it released (`release`) so that a worker's clock cannot disagree with beat's.
Until the planner has frozen its audience it can be cancelled (`control.cancel`: nothing
goes) or moved (`reschedule`).

Times are typed on the site's clock (TIMEZONE) and stored in UTC, so "07:00 tomorrow"
means 07:00 on the wall clock whatever DST does in between.  A local time that does not
exist (the hour the clocks skip in spring) is refused with the reason; one that happens
twice (the hour repeated in autumn) is the first of the two, and the page shows which.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.models import Edition, EditionStatus, audit, utcnow

# Further ahead than this is a typo (a year for a month), not a plan.
MAX_AHEAD = dt.timedelta(days=30)
# A time a few seconds gone (the editor's form took a moment to send) is "now".
GRACE = dt.timedelta(seconds=60)
# A scheduled edition that beat could not start for this long (everything was down) is
# news no more: it stays a draft for an editor to move or cancel, and the log says so.
MAX_LATE = dt.timedelta(hours=6)


class ScheduleError(ValueError):
    """The time cannot be a send time; the message says why (English for the API, the
    `arabic` attribute for the pages)."""

    def __init__(self, message: str, arabic: str):
        super().__init__(message)
        self.arabic = arabic


def parse(text: str, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """ISO 8601 (`2027-03-28T07:00`, `2027-03-28 07:00`, `…+02:00`, `…Z`) → aware UTC.

    Without an offset it is a time on `zone`'s clock (the site's TIMEZONE)."""
    raw = (text or "").strip()
    if not raw or len(raw) > 40:
        raise ScheduleError("send_at must be a date and time in ISO 8601, e.g. 2027-03-28T07:00",
                            "اكتب التاريخ والوقت هكذا: 2027-03-28 07:00.")
    try:
        when = dt.datetime.fromisoformat(raw.replace("Z", "+00:00") if raw.endswith("Z") else raw)
    except ValueError:
        raise ScheduleError("send_at must be a date and time in ISO 8601, e.g. 2027-03-28T07:00",
                            "اكتب التاريخ والوقت هكذا: 2027-03-28 07:00.") from None
    if when.tzinfo is not None:
        return when.astimezone(dt.UTC)
    return local_to_utc(when, zone)


def local_to_utc(when: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """A wall-clock time on `zone` as UTC; the skipped hour of spring is refused."""
    first = when.replace(tzinfo=zone, fold=0)
    utc = first.astimezone(dt.UTC)
    # Round trip: a time in the gap comes back as another wall-clock time.
    if utc.astimezone(zone).replace(tzinfo=None) != when.replace(tzinfo=None):
        shown = when.strftime("%Y-%m-%d %H:%M")
        raise ScheduleError(f"{shown} does not exist in {zone.key}: the clocks skip that hour",
                            f"الساعة {shown} لا وجود لها بتوقيت {zone.key}: تُقدَّم الساعة في ذلك اليوم.")
    return utc


def check(send_at: dt.datetime, now: dt.datetime | None = None) -> dt.datetime:
    """`send_at` if it may be a send time: not gone, not more than MAX_AHEAD away."""
    now = now or utcnow()
    if send_at < now - GRACE:
        raise ScheduleError("send_at is in the past", "هذا الوقت مضى. اختر وقتاً قادماً، أو أرسل الآن.")
    if send_at > now + MAX_AHEAD:
        raise ScheduleError(f"send_at is more than {MAX_AHEAD.days} days ahead",
                            f"لا يمكن الجدولة لأكثر من {MAX_AHEAD.days} يوماً مقدماً.")
    return max(send_at, now)


def is_scheduled(edition: Edition) -> bool:
    return edition.status is EditionStatus.draft and edition.send_at is not None


# In params: when beat found the edition due and asked for its planning.  From then on the
# planner takes it whatever its own clock says (a worker's clock a little behind beat's).
RELEASED = "released_at"


def not_yet(edition: Edition, now: dt.datetime | None = None) -> bool:
    """A scheduled edition whose time has not come: nobody may plan it."""
    return (is_scheduled(edition) and RELEASED not in (edition.params or {})
            and edition.send_at > (now or utcnow()))


def release(edition: Edition, now: dt.datetime) -> None:
    """Beat's word that the edition's time has come (the caller asks for its planning)."""
    edition.params = {**(edition.params or {}), RELEASED: now.isoformat()}  # a new dict: JSON tracks no change in place


def due(session: Session, now: dt.datetime | None = None, *, lock: bool = False) -> list[Edition]:
    """Scheduled drafts whose time has come, at most MAX_LATE ago (oldest first).
    `lock`: their rows locked, so a cancel or a move waits for the caller's commit."""
    now = now or utcnow()
    stmt = (sa.select(Edition)
            .where(Edition.status == EditionStatus.draft, Edition.send_at.is_not(None),
                   Edition.send_at <= now, Edition.send_at > now - MAX_LATE)
            .order_by(Edition.send_at, Edition.id))
    return list(session.scalars(stmt.with_for_update() if lock else stmt))


def missed(session: Session, now: dt.datetime | None = None, within: dt.timedelta = MAX_LATE) -> list[int]:
    """Ids of scheduled drafts that went past MAX_LATE in the last `within` (left for an
    editor to move or cancel; the caller logs them)."""
    now = now or utcnow()
    return list(session.scalars(
        sa.select(Edition.id).where(Edition.status == EditionStatus.draft, Edition.send_at.is_not(None),
                                    Edition.send_at <= now - MAX_LATE, Edition.send_at > now - MAX_LATE - within)
    ))


class NotScheduled(ValueError):
    """The edition is not waiting for a time any more (sent, planning, or cancelled)."""


def _locked(session: Session, edition_id: int) -> Edition | None:
    # Locked: a reschedule and beat's start (or a cancel) take turns on the row.
    return session.scalar(sa.select(Edition).where(Edition.id == edition_id).with_for_update())


def reschedule(session: Session, edition_id: int, send_at: dt.datetime | None, actor: str) -> Edition:
    """Move a scheduled edition to `send_at` (checked by the caller), or to now (None:
    the caller then asks for its planning).  Raises NotScheduled when it already left."""
    edition = _locked(session, edition_id)
    if edition is None or not is_scheduled(edition):
        raise NotScheduled(f"edition {edition_id} is not scheduled")
    before = edition.send_at
    edition.send_at = send_at if send_at is not None else utcnow()
    edition.params = {k: v for k, v in (edition.params or {}).items() if k != RELEASED}
    audit(session, actor, "edition.reschedule", f"edition:{edition_id}",
          before=before.isoformat(), after=edition.send_at.isoformat())
    session.flush()
    return edition
