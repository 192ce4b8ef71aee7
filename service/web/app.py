"""The web app: readers' pages, editors' pages and API, health and metrics.

Run with `uvicorn service.web.app:create_app --factory` (or `nashra web`).
"""

from __future__ import annotations

import os
import time

from fastapi import FastAPI, Response

from service import __version__
from service.config import get_settings
from service.jobs import install_dispatcher
from service.logs import get_logger
from service.web import (
    access,
    admin_pages,
    api,
    clicks,
    demo,
    editor_pages,
    health,
    metrics,
    readers,
    security,
    signup_api,
    special_pages,
    web_copy,
    webhooks,
)

log = get_logger(__name__)


class RequestLog:
    """Pure ASGI: one `http_request` line per answer, with the route *template*
    (/confirm/{token}), never the path: paths carry tokens.

    Not `@app.middleware("http")`: Starlette's BaseHTTPMiddleware runs the rest of the
    app in a task group of its own and streams the body through memory channels, a cost
    every request paid for one log line (measured in bench/bench_signup_load.py)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            log.info(
                "http_request",
                method=scope["method"],
                route=getattr(route, "path", "(unmatched)"),
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 1),
                pid=os.getpid(),  # which of `nashra web --workers N`'s processes answered
            )


def create_app() -> FastAPI:
    settings = get_settings()
    install_dispatcher()  # the signup's mails and the editors' alerts go out as Celery messages
    app = FastAPI(title="Nashra", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(health.router)
    metrics.install(app)
    app.include_router(readers.router)
    app.include_router(clicks.router)  # GET /r/…: a mail's link, counted for its edition, never for a reader
    app.include_router(signup_api.router)  # POST /api/subscribe, for a site's own form (CORS)
    app.include_router(editor_pages.router)
    app.include_router(special_pages.router)  # /editor/special: special editions, scheduled sends
    app.include_router(admin_pages.router)
    app.include_router(api.router)
    app.include_router(web_copy.router)  # the web copy of an edition, the public archive and its feed
    app.include_router(webhooks.router)  # POST /webhooks/{provider}: SES, Mailgun, Postmark, SendGrid
    if settings.demo:
        app.include_router(demo.router)

    access.state("/metrics", access.Role.anyone)  # Prometheus scrapes it (service/web/metrics.py)

    @app.get("/favicon.ico", include_in_schema=False, dependencies=[access.ANYONE])
    def favicon():
        # Browsers ask on every page; we ship no icon (no external or binary assets).
        return Response(status_code=204)

    access.install(app)  # 401/403 answers; refuses to start if a route states no role
    app.add_middleware(RequestLog)
    app.add_middleware(access.AuditOrigin)  # the audit log's "from where" for this request
    app.add_middleware(security.BodyLimit)  # before anything reads the body
    app.add_middleware(security.SecurityHeaders)  # outermost: its headers on every answer, 413 and 500 too
    return app
