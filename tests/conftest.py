"""Shared fixtures: real PostgreSQL, real Redis, a real SMTP peer, real Celery workers.

PostgreSQL and Redis are the machine's own (127.0.0.1:5432 and :6379).  On a laptop
without them the tests that need them skip; under CI=true a missing service fails.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tests.support.browser import browser, page  # noqa: F401  (fixtures)
from tests.support.feed_server import FeedServer
from tests.support.net import free_port
from tests.support.smtp_sink import SmtpSink
from tests.support.web import live_server, queue_redis  # noqa: F401  (fixtures)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO.parent / "shared" / "fixtures"


def _service_missing(what: str, why: object) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true but is not reachable: {why}")
    pytest.skip(f"{what} not reachable: {why}")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# ------------------------------------------------------------------ environment


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path, monkeypatch):
    """Every test starts from a clean environment: no stray .env, its own var dir."""
    from service.config import reset_settings

    for name in list(os.environ):
        if name in {
            "DATABASE_URL", "REDIS_URL", "SMTP_URL", "MAIL_FROM", "PUBLIC_URL", "SECRET_KEY",
            "FEED_URLS", "TIMEZONE", "POSTAL_ADDRESS", "FEED_ALLOW_PRIVATE", "NASHRA_DEMO", "VAR_DIR",
        }:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # so no .env of the developer's is read
    monkeypatch.setenv("NASHRA_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("SECRET_KEY", "test-secret-key-0123456789abcdef")
    monkeypatch.setenv("FEED_ALLOW_PRIVATE", "true")
    monkeypatch.setenv("LOG_FORMAT", "json")
    reset_settings()
    yield
    reset_settings()


# ------------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, migrated to head."""
    try:
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        _service_missing("PostgreSQL", exc)
    name = f"nashra_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    _migrate(url)
    yield url
    with admin.connect() as conn:
        conn.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
            {"n": name},
        )
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def _migrate(url: str) -> None:
    from service.migrate import upgrade

    upgrade(url)


@pytest.fixture(scope="session")
def pg_engine(pg_database_url) -> Iterator[sa.Engine]:
    engine = sa.create_engine(pg_database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db_session(pg_engine) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test.

    Code under test may call session.commit(): it only releases a savepoint.
    """
    conn = pg_engine.connect()
    outer = conn.begin()
    session = Session(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        conn.close()


def _truncate_all(engine: sa.Engine) -> None:
    from service.delivery import batch
    from service.models import Base

    # Ids restart below, and workers cache prepared variants by (edition id, variant):
    # harmless in production, where an id never comes back, but not between tests.
    batch.forget_prepared_variants()

    from service.newsletters import catalogue

    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    # The newsletters a migrated site starts with (daily, weekly, alerts), as after 0008.
    with Session(engine) as session, session.begin():
        catalogue.seed_first(session)


@pytest.fixture
def pg_env(pg_database_url, pg_engine, monkeypatch) -> Iterator[str]:
    """Point the service (session_scope, workers in this process) at the test database.

    Tables are emptied first: this is for tests that cross processes or threads and
    so cannot run inside one rolled-back transaction.
    """
    from service.config import reset_settings

    _truncate_all(pg_engine)
    monkeypatch.setenv("DATABASE_URL", pg_database_url)
    reset_settings()
    yield pg_database_url
    # Leave the database empty for the rolled-back `db_session` tests that follow.
    reset_settings()
    _truncate_all(pg_engine)


@pytest.fixture
def sqlite_env(tmp_path, monkeypatch) -> str:
    """The embedded default: a SQLite file, migrated."""
    from service.config import reset_settings

    url = f"sqlite:///{tmp_path / 'var' / 'nashra.sqlite3'}"
    monkeypatch.setenv("DATABASE_URL", url)
    reset_settings()
    _migrate(url)
    return url


# ------------------------------------------------------------------ Redis


@pytest.fixture
def redis_url(monkeypatch) -> str:
    import redis

    try:
        client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2)
        client.ping()
    except Exception as exc:  # noqa: BLE001
        _service_missing("Redis", exc)
    # Our own key prefix: another test run on this machine shares the Redis server,
    # and must neither take our tasks nor have its keys flushed by us.
    prefix = f"nashra-test-{os.getpid()}:"
    for key in client.scan_iter(match=prefix + "*", count=1000):
        client.delete(key)
    client.close()
    monkeypatch.setenv("REDIS_URL", TEST_REDIS_URL)
    monkeypatch.setenv("REDIS_KEY_PREFIX", prefix)
    from service.config import reset_settings

    reset_settings()
    return TEST_REDIS_URL


# ------------------------------------------------------------------ SMTP and HTTP peers


@pytest.fixture
def smtp_sink(monkeypatch) -> Iterator[SmtpSink]:
    """A real SMTP server on loopback that records what it accepted."""
    sink = SmtpSink()
    sink.start()
    monkeypatch.setenv("SMTP_URL", f"smtp://127.0.0.1:{sink.port}")
    from service.config import reset_settings

    reset_settings()
    yield sink
    sink.stop()


@pytest.fixture
def bounce_server(pg_env):
    """Nashra's own bounce server (`nashra bounces serve`) on a free loopback port.
    tests/test_bounces.py has its own, with a feedback address."""
    from service.inbound.smtp_server import BounceServer

    server = BounceServer("127.0.0.1", free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    server = FeedServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fixture_article_text() -> str:
    path = FIXTURES / "article-ar-morocco-security-2021.txt"
    if not path.exists():  # the copy bundled with the demo data
        path = REPO / "service" / "demo" / "article-ar-morocco-security-2021.txt"
    return path.read_text(encoding="utf-8")


# ------------------------------------------------------------------ Celery


@pytest.fixture
def celery_worker_factory():
    """Start a real Celery worker (threads pool) inside the test process.

    Returns a function (queues, concurrency) → context manager.  The worker consumes
    from whatever broker the current settings name (Redis, or the SQLite transport).
    """
    from celery.contrib.testing.worker import start_worker

    from service.jobs import tasks  # noqa: F401 — registers the tasks and the worker's signals
    from service.jobs.app import configure

    def factory(queues=("alerts", "digests", "ingest", "default"), concurrency=2):
        app = configure()
        return start_worker(
            app,
            pool="threads",
            concurrency=concurrency,
            queues=list(queues),
            perform_ping_check=False,
            loglevel="WARNING",
            shutdown_timeout=30,
        )

    return factory


@pytest.fixture(scope="session", autouse=True)
def _celery_dispatcher():
    """As at every edge of the service: what domain code asks for goes out through Celery."""
    from service.jobs import install_dispatcher

    install_dispatcher()
