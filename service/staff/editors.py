"""Editors and their API tokens.

Only the sha256 of a token is stored: a leaked database does not hand out the power
to mail every reader.  The token is shown once, when the editor is created.
"""

from __future__ import annotations

import hashlib
import secrets
import unicodedata

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import Editor, EditorRole, audit

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


def create_editor(session: Session, name: str, role: str | EditorRole = EditorRole.editor) -> tuple[Editor, str]:
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


def authenticate_login(session: Session, name: str | None, token: str | None) -> Editor | None:
    """The active editor with this name holding this token (the pages' login), or None."""
    editor = authenticate(session, token)
    if editor is None or normalise_name(name).casefold() != editor.name.casefold():
        return None
    return editor
