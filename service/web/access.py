"""Every route states the role it needs, and that statement is what enforces it.

A route takes one of these as a dependency (or its router does):

- `ANYONE`: readers' pages, health, the login form — no credentials;
- `api(Role.editor)` / `api(Role.admin)`: the JSON API, `Authorization: Bearer <token>`;
  none or a wrong one → 401 (JSON, `WWW-Authenticate: Bearer`), too low a role → 403;
- `page(Role.editor)` / `page(Role.admin)`: the editors' pages, the server-side session
  cookie; none → 401 with the login form, too low a role → 403.

What each role may do is the newsroom's (README, "Web pages and API"); an admin may do
all an editor may.  `check_every_route(app)` refuses to start an app with a route that
states nothing, and `role_of(route)` is what the tests walk.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from service.models import AUDIT_ORIGIN
from service.usecases.sessions import Staff, api_staff, page_staff
from service.web import csrf
from service.web.auth import session_secret
from service.web.templating import error_page, render


class Role(enum.StrEnum):
    anyone = "anyone"
    editor = "editor"
    admin = "admin"


class Denied(Exception):
    def __init__(self, door: str, status: int, needed: Role, anonymous: str = "form"):
        super().__init__(f"{door}: {status} (needs {needed})")
        self.door, self.status, self.needed, self.anonymous = door, status, needed, anonymous


def _states(fn: Callable, role: Role, door: str) -> Callable:
    fn.nashra_role = role  # type: ignore[attr-defined]
    fn.nashra_door = door  # type: ignore[attr-defined]
    return fn


def _anyone() -> None:
    return None


ANYONE = Depends(_states(_anyone, Role.anyone, "public"))


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def api(role: Role):
    """The API's editor (from the Bearer token), who must hold at least `role`."""

    async def dependency(request: Request) -> Staff:
        staff = await run_in_threadpool(api_staff, bearer_token(request))
        if staff is None:
            raise Denied("api", 401, role)
        if not staff.may(role):
            raise Denied("api", 403, role)
        return staff

    return Depends(_states(dependency, role, "api"))


def page(role: Role, *, anonymous: str = "form"):
    """The pages' editor (from the session cookie), who must hold at least `role`.

    Without a session: `form` → 401 with the login form; `status` → a bare 401 (the
    page's script asks for fragments); `login` → None, for the page that shows the form
    — unless the browser sent a session cookie that no longer opens anything (revoked,
    rotated, expired, logged out elsewhere): that is a 401 with the form, like any page.
    """

    async def dependency(request: Request) -> Staff | None:
        secret = session_secret(request)
        staff = await run_in_threadpool(page_staff, secret)
        if staff is None:
            if anonymous == "login" and not secret:
                return None
            raise Denied("page", 401, role, anonymous)
        if not staff.may(role):
            raise Denied("page", 403, role)
        return staff

    return Depends(_states(dependency, role, "page"))


def login_form(request: Request, status_code: int = 200, error: str | None = None, name: str = "",
               headers: dict | None = None):
    """The editors' login page (what an editor without a session is shown)."""
    return render(request, "editor_login.html", status_code=status_code, error=error, name=name[:200],
                  csrf_token=csrf.issue("editor-login"), response_headers=headers)


# Routes that another module defines (and this one cannot decorate): path → role.
STATED: dict[str, Role] = {}


def state(path: str, role: Role) -> None:
    STATED[path] = role


def role_of(route: APIRoute) -> Role | None:
    for dep in route.dependant.dependencies:
        role = getattr(dep.call, "nashra_role", None)
        if role is not None:
            return role
    return STATED.get(route.path)


def door_of(route: APIRoute) -> str | None:
    for dep in route.dependant.dependencies:
        door = getattr(dep.call, "nashra_door", None)
        if door is not None:
            return door
    return "public" if route.path in STATED else None


def every_route(routes) -> Iterator[APIRoute]:
    """Every API route of an app or router, through included routers (which newer
    FastAPI keeps whole, as an object holding `original_router`, instead of copying
    their routes in; we include ours without prefix or extra dependencies)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif getattr(route, "original_router", None) is not None:
            yield from every_route(route.original_router.routes)
        elif getattr(route, "routes", None):
            yield from every_route(route.routes)


def check_every_route(app: FastAPI) -> None:
    silent = [f"{sorted(r.methods)} {r.path}" for r in every_route(app.routes) if role_of(r) is None]
    if silent:
        raise RuntimeError(f"routes that do not state the role they need (service/web/access.py): {silent}")


class AuditOrigin:
    """Pure ASGI: each request's "from where" for the audit log (`web 203.0.113.7`, or
    `api …` for the JSON API), read by `service.models.audit` wherever a row is written.
    The client is the TCP peer, or what a trusted proxy said (FORWARDED_ALLOW_IPS)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        door = "api" if scope.get("path", "").startswith("/api/") else "web"
        token = AUDIT_ORIGIN.set(f"{door} {client[0] if client else 'unknown'}")
        try:
            await self.app(scope, receive, send)
        finally:
            AUDIT_ORIGIN.reset(token)


def install(app: FastAPI) -> None:
    @app.exception_handler(Denied)
    async def _denied(request: Request, exc: Denied):
        if exc.door == "api":
            if exc.status == 401:
                return JSONResponse({"error": "a valid editor token is required (Authorization: Bearer …)"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
            return JSONResponse({"error": f"this needs the {exc.needed} role"}, status_code=403)
        if exc.status == 401:
            if exc.anonymous == "status":
                return JSONResponse({"error": "not logged in"}, status_code=401)
            return await run_in_threadpool(login_form, request, 401)
        return await run_in_threadpool(error_page, request, "غير مسموح", "هذه الصفحة لمن له دور أعلى من دورك.",
                                       status_code=403)

    check_every_route(app)
