"""Response headers that keep our pages from leaking tokens or being framed by strangers.

Links in mail carry a token in the path; `Referrer-Policy: no-referrer` keeps it from
reaching any site the page links to.  Nothing is loaded from elsewhere, so the CSP
allows only our own inline styles (and https images inside previewed mail).
"""

from __future__ import annotations

from fastapi import FastAPI, Request

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; "
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
