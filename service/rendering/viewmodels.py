"""Plain data the templates are rendered from.

Templates never query the database: the edition code turns ORM rows into these
frozen views, and the rendering code only ever sees them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

# Per-recipient values are left in the rendered, inlined HTML and text as these
# placeholders and filled in by plain string substitution (see personalise.py).
UNSUBSCRIBE_URL = "__NASHRA_UNSUBSCRIBE_URL__"
PREFERENCES_URL = "__NASHRA_PREFERENCES_URL__"
# The reader's click token, at the end of every tracked link (`/r/<link>.<sig>.` + token,
# service/clicks): always exactly CLICK_TOKEN_SIZE URL-safe characters (a multiple of 3),
# and the MIME code may put up to two CLICK_FILLERs before it, which the link's reader
# skips: so placed, the token encodes the same in every link and a recipient's message
# costs one base64 call for all of them (mime.FixedSlotTemplate).
CLICK_TOKEN = "__NASHRA_CLICK__"
CLICK_TOKEN_SIZE = 24
CLICK_FILLER = b"~"


@dataclass(frozen=True)
class Link:
    title: str
    url: str


@dataclass(frozen=True)
class ArticleView:
    id: int
    title: str
    url: str
    summary: str = ""
    section_slug: str | None = None
    section_name: str | None = None
    published_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    updated: bool = False  # a major update since the reader's last edition
    lead_image_url: str | None = None
    lead_image_caption: str | None = None
    lead_image_alt: str | None = None
    body_html: str = ""  # already sanitised
    read_also: tuple[Link, ...] = ()
    related: tuple[Link, ...] = ()


@dataclass(frozen=True)
class SectionView:
    slug: str
    name: str
    articles: tuple[ArticleView, ...]


@dataclass(frozen=True)
class SiteView:
    name: str
    public_url: str
    postal_address: str
    timezone: str
    hijri_dates: bool = False  # add the Umm al-Qura date after the Gregorian one
    arabic_digits: bool = False  # ٠١٢٣ instead of 0123 in dates and times


@dataclass(frozen=True)
class RenderedVariant:
    """One edition × audience variant, inlined, with per-recipient placeholders."""

    subject: str
    html: str
    text: str
    preheader: str = ""
    extra: dict = field(default_factory=dict)
