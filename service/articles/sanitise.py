"""Article HTML → HTML fit for an email, plus the links the site puts inside its bodies.

Three passes, each for a reason:

1. nh3 (ammonia, an html5ever parser) with an email allow-list: scripts, styles, frames,
   forms, event handlers, `style` attributes and every non-http(s) URL go.  Relative
   URLs are resolved against the article's URL first, because an email has no base.
   `class` survives this pass only, so that the next one can recognise blocks by it.
2. lxml on that clean markup: the "اقرأ أيضاً" (read also) and "أخبار ذات صلة" (related
   news) blocks are lifted out and become links; tracking pixels and images left without
   a source are dropped; a leading figure can supply the lead image.
3. nh3 again, without `class`: the final allow-list is the only authority on the output.
"""

from __future__ import annotations

import html as htmllib
import re
from dataclasses import dataclass, field

import lxml.html
import nh3
from lxml import etree

from service.articles.text import clean_text, clean_title, match_key, strip_embeddings
from service.articles.urls import absolute_http_url

EMAIL_TAGS = {
    "p", "br", "strong", "b", "em", "i", "u", "s", "a", "ul", "ol", "li", "blockquote",
    "h2", "h3", "h4", "h5", "figure", "figcaption", "img", "table", "thead", "tbody", "tr",
    "th", "td", "caption", "span", "sub", "sup", "hr", "q", "cite", "abbr",
}  # fmt: skip
EMAIL_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
    "*": {"dir", "lang"},
}
STRUCTURE_TAGS = {"div", "section", "aside", "article", "header", "footer", "nav"}
# Removed together with everything inside them (an <iframe>'s fallback text included).
DROP_WITH_CONTENT = {
    "script", "style", "iframe", "noscript", "object", "embed", "template", "svg", "math",
    "form", "select", "textarea", "button", "head", "title",
}  # fmt: skip
URL_ATTRIBUTES = {("a", "href"), ("img", "src")}

READ_ALSO_KEYS = ("اقراايضا", "اقراكذلك", "اقراالمزيد", "شاهدايضا", "readalso")
RELATED_KEYS = ("اخبارذاتصله", "مواضيعذاتصله", "اخبارمتعلقه", "مقالاتذاتصله", "relatednews", "related")
READ_ALSO_CLASSES = ("read-also", "readalso", "read_also")
RELATED_CLASSES = ("related",)
BLOCK_TAGS = {"p", "div", "aside", "section", "blockquote", "li", "h2", "h3", "h4", "h5", "span", "strong", "b"}
HEADINGS = {"h2", "h3", "h4", "h5"}
# A read-also block is a label and a link: if more than this much other text sits in
# the element it is a paragraph that happens to start with the words, not the block.
MAX_EXTRA_TEXT = 40
TRACKER_RE = re.compile(
    r"(pixel|beacon|/track(ing)?[/?.]|/open\.(gif|png)|doubleclick\.net|google-analytics\.com|"
    r"/stats\.|stats\.wp\.com|feedburner\.com/~r|/1x1\.|spacer\.gif|/b\.gif)",
    re.I,
)
_BLOCK_BREAK_RE = re.compile(r"<(/?(?:p|div|br|li|h\d|tr|blockquote|figcaption)\b[^>]*)>", re.I)
_BLANK_LINES_RE = re.compile(r"\n\s*\n+")


@dataclass
class CleanBody:
    html: str
    read_also: list[dict] = field(default_factory=list)  # [{"title", "url"}]
    related: list[dict] = field(default_factory=list)
    lead_image_url: str | None = None
    lead_image_caption: str | None = None
    lead_image_alt: str | None = None


def _attribute_filter(base: str | None):
    def check(tag: str, attr: str, value: str) -> str | None:
        if (tag, attr) in URL_ATTRIBUTES:
            return absolute_http_url(value, base=base)
        if attr == "dir":
            return value.lower() if value.lower() in ("rtl", "ltr", "auto") else None
        if attr in ("width", "height"):
            return value if value.isdigit() and len(value) <= 4 else None
        if attr == "lang":
            return value if re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*", value) else None
        return value

    return check


def _nh3(html: str, base: str | None, keep_class: bool) -> str:
    attributes = {k: set(v) for k, v in EMAIL_ATTRIBUTES.items()}
    tags = EMAIL_TAGS
    if keep_class:
        # The first pass keeps the containers and classes the site marks its blocks with.
        attributes["*"] = attributes["*"] | {"class"}
        tags = EMAIL_TAGS | STRUCTURE_TAGS
    return nh3.clean(
        html,
        tags=tags,
        clean_content_tags=DROP_WITH_CONTENT,
        attributes=attributes,
        attribute_filter=_attribute_filter(base),
        url_schemes={"http", "https"},
        link_rel="noopener noreferrer",
        strip_comments=True,
    )


def html_to_text(html: str | None) -> str:
    """Plain text of a fragment (summaries, captions): tags gone, entities decoded."""
    if not html:
        return ""
    spaced = _BLOCK_BREAK_RE.sub(r" <\1> ", html)
    text = nh3.clean(spaced, tags=set(), clean_content_tags=DROP_WITH_CONTENT)
    return clean_text(htmllib.unescape(text))


# Something a browser would take for markup: a tag, a comment, a CDATA section.
_MARKUP_RE = re.compile(r"<(?:/?[A-Za-z][^<>]*|!--.*?--|!\[CDATA\[.*?\]\])>", re.S)


def markup_to_text(value: str | None) -> str:
    """Titles and names are text: one that carries markup (`خبر <script>…</script> عاجل`,
    a feed's `<b>`) is reduced to its text, never kept as literal tags for the text part
    to show.  Text without a tag is left as it is (`a < b` stays)."""
    if not value or not _MARKUP_RE.search(value):
        return value or ""
    return html_to_text(value)


def _leading_text(el, limit: int = 80) -> str:
    """The first `limit` characters of an element's text, without joining all of it."""
    parts, size = [], 0
    for piece in el.itertext():
        parts.append(piece)
        size += len(piece)
        if size >= limit:
            break
    return "".join(parts)[:limit]


# A cheap test before the spelling-insensitive one: most elements start with neither label.
_LABEL_HINT_RE = re.compile(r"[اأإآ]قر|شاهد|[اأإآ]خبار|مواضيع|مقالات|read|related", re.I)


def _key_start(el, keys: tuple[str, ...]) -> str | None:
    text = _leading_text(el)
    if not _LABEL_HINT_RE.search(text):
        return None
    key = match_key(text)
    return next((k for k in keys if key.startswith(k)), None)


def _classes(el) -> str:
    return (el.get("class") or "").lower()


def _links(el) -> list[dict]:
    found = []
    for a in el.iter("a"):
        url = a.get("href")
        title = clean_title(a.text_content())
        if not url:
            continue
        if not title or match_key(title) in (READ_ALSO_KEYS + RELATED_KEYS):
            title = clean_title(a.get("title") or "") or url
        found.append({"title": title, "url": url})
    return found


def _drop(el) -> None:
    el.drop_tree()  # keeps the element's tail text in place


def _extra_text(el) -> int:
    """Characters in `el` that are neither the label nor link text."""
    text = match_key(el.text_content())
    for a in el.iter("a"):
        text = text.replace(match_key(a.text_content()), "", 1)
    for key in READ_ALSO_KEYS:
        if text.startswith(key):
            text = text[len(key) :]
            break
    return len(text)


def _lift_read_also(root) -> list[dict]:
    links: list[dict] = []
    # Children before parents, so the smallest element holding the block is the one taken.
    for el in reversed(list(root.iter())):
        if el is root or not isinstance(el.tag, str) or el.getparent() is None:
            continue
        by_class = any(c in _classes(el) for c in READ_ALSO_CLASSES)
        by_label = el.tag in BLOCK_TAGS and _key_start(el, READ_ALSO_KEYS) is not None
        if not (by_class or by_label):
            continue
        if by_label and not by_class and _extra_text(el) > MAX_EXTRA_TEXT:
            continue
        if el.tag in ("span", "strong", "b") and el.getparent() is not root:
            continue  # an inline label: its enclosing paragraph is the block, seen later
        links[:0] = _links(el)  # reversed walk: prepend to keep document order
        _drop(el)
    return links


def _lift_related(root) -> list[dict]:
    links: list[dict] = []
    for el in reversed(list(root.iter())):
        if el is root or not isinstance(el.tag, str) or el.getparent() is None:
            continue
        if any(c in _classes(el) for c in RELATED_CLASSES):
            links[:0] = _links(el)
            _drop(el)
            continue
        key = _key_start(el, RELATED_KEYS)
        if key is None or match_key(el.text_content()) != key:
            continue  # only an element that is the heading and nothing else
        # Climb to the outermost element that is still just the heading (<p><strong>…).
        heading = el
        while heading.getparent() is not None and heading.getparent() is not root:
            parent = heading.getparent()
            if match_key(parent.text_content()) != key:
                break
            heading = parent
        block: list[dict] = []
        sibling = heading.getnext()
        # The links that follow the heading, up to the next heading or the first non-link.
        while sibling is not None and sibling.tag not in HEADINGS and sibling.tag != "br":
            if sibling.tag != "a" and sibling.find(".//a") is None:
                break
            block.extend(_links(sibling))  # iter("a") includes the element itself
            following = sibling.getnext()
            _drop(sibling)
            sibling = following
        links[:0] = block
        _drop(heading)
    return links


def is_tracker_image(src: str | None, width: str | None = None, height: str | None = None) -> bool:
    """A tracking pixel: no source, a 1×1 (or 2×2) size, or a tracker-looking URL."""
    if not src:
        return True
    sizes = [width, height]
    if any(s is not None and s.strip().isdigit() and int(s) <= 2 for s in sizes):
        return True
    return bool(TRACKER_RE.search(src))


def is_lead_image_url(url: str | None) -> bool:
    """A lead image must be https and not a tracker (the email shows it at the top)."""
    return bool(url) and url.lower().startswith("https://") and not is_tracker_image(url)


def _is_tracker(img) -> bool:
    return is_tracker_image(img.get("src"), img.get("width"), img.get("height"))


def _lead_figure(root) -> tuple[str | None, str | None, str | None]:
    """A figure (or lone image) at the very top of the body is the article's lead image."""
    first = next((c for c in root if isinstance(c.tag, str)), None)
    if first is None or (root.text or "").strip():
        return None, None, None
    while first.tag in STRUCTURE_TAGS and not (first.text or "").strip():  # CMS wrappers
        inner = next((c for c in first if isinstance(c.tag, str)), None)
        if inner is None:
            return None, None, None
        first = inner
    img = first if first.tag == "img" else (first.find(".//img") if first.tag in ("figure", "p") else None)
    if img is None or (first.tag == "p" and clean_text(first.text_content())):
        return None, None, None
    if not is_lead_image_url(img.get("src")):
        return None, None, None  # an http image stays in the body, but is no lead image
    caption_el = first.find(".//figcaption") if first.tag == "figure" else None
    caption = clean_text(caption_el.text_content()) if caption_el is not None else None
    url, alt = img.get("src"), clean_text(img.get("alt") or "") or None
    _drop(first)
    return url, caption or None, alt


def _remove_empty(root) -> None:
    for el in reversed(list(root.iter("p", "div", "span", "li", "ul", "ol", "figure", "blockquote"))):
        if el is root or el.getparent() is None:
            continue
        if not el.text_content().strip() and el.find(".//img") is None and el.find(".//br") is None:
            _drop(el)


def sanitise_body(html: str | None, base_url: str | None = None, *, want_lead_image: bool = False) -> CleanBody:
    if not html or not html.strip():
        return CleanBody(html="")
    first = _nh3(html, base_url, keep_class=True)
    root = lxml.html.fragment_fromstring(first, create_parent="div")
    for img in list(root.iter("img")):
        if _is_tracker(img):
            _drop(img)
        elif img.get("alt") is None:
            img.set("alt", "")  # email clients show a missing alt as the file name
    for a in list(root.iter("a")):
        if not a.get("href"):
            a.drop_tag()  # its javascript: (or missing) link went in pass 1; keep the words
    read_also = _lift_read_also(root)
    related = _lift_related(root)
    lead = _lead_figure(root) if want_lead_image else (None, None, None)
    _remove_empty(root)
    inner = (htmllib.escape(root.text, quote=False) if root.text else "") + "".join(
        etree.tostring(child, encoding="unicode", method="html") for child in root
    )
    final = _BLANK_LINES_RE.sub("\n", _nh3(strip_embeddings(inner), base_url, keep_class=False)).strip()
    return CleanBody(
        html=final,
        read_also=_dedupe(read_also),
        related=_dedupe(related),
        lead_image_url=lead[0],
        lead_image_caption=lead[1],
        lead_image_alt=lead[2],
    )


def _dedupe(links: list[dict]) -> list[dict]:
    seen: set[str] = set()
    out = []
    for link in links:
        if link["url"] in seen:
            continue
        seen.add(link["url"])
        out.append(link)
    return out
