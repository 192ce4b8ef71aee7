"""What the digest and alert code asks of the articles: read-only, no writes here."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.articles.urls import absolute_http_url, canonical_url
from service.models import Article, ArticleVersion, EditionArticle, Section, VersionKind

NEWS_KINDS = (VersionKind.new, VersionKind.major)


def articles_for_window(session: Session, start: dt.datetime, end: dt.datetime) -> list[Article]:
    """Articles first seen, or given a major update, in [start, end).

    Ordered for a digest: by section (the site's order; articles without a section
    last), then the freshest news first.
    """
    in_window = (
        sa.select(ArticleVersion.id)
        .where(
            ArticleVersion.article_id == Article.id,
            ArticleVersion.kind.in_(NEWS_KINDS),
            ArticleVersion.created_at >= start,
            ArticleVersion.created_at < end,
        )
        .exists()
    )
    stmt = (
        sa.select(Article)
        .outerjoin(Section, Section.id == Article.section_id)
        .where(in_window)
        .order_by(Section.position.asc().nulls_last(), Article.last_major_at.desc(), Article.id.desc())
    )
    return list(session.scalars(stmt).unique())


def major_updates_since(session: Session, since: dt.datetime) -> list[ArticleVersion]:
    """Major versions recorded at or after `since`, oldest first (each one an event)."""
    stmt = (
        sa.select(ArticleVersion)
        .where(ArticleVersion.kind == VersionKind.major, ArticleVersion.created_at >= since)
        .order_by(ArticleVersion.created_at, ArticleVersion.id)
    )
    return list(session.scalars(stmt))


def major_updates_since_edition(session: Session, edition_id: int) -> list[ArticleVersion]:
    """For each article an edition carried, its major versions newer than the one it carried.

    "Which articles in edition X have had a major update since?" — the latest such
    version per article, oldest article first.
    """
    carried = (
        sa.select(EditionArticle.article_id, EditionArticle.version)
        .where(EditionArticle.edition_id == edition_id)
        .subquery()
    )
    latest = (
        sa.select(sa.func.max(ArticleVersion.id))
        .join(carried, carried.c.article_id == ArticleVersion.article_id)
        .where(ArticleVersion.kind == VersionKind.major, ArticleVersion.version > carried.c.version)
        .group_by(ArticleVersion.article_id)
    )
    stmt = sa.select(ArticleVersion).where(ArticleVersion.id.in_(latest)).order_by(ArticleVersion.created_at)
    return list(session.scalars(stmt))


def article_by_url(session: Session, url: str) -> Article | None:
    """The article at `url` (as the site links it, or as the feed gave its guid)."""
    good = absolute_http_url(url)
    if good is None:
        return None
    found = session.scalar(sa.select(Article).where(Article.url == good).order_by(Article.id).limit(1))
    if found is not None:
        return found
    canonical = canonical_url(good)
    return session.scalar(
        sa.select(Article).where(sa.or_(Article.url == canonical, Article.guid == canonical, Article.guid == good)).limit(1)
    )


def recent_articles(session: Session, limit: int = 15, since: dt.datetime | None = None) -> list[Article]:
    """The newest news (new or given a major update), freshest first: what an editor may
    want to alert readers of."""
    stmt = sa.select(Article).order_by(Article.last_major_at.desc(), Article.id.desc()).limit(limit)
    if since is not None:
        stmt = stmt.where(Article.last_major_at >= since)
    return list(session.scalars(stmt).unique())


def article_by_id(session: Session, article_id: int) -> Article | None:
    return session.get(Article, article_id) if 0 < article_id < 2**31 else None


SEARCH_MAX = 50


def _like_escape(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_articles(session: Session, *, words: str = "", section_id: int | None = None,
                    since: dt.datetime | None = None, limit: int = SEARCH_MAX) -> list[Article]:
    """Articles whose headline holds every word of `words` (any case), of one section,
    news since `since` (new or given a major update), freshest first: what an editor
    picks a special edition's stories from."""
    stmt = sa.select(Article).order_by(Article.last_major_at.desc(), Article.id.desc()).limit(limit)
    for word in words.split()[:8]:
        stmt = stmt.where(Article.title.ilike(f"%{_like_escape(word)}%", escape="\\"))
    if section_id is not None:
        stmt = stmt.where(Article.section_id == section_id)
    if since is not None:
        stmt = stmt.where(Article.last_major_at >= since)
    return list(session.scalars(stmt).unique())
