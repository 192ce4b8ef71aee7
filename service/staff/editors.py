"""Editors and their API tokens.

Only the sha256 of a token is stored: a leaked database does not hand out the power
to mail every reader.  The token is shown once, when the editor is created or their
token rotated, and opens nothing after EDITOR_TOKEN_DAYS (`token_expires_at`).  A
revoked editor (`active` false) keeps their row — the audit log names them — and
opens nothing either; rotating their token gives them a new one and reinstates them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import unicodedata

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.config import get_settings
from service.models import Editor, EditorRole, EditorSession, audit, utcnow

TOKEN_BYTES = 32
MAX_TOKEN_LENGTH = 200
# What each role may do is the newsroom's (README, "Web pages and API"); here only their order:
# an admin may do everything an editor may.
ROLE_RANK = {EditorRole.editor.value: 1, EditorRole.admin.value: 2}


def has_role(role: str, needed: str) -> bool:
    """Whether someone with `role` may do what needs `needed` (editor < admin)."""
    return ROLE_RANK.get(str(role), 0) >= ROLE_RANK[str(needed)]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def normalise_name(name: object) -> str:
    """An editor's name as stored and as typed at login: NFC, single spaces."""
    if not isinstance(name, str):
        return ""
    return " ".join(unicodedata.normalize("NFC", name).split())


class NoSuchEditor(LookupError):
    pass


def new_token() -> str:
    return "nse_" + secrets.token_urlsafe(TOKEN_BYTES)


def token_lifetime() -> dt.timedelta:
    return dt.timedelta(days=get_settings().editor_token_days)


def create_editor(session: Session, name: str, role: str | EditorRole = EditorRole.editor, *,
                  actor: str = "cli") -> tuple[Editor, str]:
    name = normalise_name(name)
    if not name or len(name) > 200:
        raise ValueError("an editor needs a name of 1 to 200 characters")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        raise ValueError("an editor's name cannot hold control characters")
    try:
        role = EditorRole(role)
    except ValueError:
        raise ValueError("role must be editor or admin") from None
    if session.scalar(select(Editor.id).where(Editor.name == name)) is not None:
        raise ValueError(f"an editor named {name!r} already exists")
    token = new_token()
    editor = Editor(name=name, role=role, token_hash=hash_token(token), active=True,
                    token_expires_at=utcnow() + token_lifetime())
    session.add(editor)
    session.flush()
    audit(session, actor, "editor_created", f"editor:{editor.id}", role=role.value, name=name)
    return editor, token


def editor_named(session: Session, name: str) -> Editor:
    """The editor called `name` (as typed: spacing and letter case do not matter)."""
    wanted = normalise_name(name)
    editor = session.scalar(select(Editor).where(Editor.name == wanted))
    if editor is None and wanted:
        folded = wanted.casefold()
        editor = next((e for e in session.scalars(select(Editor)) if e.name.casefold() == folded), None)
    if editor is None:
        raise NoSuchEditor(f"no editor named {wanted!r}")
    return editor


def list_editors(session: Session) -> list[Editor]:
    return list(session.scalars(select(Editor).order_by(Editor.id)))


def _end_sessions(session: Session, editor: Editor) -> int:
    result = session.execute(delete(EditorSession).where(EditorSession.editor_id == editor.id))
    return result.rowcount or 0


def revoke(session: Session, editor: Editor, *, actor: str) -> bool:
    """Their token and every page session stop working now; False if already revoked."""
    ended = _end_sessions(session, editor)
    if not editor.active:
        return False
    editor.active = False
    audit(session, actor, "editor_revoked", f"editor:{editor.id}", name=editor.name, sessions_ended=ended)
    session.flush()
    return True


def rotate(session: Session, editor: Editor, *, actor: str) -> str:
    """A new token (returned, shown once) with a new expiry; the old token and the
    editor's page sessions stop working.  A revoked editor is reinstated."""
    token = new_token()
    reinstated = not editor.active
    editor.token_hash = hash_token(token)
    editor.token_expires_at = utcnow() + token_lifetime()
    editor.active = True
    ended = _end_sessions(session, editor)
    audit(session, actor, "editor_token_rotated", f"editor:{editor.id}", name=editor.name, sessions_ended=ended,
          reinstated=reinstated)
    session.flush()
    return token


def authenticate(session: Session, token: str | None) -> Editor | None:
    """The active editor holding this token, or None.  Constant work per call."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    editor = session.scalar(select(Editor).where(Editor.token_hash == hash_token(token)))
    if editor is None or not editor.active or editor.token_expires_at <= utcnow():
        return None
    return editor


def authenticate_login(session: Session, name: str | None, token: str | None) -> Editor | None:
    """The active editor with this name holding this token (the pages' login), or None."""
    editor = authenticate(session, token)
    if editor is None or normalise_name(name).casefold() != editor.name.casefold():
        return None
    return editor
