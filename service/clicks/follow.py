"""One click: from the `/r/` path to the URL to redirect to, counted on the way.

Nothing here writes or logs who clicked: the count goes to (link, hour), the reader's
keyed hash into a HyperLogLog, and the log line carries the link and edition ids only.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.clicks import record, scanners, signing, unique
from service.config import Settings, get_settings
from service.logs import get_logger
from service.models import ClickCount, Edition, EditionLink

log = get_logger(__name__)


class Refused(enum.StrEnum):
    forged = "forged"  # not a path we signed, or a token not ours: 400, redirects nowhere
    gone = "gone"  # signed by us, but the link is no longer kept: 404


@dataclass(frozen=True)
class Followed:
    url: str
    verdict: scanners.Verdict | None  # None: click tracking is off, nothing counted
    edition_id: int
    link_id: int
    # With Redis: the HyperLogLogs to add the reader's keyed hash to, after the commit
    # (`unique.add_to_redis`), so the (link, hour) row is not locked during a round trip.
    # In memory only, for that one call.
    unique: tuple[list[str], bytes] | None = field(default=None, repr=False)

    def count_unique(self) -> None:
        if self.unique is not None:
            unique.add_to_redis(self.edition_id, *self.unique)


def follow(session: Session, ref: str, method: str, headers: Mapping[str, str], now: dt.datetime,
           settings: Settings | None = None) -> Followed | Refused:
    settings = settings or get_settings()
    parsed = signing.parse(ref, settings)
    if parsed is None:
        return Refused.forged
    row = session.execute(
        sa.select(EditionLink.url, EditionLink.edition_id, EditionLink.article_id, EditionLink.section_id)
        .where(EditionLink.id == parsed.link_id)
    ).first()
    if row is None:
        return Refused.gone
    url, edition_id, article_id, section_id = row
    if not signing.token_valid(parsed, edition_id, settings):
        return Refused.forged
    if not settings.click_tracking:
        # The switch is off: a link already in a mail keeps working, and counts nothing.
        return Followed(url, None, edition_id, parsed.link_id)
    verdict = scanners.judge(method, headers, parsed.sent_at, now.timestamp())
    if verdict is not scanners.Verdict.skip and session.get_bind().dialect.name == "postgresql":
        # A count is not worth a disk flush per click: without waiting for the WAL to
        # reach the disk the redirect answers at once, and a database crash may lose the
        # last moment's clicks, never anything else (PostgreSQL's own trade-off).
        session.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))
    later = None
    if verdict is scanners.Verdict.count:
        record.count(session, parsed.link_id, now)
        if parsed.uid is not None:
            scopes = unique.scopes(article_id, section_id)
            if settings.redis_url:
                later = (scopes, parsed.uid)
            else:
                unique.add_to_database(session, edition_id, scopes, parsed.uid)
    elif verdict is scanners.Verdict.ignore:
        record.count(session, parsed.link_id, now, ignored=True)
    log.info("clicks.followed", link_id=parsed.link_id, edition_id=edition_id, verdict=verdict.value)
    return Followed(url, verdict, edition_id, parsed.link_id, later)


def totals_by_kind(session: Session) -> dict[str, tuple[int, int]]:
    """Edition kind → (clicks, ignored) on record: what /metrics shows."""
    C = ClickCount.__table__
    rows = session.execute(
        sa.select(Edition.kind, sa.func.sum(C.c.clicks), sa.func.sum(C.c.ignored))
        .select_from(C)
        .join(EditionLink, EditionLink.id == C.c.link_id)
        .join(Edition, Edition.id == EditionLink.edition_id)
        .group_by(Edition.kind)
    ).all()
    return {getattr(kind, "value", str(kind)): (int(c or 0), int(i or 0)) for kind, c, i in rows}
