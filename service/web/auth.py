"""The editors' two credentials, kept apart: a Bearer token for the API, a server-side
session for the pages (service.usecases.sessions).  The session cookie holds only the
session's random secret — never the API token — and is HttpOnly, SameSite=Strict,
Secure behind https, and gone from the server at logout."""

from __future__ import annotations

from fastapi import Request, Response

from service.config import get_settings
from service.staff.sessions import MAX_AGE
from service.usecases.sessions import Staff

COOKIE = "nashra_session"

EditorIdentity = Staff  # who is asking, for the routes (and the tests that build one)


def session_secret(request: Request) -> str | None:
    return request.cookies.get(COOKIE)


def set_session_cookie(response: Response, secret: str) -> None:
    response.set_cookie(COOKIE, secret, max_age=int(MAX_AGE.total_seconds()), httponly=True, samesite="strict",
                        secure=get_settings().public_url.startswith("https://"), path="/")


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                           secure=get_settings().public_url.startswith("https://"))


def client_address(request: Request) -> str:
    """The client's address as the server saw it: the peer, or — only when the peer is
    one of FORWARDED_ALLOW_IPS — what that proxy wrote in X-Forwarded-For (uvicorn
    applies it; see service/web/server.py)."""
    return request.client.host if request.client else "unknown"
