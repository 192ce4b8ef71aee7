"""Idempotency keys: a retried request, a double click or beat firing twice is one edition."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.models import Edition

KEY_MAX = 200  # editions.idempotency_key is VARCHAR(200)


def existing(session: Session, key: str | None) -> Edition | None:
    if key is None:
        return None
    return session.scalar(select(Edition).where(Edition.idempotency_key == key))


def add_keyed(session: Session, edition: Edition) -> tuple[Edition, bool]:
    """Insert `edition`; if another transaction inserted its key first, return that one.

    The check-then-insert of the callers is not enough under concurrency: two requests
    with the same key both find nothing, and the unique constraint decides.  The loser's
    INSERT waits for the winner's commit, fails, and we hand back the winner's edition.
    """
    try:
        with session.begin_nested():
            session.add(edition)
            session.flush()
        return edition, True
    except IntegrityError:
        winner = existing(session, edition.idempotency_key)
        if winner is None:  # some other constraint: not ours to hide
            raise
        return winner, False
