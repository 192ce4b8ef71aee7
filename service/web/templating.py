"""Jinja2 for the web pages (templates/web/), autoescaped, with the site's name in scope."""

from __future__ import annotations

import functools

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from service import resources
from service.config import get_settings

TEMPLATE_DIR = resources.web_templates_dir()


def local_time(value, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored (UTC) time as the newsroom reads it: in TIMEZONE."""
    if value is None:
        return "—"
    return value.astimezone(get_settings().tz).strftime(fmt)


@functools.lru_cache(maxsize=1)
def templates() -> Jinja2Templates:
    found = Jinja2Templates(directory=str(TEMPLATE_DIR))
    found.env.filters["local"] = local_time
    return found


def render(request: Request, template: str, status_code: int = 200, response_headers: dict | None = None, **context) -> HTMLResponse:
    settings = get_settings()
    context.setdefault("site_name", settings.site_name)
    context.setdefault("embed", False)
    context.setdefault("demo", settings.demo)
    return templates().TemplateResponse(request, template, context, status_code=status_code, headers=response_headers)


def error_page(request: Request, title: str, message: str, status_code: int = 400, **context) -> HTMLResponse:
    return render(request, "error.html", status_code=status_code, title=title, message=message, **context)
