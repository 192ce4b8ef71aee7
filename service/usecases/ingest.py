"""Poll feeds, and ask for corrections when a poll saw a major update."""

from __future__ import annotations

from service.articles.ingest import PollReport, ingest_all
from service.config import get_settings
from service.dispatch import Dispatcher, current
from service.logs import get_logger

log = get_logger(__name__)


def poll_due(dispatcher: Dispatcher | None = None) -> list[PollReport]:
    """Beat's every-minute poll: the feeds that are due."""
    reports = ingest_all()
    for r in reports:
        log.info("ingest.feed", feed_id=r.feed_id, new=r.new, major=r.major, minor=r.minor, error=r.error)
    corrections_if_major(reports, dispatcher)
    return reports


def poll_all(force: bool = False, dispatcher: Dispatcher | None = None) -> list[PollReport]:
    """`nashra ingest`: every feed now (an unchanged one costs only a 304; force re-reads)."""
    reports = ingest_all(force=force, all_feeds=True)
    corrections_if_major(reports, dispatcher)  # readers who got an older version hear of it
    return reports


def corrections_if_major(reports: list[PollReport], dispatcher: Dispatcher | None = None) -> bool:
    """Cheap: the corrections check runs only when a poll recorded a major update."""
    if get_settings().corrections == "off" or not any(r.major for r in reports):
        return False
    return (dispatcher or current()).make_corrections()
