"""The RTL email rules of docs/email-rules.md, as a checker every rendered email must pass.

`check_email(html, text)` returns a list of problems in plain words (empty = passes).
It reads the final, inlined HTML the way a mail client would get it, so a rule kept
only in a <style> block that premailer dropped would fail here.
"""

from __future__ import annotations

import re

import lxml.html
from lxml import etree

from service.rendering.bidi import RLM, line_needs_rlm, ltr_runs, unmarked_runs
from service.rendering.viewmodels import PREFERENCES_URL, UNSUBSCRIBE_URL

MAX_HTML_BYTES = 100 * 1024  # Gmail clips at about 102 KB
ARABIC_FONTS = ("tahoma", "noto naskh arabic", "geeza pro", "segoe ui")
PLACEHOLDERS = (UNSUBSCRIBE_URL, PREFERENCES_URL)

_JINJA = re.compile(r"\{\{|\}\}|\{%|%\}|\{#|#\}")
_HEX = re.compile(r"#([0-9a-fA-F]+)\b")
_COLOUR_PROP = re.compile(r"(?:^|[;{\s])(color|background-color)\s*:\s*([^;}\"']+)", re.I)
_COLOUR_OK = re.compile(r"^(#[0-9a-fA-F]{6}|transparent|inherit|initial|currentcolor)(\s*!important)?$", re.I)
_LOGICAL_ALIGN = re.compile(r"text-align\s*:\s*(start|end)\b", re.I)
_TAG_IN_TEXT = re.compile(r"<\s*/?\s*(a|p|div|span|br|td|tr|table|img|h[1-6]|strong|b|em)\b[^>]*>", re.I)
_ENTITY_IN_TEXT = re.compile(r"&(amp|lt|gt|quot|nbsp|zwnj|#\d+|#x[0-9a-f]+);", re.I)
_SKIP_TEXT = {"style", "script", "title", "head"}


def _style(el) -> str:
    return (el.get("style") or "").lower().replace(" ", "")


def _describe(el) -> str:
    cls = el.get("class")
    return f"<{el.tag}{' class=' + repr(cls) if cls else ''}>"


def _under_ltr(el) -> bool:
    while el is not None:
        if (el.get("dir") or "").lower() == "ltr":
            return True
        el = el.getparent()
    return False


def _check_root(doc, problems: list[str]) -> None:
    if doc.get("lang") != "ar" or doc.get("dir") != "rtl":
        problems.append('<html> must carry lang="ar" dir="rtl"')
    body = doc.find("body")
    if body is None:
        problems.append("no <body>")
        return
    first = next((c for c in body if isinstance(c.tag, str)), None)
    if first is None:
        problems.append("<body> is empty")
        return
    style = _style(first)
    if first.get("dir") != "rtl" or first.get("lang") != "ar":
        problems.append(f'the first wrapper inside <body> ({_describe(first)}) needs dir="rtl" lang="ar"')
    if "direction:rtl" not in style or "text-align:right" not in style:
        problems.append("the first wrapper inside <body> needs direction:rtl; text-align:right inline")
    if not any(font in style for font in (f.replace(" ", "") for f in ARABIC_FONTS)):
        problems.append("the first wrapper needs a font stack with Arabic everywhere (Tahoma, 'Noto Naskh Arabic', …)")
    m = re.search(r"line-height:([0-9.]+)(;|$)", style)
    if not m or not 1.5 <= float(m.group(1)) <= 2.0:
        problems.append("the first wrapper needs a unitless line-height around 1.7")


def _check_head(doc, problems: list[str]) -> None:
    metas = doc.xpath("//meta[@name='color-scheme']")
    if not metas or "light" not in metas[0].get("content", "") or "dark" not in metas[0].get("content", ""):
        problems.append('missing <meta name="color-scheme" content="light dark">')
    if not doc.xpath("//meta[@charset]") or doc.xpath("//meta[@charset]")[0].get("charset").lower() != "utf-8":
        problems.append('missing <meta charset="utf-8">')


def _check_preheader(doc, problems: list[str]) -> None:
    pre = doc.xpath("//body//*[contains(concat(' ', normalize-space(@class), ' '), ' preheader ')]")
    if not pre:
        problems.append("no hidden preheader (an element with class 'preheader')")
        return
    style = _style(pre[0])
    if "display:none" not in style:
        problems.append("the preheader must be hidden with an inline display:none")
    if not "".join(pre[0].itertext()).strip(" \u034f\u200c\u00a0"):
        problems.append("the preheader is empty")


def _check_tables(doc, problems: list[str]) -> None:
    for table in doc.iter("table"):
        where = _describe(table)
        if table.get("role") != "presentation":
            problems.append(f'{where}: layout tables need role="presentation"')
        if table.get("dir") != "rtl":
            problems.append(f'{where}: layout tables need dir="rtl"')
        align = (table.get("align") or "").lower()
        if "text-align:right" not in _style(table) and align != "right":
            problems.append(f"{where}: layout tables need explicit right alignment (text-align:right)")
        if align and align not in ("right", "center"):
            problems.append(f'{where}: align="{align}" on a table in an RTL email')


def _check_css(html: str, doc, problems: list[str]) -> None:
    css_texts = [s.text or "" for s in doc.iter("style")]
    css_texts += [el.get("style") for el in doc.iter() if isinstance(el.tag, str) and el.get("style")]
    for css in css_texts:
        if _LOGICAL_ALIGN.search(css):
            problems.append("text-align:start/end found: use right (older clients ignore logical values)")
            break
    bad_hex = sorted({m.group(0) for css in css_texts for m in _HEX.finditer(css) if len(m.group(1)) != 6})
    for el in doc.iter():
        if isinstance(el.tag, str):
            for attr in ("bgcolor", "color"):
                value = el.get(attr)
                if value and not re.fullmatch(r"#[0-9a-fA-F]{6}", value):
                    bad_hex.append(f"{attr}={value}")
    if bad_hex:
        problems.append(f"colours must be 6-digit hex: {', '.join(bad_hex[:5])}")
    bad_values = sorted(
        {
            f"{m.group(1)}:{m.group(2).strip()}"
            for css in css_texts
            for m in _COLOUR_PROP.finditer(css)
            if not _COLOUR_OK.match(m.group(2).strip())
        }
    )
    if bad_values:
        problems.append(f"colour values must be 6-digit hex: {', '.join(bad_values[:5])}")


def _own_local_app() -> tuple[str, ...]:
    """The web copy's address while PUBLIC_URL is a local one (tests, the demo): the
    renderer writes it from PUBLIC_URL, http and all; in production PUBLIC_URL is the
    site's https address and the link falls under the rule like any other."""
    from service.config import get_settings

    settings = get_settings()
    return (settings.public_url + "/e/",) if settings.public_url_is_local else ()


def _check_images_links(doc, problems: list[str], allow_http: bool) -> None:
    schemes = ("https://", "http://") if allow_http else ("https://",)
    links = schemes + _own_local_app()
    for img in doc.iter("img"):
        src = img.get("src") or ""
        if img.get("alt") is None:
            problems.append(f"<img src={src!r}> has no alt")
        if not (img.get("width") or "").isdigit():
            problems.append(f"<img src={src!r}> needs a numeric width attribute")
        if not src.startswith(schemes):
            problems.append(f"<img src={src!r}>: images must load over https")
    for a in doc.iter("a"):
        href = a.get("href")
        if href is None:
            problems.append("<a> without href")
        elif not (href.startswith(links) or href in PLACEHOLDERS):
            problems.append(f"link {href[:80]!r} is not https")


def _check_bidi(doc, problems: list[str]) -> None:
    if doc.xpath("//bdi"):
        problems.append("<bdi> found: Gmail, Outlook and Yahoo ignore it; use <span dir=\"ltr\">")
    body = doc.find("body")
    if body is None:
        return
    seen: set[str] = set()
    for el in body.iter():
        if not isinstance(el.tag, str) or el.tag in _SKIP_TEXT:
            continue
        # el.text belongs to el; el.tail belongs to el's parent.
        for text, owner in ((el.text, el), (el.tail, el.getparent())):
            if not text or owner is None or owner.tag in _SKIP_TEXT or _under_ltr(owner):
                continue
            for run in ltr_runs(text):
                if run not in seen:
                    seen.add(run)
                    problems.append(f'"{run}" must be wrapped in <span dir="ltr">')


def _check_text(text: str, problems: list[str]) -> None:
    if not text.strip():
        problems.append("the text part is empty")
        return
    if _JINJA.search(text):
        problems.append("unrendered Jinja in the text part")
    if _TAG_IN_TEXT.search(text) or _ENTITY_IN_TEXT.search(text):
        problems.append("the text part holds HTML tags or entities: write it for reading")
    for n, line in enumerate(text.splitlines(), 1):
        if line_needs_rlm(line) and not line.startswith(RLM):
            problems.append(f"text line {n} would run left-to-right: start it with U+200F ({line[:40]!r})")
        for run in unmarked_runs(line)[:1]:
            problems.append(f"text line {n}: {run[:40]!r} must sit between two U+200E marks")


def check_email(html: str, text: str, *, allow_http: bool = False) -> list[str]:
    """Every RTL rule of docs/email-rules.md; `allow_http` only for the local demo's http:// site."""
    problems: list[str] = []
    size = len(html.encode("utf-8"))
    if size >= MAX_HTML_BYTES:
        problems.append(f"HTML is {size / 1024:.1f} KB: Gmail clips above ~100 KB")
    if _JINJA.search(html):
        problems.append("unrendered Jinja in the HTML")
    try:
        doc = lxml.html.document_fromstring(html)
    except (etree.ParserError, ValueError) as exc:
        return [*problems, f"HTML does not parse: {exc}"]
    _check_root(doc, problems)
    _check_head(doc, problems)
    _check_preheader(doc, problems)
    _check_tables(doc, problems)
    _check_css(html, doc, problems)
    _check_images_links(doc, problems, allow_http)
    _check_bidi(doc, problems)
    _check_text(text, problems)
    return problems
