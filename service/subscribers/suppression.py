"""The suppression list: addresses we must never mail, whatever their subscription says.

The delivery workers re-check it when they claim a row; signup and import check it so
that a suppressed address is not sent a confirmation either.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db import insert_ignoring
from service.logs import get_logger
from service.models import AuditLog, Suppression, utcnow

log = get_logger(__name__)
REASONS = ("hard_bounce", "complaint", "manual")


def is_suppressed(session: Session, email: str) -> bool:
    return session.scalar(sa.select(Suppression.id).where(Suppression.email == email.lower())) is not None


def suppress(session, email: str, reason: str, detail: str | None = None, actor: str = "system") -> bool:
    """Add an address; returns False if it was already there (the first reason stays).

    `session` is a Session or a Connection (the delivery workers write through a bare
    Connection): only Core statements, so both work, and the caller commits."""
    if reason not in REASONS:
        raise ValueError(f"reason must be one of {', '.join(REASONS)}")
    email = email.strip().lower()
    # INSERT … ON CONFLICT DO NOTHING: two bounces for one address handled at the same
    # moment (two workers, the bounce server) must not fail one of them.
    table = Suppression.__table__
    new_id = session.execute(
        insert_ignoring(session, table, ["email"])
        .values(email=email, reason=reason, detail=(detail or "")[:1000] or None, created_at=utcnow())
        .returning(table.c.id)
    ).scalar()
    if new_id is None:
        return False  # already there: the first reason stays
    session.execute(sa.insert(AuditLog.__table__).values(
        at=utcnow(), actor=actor, action="suppress", target=f"suppression:{new_id}", details={"reason": reason}))
    log.info("address_suppressed", suppression_id=new_id, reason=reason)
    return True
