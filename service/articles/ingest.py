"""Poll feeds: fetch → parse → sanitise → store, one feed per transaction.

`poll_feed` works inside the caller's transaction and never raises for a bad feed: the
feed's health columns record the error, the report carries it, and no article row is
touched (the fetch and the parse finish before the first write; the writes run in a
savepoint that a failure rolls back).  `ingest_all` is the boundary used by
`nashra ingest` and the beat task: each feed gets its own `session_scope()`, so one
bad feed never rolls back another.

Two pollers (beat's task and `nashra ingest`, or two workers) may reach the same feed:
the feed row is locked with SKIP LOCKED and the second one reports "skipped".  SQLite
(the embedded demo) has no row locks and one writer at a time: there `ingest_all` polls
each feed with `poll_feed_sqlite`, which fetches outside any transaction and writes in
one that takes the write lock first (see its doc).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.articles.feeds import FeedConfigError, add_feed, record_failure, record_success
from service.articles.fetch import FeedError, FetchResult, fetch_feed
from service.articles.parse import ParsedFeed, parse_feed
from service.articles.sections import seed_defaults_if_empty
from service.articles.store import store_items
from service.articles.urls import display_url
from service.config import Settings, get_settings
from service.db import get_engine, session_scope
from service.logs import get_logger
from service.models import Feed, utcnow


def log():
    # Looked up per call: a logger cached at import would miss later logging set-up
    # (and structlog's capture_logs in tests).
    return get_logger(__name__)
MAX_PROBLEM_LINES = 20


@dataclass
class PollReport:
    feed_id: int
    url: str = ""
    new: int = 0
    major: int = 0
    minor: int = 0
    unchanged: int = 0
    metadata: int = 0  # content unchanged, dates/section/links updated in place
    not_modified: bool = False  # the server answered 304
    skipped: bool = False  # another poller holds this feed right now
    error: str | None = None
    problems: list[str] = field(default_factory=list)  # items skipped or repaired
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        where = f"feed {self.feed_id}" + (f" {self.url}" if self.url else "")
        if self.error:
            return f"{where}: FAILED — {self.error}"
        if self.skipped:
            return f"{where}: skipped (being polled by another worker)"
        if self.not_modified:
            return f"{where}: not modified (304)"
        parts = f"{self.new} new, {self.major} major, {self.minor} minor, {self.unchanged} unchanged"
        if self.metadata:
            parts += f", {self.metadata} metadata-only"
        if self.problems:
            parts += f"; {len(self.problems)} item problem(s)"
        return f"{where}: {parts} ({self.seconds:.1f}s)"


def due_feed_ids(session: Session, now: dt.datetime) -> list[int]:
    """Active feeds whose next poll is due (never-polled feeds first)."""
    stmt = (
        sa.select(Feed.id)
        .where(Feed.active.is_(True), sa.or_(Feed.next_poll_at.is_(None), Feed.next_poll_at <= now))
        .order_by(Feed.next_poll_at.asc().nulls_first(), Feed.id)
    )
    return list(session.scalars(stmt))


def poll_feed(
    session: Session,
    feed_id: int,
    *,
    force: bool = False,
    now: dt.datetime | None = None,
    settings: Settings | None = None,
) -> PollReport:
    """Poll one feed inside the caller's transaction.

    force=True re-reads the whole feed (no If-None-Match / If-Modified-Since), e.g.
    after the sanitiser changed; identical content still writes nothing.
    """
    settings = settings or get_settings()
    now = now or utcnow()
    started = time.monotonic()
    feed = session.scalar(sa.select(Feed).where(Feed.id == feed_id).with_for_update(skip_locked=True))
    if feed is None:
        if session.scalar(sa.select(Feed.id).where(Feed.id == feed_id)) is not None:
            return PollReport(feed_id=feed_id, skipped=True)
        return PollReport(feed_id=feed_id, error=f"no feed with id {feed_id}")
    report = PollReport(feed_id=feed.id, url=display_url(feed.url))
    fetched = _fetch(feed.url, None if force else feed.etag, None if force else feed.last_modified, settings, now)
    return _record(session, feed, report, fetched, now, started)


@dataclass
class _Fetched:
    """What one fetch brought, before anything is written: a body (or a 304), or an error."""

    result: FetchResult | None = None
    parsed: ParsedFeed | None = None
    error: str | None = None


def _fetch(url: str, etag: str | None, last_modified: str | None, settings: Settings, now: dt.datetime) -> _Fetched:
    """Fetch and parse: network and CPU only, never the database."""
    try:
        result = fetch_feed(url, settings, etag=etag, last_modified=last_modified)
        if result.not_modified:
            return _Fetched(result=result)
        return _Fetched(result=result, parsed=parse_feed(result.body, result.content_type, result.url, settings.tz, now))
    except FeedError as exc:
        return _Fetched(error=str(exc))
    except Exception as exc:  # noqa: BLE001 — content that broke the parser: a failure of this feed
        # Recorded like a FeedError (nothing written but the feed's health), so the
        # feed backs off and says why, instead of rolling back the whole poll.  The
        # message names the exception and where it was raised, never the feed's text.
        return _Fetched(error=f"could not parse the feed: {_where(exc)}")


def _record(session: Session, feed: Feed, report: PollReport, fetched: _Fetched, now: dt.datetime,
            started: float) -> PollReport:
    """Write what the fetch brought: the articles (in a savepoint) and the feed's health."""
    if fetched.error is not None:
        return _failed(session, feed, report, fetched.error, now, started)
    result, parsed = fetched.result, fetched.parsed
    assert result is not None
    if parsed is None:  # 304
        record_success(feed, now, etag=result.etag, last_modified=result.last_modified)
        report.not_modified = True
        return _done(report, started)
    report.problems = parsed.problems
    try:
        with session.begin_nested():
            counts = store_items(session, feed, parsed.items, now)
    except (sa.exc.OperationalError, sa.exc.InterfaceError):
        raise  # the database is in trouble, not the feed: the caller's transaction decides
    except Exception as exc:  # noqa: BLE001 — content that broke our code: record, keep the DB as it was
        log().exception("feed_store_failed", feed_id=feed.id)
        return _failed(session, feed, report, f"could not store the feed's articles: {type(exc).__name__}", now, started)
    record_success(feed, now, etag=result.etag, last_modified=result.last_modified)
    report.new, report.major, report.minor = counts.new, counts.major, counts.minor
    report.unchanged, report.metadata = counts.unchanged, counts.metadata
    for problem in parsed.problems[:MAX_PROBLEM_LINES]:
        log().warning("feed_item_problem", feed_id=feed.id, problem=problem)
    if len(parsed.problems) > MAX_PROBLEM_LINES:
        log().warning("feed_item_problems_truncated", feed_id=feed.id, more=len(parsed.problems) - MAX_PROBLEM_LINES)
    return _done(report, started)


def poll_feed_sqlite(feed_id: int, *, force: bool = False, settings: Settings | None = None) -> PollReport:
    """Poll one feed on the embedded SQLite database, in two transactions of its own.

    SQLite has no row locks (FOR UPDATE SKIP LOCKED is ignored) and one writer at a time.
    A single transaction that read the feed, fetched it and then wrote failed at once with
    "database is locked" (SQLITE_BUSY_SNAPSHOT) whenever another process committed during
    the fetch — at the demo's start two polls do — and taking the write lock for the whole
    unit instead would hold every other writer up for as long as the fetch takes (up to
    FEED_TIMEOUT).  So: read the feed and end that transaction, fetch and parse outside
    any transaction, then write in a transaction that takes the write lock at BEGIN (and
    so waits for another writer instead of failing), reading the feed row again there.
    Two pollers of one feed both fetch; the one that writes second finds the feed polled
    since it read it, writes nothing and reports "skipped" (as on PostgreSQL), so an
    older fetch never overwrites what a newer one stored.
    """
    settings = settings or get_settings()
    now = utcnow()
    started = time.monotonic()
    with session_scope() as session:
        feed = session.get(Feed, feed_id)
        if feed is None:
            return PollReport(feed_id=feed_id, error=f"no feed with id {feed_id}")
        url, etag, last_modified, polled_at = feed.url, feed.etag, feed.last_modified, feed.last_polled_at
    fetched = _fetch(url, None if force else etag, None if force else last_modified, settings, now)
    with session_scope(write=True) as session:
        feed = session.get(Feed, feed_id)
        if feed is None:
            return PollReport(feed_id=feed_id, error=f"no feed with id {feed_id}")
        if feed.url != url or feed.last_polled_at != polled_at:  # another poller, or an edit, came first
            return PollReport(feed_id=feed_id, url=display_url(feed.url), skipped=True)
        return _record(session, feed, PollReport(feed_id=feed.id, url=display_url(url)), fetched, now, started)


def _where(exc: BaseException) -> str:
    """`TypeError at parse.py:305`: the exception's type and innermost frame, no message."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return type(exc).__name__
    filename = tb.tb_frame.f_code.co_filename.replace("\\", "/").rsplit("/", 1)[-1]
    return f"{type(exc).__name__} at {filename}:{tb.tb_lineno}"


def _done(report: PollReport, started: float) -> PollReport:
    report.seconds = time.monotonic() - started
    log().info(
        "feed_polled",
        feed_id=report.feed_id,
        new=report.new,
        major=report.major,
        minor=report.minor,
        unchanged=report.unchanged,
        metadata=report.metadata,
        not_modified=report.not_modified,
        problems=len(report.problems),
        seconds=round(report.seconds, 3),
    )
    return report


def _failed(session: Session, feed: Feed, report: PollReport, error: str, now, started: float) -> PollReport:
    record_failure(feed, now, error)
    session.flush()
    report.error = error
    report.seconds = time.monotonic() - started
    log().warning(
        "feed_poll_failed",
        feed_id=feed.id,
        url=display_url(feed.url),
        error=error,
        consecutive_failures=feed.consecutive_failures,
        next_poll_at=feed.next_poll_at.isoformat() if feed.next_poll_at else None,
    )
    return report


def add_configured_feeds(session: Session, settings: Settings) -> list[PollReport]:
    """FEED_URLS → feeds rows; a bad entry is reported (feed_id 0), the others are added."""
    problems = []
    for url in settings.feed_urls:
        try:
            with session.begin_nested():
                add_feed(session, url)
        except FeedConfigError as exc:
            log().error("feed_url_invalid", setting="FEED_URLS", error=str(exc))
            problems.append(PollReport(feed_id=0, url=display_url(url), error=f"FEED_URLS: {exc}"))
    return problems


def ingest_all(force: bool = False, *, all_feeds: bool = False) -> list[PollReport]:
    """Add FEED_URLS feeds, then poll each due feed (every active feed if `all_feeds` or
    `force`) in its own transaction.  Returns one report per feed polled."""
    settings = get_settings()
    now = utcnow()
    sqlite = get_engine().dialect.name == "sqlite"
    # Reads, then maybe writes (the sections, the FEED_URLS feeds): on SQLite it takes the
    # write lock at BEGIN, so two polls at once wait for each other instead of failing.
    with session_scope(write=True) as session:
        seed_defaults_if_empty(session)  # an admin's own sections are left alone
        reports = add_configured_feeds(session, settings)
        if force or all_feeds:
            ids = list(session.scalars(sa.select(Feed.id).where(Feed.active.is_(True)).order_by(Feed.id)))
        else:
            ids = due_feed_ids(session, now)
    for feed_id in ids:
        try:
            if sqlite:
                reports.append(poll_feed_sqlite(feed_id, force=force, settings=settings))
                continue
            with session_scope() as session:  # PostgreSQL: the feed's row stays locked through the fetch
                reports.append(poll_feed(session, feed_id, force=force, settings=settings))
        except Exception as exc:  # noqa: BLE001 — one feed's database trouble must not stop the rest
            log().exception("feed_poll_crashed", feed_id=feed_id)
            reports.append(PollReport(feed_id=feed_id, error=f"internal error: {type(exc).__name__}: {exc}"[:300]))
    return reports
