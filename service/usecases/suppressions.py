"""The suppression list, for admins and operators: see it (by reason, by part of an
address), and lift one address with a reason kept in the audit log."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from service.db import session_scope
from service.models import Subscriber
from service.subscribers import suppression

LiftRefused = suppression.LiftRefused
AdminOnly = suppression.AdminOnly
REASONS = suppression.REASONS


@dataclass(frozen=True)
class Row:
    id: int
    email: str
    reason: str
    detail: str | None
    created_at: dt.datetime


@dataclass(frozen=True)
class Lifted:
    """What a lift by address took away: a suppression (`id`), or the block on a forgotten
    reader's keyed hash (`id` None); and the reader's status now, if there is one."""

    id: int | None
    was: str
    since: dt.datetime | None
    reader_status: str | None


def listing(search: str | None = None, limit: int = 100, *, reason: str | None = None) -> list[Row]:
    """Raises ValueError for a reason that is not one of REASONS."""
    with session_scope() as s:
        return [Row(r.id, r.email, r.reason, r.detail, r.created_at)
                for r in suppression.listing(s, search=search, reason=reason, limit=limit)]


def lift(suppression_id: int, reason: str, *, actor: str, by_admin: bool) -> bool:
    """False when there is no such suppression (already lifted); raises LiftRefused
    (AdminOnly for a complaint when `by_admin` is false)."""
    with session_scope(write=True) as s:
        return suppression.lift(s, suppression_id, reason, actor, by_admin=by_admin) is not None


def lift_address(email: str, reason: str, *, actor: str, by_admin: bool) -> Lifted | None:
    """Lift the suppression of this address — or, for a reader since forgotten, the block
    their keyed hash keeps.  None when the address is not suppressed either way; raises
    LiftRefused (AdminOnly) as `lift` does, changing nothing."""
    with session_scope(write=True) as s:
        status = s.scalar(sa.select(Subscriber.status).where(Subscriber.email == email.strip().lower()))
        status = getattr(status, "value", status)
        row = suppression.find(s, email)
        if row is not None:
            suppression.lift(s, row.id, reason, actor, by_admin=by_admin)
            return Lifted(row.id, row.reason, row.created_at, status)
        was = suppression.lift_hashed(s, email, reason, actor, by_admin=by_admin)
        return Lifted(None, was, None, status) if was is not None else None
