"""What changed between two states of an article, and does it matter to a reader?

`major` is what readers are told about again ("updated" in the next digest, possibly an
alert): the headline changed, the editors added a correction or update note, or the
body changed by more than MAJOR_BODY_CHANGE of its words.  Everything else that changes
the content — a typo, a re-worded sentence, a new photo — is `minor`: recorded, not news.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass

from service.articles.sanitise import html_to_text
from service.articles.text import match_key

# Share of the body's words that must change (replaced, added, removed) to be news.
MAJOR_BODY_CHANGE = 0.20
# Editors' notes that make any change news: "تصحيح:" (correction), "تحديث:" (update) …
NOTE_RE = re.compile(
    r"(تصحيح|تصويب|استدراك|تحديث|محدث|تم تحديث|تعديل|correction|update[d]?)\s*[:：\-–—]",
    re.I,
)
_WORD_RE = re.compile(r"\w+", re.U)


@dataclass(frozen=True)
class Content:
    title: str
    summary: str
    body_html: str
    lead_image_url: str | None


def content_hash(c: Content) -> str:
    """sha256 over the fields that make a version; whitespace runs do not count."""
    parts = [c.title, c.summary, " ".join(c.body_html.split()), c.lead_image_url or ""]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def _words(html: str) -> list[str]:
    return _WORD_RE.findall(html_to_text(html).casefold())


def body_change(old_html: str, new_html: str) -> float:
    """Share of words changed, 0.0 … 1.0 (difflib on word sequences)."""
    old, new = _words(old_html), _words(new_html)
    if not old and not new:
        return 0.0
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    same = sum(block.size for block in matcher.get_matching_blocks())
    return 1.0 - same / max(len(old), len(new))


def _notes(text: str) -> list[str]:
    return [m.group(0) for m in NOTE_RE.finditer(text)]


def classify(old: Content, new: Content) -> tuple[str, str]:
    """('major' | 'minor', why) for two different contents of the same article."""
    reasons_major: list[str] = []
    reasons_minor: list[str] = []
    if old.title != new.title:
        if match_key(old.title) != match_key(new.title):
            reasons_major.append("title changed")
        else:
            reasons_minor.append("title punctuation/diacritics changed")
    old_text = html_to_text(old.body_html) + " " + old.summary + " " + old.title
    new_text = html_to_text(new.body_html) + " " + new.summary + " " + new.title
    old_notes, new_notes = _notes(old_text), _notes(new_text)
    if len(new_notes) > len(old_notes):
        added = [n for n in new_notes if n not in old_notes] or new_notes[-1:]
        reasons_major.append(f"correction/update note added ({added[0].strip()})")
    if old.body_html != new.body_html:
        share = body_change(old.body_html, new.body_html)
        line = f"body changed {share:.0%} (threshold {MAJOR_BODY_CHANGE:.0%})"
        (reasons_major if share > MAJOR_BODY_CHANGE else reasons_minor).append(line)
    if old.summary != new.summary:
        reasons_minor.append("summary changed")
    if (old.lead_image_url or "") != (new.lead_image_url or ""):
        reasons_minor.append("lead image changed")
    if reasons_major:
        return "major", "; ".join(reasons_major + reasons_minor)
    return "minor", "; ".join(reasons_minor) or "wording changed"
