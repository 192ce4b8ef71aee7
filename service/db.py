"""Engine and sessions.

The caller owns the transaction (SQLAlchemy 2.0 guidance): functions that work on the
database take a Session and never commit; the Celery task, the HTTP request or the CLI
command opens `with session_scope() as s:` and commits once at its boundary.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, Insert, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from service.config import get_settings, on_reset

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
# PostgreSQL connections per process (a `nashra web` process, a worker process).
POOL_CONNECTIONS = 15
_engine: Engine | None = None
_factory: sessionmaker[Session] | None = None


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # Several processes (web, worker, beat) share the demo's SQLite file: WAL lets
    # readers go on while one writes, and busy_timeout waits for the lock instead
    # of failing with "database is locked".
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


# The execution option `session_scope(write=True)` sets: this transaction will write.
SQLITE_IMMEDIATE = "nashra_sqlite_immediate"


def _sqlite_begin(conn) -> None:
    # A deferred BEGIN takes no lock: the first read fixes the transaction's snapshot and
    # the first write asks for the write lock.  In WAL mode that upgrade fails at once
    # (SQLITE_BUSY_SNAPSHOT, "database is locked"; busy_timeout does not apply) if another
    # connection committed since the snapshot.  A unit of work that will write says so
    # and begins IMMEDIATE: it waits (busy_timeout) for the write lock up front, and then
    # reads the latest data.  Read-only work stays deferred, so readers never wait.
    immediate = conn.get_execution_options().get(SQLITE_IMMEDIATE)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def insert_ignoring(bind, table, index_elements: list) -> Insert:
    """INSERT … ON CONFLICT (index_elements) DO NOTHING, on PostgreSQL and SQLite.

    `bind` is a Session or a Connection.  Two workers (or two requests) writing the same
    unique key at once must not fail each other's transaction: the loser's row is
    simply not written, and it reads the winner's.

    A mapped class is inserted into through its Table: an ORM-enabled INSERT goes
    through the ORM's bulk path (its RETURNING rows matched against the identity map),
    which cost a signup more CPU than the statement itself, for rows nobody loads.
    """
    dialect = bind.get_bind().dialect.name if isinstance(bind, Session) else bind.dialect.name
    insert = _INSERTS.get(dialect)
    if insert is None:
        raise RuntimeError(f"Nashra runs on PostgreSQL or SQLite, not {dialect}")
    return insert(getattr(table, "__table__", table)).on_conflict_do_nothing(index_elements=index_elements)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, pool_pre_ping=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite opens transactions lazily and badly; take control so that
        # BEGIN IMMEDIATE-style locking is predictable.
        event.listen(engine, "begin", _sqlite_begin)

        @event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_conn, _record):
            dbapi_conn.isolation_level = None

        return engine
    # Up to POOL_CONNECTIONS at once, and all of them kept once opened.  (It was 5 kept +
    # 10 "overflow": under a burst of signups the overflow ones were closed on return and
    # opened again a moment later — 364 new PostgreSQL sessions for 1,803 signups in
    # bench/bench_signup_load.py, each a backend started and a login.)
    return create_engine(url, pool_pre_ping=True, pool_size=POOL_CONNECTIONS, max_overflow=0)


def get_engine() -> Engine:
    global _engine, _factory
    if _engine is None:
        _engine = make_engine(get_settings().database_url)
        _factory = sessionmaker(_engine, expire_on_commit=False)
    return _engine


def session_factory() -> sessionmaker[Session]:
    get_engine()
    assert _factory is not None
    return _factory


@contextlib.contextmanager
def session_scope(*, write: bool = False) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error.

    write=True: the unit reads and then writes.  On SQLite its transaction takes the
    write lock at BEGIN (BEGIN IMMEDIATE), so it waits for another process's writer
    instead of failing with "database is locked" when that writer commits between this
    unit's read and its write (see `_sqlite_begin`).  Such a unit holds the lock until
    it ends: no network I/O inside it.  PostgreSQL: no difference (the option is unused).
    """
    with session_factory().begin() as session:
        if write:
            session.connection(execution_options={SQLITE_IMMEDIATE: True})
        yield session


def reset_engine() -> None:
    global _engine, _factory
    if _engine is not None:
        _engine.dispose()
    _engine = None
    _factory = None


on_reset(reset_engine)
