"""The newsroom's people, for admins (the page) and operators (`nashra editors …`):
add an editor, list them, revoke one, rotate a token; and read the audit log.

A token is returned once, by `add_editor` and `rotate_token`; only its hash is kept.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from service.db import session_scope
from service.logs import get_logger
from service.models import Editor, utcnow
from service.staff import audit as audit_log
from service.staff import editors as staff

log = get_logger(__name__)

NoSuchEditor = staff.NoSuchEditor


class RefusedForSelf(ValueError):
    """An admin may not revoke themselves from the page (they would lock themselves out)."""


@dataclass(frozen=True)
class EditorRow:
    id: int
    name: str
    role: str
    active: bool
    token_expires_at: dt.datetime
    created_at: dt.datetime
    last_login_at: dt.datetime | None

    @property
    def expired(self) -> bool:
        return self.token_expires_at <= utcnow()

    @property
    def state(self) -> str:
        return "revoked" if not self.active else "expired" if self.expired else "active"


def _row(editor: Editor, last_login: dt.datetime | None = None) -> EditorRow:
    return EditorRow(editor.id, editor.name, editor.role.value, editor.active, editor.token_expires_at,
                     editor.created_at, last_login)


def _find(session, who: int | str) -> Editor:
    if isinstance(who, int):
        editor = session.get(Editor, who) if 0 < who < 2**31 else None
        if editor is None:
            raise NoSuchEditor(f"no editor {who}")
        return editor
    return staff.editor_named(session, who)


def list_editors() -> list[EditorRow]:
    with session_scope() as s:
        logins = audit_log.last_logins(s)
        return [_row(e, logins.get(e.id)) for e in staff.list_editors(s)]


def add_editor(name: str, role: str, *, actor: str) -> tuple[EditorRow, str]:
    """Raises ValueError for a bad or taken name, or an unknown role."""
    with session_scope() as s:
        editor, token = staff.create_editor(s, name, role, actor=actor)
        row = _row(editor)
    log.info("editor_added", editor_id=row.id, role=row.role, actor=actor)
    return row, token


def revoke_editor(who: int | str, *, actor: str, refuse_self: int | None = None) -> tuple[EditorRow, bool]:
    """(the editor, whether this revoked them: False if they already were)."""
    with session_scope() as s:
        editor = _find(s, who)
        if refuse_self is not None and editor.id == refuse_self:
            raise RefusedForSelf("you cannot revoke yourself")
        changed = staff.revoke(s, editor, actor=actor)
        row = _row(editor)
    log.info("editor_revoked", editor_id=row.id, actor=actor, changed=changed)
    return row, changed


def rotate_token(who: int | str, *, actor: str) -> tuple[EditorRow, str, bool]:
    """(the editor, their new token, whether they were revoked and are now reinstated)."""
    with session_scope() as s:
        editor = _find(s, who)
        was_revoked = not editor.active
        token = staff.rotate(s, editor, actor=actor)
        row = _row(editor)
    log.info("editor_token_rotated", editor_id=row.id, actor=actor)
    return row, token, was_revoked


def audit_entries(*, limit: int = 100, before: int | None = None, actor: str | None = None,
                  action: str | None = None) -> list[audit_log.Entry]:
    with session_scope() as s:
        return audit_log.entries(s, limit=limit, before=before, actor=actor, action=action)
