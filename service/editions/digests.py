"""Digest editions: which articles a digest newsletter's edition carries.

Each digest newsletter (the site's `daily` and `weekly`, a Friday sports round-up…) makes
its own editions: titled with its name, drawing only on its sections (none listed:
every section), keyed and chained per newsletter (service/editions/schedule.py).  A
hidden newsletter makes none.  A digest carries the articles that were new, or got a major update, in its window
(the last day or week before it is made).  Windows are measured on our own clock
(when ingestion saw the article or its major version), not on the feed's published
time, so a late-arriving feed item is still sent once and a republished old story is
not sent again.  An article in the window that existed before the window started is
marked "updated": the readers of the previous digest saw an older version.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, aliased

from service.articles.queries import articles_for_window
from service.config import get_settings
from service.editions import keys, schedule
from service.editions.schedule import DigestRef, Slot
from service.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionArticle,
    EditionKind,
    EditionStatus,
    Frequency,
    Newsletter,
    NewsletterKind,
    utcnow,
)
from service.newsletters import catalogue

MAILED = (DeliveryStatus.sent, DeliveryStatus.unknown)  # unknown: maybe delivered (RFC 1047)
WINDOWS = {Frequency.daily: dt.timedelta(days=1), Frequency.weekly: dt.timedelta(days=7)}
MAX_ARTICLES = 40
MAX_PER_SECTION = 8


class DigestError(ValueError):
    pass


def scheduled_key(newsletter: DigestRef | Newsletter | Frequency | str, now: dt.datetime,
                  slot: Slot | None = None) -> str:
    """One scheduled digest per slot (newsletter, UTC instant), however often beat fires
    (service/editions/schedule.py)."""
    return (slot or schedule.default_slot(newsletter, now)).key


def digest_newsletter(session: Session, newsletter: Newsletter | DigestRef | Frequency | str) -> Newsletter:
    """The digest newsletter a caller names: the row itself, a slot's newsletter, a slug,
    or a frequency (`daily` / `weekly`: the site's own digest of it, catalogue.digest_for).
    DigestError for none, an alerts newsletter or a hidden one (it makes nothing new)."""
    if isinstance(newsletter, Newsletter):
        found = newsletter
    elif isinstance(newsletter, DigestRef):
        found = session.get(Newsletter, newsletter.id) if newsletter.id is not None else None
        found = found or catalogue.by_slug(session, newsletter.slug)
    elif isinstance(newsletter, Frequency) or newsletter in {f.value for f in Frequency}:
        if Frequency(newsletter) not in WINDOWS:
            raise DigestError(f"no digest for frequency {Frequency(newsletter).value!r}")
        found = catalogue.digest_for(session, newsletter)
    else:
        found = catalogue.by_slug(session, newsletter) if isinstance(newsletter, str) else None
    name = getattr(newsletter, "slug", newsletter)
    if found is None:
        raise DigestError(f"no digest newsletter {str(getattr(name, 'value', name))[:64]!r}")
    if found.kind is not NewsletterKind.digest or found.frequency not in WINDOWS:
        raise DigestError(f"newsletter {found.slug!r} is not a daily or weekly digest")
    if found.hidden:
        raise DigestError(f"newsletter {found.slug!r} is hidden: nothing new is made for it")
    return found


def of_sections(articles: list, sections: list | None) -> list:
    """The articles of a newsletter's sections (none listed: all of them)."""
    if not sections:
        return articles
    wanted = set(sections)
    return [a for a in articles if a.section_id in wanted]


def ingest_lag() -> dt.timedelta:
    """Longer than any poll can take between stamping its versions and committing them."""
    return dt.timedelta(seconds=get_settings().feed_timeout + 60)


def _window_start(session: Session, newsletter: Newsletter, now: dt.datetime, slot: Slot) -> dt.datetime:
    """A scheduled digest starts where the previous one of the same newsletter and slot ended.

    The readers of a slot got that one: chaining the windows means no article falls in a
    gap between two of their digests and none is in both.  Without a recent predecessor
    (first digest of the slot, or a long outage) the window is one period.  Either way it
    reaches back further for readers a DST change moved into this slot from an earlier
    one (schedule.catch_back): they see an hour's article twice rather than miss it.
    """
    period = WINDOWS[slot.frequency]
    previous = session.scalar(
        select(Edition.window_end)
        .where(
            Edition.kind == EditionKind.digest,
            Edition.newsletter_id == newsletter.id,
            Edition.frequency == slot.frequency,
            Edition.idempotency_key.like(slot.chain_pattern),
            Edition.window_end.is_not(None),
            Edition.window_end <= now,
        )
        .order_by(Edition.window_end.desc())
        .limit(1)
    )
    back = schedule.catch_back(session, slot)
    if previous is not None and now - previous <= 2 * period:
        return previous - back
    return now - period - back


def select_articles(articles: list, limit: int = MAX_ARTICLES, per_section: int = MAX_PER_SECTION) -> list:
    """At most `per_section` from each section, then at most `limit` in all, taken in turns.

    `articles` come grouped by section in the site's order, freshest first; cutting the
    list at `limit` would drop the last sections entirely on a busy day.
    """
    by_section: dict[object, list] = {}
    for article in articles:
        group = by_section.setdefault(article.section_id, [])
        if len(group) < per_section:
            group.append(article)
    chosen: set[int] = set()
    for rank in range(per_section):
        for group in by_section.values():
            if rank < len(group) and len(chosen) < limit:
                chosen.add(group[rank].id)
    return [a for a in articles if a.id in chosen]  # back in the digest's order


def create_digest(
    session: Session,
    newsletter: Newsletter | DigestRef | Frequency | str,
    *,
    now: dt.datetime | None = None,
    scheduled: bool = True,
    slot: Slot | None = None,
) -> tuple[Edition | None, bool]:
    """Create the digest edition of `newsletter` (a Newsletter, a slug, or a frequency:
    the site's own `daily` / `weekly`, as callers from before several newsletters say).

    Returns (edition, created).  A `scheduled` digest is one slot's (`slot`, by default
    the slot of readers who never chose an hour, on `now`'s local date): keyed on the
    newsletter, the slot's UTC hour and date, so a second call returns the existing
    edition with created=False, and sent only to that slot's readers.  An unscheduled
    one (`nashra digest send --now`) is always new and goes to every reader of the
    newsletter.  (None, False) when the window holds no article of its sections.
    Raises DigestError for a newsletter that is no digest, or is hidden.
    """
    newsletter = digest_newsletter(session, newsletter)
    ref = schedule.DigestRef.of(newsletter)
    frequency = ref.frequency
    now = now or utcnow()
    if scheduled:
        slot = slot or schedule.default_slot(ref, now)
        if slot.newsletter.slug != ref.slug or slot.frequency is not frequency:
            raise DigestError(f"slot {slot.key} is not one of the {ref.slug} digest's")
    key = slot.key if scheduled else None
    found = keys.existing(session, key)
    if found is not None:
        return found, False
    if scheduled:
        # A poll that began before `now` stamps its versions with its start time but may
        # commit only after we read: end the window a poll's length back, so such an
        # article is in the next digest rather than in neither.
        end = now - ingest_lag()
        start = _window_start(session, newsletter, end, slot)
    else:
        end, start = now, now - WINDOWS[frequency]
    articles = select_articles(of_sections(articles_for_window(session, start, end), newsletter.sections))
    if not articles:
        return None, False
    edition = Edition(
        kind=EditionKind.digest,
        newsletter_id=newsletter.id,
        frequency=frequency,
        status=EditionStatus.draft,
        title=newsletter.name,
        idempotency_key=key,
        window_start=start,
        window_end=end,
        params={"slot": slot.params()} if scheduled else {},
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


def alerted_article_ids(session: Session, edition: Edition) -> set[int]:
    """The digest's articles that a breaking alert already mailed, at the version the
    digest carries (or a later one): readers with alerts on have read them.

    An alert of an ingested article names it (edition_articles); a typed alert is matched
    on its link, when it was made after the article's current version appeared.  Only an
    alert that actually went to someone (a `sent` or `unknown` ledger row) counts, and
    never a cancelled one.  An article updated in a major way since its alert is news
    again, and is not on this list.
    """
    if edition.kind != EditionKind.digest or not edition.articles:
        return set()
    mailed = (
        exists()
        .where(Delivery.edition_id == Edition.id, Delivery.status.in_(MAILED))
    )
    mine = aliased(EditionArticle)
    theirs = aliased(EditionArticle)
    found = set(
        session.scalars(
            select(mine.article_id)
            .join(theirs, (theirs.article_id == mine.article_id) & (theirs.version >= mine.version))
            .join(Edition, Edition.id == theirs.edition_id)
            .where(mine.edition_id == edition.id, Edition.kind == EditionKind.alert,
                   Edition.status != EditionStatus.cancelled, mailed)
            .distinct()
        )
    )
    carried = {ea.article_id: ea.article for ea in edition.articles if ea.article_id not in found}
    if carried:
        since = min(a.last_major_at for a in carried.values())
        typed = session.execute(
            select(Edition.params, Edition.created_at)
            .where(Edition.kind == EditionKind.alert, Edition.status != EditionStatus.cancelled,
                   Edition.created_at >= since, ~exists().where(EditionArticle.edition_id == Edition.id), mailed)
        ).all()
        for params, created_at in typed:
            url = (params or {}).get("url")
            for article_id, article in carried.items():
                if url == article.url and created_at >= article.last_major_at:
                    found.add(article_id)
    return found
