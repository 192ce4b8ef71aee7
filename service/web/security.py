"""Response headers that keep our pages from leaking tokens or being framed by strangers.

Links in mail carry a token in the path; `Referrer-Policy: no-referrer` keeps it from
reaching any site the page links to.  Nothing is loaded from elsewhere, so the CSP
allows only our own inline styles, our own script file (the editor's live progress)
and https images inside previewed mail.
"""

from __future__ import annotations

from fastapi import FastAPI, Request

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; "
    "script-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-src 'self'; frame-ancestors 'none'"
)
# The compact signup form is shown in an iframe under articles on the news site.
CSP_EMBED = CSP.replace("frame-ancestors 'none'", "frame-ancestors *")


def embeddable() -> dict[str, str]:
    return {"Content-Security-Policy": CSP_EMBED}


def install(app: FastAPI) -> None:
    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if "frame-ancestors *" not in response.headers["Content-Security-Policy"]:
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response


MAX_BODY = 256 * 1024  # our largest form is a few KB; the API caps JSON at 64 KB itself


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
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _too_large(send)
        seen = 0
        started = False

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
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
    body = "الطلب أكبر مما نقبل.\nrequest body too large\n".encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
