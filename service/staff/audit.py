"""Reading the audit log: who did what, when, from where (the admins' page and `nashra audit`).

Rows are written everywhere through `service.models.audit` (its origin comes from the
edge); this module only reads them, newest first, with the editors' names put to the
`editor:N` actors.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.models import AuditLog, Editor

MAX_LIMIT = 1000


@dataclass(frozen=True)
class Entry:
    id: int
    at: dt.datetime
    actor: str  # as stored: editor:3, cli, system, subscriber:9
    who: str  # for people: the editor's name, else the actor
    action: str
    target: str | None
    origin: str | None
    details: dict


def entries(session: Session, *, limit: int = 100, before: int | None = None, actor: str | None = None,
            action: str | None = None) -> list[Entry]:
    """The newest `limit` rows (older than id `before`), optionally one actor's or one
    action's (an action prefix: `editor` matches editor.login and editor_revoked)."""
    limit = max(1, min(int(limit), MAX_LIMIT))
    query = sa.select(AuditLog).order_by(AuditLog.id.desc()).limit(limit)
    if before is not None:
        query = query.where(AuditLog.id < before)
    if actor:
        query = query.where(AuditLog.actor == actor)
    if action:
        query = query.where(AuditLog.action.startswith(action, autoescape=True))
    rows = list(session.scalars(query))
    ids = {int(r.actor.split(":", 1)[1]) for r in rows
           if r.actor.startswith("editor:") and r.actor.split(":", 1)[1].isdigit()}
    names = dict(session.execute(sa.select(Editor.id, Editor.name).where(Editor.id.in_(ids))).all()) if ids else {}
    out = []
    for r in rows:
        who = r.actor
        if r.actor.startswith("editor:") and r.actor[7:].isdigit() and int(r.actor[7:]) in names:
            who = names[int(r.actor[7:])]
        out.append(Entry(r.id, r.at, r.actor, who, r.action, r.target, r.origin, dict(r.details or {})))
    return out


def last_logins(session: Session) -> dict[int, dt.datetime]:
    """editor id → their last login on the pages."""
    rows = session.execute(
        sa.select(AuditLog.target, sa.func.max(AuditLog.at))
        .where(AuditLog.action == "editor.login", AuditLog.target.like("editor:%"))
        .group_by(AuditLog.target)
    )
    out = {}
    for target, at in rows:
        tail = target.split(":", 1)[1]
        if tail.isdigit():
            out[int(tail)] = at
    return out
