"""The web copy of an edition («اعرض في المتصفح»): its address, and the page it serves.

Every digest, alert, correction and catch-up carries a link to the copy of the variant
its reader got.  The link is made once per variant, when the variant is rendered, so it
is the same for every reader of that variant and holds nothing of any of them:

    {PUBLIC_URL}/e/{edition_id}/{ref}

`ref` is HMAC-SHA256(SECRET_KEY, "nashra.web-copy:{edition_id}:{variant}"), its first
16 bytes in base64url (22 characters).  It names the variant without spelling out its
key (a reader's section list), and nobody without the key can make one: with the archive
private, copies cannot be enumerated.  The page finds the variant by computing the ref
of each variant the edition has (a digest has a few dozen at most).

The page is the stored, inlined HTML of that variant with the reader's own links taken
out: the footer's preferences/unsubscribe line (between `<!--nashra:personal-->`
markers in templates/emails/_base/layout.html) becomes a signup link, the line that
tells a reader why they get the mail says what the page is, the «اعرض في المتصفح» row
goes, and any per-recipient placeholder still left is dropped, so no reader's token can
appear in it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

import sqlalchemy as sa
from markupsafe import escape
from sqlalchemy.orm import Session

from service.config import get_settings
from service.models import Edition, EditionKind, EditionStatus, EditionVariant
from service.rendering.viewmodels import PREFERENCES_URL, UNSUBSCRIBE_URL

REF_BYTES = 16
REF_LENGTH = 22  # base64url of REF_BYTES, unpadded
ALL = "all"  # the archive's variant: every section, no «فاتك؟» block
# Drafts were never sent; a cancelled edition was stopped as a mistake.
HIDDEN = (EditionStatus.draft, EditionStatus.cancelled)

_WEB_COPY_ROW = re.compile(r"<!--nashra:web-copy-->.*?<!--/nashra:web-copy-->", re.S)
_PERSONAL = re.compile(r"<!--nashra:personal-->(.*?)<!--/nashra:personal-->", re.S)
_PERSONAL_LINE = re.compile(r"^\s*(<p\b[^>]*>)\s*(<a\b[^>]*>)", re.S)
_REASON = re.compile(r"<!--nashra:reason-->\s*(<p\b[^>]*>).*?<!--/nashra:reason-->", re.S)
_HREF = re.compile(r'href="[^"]*"')
_PLACEHOLDER = re.compile(r"__NASHRA_[A-Z0-9_]+__")
_HEAD = re.compile(r"<head\b[^>]*>", re.I)
SIGNUP_LABEL = "اشترك في النشرة"


def ref_for(edition_id: int, variant: str, secret_key: str | None = None) -> str:
    key = (secret_key or get_settings().secret_key).encode()
    mac = hmac.new(key, f"nashra.web-copy:{edition_id}:{variant}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:REF_BYTES]).rstrip(b"=").decode("ascii")


def path_for(edition_id: int, variant: str) -> str:
    return f"/e/{edition_id}/{ref_for(edition_id, variant)}"


def url_for(edition_id: int, variant: str) -> str:
    return get_settings().public_url + path_for(edition_id, variant)


def share_url(edition: Edition) -> str | None:
    """The copy an editor shares: the "all" variant (every section), for an edition that
    may be shown; a catch-up has no such variant (each reader's lists their own alerts)."""
    if edition.status in HIDDEN or edition.kind == EditionKind.catchup:
        return None
    return url_for(edition.id, ALL)


@dataclass(frozen=True)
class Found:
    edition: Edition
    variant: str
    html: str | None  # the stored HTML; None: not stored (the archive's "all" of a digest)


def find(session: Session, edition_id: int, ref: str) -> Found | None:
    """The variant `ref` names, if the edition may be shown; None for anything else."""
    if len(ref) != REF_LENGTH:
        return None
    edition = session.get(Edition, edition_id)
    if edition is None or edition.status in HIDDEN:
        return None
    stored = dict(
        session.execute(
            sa.select(EditionVariant.variant, EditionVariant.html).where(EditionVariant.edition_id == edition_id)
        ).all()
    )
    for variant in [*stored, ALL]:
        if hmac.compare_digest(ref_for(edition_id, variant), ref):
            return Found(edition, variant, stored.get(variant))
    return None


def _signup_line(region: str, signup_url: str) -> str:
    # Keep the line's own (inlined) paragraph and link styles; only its target and words change.
    found = _PERSONAL_LINE.match(region)
    if found is None:
        return ""
    p, a = found.groups()
    a = _HREF.sub(f'href="{escape(signup_url)}"', a, count=1)
    return f"{p}{a}{SIGNUP_LABEL}</a></p>"


def web_copy_note(site_name: str) -> str:
    return f"هذه نسخة الويب من رسالة أرسلتها {site_name} إلى قرّائها."


def public_html(html: str, *, signup_url: str, indexable: bool, canonical_url: str | None = None,
                site_name: str | None = None) -> str:
    """A variant's stored HTML as a web page anyone may see: nothing of any reader in it."""
    html = _WEB_COPY_ROW.sub("", html)
    if site_name:
        # "You get this mail because you chose…" speaks to a reader; whoever opens the
        # page may be none.
        note = str(escape(web_copy_note(site_name)))
        html = _REASON.sub(lambda m: f"{m.group(1)}{note}</p>", html)
    html = _PERSONAL.sub(lambda m: _signup_line(m.group(1), signup_url), html)
    # The reader's links outside the marked line (an older template), then any other
    # per-recipient placeholder: gone, whatever it was for.
    html = html.replace(UNSUBSCRIBE_URL, str(escape(signup_url))).replace(PREFERENCES_URL, str(escape(signup_url)))
    html = _PLACEHOLDER.sub("", html)
    head = []
    if not indexable:
        head.append('<meta name="robots" content="noindex">')
    if canonical_url:
        head.append(f'<link rel="canonical" href="{escape(canonical_url)}">')
    if head:
        lines = "\n".join(head)
        html, n = _HEAD.subn(lambda m: m.group(0) + "\n" + lines, html, count=1)
        if not n:  # no <head> to put them in: a browser reads them first thing all the same
            html = lines + "\n" + html
    return html
