"""Mail clients that are not a browser: no <style> block, Outlook's Word engine, spam filters.

gmail.mobile-webmail and some Outlooks drop the whole <style> block (the @media rules, the
classes, `display:none` given by class): only the inlined styles are left, so the mail
must read well from those alone.  Outlook desktop ignores inline-block and max-width and
lays out its own MSO-only table.  SpamAssassin's HTML_FONT_LOW_CONTRAST fires on any text
whose colour is within a small distance of its background (the classic way to hide text),
so the preheader is hidden by layout, never by colour.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import lxml.html
import pytest

from service.rendering import contexts
from service.rendering.personalise import personalise
from service.rendering.render import render_variant
from tests.support import email_samples as samples

KINDS = ("digest", "alert", "confirm", "welcome", "correction")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "rendering"
IMAGE = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="600" height="400">'
    b'<rect width="600" height="400" fill="#4a6fa5"/><circle cx="300" cy="200" r="90" fill="#e8c170"/></svg>'
)
_STYLE_BLOCK = re.compile(r"<style\b[^>]*>.*?</style>", re.S | re.I)


def _personalised(kind: str) -> str:
    variant = render_variant(kind, samples.all_contexts()[kind])
    html, _ = personalise(variant, unsubscribe_url="https://news.example/unsubscribe/t1",
                          preferences_url="https://news.example/preferences/t1")
    return html


def without_style(html: str) -> str:
    """The mail as a client that drops every <style> element sees it."""
    stripped = _STYLE_BLOCK.sub("", html)
    assert "<style" not in stripped.lower()
    return stripped


# ------------------------------------------------------------------ SpamAssassin's contrast rule

_COLOUR = re.compile(r"(?:^|;)\s*color\s*:\s*(#[0-9a-fA-F]{6})", re.I)
_BACKGROUND = re.compile(r"(?:^|;)\s*background(?:-color)?\s*:\s*(#[0-9a-fA-F]{6})", re.I)


def _inherited(el, attr_re, attr_name, default):
    while el is not None:
        style = el.get("style") or ""
        m = attr_re.search(style)
        if m:
            return m.group(1).lower()
        if attr_name and el.get(attr_name):
            return el.get(attr_name).lower()
        el = el.getparent()
    return default


def _distance(fg: str, bg: str) -> float:
    """SpamAssassin's HTML.pm: brightness-weighted distance; under 12 is 'low contrast'."""
    r1, g1, b1 = (int(fg[i : i + 2], 16) for i in (1, 3, 5))
    r2, g2, b2 = (int(bg[i : i + 2], 16) for i in (1, 3, 5))
    return ((0.2126 * (r1 - r2)) ** 2 + (0.7152 * (g1 - g2)) ** 2 + (0.0722 * (b1 - b2)) ** 2) ** 0.5


def low_contrast_text(html: str) -> list[tuple[str, str, str]]:
    """(text, colour, background) of every text run SpamAssassin would call low contrast."""
    doc = lxml.html.document_fromstring(html)
    body = doc.find("body")
    found = []
    for el in body.iter():
        if not isinstance(el.tag, str) or el.tag in ("style", "script", "title"):
            continue
        for text, owner in ((el.text, el), (el.tail, el.getparent())):
            if owner is None or not text or not re.search(r"[^ \t\n\r\f\x0b\xa0]", text):
                continue
            fg = _inherited(owner, _COLOUR, "color", "#000000")
            bg = _inherited(owner, _BACKGROUND, "bgcolor", "#ffffff")
            if _distance(fg, bg) < 12:
                found.append((text.strip()[:40], fg, bg))
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_no_text_is_coloured_like_its_background(kind):
    assert low_contrast_text(_personalised(kind)) == []


def test_the_contrast_check_catches_the_old_preheader():
    """Control: the preheader as it was (#f2f2f2 on #f2f2f2) is caught."""
    html = _personalised("digest").replace('class="preheader" style="', 'class="preheader" style="color:#f2f2f2; ', 1)
    assert any(bg == "#f2f2f2" for _, _, bg in low_contrast_text(html))


@pytest.mark.parametrize("kind", KINDS)
def test_the_preheader_is_hidden_by_inline_layout_alone(kind):
    doc = lxml.html.document_fromstring(without_style(_personalised(kind)))
    (pre,) = doc.xpath("//*[contains(concat(' ', @class, ' '), ' preheader ')]")
    style = pre.get("style").replace(" ", "")
    for rule in ("display:none", "max-height:0", "overflow:hidden", "mso-hide:all"):
        assert rule in style, rule
    assert "color:" not in style and "opacity" not in style and "font-size" not in style


# ------------------------------------------------------------------ Outlook's column


def _digest_html(lead):
    ctx = contexts.digest_context(samples.SITE, samples.sections(8), edition_date=samples.EDITION_AT,
                                  frequency="daily", lead=lead)
    return render_variant("digest", ctx).html


def test_outlook_gets_the_two_columns_only_when_the_lead_has_an_image():
    with_image = _digest_html(samples.LEAD)
    assert '<td width="264" valign="top">' in with_image and '<td width="288" valign="top">' in with_image
    no_image = _digest_html(dataclasses.replace(samples.LEAD, lead_image_url=None))
    # Without an image the lead is not squeezed into Outlook's 264-px image cell.
    assert 'width="264"' not in no_image and 'width="288"' not in no_image
    lead_cell = no_image[no_image.index('class="lead-cell"') : no_image.index("</td></tr>", no_image.index('class="lead-cell"'))]
    assert "[if mso]" not in lead_cell


# ------------------------------------------------------------------ without <style>, in Chromium


def _load(page, html: str, width: int) -> None:
    def serve(route):
        if route.request.resource_type == "image":
            route.fulfill(status=200, body=IMAGE, content_type="image/svg+xml")
        else:
            route.abort()

    page.route("**/*", serve)
    page.set_viewport_size({"width": width, "height": 900})
    page.emulate_media(color_scheme="light")
    page.set_content(html, wait_until="load")
    page.evaluate("document.fonts.ready")


_BOX = "(sel) => { const el = document.querySelector(sel); if (!el) return null; const r = el.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width, height: r.height}; }"


@pytest.mark.browser
@pytest.mark.parametrize("width", [600, 375])
@pytest.mark.parametrize("kind", KINDS)
def test_without_the_style_block_the_mail_still_reads_right(page, kind, width):
    _load(page, without_style(_personalised(kind)), width)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{kind}-{width}-nostyle.png"), full_page=True)

    overflow = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert overflow[0] <= overflow[1], f"horizontal overflow: {overflow[0]}px in {overflow[1]}px"
    pre = page.evaluate(_BOX, ".preheader")
    assert pre["height"] == 0 and pre["width"] == 0, pre  # hidden, with no stylesheet to hide it
    directions = page.evaluate(
        "[...document.querySelectorAll('p, h1, h2, h3, td')].filter(e => e.offsetParent && e.textContent.trim())"
        ".map(e => getComputedStyle(e).direction)"
    )
    assert directions and set(directions) == {"rtl"}

    if kind == "digest":
        img, title = page.evaluate(_BOX, ".lead-img"), page.evaluate(_BOX, ".lead-title")
        assert img["height"] > 50
        if width == 600:
            assert img["left"] >= title["right"] - 1  # side by side: image on the right
        else:
            assert img["bottom"] <= title["top"] + 1  # the columns stack on a phone
            assert img["right"] <= width and title["left"] >= 0
