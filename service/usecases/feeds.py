"""The site's feeds, for admins (the page) and operators (`nashra feeds …`): add, list with
their health, pause, resume, remove.  FeedConfigError says why one is refused."""

from __future__ import annotations

from service.articles import feeds as domain
from service.articles import sections
from service.articles.urls import display_url
from service.config import get_settings
from service.db import session_scope
from service.logs import get_logger

log = get_logger(__name__)

FeedConfigError = domain.FeedConfigError
ACTIONS = ("pause", "resume", "remove")


def add(url: str, section: str | None = None, *, actor: str) -> tuple[int, str]:
    """(feed id, its URL as shown).  The built-in sections are seeded only into an install
    that has none (an admin's own sections are left as they are)."""
    with session_scope() as s:
        sections.seed_defaults_if_empty(s)
        feed = domain.add_feed(s, url, section_slug=section or None, actor=actor)
        return feed.id, display_url(feed.url)


def health() -> list[domain.FeedHealth]:
    with session_scope() as s:
        return domain.feed_health(s)


def in_feed_urls(url: str) -> bool:
    """Is this feed listed in FEED_URLS (which adds it again at every ingest)?"""
    return url in get_settings().feed_urls


def steer(which: str | int, action: str, *, actor: str) -> tuple[int, str, str]:
    """pause, resume or remove: (feed id, URL as shown, what happened)."""
    if action not in ACTIONS:
        raise ValueError(action)
    with session_scope() as s:
        feed = domain.find_feed(s, which)
        feed_id, shown, url = feed.id, display_url(feed.url), feed.url
        if action == "remove":
            kept = domain.remove_feed(s, feed, actor=actor)
            outcome = f"removed; its {kept} article(s) stay"
            if in_feed_urls(url):
                outcome += " — it is in FEED_URLS, so the next ingest adds it again: remove it there too"
        else:
            changed = domain.set_active(s, feed, action == "resume", actor=actor)
            outcome = ("resumed" if action == "resume" else "paused") if changed else (
                "was not paused" if action == "resume" else "was already paused")
    log.info("feed_" + action, feed_id=feed_id, actor=actor)
    return feed_id, shown, outcome
