"""The two Jinja2 environments: HTML (autoescaped) and plain text (not).

Both are strict: a name missing from the context is an error at render time, not an
empty hole in a mail that goes to a hundred thousand readers.
"""

from __future__ import annotations

import functools

import jinja2

from service import resources
from service.rendering.article_html import article_html
from service.rendering.bidi import wrap_ltr

TEMPLATES_DIR = resources.email_templates_dir()
KINDS = ("digest", "alert", "confirm", "welcome", "correction", "catchup", "manage", "special")


def _finalize(value: object) -> object:
    return "" if value is None else value


def _env(*, autoescape: bool, **extra) -> jinja2.Environment:
    """The HTML and text environments differ only in escaping, filters and newlines."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
        **extra,
    )
    env.globals["kinds"] = KINDS
    return env


@functools.lru_cache(maxsize=1)
def html_env() -> jinja2.Environment:
    env = _env(autoescape=True)
    env.filters["bidi"] = wrap_ltr
    env.filters["article_html"] = article_html
    return env


@functools.lru_cache(maxsize=1)
def text_env() -> jinja2.Environment:
    return _env(autoescape=False, keep_trailing_newline=True)
