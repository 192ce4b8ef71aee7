"""Configured feeds: adding them (CLI, FEED_URLS) and their health.

Health lives on the feed row: last success, last error, consecutive failures and the
next poll.  A failing feed backs off exponentially (1, 2, 4 … minutes, capped at an
hour) so that a dead site costs us little, while every other feed keeps its minute.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.articles.sections import section_by_slug_or_name
from service.articles.urls import UnsafeURL, validate_feed_url
from service.models import Feed, Section, audit

# Beat fires every 60 s; a feed polled successfully is due again a little before the
# next tick, so that jitter between ticks never makes it skip one (the one-minute promise).
POLL_INTERVAL = dt.timedelta(seconds=50)
BACKOFF_BASE = dt.timedelta(seconds=60)
BACKOFF_CAP = dt.timedelta(hours=1)
ERROR_LIMIT = 500


class FeedConfigError(ValueError):
    """A feed cannot be added as given (bad URL, unknown section)."""


def add_feed(session: Session, url: str, section_slug: str | None = None) -> Feed:
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
        audit(session, "system", "feed.add", f"feed:{feed.id}", section_id=section_id)
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
