"""Configured feeds: adding them (CLI, FEED_URLS, the admins' page), pausing, resuming
and removing them, and their health.

Health lives on the feed row: last success, last error, consecutive failures and the
next poll.  A failing feed backs off exponentially (1, 2, 4 … minutes, capped at an
hour) so that a dead site costs us little, while every other feed keeps its minute.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.articles.sections import section_by_slug_or_name
from service.articles.urls import UnsafeURL, display_url, validate_feed_url
from service.models import Article, Feed, Section, audit, utcnow

# Beat fires every 60 s; a feed polled successfully is due again a little before the
# next tick, so that jitter between ticks never makes it skip one (the one-minute promise).
POLL_INTERVAL = dt.timedelta(seconds=50)
BACKOFF_BASE = dt.timedelta(seconds=60)
BACKOFF_CAP = dt.timedelta(hours=1)
ERROR_LIMIT = 500


class FeedConfigError(ValueError):
    """A feed cannot be added as given (bad URL, unknown section)."""


def add_feed(session: Session, url: str, section_slug: str | None = None, *, actor: str = "system") -> Feed:
    """Add (or return the existing) feed for `url`; idempotent on the URL.

    The URL must be an absolute http(s) URL; the section, if given, must exist (slug
    or name).  Re-adding a feed with a section sets that section; without one, keeps it.
    Whether the host is public is checked when fetching, on the resolved addresses.
    """
    try:
        url = validate_feed_url(url)
    except UnsafeURL as exc:
        raise FeedConfigError(str(exc)) from None
    section_id = None
    if section_slug:
        section = section_by_slug_or_name(session, section_slug)
        if section is None:

            known = ", ".join(session.scalars(sa.select(Section.slug).order_by(Section.position)))
            raise FeedConfigError(f"unknown section {section_slug!r} (known: {known or 'none yet'})")
        section_id = section.id
    feed = session.scalar(sa.select(Feed).where(Feed.url == url))
    if feed is None:
        feed = Feed(url=url, section_id=section_id, active=True, consecutive_failures=0)
        session.add(feed)
        session.flush()
        audit(session, actor, "feed.add", f"feed:{feed.id}", section_id=section_id)
    elif section_id is not None and feed.section_id != section_id:
        feed.section_id = section_id
    return feed


def record_success(feed: Feed, now: dt.datetime, *, etag: str | None, last_modified: str | None) -> None:
    feed.last_polled_at = now
    feed.last_success_at = now
    feed.consecutive_failures = 0
    feed.next_poll_at = now + POLL_INTERVAL
    if feed.last_error is not None:
        feed.last_error = None
    feed.etag = etag
    feed.last_modified = last_modified


def backoff(failures: int) -> dt.timedelta:
    """1, 2, 4, 8 … minutes after the 1st, 2nd, 3rd … failure in a row; at most an hour."""
    return min(BACKOFF_BASE * (2 ** max(failures - 1, 0)), BACKOFF_CAP)


def record_failure(feed: Feed, now: dt.datetime, error: str) -> None:
    feed.last_polled_at = now
    feed.last_error = error[:ERROR_LIMIT]
    feed.last_error_at = now
    feed.consecutive_failures = (feed.consecutive_failures or 0) + 1
    feed.next_poll_at = now + backoff(feed.consecutive_failures)


def find_feed(session: Session, value: str | int) -> Feed:
    """A feed by its id or its URL (as added, or as `nashra feeds list` shows it)."""
    text = str(value).strip()
    feed = None
    if text.isascii() and text.isdigit() and len(text) < 10:
        feed = session.get(Feed, int(text))
    if feed is None and text:
        feed = session.scalar(sa.select(Feed).where(Feed.url == text))
        if feed is None:
            try:
                feed = session.scalar(sa.select(Feed).where(Feed.url == validate_feed_url(text)))
            except UnsafeURL:
                feed = None
    if feed is None:
        raise FeedConfigError(f"no feed {text!r} (see `nashra feeds list`)")
    return feed


def set_active(session: Session, feed: Feed, active: bool, *, actor: str) -> bool:
    """Pause (not polled, its articles kept) or resume a feed; False when it already was.
    A resumed feed is due at once."""
    if feed.active == active:
        return False
    feed.active = active
    if active:
        feed.next_poll_at = utcnow()
    session.flush()
    audit(session, actor, "feed.resume" if active else "feed.pause", f"feed:{feed.id}")
    return True


def remove_feed(session: Session, feed: Feed, *, actor: str) -> int:
    """Delete the feed; its articles stay (and stay in editions).  Returns their number."""
    articles = session.scalar(sa.select(sa.func.count()).where(Article.feed_id == feed.id)) or 0
    feed_id, url = feed.id, display_url(feed.url)
    session.delete(feed)
    session.flush()
    audit(session, actor, "feed.remove", f"feed:{feed_id}", url=url, articles=articles)
    return articles


@dataclass(frozen=True)
class FeedHealth:
    id: int
    url: str
    section: str | None
    active: bool
    state: str  # paused | ok | failing | new
    last_success_at: dt.datetime | None
    last_error: str | None
    last_error_at: dt.datetime | None
    consecutive_failures: int
    next_poll_at: dt.datetime | None
    articles: int


def feed_health(session: Session) -> list[FeedHealth]:
    articles = dict(session.execute(sa.select(Article.feed_id, sa.func.count()).group_by(Article.feed_id)).all())
    names = dict(session.execute(sa.select(Section.id, Section.name)).all())
    out = []
    for f in session.scalars(sa.select(Feed).order_by(Feed.id)):
        if not f.active:
            state = "paused"
        elif f.consecutive_failures:
            state = "failing"
        elif f.last_success_at is None:
            state = "new"
        else:
            state = "ok"
        out.append(FeedHealth(f.id, f.url, names.get(f.section_id), f.active, state, f.last_success_at,
                              f.last_error, f.last_error_at, f.consecutive_failures or 0, f.next_poll_at,
                              articles.get(f.id, 0)))
    return out
