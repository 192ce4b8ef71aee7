"""Digest editions: which articles a daily or weekly digest carries.

A digest carries the articles that were new, or got a major update, in its window
(the last day or week before it is made).  Windows are measured on our own clock
(when ingestion saw the article or its major version), not on the feed's published
time, so a late-arriving feed item is still sent once and a republished old story is
not sent again.  An article in the window that existed before the window started is
marked "updated": the readers of the previous digest saw an older version.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from service.config import get_settings
from service.editions import keys
from service.models import Edition, EditionArticle, EditionKind, EditionStatus, Frequency, utcnow

WINDOWS = {Frequency.daily: dt.timedelta(days=1), Frequency.weekly: dt.timedelta(days=7)}
MAX_ARTICLES = 40


class DigestError(ValueError):
    pass


def scheduled_key(frequency: Frequency, now: dt.datetime) -> str:
    """One scheduled digest per frequency per local day, however often beat fires."""
    local = now.astimezone(get_settings().tz).date()
    return f"digest:{frequency.value}:{local.isoformat()}"


def create_digest(
    session: Session,
    frequency: Frequency | str,
    *,
    now: dt.datetime | None = None,
    scheduled: bool = True,
) -> tuple[Edition | None, bool]:
    """Create the digest edition for `frequency`.

    Returns (edition, created).  `scheduled` digests are keyed on the local date, so
    a second call the same day returns the existing edition with created=False.  An
    unscheduled one (`nashra digest send --now`) is always new.  (None, False) when
    the window holds no article.
    """
    from service.articles.queries import articles_for_window

    frequency = Frequency(frequency)
    if frequency not in WINDOWS:
        raise DigestError(f"no digest for frequency {frequency.value!r}")
    now = now or utcnow()
    key = scheduled_key(frequency, now) if scheduled else None
    found = keys.existing(session, key)
    if found is not None:
        return found, False
    start = now - WINDOWS[frequency]
    articles = articles_for_window(session, start, now)[:MAX_ARTICLES]
    if not articles:
        return None, False
    edition = Edition(
        kind=EditionKind.digest,
        frequency=frequency,
        status=EditionStatus.draft,
        title={Frequency.daily: "النشرة اليومية", Frequency.weekly: "النشرة الأسبوعية"}[frequency],
        idempotency_key=key,
        window_start=start,
        window_end=now,
    )
    edition, created = keys.add_keyed(session, edition)
    if not created:  # beat and `nashra digest send` at the same moment: one digest
        return edition, False
    for position, article in enumerate(articles):
        session.add(
            EditionArticle(
                edition_id=edition.id,
                article_id=article.id,
                version=article.version,
                position=position,
                updated=article.version > 1 and article.first_seen_at < start,
            )
        )
    session.flush()
    session.refresh(edition)
    return edition, True
