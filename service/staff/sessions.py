"""Editors' page sessions, kept on the server.

The editor's pages ride on a session of their own, never on the API token: a login
makes a fresh random secret (the cookie) and a row holding its sha256; logout deletes
the row, so a copied cookie dies with it; a session ends by itself MAX_AGE after login
or IDLE after its last request, and with the editor (revoked: `active` false) or their
token (expired, or rotated: rotating deletes the editor's sessions).
Functions take a Session and never commit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.models import Editor, EditorSession, utcnow

MAX_AGE = dt.timedelta(hours=12)  # a working day, then log in again
IDLE = dt.timedelta(hours=2)  # a page left alone this long is logged out
TOUCH_EVERY = dt.timedelta(minutes=1)  # last_seen_at is written at most this often
SECRET_BYTES = 32
MAX_SECRET_LENGTH = 100


@dataclass(frozen=True)
class ActiveSession:
    session_id: int
    editor_id: int
    name: str
    role: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def start(session: Session, editor: Editor, *, now: dt.datetime | None = None) -> tuple[EditorSession, str]:
    """A new session for `editor`; returns it and the secret for the cookie (shown once)."""
    now = now or utcnow()
    secret = secrets.token_urlsafe(SECRET_BYTES)
    row = EditorSession(editor_id=editor.id, secret_hash=_hash(secret), created_at=now, last_seen_at=now,
                        expires_at=now + MAX_AGE)
    session.add(row)
    # Every login sweeps what has expired: the table holds live sessions, not history.
    session.execute(delete(EditorSession).where(EditorSession.expires_at < now))
    session.flush()
    return row, secret


def lookup(session: Session, secret: str | None, *, now: dt.datetime | None = None) -> ActiveSession | None:
    """The live session this cookie names, with its editor; None if there is none."""
    if not secret or len(secret) > MAX_SECRET_LENGTH:
        return None
    now = now or utcnow()
    found = session.execute(
        select(EditorSession, Editor).join(Editor, Editor.id == EditorSession.editor_id)
        .where(EditorSession.secret_hash == _hash(secret))
    ).first()
    if found is None:
        return None
    row, editor = found
    if (not editor.active or editor.token_expires_at <= now or row.expires_at <= now
            or row.last_seen_at + IDLE <= now):
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
        session.flush()
    return ActiveSession(row.id, editor.id, editor.name, editor.role.value)


def end(session: Session, secret: str | None) -> bool:
    """Delete the session this secret names (logout, or the old one at a new login)."""
    if not secret or len(secret) > MAX_SECRET_LENGTH:
        return False
    result = session.execute(delete(EditorSession).where(EditorSession.secret_hash == _hash(secret)))
    return bool(result.rowcount)
