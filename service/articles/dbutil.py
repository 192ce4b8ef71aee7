"""The one dialect-specific thing the articles code needs: INSERT … ON CONFLICT DO NOTHING."""

from __future__ import annotations

from sqlalchemy.orm import Session


def insert_ignoring_conflicts(session: Session, table, index_elements: list[str]):
    """An INSERT that skips rows whose unique key already exists (PostgreSQL and SQLite).

    Two workers polling feeds that share an article or a new category must not fail each
    other's transaction; the one that loses the race reads the winner's row instead.
    """
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing(index_elements=index_elements)
