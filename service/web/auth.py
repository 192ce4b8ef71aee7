"""Who is this editor?  A Bearer token for the API, the same token in an HttpOnly
cookie for the pages.  Only its sha256 is looked up (service.staff.editors)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from service.db import session_scope
from service.staff.editors import authenticate

COOKIE = "nashra_editor"


@dataclass(frozen=True)
class EditorIdentity:
    id: int
    name: str
    role: str

    @property
    def actor(self) -> str:
        return f"editor:{self.id}"


def editor_for_token(token: str | None) -> EditorIdentity | None:
    with session_scope() as s:
        editor = authenticate(s, token)
        if editor is None:
            return None
        return EditorIdentity(editor.id, editor.name, editor.role.value)


def bearer_editor(request: Request) -> EditorIdentity | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return editor_for_token(token.strip())


def cookie_editor(request: Request) -> EditorIdentity | None:
    return editor_for_token(request.cookies.get(COOKIE))
