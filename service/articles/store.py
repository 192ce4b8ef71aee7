"""Upsert parsed articles by id; a content change becomes a version, a repeat writes nothing.

`articles` holds the current state, `article_versions` one row per content state
(new, minor, major).  What counts as content is the title, summary, body and lead
image (see versions.content_hash); section, dates, captions and the read-also links
are metadata, updated in place without a version when they change.

An article can arrive through several feeds (the site-wide feed and a section feed):
it is one article, keyed by its guid.  Feeds often describe the same article a little
differently (a shorter summary, a tracking parameter on the link), and two feeds taking
turns to rewrite it would make a version on every poll.  So the feed that first brought
an article owns it: other feeds only count it as seen, unless the owner is deactivated
or deleted, when the next feed to carry it takes it over.  Its section comes from a
category when one maps, else it keeps the one it has, else the feed's default.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.articles.parse import ParsedItem
from service.articles.sections import CategoryMap
from service.articles.urls import canonical_url
from service.articles.versions import Content, classify, content_hash
from service.db import insert_ignoring
from service.logs import get_logger
from service.models import Article, ArticleVersion, Feed, VersionKind


def log():
    # Looked up per call: a logger cached at import would miss later logging set-up
    # (and structlog's capture_logs in tests).
    return get_logger(__name__)



@dataclass
class StoreCounts:
    new: int = 0
    major: int = 0
    minor: int = 0
    unchanged: int = 0
    metadata: int = 0  # content unchanged, metadata (dates, section, links …) updated in place


def _content(item: ParsedItem) -> Content:
    return Content(item.title, item.summary, item.body_html, item.lead_image_url)


def _current(article: Article) -> Content:
    return Content(article.title, article.summary, article.body_html, article.lead_image_url)


def _metadata(item: ParsedItem, article: Article | None, feed: Feed, categories: CategoryMap) -> dict:
    resolved = [r for r in (categories.resolve(name) for name in item.categories) if r]
    from_category = next((section for _, section in resolved if section), None)
    section_id = from_category or (article.section_id if article else None) or feed.section_id
    category_id = resolved[0][0] if resolved else (article.category_id if article else None)
    url = item.url
    if article is not None and canonical_url(article.url) == canonical_url(url):
        url = article.url  # the same page with other tracking parameters is not a change
    published = item.published_at
    if item.date_clamped and article is not None:
        published = article.published_at  # a future date is clamped once, not on every poll
    return {
        "url": url,
        "section_id": section_id,
        "category_id": category_id,
        "author": item.author,
        "published_at": published,
        "source_updated_at": item.updated_at,
        "lead_image_caption": item.lead_image_caption,
        "lead_image_alt": item.lead_image_alt,
        "read_also": item.read_also,
        "related": item.related,
    }


def store_items(session: Session, feed: Feed, items: list[ParsedItem], now: dt.datetime) -> StoreCounts:
    """Write what changed; return the counts.  Never commits (the caller owns the transaction)."""
    counts = StoreCounts()
    if not items:
        return counts
    categories = CategoryMap(session)
    existing = {
        a.guid: a for a in session.scalars(sa.select(Article).where(Article.guid.in_([i.guid for i in items])))
    }
    new_rows: list[dict] = []
    version_rows: list[dict] = []
    active_feeds: set[int] | None = None
    for item in items:
        article = existing.get(item.guid)
        if article is not None and article.feed_id not in (None, feed.id):
            if active_feeds is None:
                active_feeds = set(session.scalars(sa.select(Feed.id).where(Feed.active.is_(True))))
            if article.feed_id in active_feeds:
                counts.unchanged += 1  # another feed owns it (see the module docstring)
                continue
        meta = _metadata(item, article, feed, categories)
        content = _content(item)
        digest = content_hash(content)
        if article is None:
            new_rows.append(_new_article_row(item, feed, meta, digest, now))
            continue
        if article.feed_id != feed.id:
            meta["feed_id"] = feed.id  # taking over from a deactivated or deleted feed
        changed_meta = {k: v for k, v in meta.items() if getattr(article, k) != v}
        if article.content_hash == digest:
            if changed_meta:
                for key, value in changed_meta.items():
                    setattr(article, key, value)
                counts.metadata += 1
            else:
                counts.unchanged += 1
            continue
        kind, note = classify(_current(article), content)
        for key, value in meta.items():
            setattr(article, key, value)
        article.title, article.summary = item.title, item.summary
        article.body_html, article.lead_image_url = item.body_html, item.lead_image_url
        article.content_hash = digest
        article.version += 1
        if kind == "major":
            article.last_major_at = now
            counts.major += 1
            log().info("article_major_update", article_id=article.id, feed_id=feed.id, version=article.version, why=note)
        else:
            counts.minor += 1
        version_rows.append(_version_row(article.id, article.version, kind, item, digest, note, now))
    session.flush()
    if new_rows:
        counts.new += _insert_new(session, feed, items, new_rows, version_rows, now, counts)
    if version_rows:
        session.execute(sa.insert(ArticleVersion.__table__), version_rows)
    return counts


def _new_article_row(item: ParsedItem, feed: Feed, meta: dict, digest: str, now: dt.datetime) -> dict:
    return {
        **meta,
        "guid": item.guid,
        "feed_id": feed.id,
        "title": item.title,
        "summary": item.summary,
        "body_html": item.body_html,
        "lead_image_url": item.lead_image_url,
        "first_seen_at": now,
        "last_major_at": now,
        "version": 1,
        "content_hash": digest,
    }


def _version_row(article_id, version, kind, item: ParsedItem, digest, note, now) -> dict:
    return {
        "article_id": article_id,
        "version": version,
        "kind": VersionKind(kind),
        "content_hash": digest,
        "title": item.title,
        "summary": item.summary,
        "body_html": item.body_html,
        "lead_image_url": item.lead_image_url,
        "change_note": note,
        "source_updated_at": item.updated_at,
        "created_at": now,
    }


def _insert_new(session, feed, items, new_rows, version_rows, now, counts: StoreCounts) -> int:
    table = Article.__table__
    stmt = insert_ignoring(session, table, ["guid"]).returning(table.c.id, table.c.guid)
    inserted = {guid: id_ for id_, guid in session.execute(stmt, new_rows).all()}
    by_guid = {i.guid: i for i in items}
    for row in new_rows:
        if row["guid"] in inserted:
            version_rows.append(
                _version_row(inserted[row["guid"]], 1, "new", by_guid[row["guid"]], row["content_hash"], None, now)
            )
    lost = [by_guid[r["guid"]] for r in new_rows if r["guid"] not in inserted]
    if lost:
        # Another worker inserted these between our SELECT and INSERT (a shared article
        # in two feeds polled at once): treat its row as the existing state.
        log().info("article_insert_race", feed_id=feed.id, count=len(lost))
        again = store_items(session, feed, lost, now)
        counts.major += again.major
        counts.minor += again.minor
        counts.unchanged += again.unchanged
        counts.metadata += again.metadata
    return len(inserted)
