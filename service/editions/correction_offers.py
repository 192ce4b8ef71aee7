"""Corrections an editor sends by hand: after a major update to an article that an alert
carried, the editors' page offers the correction mail to exactly the readers who got
that alert, and one action sends it.

The automatic policy (service/editions/corrections.py, CORRECTIONS) stays as it is; both
key a correction `correction:{article_id}:{version}`, so an article's major version is
corrected at most once whoever gets there first, and an offer disappears as soon as a
correction for that version exists.  What the reader is told changed is worded by the
same `describe_change`.  The planner then mails the readers with a `sent` (or `unknown`)
ledger row in the named alerts — `params["edition_ids"]` — and nobody else.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.config import Settings, get_settings
from service.editions import corrections
from service.models import (
    Article,
    ArticleVersion,
    Delivery,
    Edition,
    EditionArticle,
    EditionKind,
    EditionStatus,
    VersionKind,
    audit,
    utcnow,
)

MAX_OFFERS = 20


class OfferGone(LookupError):
    """Nothing to offer for this article now (no major update since its alert, or a
    correction for that version exists already)."""


@dataclass(frozen=True)
class Offer:
    article_id: int
    version: int  # the major version a correction would be about
    title: str
    url: str
    note: str  # what changed, as the mail says it
    alert_ids: tuple[int, ...]  # the alerts that mailed an older version
    changed_at: dt.datetime  # when that major version was seen


def _alerted(session: Session, mailed_since: dt.datetime, article_id: int | None) -> dict[int, list[tuple[int, int]]]:
    """article id → [(version carried, alert id)] for alerts that mailed someone recently."""
    mailed = (
        sa.select(Delivery.id)
        .where(Delivery.edition_id == Edition.id, Delivery.status.in_(corrections.MAILED),
               sa.func.coalesce(Delivery.sent_at, Delivery.updated_at) >= mailed_since)
        .exists()
    )
    query = (
        sa.select(EditionArticle.article_id, EditionArticle.version, Edition.id)
        .join(Edition, Edition.id == EditionArticle.edition_id)
        .where(Edition.kind == EditionKind.alert, Edition.status != EditionStatus.cancelled,
               Edition.created_at >= mailed_since - dt.timedelta(days=1), mailed)
        .order_by(Edition.id)
    )
    if article_id is not None:
        query = query.where(EditionArticle.article_id == article_id)
    found: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for aid, version, edition_id in session.execute(query):
        found[aid].append((version, edition_id))
    return found


def offers(session: Session, *, now: dt.datetime | None = None, settings: Settings | None = None,
           article_id: int | None = None) -> list[Offer]:
    """What the page offers now, the newest update first."""
    settings = settings or get_settings()
    now = now or utcnow()
    mailed_since = now - dt.timedelta(days=settings.corrections_max_age_days)
    out: list[Offer] = []
    for aid, carried in _alerted(session, mailed_since, article_id).items():
        oldest = min(v for v, _ in carried)
        newest = session.scalar(
            sa.select(ArticleVersion)
            .where(ArticleVersion.article_id == aid, ArticleVersion.kind == VersionKind.major,
                   ArticleVersion.version > oldest)
            .order_by(ArticleVersion.version.desc()).limit(1)
        )
        if newest is None:
            continue
        key = corrections.key_for(aid, newest.version)
        if session.scalar(sa.select(Edition.id).where(Edition.idempotency_key == key)) is not None:
            continue  # corrected already (by hand or by the policy)
        article = session.get(Article, aid)
        if article is None or not (article.title or "").strip():
            continue
        alert_ids = tuple(sorted({e for v, e in carried if v < newest.version}))
        old = session.scalar(sa.select(ArticleVersion).where(ArticleVersion.article_id == aid,
                                                             ArticleVersion.version == oldest))
        note = corrections.describe_change(old, article, newest.change_note or "")
        out.append(Offer(aid, newest.version, article.title, article.url, note, alert_ids, newest.created_at))
    out.sort(key=lambda o: o.changed_at, reverse=True)
    return out[:MAX_OFFERS]


def create_correction(session: Session, offer: Offer, *, actor: str, now: dt.datetime | None = None) -> Edition:
    """The draft correction edition for `offer`; raises OfferGone when one exists already."""
    article = session.get(Article, offer.article_id)
    if article is None:
        raise OfferGone(f"article {offer.article_id} is gone")
    edition = Edition(
        kind=EditionKind.correction,
        status=EditionStatus.draft,
        title=article.title,
        idempotency_key=corrections.key_for(offer.article_id, offer.version),
        params={"note": offer.note, "version": offer.version, "article_id": offer.article_id,
                "edition_ids": list(offer.alert_ids), "why": "sent by an editor", "by": actor},
        created_at=now or utcnow(),
    )
    try:
        # A savepoint: another editor (or the policy) creating the same key a moment ago
        # undoes only this insert.
        with session.begin_nested():
            session.add(edition)
            session.flush()
            session.add(EditionArticle(edition_id=edition.id, article_id=article.id, version=article.version,
                                       updated=True))
            session.flush()
    except sa.exc.IntegrityError:
        raise OfferGone("a correction for this update exists already") from None  # another process got there first
    session.refresh(edition)
    return edition


def send_offered(session: Session, article_id: int, version: int | None, *, actor: str) -> Edition:
    """The correction the page offered for `article_id` (at `version`, when the page said
    which: a newer major update since is a new offer, not this one)."""
    found = offers(session, article_id=article_id)
    if not found or (version is not None and found[0].version != version):
        raise OfferGone("nothing to correct for this article now")
    edition = create_correction(session, found[0], actor=actor)
    audit(session, actor, "correction.send", f"edition:{edition.id}", article_id=article_id,
          version=found[0].version, alerts=list(found[0].alert_ids))
    return edition
