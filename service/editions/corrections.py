"""Corrections: tell the readers who already got an article that it changed in a way that matters.

Ingestion records every content change as an ArticleVersion and calls it `major` when
it is news (see service/articles/versions.py).  This module turns a major update into
one `correction` edition when, and only when, readers were mailed an OLDER version of
the article recently: a digest or an alert that carried it, and that actually sent mail
(a `sent` or `unknown` ledger row) within CORRECTIONS_MAX_AGE_DAYS.  The delivery
planner then mails exactly the readers of those editions (params["edition_ids"]).

Policy (CORRECTIONS): `off`; `notes` (default) — only when the site itself published a
correction or update note ("تصحيح:", "تحديث:" …), because a changed headline alone is
not worth a second mail to everyone; `major` — every major update.

Idempotent by construction: each edition is keyed `correction:{article_id}:{version}`
on the unique Edition.idempotency_key, so a retried task, two workers racing, or beat
running it again create nothing new.  Several major versions of one article inside the
look-back window make one correction, for the newest version the policy accepts.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.articles.queries import major_updates_since
from service.articles.sanitise import html_to_text
from service.articles.urls import absolute_http_url
from service.articles.versions import NOTE_RE
from service.config import Settings, get_settings
from service.logs import get_logger
from service.models import (
    Article,
    ArticleVersion,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionArticle,
    EditionKind,
    EditionStatus,
    audit,
    utcnow,
)

# How far back each run looks for major versions.  Bounded so a run costs the same on
# day 1000 as on day 1; longer than any plausible gap between two runs (the ingest beat
# triggers one per major update), and the idempotency key makes overlap harmless.
LOOKBACK = dt.timedelta(hours=48)
# The classifier writes this into ArticleVersion.change_note when the site added a
# correction/update note (service/articles/versions.py::classify).  Test-pinned.
NOTE_SIGNAL = "correction/update note added"
NOTE_MAX = 400  # characters of the site's note quoted in the mail
CARRYING_KINDS = (EditionKind.digest, EditionKind.alert)
MAILED = (DeliveryStatus.sent, DeliveryStatus.unknown)  # unknown: maybe delivered (RFC 1047)

_BLOCK_RE = re.compile(r"</?(?:p|div|br|li|h\d|tr|blockquote|figcaption)\b[^>]*>", re.I)


def log():
    # Looked up per call so structlog's capture_logs (tests) and late set-up see it.
    return get_logger(__name__)


def key_for(article_id: int, version: int) -> str:
    return f"correction:{article_id}:{version}"


def accepts(policy: str, version: ArticleVersion) -> bool:
    """Does CORRECTIONS=`policy` make this major version worth a correction?"""
    if policy == "major":
        return True
    if policy == "notes":
        return NOTE_SIGNAL in (version.change_note or "")
    return False


@dataclass(frozen=True)
class Earlier:
    """An edition that mailed the article at an older version."""

    edition_id: int
    version: int  # the article version it carried
    cancelled: bool


def _earlier_editions(session: Session, article_id: int, below: int, mailed_since: dt.datetime) -> list[Earlier]:
    """Digests and alerts that carried `article_id` at a version < `below` and mailed
    someone on or after `mailed_since` (sent_at, or updated_at for an `unknown` row)."""
    mailed = (
        sa.select(Delivery.id)
        .where(
            Delivery.edition_id == EditionArticle.edition_id,
            Delivery.status.in_(MAILED),
            sa.func.coalesce(Delivery.sent_at, Delivery.updated_at) >= mailed_since,
        )
        .exists()
    )
    rows = session.execute(
        sa.select(EditionArticle.edition_id, EditionArticle.version, Edition.status)
        .join(Edition, Edition.id == EditionArticle.edition_id)
        .where(
            EditionArticle.article_id == article_id,
            EditionArticle.version < below,
            Edition.kind.in_(CARRYING_KINDS),
            mailed,
        )
        .order_by(EditionArticle.edition_id)
    ).all()
    return [Earlier(e, v, status == EditionStatus.cancelled) for e, v, status in rows]


def _paragraphs(html: str | None) -> list[str]:
    return [t for t in (html_to_text(piece) for piece in _BLOCK_RE.split(html or "")) if t]


def _shorten(text: str, limit: int = NOTE_MAX) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut + " …"


def describe_change(old: ArticleVersion | None, article: Article, why: str) -> str:
    """What the reader is told changed, in Arabic.

    Best is the site's own words: the correction/update paragraphs that the version the
    reader got did not have.  Otherwise say what the classifier saw (a new headline —
    quoting the one they read — or a substantially rewritten text).
    """
    seen = set(_paragraphs(old.body_html)) if old is not None else set()
    notes = [p for p in _paragraphs(article.body_html) if NOTE_RE.search(p) and p not in seen]
    if notes:
        return _shorten(" ".join(notes))
    if old is not None and "title changed" in why and old.title != article.title:
        return _shorten(f"تغيّر عنوان الخبر، وكان: «{old.title}».")
    return "عُدّل نص الخبر تعديلاً جوهرياً بعد نشره."


def create_corrections(
    session: Session,
    *,
    now: dt.datetime | None = None,
    settings: Settings | None = None,
) -> list[Edition]:
    """Create the draft correction editions the recent major updates call for.

    Works inside the caller's transaction (never commits); returns only editions it
    created, so the caller plans exactly those.  Running it again returns [].
    """
    settings = settings or get_settings()
    policy = settings.corrections
    if policy == "off":
        log().info("corrections.checked", policy=policy, articles=0, created=0, edition_ids=[], skipped={})
        return []
    now = now or utcnow()
    mailed_since = now - dt.timedelta(days=settings.corrections_max_age_days)

    by_article: dict[int, list[ArticleVersion]] = defaultdict(list)
    for version in major_updates_since(session, now - LOOKBACK):
        if version.created_at <= now:  # a `now` in the past (tests, replays) sees only its past
            by_article[version.article_id].append(version)

    created: list[Edition] = []
    skipped: Counter[str] = Counter()
    wanted: dict[int, ArticleVersion] = {}
    for article_id, versions in by_article.items():
        accepted = [v for v in versions if accepts(policy, v)]
        if accepted:
            wanted[article_id] = max(accepted, key=lambda v: v.version)
        else:
            skipped["policy"] += 1  # the common case: not worth telling anyone; no line each
    # One query for the keys already made: a re-run (beat, a retried task) stops here.
    done = _existing_keys(session, [key_for(a, v.version) for a, v in wanted.items()])
    for article_id, newest in wanted.items():
        if key_for(article_id, newest.version) in done:
            skipped["exists"] += 1
            continue
        reason = _create_one(session, article_id, newest, now, mailed_since, created)
        if reason:
            skipped[reason] += 1
    log().info(
        "corrections.checked",
        policy=policy,
        articles=len(by_article),
        created=len(created),
        edition_ids=[e.id for e in created],
        skipped=dict(skipped),
    )
    return created


def _existing_keys(session: Session, keys: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(keys), 1000):  # bounded IN lists
        chunk = keys[start : start + 1000]
        found.update(session.scalars(sa.select(Edition.idempotency_key).where(Edition.idempotency_key.in_(chunk))))
    return found


def _create_one(
    session: Session,
    article_id: int,
    newest: ArticleVersion,
    now: dt.datetime,
    mailed_since: dt.datetime,
    created: list[Edition],
) -> str | None:
    """Create the correction for one article; return why not when it is skipped."""
    key = key_for(article_id, newest.version)
    earlier = _earlier_editions(session, article_id, newest.version, mailed_since)
    if not earlier:
        return "never_mailed"  # nobody got an older version recently: nothing to correct
    live = [e for e in earlier if not e.cancelled]
    if not live:
        log().info(
            "correction.skipped",
            reason="earlier_edition_cancelled",
            article_id=article_id,
            version=newest.version,
            edition_ids=[e.edition_id for e in earlier],
        )
        return "earlier_edition_cancelled"
    article = session.get(Article, article_id)
    if article is None:  # deleted between the two queries
        log().info("correction.skipped", reason="article_missing", article_id=article_id, version=newest.version)
        return "article_missing"
    if absolute_http_url(article.url) is None or not (article.title or "").strip():
        # The mail links to the article and names it; without either it cannot be sent.
        log().warning("correction.skipped", reason="article_unusable", article_id=article_id, version=newest.version)
        return "article_unusable"

    oldest_carried = min(e.version for e in live)
    old = session.scalar(
        sa.select(ArticleVersion).where(
            ArticleVersion.article_id == article_id, ArticleVersion.version == oldest_carried
        )
    )
    note = describe_change(old, article, newest.change_note or "")
    edition = Edition(
        kind=EditionKind.correction,
        status=EditionStatus.draft,
        title=article.title,
        idempotency_key=key,
        params={
            "note": note,
            "version": newest.version,
            "article_id": article_id,
            "edition_ids": [e.edition_id for e in live],
            "why": newest.change_note or "",
        },
        created_at=now,
    )
    try:
        # A savepoint: if another worker created the same key a moment ago, only this
        # insert is undone, not the caller's whole transaction.
        with session.begin_nested():
            session.add(edition)
            session.flush()
            session.add(
                EditionArticle(edition_id=edition.id, article_id=article_id, version=article.version, updated=True)
            )
            session.flush()
    except sa.exc.IntegrityError:
        return "exists"  # another process got there first
    audit(session, "system", "correction.create", f"edition:{edition.id}", article_id=article_id, version=newest.version)
    session.flush()
    session.refresh(edition)
    log().info(
        "correction.created",
        edition_id=edition.id,
        article_id=article_id,
        version=newest.version,
        earlier_edition_ids=[e.edition_id for e in live],
    )
    created.append(edition)
    return None

