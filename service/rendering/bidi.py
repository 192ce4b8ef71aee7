"""Keeping Latin text, signed numbers, phone numbers and links in order inside Arabic.

In a right-to-left paragraph the Unicode bidi algorithm reorders weak characters:
`OPEC+` comes out as `+OPEC`, `+962 6 123 4567` as `4567 123 6 +962`, and after an
Arabic word `2.5%` as `%2.5` (the digits become Arabic numbers, rule W2).

In the HTML body each such run goes into `<span dir="ltr">`: `<bdi>` would do in a
browser, but Gmail, Outlook and Yahoo drop it.

Outside the body there is no markup: the Subject header, the preheader an inbox shows
as the snippet (Gmail drops the HTML spans there) and the text part.  There each run
is put between two U+200E LEFT-TO-RIGHT MARKs, and a line whose first strong character
would make a client lay it out left-to-right starts with U+200F RIGHT-TO-LEFT MARK.
Why LRM/RLM and not the isolates LRI…PDI (U+2066/U+2069), measured in Chromium
(tests/test_rendering_bidi_marks.py, in dir=rtl, dir=auto and per-line plain-text
containers): both put every run of the issue's list in reading order; the only case
marks cannot fix — a URL with Arabic path segments, which needs an embedding — does not
occur here, because the text part writes links in their ASCII (percent-encoded) form,
the form plain-text linkifiers take whole.  The marks are Unicode 1.1, honoured by every
bidi implementation and kept by every sanitiser; the isolates are Unicode 6.3, and
U+2066–U+2069 are stripped as "Trojan Source" controls by hardened pipelines (our own
alert input cleaning among them), after which nothing is left of them and every run is
reordered again.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote, urlsplit, urlunsplit

from markupsafe import Markup, escape

from service.rendering.viewmodels import PREFERENCES_URL, UNSUBSCRIBE_URL

RLM = "\u200f"
LRM = "\u200e"

_LATIN = "A-Za-z\u00c0-\u024f"
_ALNUM = f"{_LATIN}0-9"
# A run starts on a Latin letter, a digit or a sign, may hold spaces and punctuation
# in its middle, and ends on a letter, digit, `+`, `%` or `)`: trailing sentence
# punctuation stays with the Arabic sentence around it.
_RUN = re.compile(
    rf"[{_ALNUM}+(](?:[ \u00a0.,\-\u2013+&'\u2019/:_@#%()]*[{_ALNUM}+%)])*"
)
_HAS_LATIN = re.compile(f"[{_LATIN}]")
# A link is one run, whatever it holds (a personal-link placeholder becomes a link per
# recipient); the punctuation that ends a sentence after it is not part of it.
_URL = re.compile(
    rf"(?:https?://[^\s<>\"\u200e\u200f]+|{re.escape(UNSUBSCRIBE_URL)}|{re.escape(PREFERENCES_URL)})"
)
_URL_TAIL = ".,;:!?\u060c\u061b\u061f\u00bb)"
_URL_SAFE = "/%:@!$&'()*+,;=-._~?#[]"
_DASHED = re.compile(r"\d[-\u2013]\d")


def needs_ltr(run: str) -> bool:
    """Would this run be reordered in an RTL paragraph? Plain numbers (2021, 17:33) are not."""
    if _HAS_LATIN.search(run) or "+" in run or "%" in run:
        return True
    # A phone number (06 123 4567, 079-123-4567) or a dashed date: its digit groups
    # would come out in reverse.  "2021 17:33" (a year, then a time) reads right as is.
    if sum(c.isdigit() for c in run) < 7:
        return False
    return run[0] in "0(" or bool(_DASHED.search(run))


def ltr_runs(text: str) -> list[str]:
    """The runs in `text` that must sit inside `<span dir="ltr">`."""
    return [m.group(0) for m in _RUN.finditer(text) if needs_ltr(m.group(0))]


def wrap_ltr(value: object) -> Markup:
    """Escape plain text for HTML and put each LTR run in `<span dir="ltr">`.

    Only plain text is accepted: running this over markup would wrap pieces of tags.
    """
    if value is None:
        return Markup("")
    if isinstance(value, Markup):
        raise TypeError("wrap_ltr takes plain text; this value is already markup")
    text = str(value)
    out: list[str] = []
    last = 0
    for m in _RUN.finditer(text):
        run = m.group(0)
        if not needs_ltr(run):
            continue
        out.append(escape(text[last : m.start()]))
        out.append(Markup('<span dir="ltr">') + escape(run) + Markup("</span>"))
        last = m.end()
    out.append(escape(text[last:]))
    return Markup("").join(out)


def _first_directional_class(line: str) -> str | None:
    for ch in line:
        cls = unicodedata.bidirectional(ch)
        if cls in ("L", "R", "AL", "EN", "AN"):
            return cls
    return None


def line_needs_rlm(line: str) -> bool:
    """Would a plain-text client lay this line out left-to-right (Latin, digit or URL first)?"""
    return _first_directional_class(line) in ("L", "EN", "AN")


def rtl_text(text: str) -> str:
    """The text part: every line through `rtl_line`; runs of blank lines dropped."""
    lines = []
    blank = 0
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line:
            blank += 1
            if blank > 1 or not lines:
                continue
        else:
            blank = 0
        lines.append(rtl_line(line) if line else line)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


def ascii_url(url: str) -> str:
    """The URL as RFC 3986 has it: the host in IDNA, other non-ASCII percent-encoded.

    Plain-text linkifiers take an ASCII link whole; one with Arabic path segments they
    may cut, and in a right-to-left line its segments come out of order.
    """
    if url.isascii():
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        host = quote(host, safe="")
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    if parts.username:
        netloc = f"{quote(parts.username, safe=_URL_SAFE)}@{netloc}"
    return urlunsplit((parts.scheme, netloc, *(quote(p, safe=_URL_SAFE) for p in parts[2:])))


def _spans(text: str) -> list[tuple[int, int, bool]]:
    """(start, end, is_link) of each run that needs isolating, in order."""
    spans: list[tuple[int, int, bool]] = []
    last = 0
    for m in _URL.finditer(text):
        url = m.group(0)
        if not url.startswith("__"):
            url = url.rstrip(_URL_TAIL)
        spans += _ltr_spans(text, last, m.start())
        spans.append((m.start(), m.start() + len(url), True))
        last = m.start() + len(url)
    return spans + _ltr_spans(text, last, len(text))


def _ltr_spans(text: str, start: int, end: int) -> list[tuple[int, int, bool]]:
    return [(m.start(), m.end(), False) for m in _RUN.finditer(text, start, end) if needs_ltr(m.group(0))]


def mark_runs(text: str) -> str:
    """Plain text with every link and every LTR run between two LRMs (links in ASCII)."""
    out: list[str] = []
    last = 0
    for start, end, is_link in _spans(text):
        run = text[start:end]
        if _is_marked(text, start, end):  # marked already (twice is harmless, but noise)
            continue
        out += (text[last:start], LRM, ascii_url(run) if is_link else run, LRM)
        last = end
    out.append(text[last:])
    return "".join(out)


def unmarked_runs(line: str) -> list[str]:
    """The runs of an already marked line that are not between two LRMs (for checkers)."""
    return [line[start:end] for start, end, _ in _spans(line) if not _is_marked(line, start, end)]


def _is_marked(text: str, start: int, end: int) -> bool:
    return 0 < start and end < len(text) and text[start - 1] == LRM and text[end] == LRM


def rtl_line(line: str) -> str:
    """One line that reads right in a right-to-left (or direction-guessing) view: its
    runs marked, and U+200F first when it would otherwise be laid out left-to-right.
    For the Subject, the preheader and each line of the text part."""
    marked = mark_runs(line)
    return RLM + marked if line_needs_rlm(marked) else marked
