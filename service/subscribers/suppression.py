"""The suppression list: addresses we must never mail, whatever their subscription says.

The delivery workers re-check it when they claim a row; signup and import check it so
that a suppressed address is not sent a confirmation either.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.logging import get_logger
from service.models import Suppression, audit, utcnow

log = get_logger(__name__)
REASONS = ("hard_bounce", "complaint", "manual")


def is_suppressed(session: Session, email: str) -> bool:
    return session.scalar(select(Suppression.id).where(Suppression.email == email.lower())) is not None


def suppress(session: Session, email: str, reason: str, detail: str | None = None, actor: str = "system") -> bool:
    """Add an address; returns False if it was already there (the first reason stays)."""
    if reason not in REASONS:
        raise ValueError(f"reason must be one of {', '.join(REASONS)}")
    email = email.strip().lower()
    # INSERT … ON CONFLICT DO NOTHING: two bounces for one address handled at the same
    # moment (two workers, the bounce server) must not fail one of them.
    table = Suppression.__table__
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[session.get_bind().dialect.name]
    new_id = session.scalar(
        insert(table)
        .values(email=email, reason=reason, detail=detail, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["email"])
        .returning(table.c.id)
    )
    if new_id is None:
        return False  # already there: the first reason stays
    audit(session, actor, "suppress", f"suppression:{new_id}", reason=reason)
    log.info("address_suppressed", suppression_id=new_id, reason=reason)
    return True


def unsuppress(session: Session, email: str, actor: str = "system") -> bool:
    row = session.scalar(select(Suppression).where(Suppression.email == email.strip().lower()))
    if row is None:
        return False
    audit(session, actor, "unsuppress", f"suppression:{row.id}", reason=row.reason)
    session.delete(row)
    return True
