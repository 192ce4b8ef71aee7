"""Every schema change is an Alembic migration: the database the migrations build is the
one the models describe, on PostgreSQL and on SQLite (the embedded demo)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from service.migrate import upgrade
from service.models import Base


def _differences(url: str) -> list:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": False})
            diffs = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    # Column types are compared loosely elsewhere (enums, the UTC type decorator); what
    # must match is which tables, columns, indexes and constraints exist.
    return [d for d in diffs if not (isinstance(d, tuple) and d[0] in ("modify_type",))]


def test_postgres_schema_from_migrations_matches_the_models(pg_database_url):
    assert _differences(pg_database_url) == []


def test_sqlite_schema_from_migrations_matches_the_models(tmp_path):
    url = f"sqlite:///{tmp_path / 'nashra.db'}"
    upgrade(url)
    assert _differences(url) == []
