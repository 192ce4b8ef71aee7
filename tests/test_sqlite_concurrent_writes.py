"""The embedded SQLite database: units of work that read and then write, at the same time.

In WAL mode a deferred transaction that has read and then writes fails at once with
"database is locked" (SQLITE_BUSY_SNAPSHOT; busy_timeout does not apply) if another
connection committed in between.  At the demo's start two feed polls (beat's first tick
and the demo's own) ran together and both failed so; the demo then waited a minute for
the next poll.  A unit that writes begins IMMEDIATE (`session_scope(write=True)`) and
waits instead; the poll fetches outside any transaction.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.articles import ingest
from service.articles.sections import DEFAULT_SECTIONS
from service.config import reset_settings
from service.db import get_engine, session_scope
from service.models import Article, Feed, Section
from service.usecases import ingest as ingest_usecase

DEMO = Path(__file__).resolve().parent.parent / "service" / "demo" / "sample_feed.xml"
WAIT = 10  # seconds: the most any step below waits for another thread


@pytest.fixture
def scratch(sqlite_env) -> str:
    with get_engine().begin() as conn:
        conn.exec_driver_sql("CREATE TABLE scratch (id INTEGER PRIMARY KEY, seen INTEGER)")
    return sqlite_env


def _count_then_insert(session) -> None:
    seen = session.execute(sa.text("SELECT count(*) FROM scratch")).scalar_one()
    session.execute(sa.text("INSERT INTO scratch (seen) VALUES (:seen)"), {"seen": seen})


def _race(write: bool) -> list[BaseException]:
    """Unit 1 reads; unit 2 reads, writes and commits; then unit 1 writes."""
    read, errors = threading.Event(), []

    def unit():
        return session_scope(write=True) if write else session_scope()

    def first():
        try:
            with unit() as s:
                seen = s.execute(sa.text("SELECT count(*) FROM scratch")).scalar_one()
                read.set()
                time.sleep(0.3)  # unit 2 commits now, unless it has to wait for us
                s.execute(sa.text("INSERT INTO scratch (seen) VALUES (:seen)"), {"seen": seen})
        except BaseException as exc:  # noqa: BLE001 — reported by the test
            errors.append(exc)

    def second():
        try:
            assert read.wait(WAIT)
            with unit() as s:
                _count_then_insert(s)
        except BaseException as exc:  # noqa: BLE001 — reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT + 5)
    return errors


def test_a_deferred_read_then_write_fails_at_once_when_another_commits_between(scratch):
    """The cause, pinned: SQLite's own behaviour, not waited out by busy_timeout."""
    started = time.monotonic()
    errors = _race(write=False)
    assert len(errors) == 1 and isinstance(errors[0], sa.exc.OperationalError), errors
    assert "database is locked" in str(errors[0])
    assert getattr(errors[0].orig, "sqlite_errorname", "SQLITE_BUSY_SNAPSHOT") == "SQLITE_BUSY_SNAPSHOT"
    assert time.monotonic() - started < 5  # failed at once: busy_timeout is 30 s


def test_units_that_say_they_write_wait_for_each_other_instead(scratch):
    errors = _race(write=True)
    assert errors == []
    with session_scope() as s:
        # Serialised: the second unit began after the first committed, and saw its row.
        assert s.execute(sa.text("SELECT seen FROM scratch ORDER BY id")).scalars().all() == [0, 1]


def test_only_a_writing_unit_begins_immediate(sqlite_env):
    statements = []

    def seen(conn, cursor, statement, *args):
        statements.append(statement)

    sa.event.listen(get_engine(), "before_cursor_execute", seen)
    try:
        with session_scope() as s:
            s.execute(sa.text("SELECT 1"))
        with session_scope(write=True) as s:
            s.execute(sa.text("SELECT 1"))
    finally:
        sa.event.remove(get_engine(), "before_cursor_execute", seen)
    assert [st for st in statements if st.startswith("BEGIN")] == ["BEGIN", "BEGIN IMMEDIATE"]


# ---------------------------------------------------------------------- the real poll


@pytest.fixture
def sample_feed(sqlite_env, feed_server, monkeypatch) -> str:
    url = feed_server.serve("/feed.xml", DEMO.read_bytes())
    monkeypatch.setenv("FEED_URLS", url)
    reset_settings()
    return url


def _poll(results: dict, name: str) -> None:
    try:
        results[name] = ingest_usecase.poll_due()
    except BaseException as exc:  # noqa: BLE001 — reported by the test
        results[name] = exc


def _assert_ingested_once(results: dict) -> None:
    for name, outcome in results.items():
        assert isinstance(outcome, list), f"poll {name} raised {outcome!r}"
        assert [r.error for r in outcome] == [None] * len(outcome), f"poll {name}: {[r.summary() for r in outcome]}"
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Article)) == 9
        [feed] = s.scalars(sa.select(Feed)).all()
        assert feed.consecutive_failures == 0 and feed.last_success_at is not None
        assert s.scalar(sa.select(sa.func.count()).select_from(Section)) == len(DEFAULT_SECTIONS)


def test_a_poll_that_another_poll_commits_under_during_its_fetch_still_stores(sample_feed, monkeypatch):
    """Poll A reads its feed and fetches; poll B polls the same feed start to end; then A
    writes.  A's transaction must not span the fetch (B would wait for it) nor fail."""
    real_fetch = ingest.fetch_feed
    lock, calls = threading.Lock(), []
    a_fetching, b_done = threading.Event(), threading.Event()

    def fetch(*args, **kwargs):
        with lock:
            calls.append(threading.current_thread().name)
            first = len(calls) == 1
        if first:
            a_fetching.set()
            b_done.wait(WAIT)
        return real_fetch(*args, **kwargs)

    monkeypatch.setattr(ingest, "fetch_feed", fetch)
    results: dict = {}
    a = threading.Thread(target=_poll, args=(results, "a"), name="a")
    a.start()
    assert a_fetching.wait(WAIT)
    b = threading.Thread(target=_poll, args=(results, "b"), name="b")
    b.start()
    b.join(WAIT)
    assert not b.is_alive(), "poll B waited for poll A's fetch: a transaction spans the fetch"
    b_done.set()
    a.join(WAIT)
    assert calls == ["a", "b"]
    _assert_ingested_once(results)
    # B stored first; A's older fetch is dropped, as a second poller on PostgreSQL skips.
    assert [(r.skipped, r.new) for r in results["a"]] == [(True, 0)]
    assert [(r.skipped, r.new) for r in results["b"]] == [(False, 9)]


def test_two_first_polls_of_a_new_install_both_succeed(sample_feed, monkeypatch):
    """The demo's start: both polls find no section and no feed.  Poll A has read when
    poll B runs; A's unit (sections, FEED_URLS) waits for B's or B's for A's, none fails."""
    real_seed = ingest.seed_defaults_if_empty
    lock, calls = threading.Lock(), []
    a_read, b_done = threading.Event(), threading.Event()

    def seed(session):
        with lock:
            calls.append(threading.current_thread().name)
            first = len(calls) == 1
        if first:
            session.scalar(sa.select(Section.id).limit(1))  # A's snapshot: no sections yet
            a_read.set()
            b_done.wait(1.0)  # B commits meanwhile, unless (fixed) it waits for us
        return real_seed(session)

    monkeypatch.setattr(ingest, "seed_defaults_if_empty", seed)
    results: dict = {}

    def poll_b():
        _poll(results, "b")
        b_done.set()

    a = threading.Thread(target=_poll, args=(results, "a"), name="a")
    a.start()
    assert a_read.wait(WAIT)
    b = threading.Thread(target=poll_b, name="b")
    b.start()
    a.join(WAIT + 35)
    b.join(WAIT + 35)
    _assert_ingested_once(results)
