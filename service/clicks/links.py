"""Register an edition variant's links once, and rewrite them to `/r/…`.

Runs once per edition × audience variant, when the planner stores the rendered variant
(delivery/planner.py), never per recipient: each distinct outgoing URL of the variant
becomes one `edition_links` row (its position is the order of first appearance), and
every href and plain-text URL of it becomes `{PUBLIC_URL}/r/<id>.<sig>.` followed by the
CLICK_TOKEN placeholder, which the composer fills with the reader's token.

Not rewritten: links to the web app itself (PUBLIC_URL: the unsubscribe and preferences
links, the web copy, the archive), which must keep working by themselves and whose
clicks say nothing about the stories; the per-recipient placeholders; mailto: and other
schemes; images (`src`).  A link counts for its article (and the article's section)
when its URL is the URL of one of the edition's articles; any other link (a «اقرأ أيضاً»
link, the site's front page) counts for the edition only.

CLICK_TRACKING=false: nothing is registered and the links go straight to the site.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import replace

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.clicks.signing import link_url
from service.config import Settings, get_settings
from service.logs import get_logger
from service.models import Edition, EditionLink
from service.rendering.viewmodels import CLICK_TOKEN, RenderedVariant

log = get_logger(__name__)

_HREF = re.compile(r'(\bhref=")(https?://[^"]*)(")', re.IGNORECASE)
# A URL in the text part ends at white space or at the bidi marks around it (bidi.py).
_TEXT_URL = re.compile(r"https?://[^\s\u200e\u200f\u202a-\u202e\u2066-\u2069<>\"]+")
MAX_LINKS = 2000  # position is a SMALLINT; a real edition has tens


def _own(url: str, settings: Settings) -> bool:
    base = settings.public_url.rstrip("/")
    return url == base or url.startswith(base + "/") or url.startswith(base + "?")


def _article_targets(edition: Edition) -> dict[str, tuple[int, int | None]]:
    """URL → (article id, section id) of the edition's own articles."""
    out: dict[str, tuple[int, int | None]] = {}
    for ea in edition.articles:
        article = ea.article
        if article is not None and article.url:
            out.setdefault(article.url, (article.id, article.section_id))
    return out


def register(session: Session, edition: Edition, variant: str, urls: list[str]) -> dict[str, int]:
    """An `edition_links` row per URL (kept when already there): URL → link id."""
    existing = {url: lid for lid, url in session.execute(
        sa.select(EditionLink.id, EditionLink.url).where(EditionLink.edition_id == edition.id,
                                                         EditionLink.variant == variant))}
    targets = _article_targets(edition)
    position = len(existing)
    for url in urls:
        if url in existing or position >= MAX_LINKS:
            continue
        article_id, section_id = targets.get(url, (None, None))
        row = EditionLink(edition_id=edition.id, variant=variant, position=position, url=url,
                          article_id=article_id, section_id=section_id)
        session.add(row)
        session.flush()
        existing[url] = row.id
        position += 1
    return existing


def track(session: Session, edition: Edition, variant: str, rendered: RenderedVariant,
          settings: Settings | None = None) -> RenderedVariant:
    """The variant with its outgoing links through `/r/` (unchanged with CLICK_TRACKING off)."""
    settings = settings or get_settings()
    if not settings.click_tracking:
        return rendered
    urls: list[str] = []
    for m in _HREF.finditer(rendered.html):
        url = html_lib.unescape(m[2])
        if not _own(url, settings) and url not in urls:
            urls.append(url)
    # The text part's URLs are rewritten only where the HTML has the same link: a URL in
    # running text may end in punctuation, which must not become a link of its own.
    if not urls:
        return rendered
    ids = register(session, edition, variant, urls)
    tracked = {url: link_url(lid, settings) + "." + CLICK_TOKEN for url, lid in ids.items()}

    def in_html(m: re.Match[str]) -> str:
        new = tracked.get(html_lib.unescape(m[2]))
        return m[0] if new is None else m[1] + new + m[3]

    html = _HREF.sub(in_html, rendered.html)
    text = _TEXT_URL.sub(lambda m: tracked.get(m[0], m[0]), rendered.text)
    log.info("clicks.links_registered", edition_id=edition.id, links=len(ids))
    return replace(rendered, html=html, text=text)
