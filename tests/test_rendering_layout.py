"""Every kind of email laid out by real headless Chromium, at 600 and 375 px, light and dark.

The assertions use the browser's own boxes: text runs right-to-left, the digest's
lead image sits right of its text on a wide screen and above it on a phone, nothing
overflows sideways, and mixed runs (OPEC+, +962 6 123 4567) come out in reading order.
Screenshots land in tests/artifacts/rendering/ for a person to look at.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from service.rendering.personalise import personalise
from service.rendering.render import render_variant
from tests.support import email_samples as samples

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "rendering"
KINDS = ("digest", "alert", "confirm", "welcome", "correction")
# Images are served by the test itself (no network): a plain SVG of a photo's shape.
IMAGE = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="600" height="400">'
    b'<rect width="600" height="400" fill="#4a6fa5"/><circle cx="300" cy="200" r="90" fill="#e8c170"/></svg>'
)

_VARIANTS: dict[str, tuple[str, str]] = {}


def _html(kind: str) -> str:
    if kind not in _VARIANTS:
        variant = render_variant(kind, samples.all_contexts()[kind])
        _VARIANTS[kind] = personalise(
            variant,
            unsubscribe_url="https://news.example/unsubscribe/t1",
            preferences_url="https://news.example/preferences/t1",
        )
    return _VARIANTS[kind][0]


def _load(page, html: str, width: int, scheme: str) -> None:
    def serve(route):
        if route.request.resource_type == "image":
            route.fulfill(status=200, body=IMAGE, content_type="image/svg+xml")
        else:
            route.abort()

    page.route("**/*", serve)
    page.set_viewport_size({"width": width, "height": 900})
    page.emulate_media(color_scheme=scheme)
    page.set_content(html, wait_until="load")
    page.evaluate("document.fonts.ready")


# Text boxes of every visible paragraph/heading, measured with a Range over its text.
_TEXT_BOXES = """
() => [...document.querySelectorAll('p, h1, h2, h3, td.band')]
  .filter(el => el.offsetParent !== null && el.textContent.trim() && !el.closest('.preheader'))
  .map(el => {
    const cs = getComputedStyle(el);
    const box = el.getBoundingClientRect();
    const range = document.createRange();
    range.selectNodeContents(el);
    const rects = [...range.getClientRects()].filter(r => r.width > 0);
    const firstLineTop = Math.min(...rects.map(r => r.top));
    const firstLine = rects.filter(r => r.top < firstLineTop + 4);
    return {
      text: el.textContent.trim().slice(0, 40),
      direction: cs.direction,
      contentRight: box.right - parseFloat(cs.paddingRight) - parseFloat(cs.borderRightWidth),
      contentLeft: box.left + parseFloat(cs.paddingLeft) + parseFloat(cs.borderLeftWidth),
      firstLineRight: Math.max(...firstLine.map(r => r.right)),
      firstLineLeft: Math.min(...firstLine.map(r => r.left)),
    };
  })
"""

# x position of each character of `needle` inside the first element holding it.
_CHAR_XS = """
([selector, needle]) => {
  const host = [...document.querySelectorAll(selector)].find(el => el.textContent.includes(needle));
  if (!host) return null;
  const walker = document.createTreeWalker(host, NodeFilter.SHOW_TEXT);
  let node;
  while ((node = walker.nextNode())) {
    const at = node.data.indexOf(needle);
    if (at < 0) continue;
    const xs = [];
    for (let i = 0; i < needle.length; i++) {
      if (needle[i] === ' ') continue;
      const r = document.createRange();
      r.setStart(node, at + i); r.setEnd(node, at + i + 1);
      const box = r.getBoundingClientRect();
      xs.push([needle[i], box.left]);
    }
    return xs;
  }
  return null;
}
"""


def _luminance(css_colour: str) -> float:
    parts = css_colour[css_colour.index("(") + 1 : css_colour.index(")")].split(",")
    r, g, b = (float(p) / 255 for p in parts[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [600, 375])
@pytest.mark.parametrize("kind", KINDS)
def test_layout_reads_right_to_left(page, kind, width, scheme):
    _load(page, _html(kind), width, scheme)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{kind}-{width}-{scheme}.png"), full_page=True)

    overflow = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert overflow[0] <= overflow[1], f"horizontal overflow: {overflow[0]}px content in {overflow[1]}px"

    boxes = page.evaluate(_TEXT_BOXES)
    assert len(boxes) >= 4
    for b in boxes:
        assert b["direction"] == "rtl", b
        # The first line starts at the right edge of its box (RTL), whatever its length.
        assert abs(b["firstLineRight"] - b["contentRight"]) <= 2, b

    # A short line proves the alignment is the text's doing and not a full-width line.
    short = [b for b in boxes if b["firstLineLeft"] - b["contentLeft"] > 40]
    assert short, "no short line to show the text hugging the right edge"

    wrapper_bg = page.evaluate("getComputedStyle(document.querySelector('.wrapper')).backgroundColor")
    heading_colour = page.evaluate(
        "getComputedStyle(document.querySelector('h1, .site-name, .band')).color"
    )
    if scheme == "dark":
        assert _luminance(wrapper_bg) < 0.2, wrapper_bg
    else:
        assert _luminance(wrapper_bg) > 0.8, wrapper_bg
    assert heading_colour != wrapper_bg


@pytest.mark.parametrize("width", [600, 375])
def test_digest_lead_image_beside_text_when_wide_above_when_narrow(page, width):
    _load(page, _html("digest"), width, "light")
    img = page.evaluate("(() => { const r = document.querySelector('.lead-img').getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, h: r.height}; })()")
    title = page.evaluate("(() => { const r = document.querySelector('.lead-title').getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top}; })()")
    assert img["h"] > 50, "the lead image did not load"
    if width == 600:
        assert img["left"] >= title["right"] - 1, (img, title)  # image on the right, text on its left
        assert abs(img["top"] - title["top"]) < 30
    else:
        assert img["bottom"] <= title["top"] + 1, (img, title)  # stacked, image first
        assert img["right"] > 300  # full width of the phone column


@pytest.mark.parametrize(
    ("kind", "needle"),
    [("digest", "OPEC+"), ("digest", "+962 6 123 4567"), ("alert", "+962 6 123 4567"), ("digest", "COVID-19")],
)
def test_mixed_runs_render_in_reading_order(page, kind, needle):
    _load(page, _html(kind), 600, "light")
    xs = page.evaluate(_CHAR_XS, ["p, h1, h2, h3", needle])
    assert xs, f"{needle!r} not found"
    lefts = [x for _, x in xs]
    assert lefts == sorted(lefts), f"{needle!r} is laid out out of order: {xs}"


def test_the_order_check_catches_an_unwrapped_run(page):
    """Control: the same phone number without <span dir="ltr"> is reordered by Chromium."""
    page.set_content(
        '<html dir="rtl" lang="ar"><body><p style="font-size:20px">للطوارئ اتصلوا على +962 6 123 4567 الآن</p></body></html>'
    )
    xs = page.evaluate(_CHAR_XS, ["p", "+962 6 123 4567"])
    lefts = [x for _, x in xs]
    assert lefts != sorted(lefts)


def test_alert_has_a_red_band_and_one_button(page):
    _load(page, _html("alert"), 375, "light")
    band = page.evaluate(
        "(() => { const b = document.querySelector('.band'); return [b.textContent.trim(), getComputedStyle(b).backgroundColor]; })()"
    )
    assert band == ["عاجل", "rgb(200, 16, 46)"]
    assert page.locator("a.btn").count() == 1
    assert page.locator("a.btn").get_attribute("href") == "https://news.example/local/earthquake-aqaba"
