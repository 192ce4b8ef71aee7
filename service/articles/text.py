"""Plain-text hygiene for what feeds give us: titles, summaries, captions, names.

Arabic text is normalised to NFC (canonical composition: the letters a reader sees do
not change, only how they are encoded) — never NFKC, which would rewrite presentation
forms and ligatures.  Bidi controls are the one class of characters we remove: an
unbalanced RIGHT-TO-LEFT OVERRIDE in a title spills into the subject line and the rest
of the email and can disguise a link; in a title even the marks are noise because the
templates set the direction themselves.
"""

from __future__ import annotations

import re
import unicodedata

# LRE RLE PDF LRO RLO, LRI RLI FSI PDI: embeddings, overrides and isolates.
BIDI_EMBEDDINGS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
# LRM RLM ALM: marks.  Legitimate inside body text (around Latin runs), stray in a title.
BIDI_MARKS = "\u200e\u200f\u061c"

_EMBEDDINGS_RE = re.compile(f"[{BIDI_EMBEDDINGS}]")
_ALL_BIDI_RE = re.compile(f"[{BIDI_EMBEDDINGS}{BIDI_MARKS}]")
# C0/C1 controls except tab and newline (which become spaces or stay, as the caller wants).
_CONTROLS_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACE_RE = re.compile(r"\s+")

# For matching only (category names, "did the title really change?"): harakat, tatweel
# and the hamza/alef, yeh/alef-maqsura and teh-marbuta/heh spelling variants.
_HARAKAT_RE = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0640]")
_FOLD = str.maketrans({"أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا", "ى": "ي", "ة": "ه", "ؤ": "و", "ئ": "ي"})
_NOT_WORD_RE = re.compile(r"[\W_]+")


def nfc(value: str) -> str:
    return unicodedata.normalize("NFC", value)


def clean_title(value: str | None) -> str:
    """One line, NFC, no control or bidi characters, single spaces."""
    if not value:
        return ""
    value = nfc(value)
    value = _ALL_BIDI_RE.sub("", value)
    value = value.replace("\r", " ").replace("\n", " ").replace("\t", " ")
    value = _CONTROLS_RE.sub("", value)
    return _SPACE_RE.sub(" ", value).strip()


def clean_text(value: str | None) -> str:
    """Summaries, captions, names: NFC, no controls or bidi embeddings, single spaces."""
    if not value:
        return ""
    value = nfc(value)
    value = _EMBEDDINGS_RE.sub("", value)
    value = _CONTROLS_RE.sub(" ", value)
    return _SPACE_RE.sub(" ", value).strip()


def strip_embeddings(value: str) -> str:
    """Body text keeps its marks (LRM/RLM) but loses overrides that could leak."""
    return _CONTROLS_RE.sub("", _EMBEDDINGS_RE.sub("", nfc(value)))


def match_key(value: str) -> str:
    """A spelling-insensitive key: 'عربي و دولي' and 'عربي ودولي' and 'عربيّ ودولي' agree."""
    value = clean_title(value).casefold()
    value = _HARAKAT_RE.sub("", value).translate(_FOLD)
    return _NOT_WORD_RE.sub("", value)


def truncate(value: str, limit: int) -> str:
    """Cut at a word boundary and mark the cut; short values pass through."""
    if len(value) <= limit:
        return value
    cut = value[: limit - 1]
    space = cut.rfind(" ")
    if space > limit * 0.6:
        cut = cut[:space]
    return cut.rstrip(" ،,.؛;:") + "…"


# A sentence ends at . ! ? ؟ or … followed by a space (or the end): "3.5" and "news.example" do not.
_SENTENCE_END_RE = re.compile(r"[.!?؟…۔]+(?=\s|$)")
_TRAILING_PUNCTUATION = " ،,.؛;:-–—"
ELLIPSIS = "…"


def shorten(value: str, limit: int, *, sentence_share: float = 0.5) -> str:
    """Fit `value` (one paragraph) into `limit` characters without cutting a phrase:
    after the last whole sentence that fits (when it keeps at least `sentence_share` of
    the room), else after the last whole word; either way marked with an ellipsis (a
    sentence's full stop becomes it; a ؟ or ! stays, the ellipsis after it).  Short
    values pass through (spacing normalised)."""
    value = " ".join(value.split())
    if len(value) <= limit:
        return value
    room = limit - len(ELLIPSIS)
    ends = [m.end() for m in _SENTENCE_END_RE.finditer(value) if m.end() <= room]
    if ends and ends[-1] >= limit * sentence_share:
        cut = value[: ends[-1]]
        return cut.rstrip(".۔…") + ELLIPSIS
    words = value[: room + 1]  # one more: a word that ends exactly at the room still fits
    space = words.rfind(" ")
    cut = words[:space] if space > 0 else value[:room]  # one endless word: cut it, nothing better
    return cut.rstrip(_TRAILING_PUNCTUATION) + ELLIPSIS
