"""Editors and their API tokens.

Only the sha256 of a token is stored: a leaked database does not hand out the power
to mail every reader.  The token is shown once, when the editor is created.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import Editor, EditorRole, audit

TOKEN_BYTES = 32
MAX_TOKEN_LENGTH = 200


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_editor(session: Session, name: str, role: str | EditorRole = EditorRole.editor) -> tuple[Editor, str]:
    name = " ".join((name or "").split())
    if not name or len(name) > 200:
        raise ValueError("an editor needs a name of 1 to 200 characters")
    try:
        role = EditorRole(role)
    except ValueError:
        raise ValueError("role must be editor or admin") from None
    if session.scalar(select(Editor.id).where(Editor.name == name)) is not None:
        raise ValueError(f"an editor named {name!r} already exists")
    token = "nse_" + secrets.token_urlsafe(TOKEN_BYTES)
    editor = Editor(name=name, role=role, token_hash=hash_token(token), active=True)
    session.add(editor)
    session.flush()
    audit(session, "cli", "editor_created", f"editor:{editor.id}", role=role.value)
    return editor, token


def authenticate(session: Session, token: str | None) -> Editor | None:
    """The active editor holding this token, or None.  Constant work per call."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    editor = session.scalar(select(Editor).where(Editor.token_hash == hash_token(token)))
    if editor is None or not editor.active:
        return None
    return editor
