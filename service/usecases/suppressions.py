"""The suppression list, for admins: see it, and lift one address with a reason."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from service.db import session_scope
from service.subscribers import suppression

LiftRefused = suppression.LiftRefused


@dataclass(frozen=True)
class Row:
    id: int
    email: str
    reason: str
    detail: str | None
    created_at: dt.datetime


def listing(search: str | None = None, limit: int = 100) -> list[Row]:
    with session_scope() as s:
        return [Row(r.id, r.email, r.reason, r.detail, r.created_at)
                for r in suppression.listing(s, search=search, limit=limit)]


def lift(suppression_id: int, reason: str, *, actor: str) -> bool:
    """False when there is no such suppression (already lifted); raises LiftRefused."""
    with session_scope() as s:
        return suppression.lift(s, suppression_id, reason, actor) is not None
