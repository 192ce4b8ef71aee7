"""Response headers that keep our pages from leaking tokens or being framed by strangers,
on every answer the app gives: pages, JSON, the 413 for an oversized body and the 500
for a bug alike (a pure ASGI middleware outside everything else, so no answer escapes it).

Links in mail carry a token in the path; `Referrer-Policy: no-referrer` keeps it from
reaching any site the page links to, and `Cache-Control: no-store` (the default for
every answer that does not set its own) keeps a page with a token, a CSRF token or an
editor's session out of shared and browser caches.  Nothing is loaded from elsewhere,
so the CSP allows only our own inline styles, our own script file (the editor's live
progress) and https images inside previewed mail.
"""

from __future__ import annotations

from service.logs import get_logger

log = get_logger(__name__)

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; "
    "script-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-src 'self'; frame-ancestors 'none'"
)
# The compact signup form is shown in an iframe under articles on the news site.
CSP_EMBED = CSP.replace("frame-ancestors 'none'", "frame-ancestors *")
HEADERS = (
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
)


def embeddable() -> dict[str, str]:
    return {"Content-Security-Policy": CSP_EMBED}


def with_security_headers(headers: list) -> list:
    """`headers` (ASGI: a list of (name, value) bytes) with ours added where missing."""
    present = {bytes(name).lower() for name, _ in headers}
    out = list(headers)
    if b"content-security-policy" not in present:
        out.append((b"content-security-policy", CSP.encode()))
        csp = CSP.encode()
    else:
        csp = next(bytes(v) for n, v in headers if bytes(n).lower() == b"content-security-policy")
    out += [(name, value) for name, value in HEADERS if name not in present]
    if b"frame-ancestors *" not in csp and b"x-frame-options" not in present:
        out.append((b"x-frame-options", b"DENY"))
    return out


class SecurityHeaders:
    """Our headers on every response; an unhandled error becomes a plain 500 with them.

    Outermost of our middleware: Starlette's own error handler sits outside every
    middleware, so a 500 it wrote would go out bare.  The error is logged here (type and
    route template, never the path: paths carry tokens) with its traceback.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": with_security_headers(message.get("headers") or [])}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:  # noqa: BLE001 — every bug gets an answer, and a log line
            route = scope.get("route")
            log.exception("http_unhandled_error", method=scope.get("method"),
                          route=getattr(route, "path", "(unmatched)"), error=type(exc).__name__)
            if started:
                raise  # the answer is half sent: nothing better to do than drop it
            await send_plain(send_with_headers, 500, "حدث خطأ من جهتنا. حاول بعد قليل.\ninternal error\n")


async def send_plain(send, status: int, text: str, headers: list | None = None) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


MAX_BODY = 256 * 1024  # our largest form is a few KB; the API caps JSON at 64 KB itself
# Provider webhooks post batches (SendGrid up to about 768 KB); their route caps at 1 MB.
WEBHOOK_MAX_BODY = 1024 * 1024


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over MAX_BODY with 413, before the form parser buffers them.

    A declared Content-Length is checked up front; a chunked body is counted as it
    arrives.  Starlette would otherwise hold a whole urlencoded body in memory.
    """

    def __init__(self, app, limit: int = MAX_BODY):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = WEBHOOK_MAX_BODY if scope.get("path", "").startswith("/webhooks/") else self.limit
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _too_large(send)
        seen = 0
        started = False

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        # except*: Starlette's middleware runs the app in a task group, which wraps
        # what the app raised in an ExceptionGroup.
        try:
            await self.app(scope, counting_receive, tracking_send)
        except* _BodyTooLarge:
            if not started:
                await _too_large(send)


async def _too_large(send) -> None:
    await send_plain(send, 413, "الطلب أكبر مما نقبل.\nrequest body too large\n")
