"""`nashra db upgrade`: run the Alembic migrations to head."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from service import resources
from service.config import get_settings
from service.db import make_engine


def alembic_config(url: str | None = None) -> Config:
    """The Alembic config shipped in the package (service/migrations/alembic.ini)."""
    cfg = Config(str(resources.alembic_ini()))
    if url:
        cfg.attributes["url"] = url
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:

    engine = make_engine(url or get_settings().database_url)
    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                _sqlite_foreign_keys(connection, False)
            try:
                with connection.begin():
                    cfg = alembic_config()
                    cfg.attributes["connection"] = connection
                    command.upgrade(cfg, revision)
                    if sqlite:
                        _no_broken_references(connection)
            finally:
                if sqlite:
                    _sqlite_foreign_keys(connection, True)
    finally:
        engine.dispose()


def _sqlite_foreign_keys(connection, on: bool) -> None:
    """Foreign keys off while migrating SQLite, as Alembic's batch mode asks.

    Batch mode changes a SQLite table by copying it (new table, copy, DROP TABLE, rename),
    and with foreign keys on, DROP TABLE first deletes every row, firing ON DELETE CASCADE:
    0008's copy of `subscribers` emptied the subscriptions it had just made and the whole
    ledger (tests/test_migration_newsletters.py).  The pragma is a no-op inside a
    transaction, so it is set on the driver's connection before the migration's begins
    (the engine leaves pysqlite in autocommit: db.make_engine).
    """
    connection.connection.driver_connection.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


def _no_broken_references(connection) -> None:
    # With the checks off, a migration could leave a row pointing nowhere: refuse it
    # (the transaction rolls back) rather than find out in production.
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"migration left {len(broken)} rows with broken references, first: {broken[0]}")
