"""Keeping Latin text, signed numbers and phone numbers in order inside Arabic.

In a right-to-left paragraph the Unicode bidi algorithm reorders weak characters:
`OPEC+` comes out as `+OPEC` and `+962 6 123 4567` as `4567 123 6 +962`.  `<bdi>`
would fix that in a browser, but Gmail, Outlook and Yahoo drop it, so every such run
goes into `<span dir="ltr">` (HTML) and every plain-text line that a client would lay
out left-to-right starts with U+200F RIGHT-TO-LEFT MARK.
"""

from __future__ import annotations

import re
import unicodedata

from markupsafe import Markup, escape

RLM = "\u200f"

_LATIN = "A-Za-z\u00c0-\u024f"
_ALNUM = f"{_LATIN}0-9"
# A run starts on a Latin letter, a digit or a sign, may hold spaces and punctuation
# in its middle, and ends on a letter, digit, `+`, `%` or `)`: trailing sentence
# punctuation stays with the Arabic sentence around it.
_RUN = re.compile(
    rf"[{_ALNUM}+(](?:[ \u00a0.,\-\u2013+&'\u2019/:_@#%()]*[{_ALNUM}+%)])*"
)
_HAS_LATIN = re.compile(f"[{_LATIN}]")
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
    """Start every line that would run left-to-right with U+200F; drop runs of blank lines."""
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
        if line_needs_rlm(line):
            line = RLM + line
        lines.append(line)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"
