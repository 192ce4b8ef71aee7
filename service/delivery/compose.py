"""Per-recipient messages from a variant rendered once.

The expensive work (rendering and CSS inlining upstream; here encoding the subject
and the From name, choosing a MIME boundary, base64-encoding the static stretches of
both bodies) happens once per edition variant in `prepare()`, through the rendering
package's `PreparedVariant`.  Per recipient `compose()` only fills in the two links,
adds the per-recipient headers and, when configured, a DKIM signature.  Arabic goes
as base64, never quoted-printable (which would cost six bytes a letter).

Headers, per recipient: Message-ID (stable per ledger row, so a message re-sent after a
crash carries the same id and mail clients fold the duplicate), List-Id,
List-Unsubscribe with an https one-click URL and a mailto, List-Unsubscribe-Post
(RFC 8058), Feedback-ID, and a VERP envelope sender naming the ledger row, so that a
bounce leads straight back to it (`delivery_for_bounce()`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from dataclasses import dataclass
from email.utils import parseaddr

from service.config import Settings, get_settings
from service.rendering.mime import PreparedVariant
from service.rendering.viewmodels import RenderedVariant
from service.subscribers.tokens import link

CRLF = "\r\n"
# Headers DKIM signs; the List-Unsubscribe pair must be covered (RFC 8058 §4).
DKIM_HEADERS = [
    b"From", b"To", b"Subject", b"Date", b"Message-ID", b"MIME-Version", b"Content-Type",
    b"List-Id", b"List-Unsubscribe", b"List-Unsubscribe-Post", b"Feedback-ID",
]


@dataclass(frozen=True)
class VariantTemplate:
    """One edition × variant, ready to be personalised (rendering's PreparedVariant inside)."""

    edition_id: int
    kind: str
    variant: str
    prepared: PreparedVariant


@dataclass(frozen=True)
class Composed:
    envelope_from: str
    message_id: str
    data: bytes


def prepare(edition_id: int, kind: str, variant: str, subject: str, html: str, text: str,
            settings: Settings | None = None) -> VariantTemplate:
    """Everything the whole audience of a variant shares, computed once."""
    settings = settings or get_settings()
    domain = _from_address(settings.mail_from).rpartition("@")[2]
    subject = " ".join(subject.split())  # no CR/LF can reach a header
    static_headers = {
        "List-Id": list_id(settings, kind),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Feedback-ID": f"{edition_id}:{kind}:nashra:{domain}",
        "Precedence": "bulk",
    }
    prepared = PreparedVariant(
        RenderedVariant(subject=subject, html=html, text=text),
        from_addr=settings.mail_from,
        headers=static_headers,
    )
    return VariantTemplate(edition_id, kind, variant, prepared)


@functools.lru_cache(maxsize=8)
def _from_address(mail_from: str) -> str:
    """MAIL_FROM's bare address, parsed once: email.utils.parseaddr costs ~40 µs, and
    every message needs the domain three times."""
    return parseaddr(mail_from)[1]


def _sig(settings: Settings, *parts: object) -> str:
    msg = ".".join(str(p) for p in parts).encode()
    return hmac.new(settings.secret_key.encode(), b"nashra.verp." + msg, hashlib.sha256).hexdigest()[:10]


def bounce_address(settings: Settings, delivery_id: int) -> str:
    """VERP: newsletter+b.<delivery id>.<hmac>@domain — no reader address in it."""
    local, _, domain = _from_address(settings.mail_from).rpartition("@")
    local = local.split("+", 1)[0]
    return f"{local}+b.{delivery_id}.{_sig(settings, delivery_id)}@{domain}"


_VERP = re.compile(r"^[^@+]+\+b\.(\d+)\.([0-9a-f]{10})@", re.IGNORECASE)


def delivery_for_bounce(address: str, settings: Settings | None = None) -> int | None:
    """The ledger row a bounce was addressed to, or None for a forged/foreign address."""
    settings = settings or get_settings()
    m = _VERP.match(parseaddr(address)[1] or address)
    if not m:
        return None
    delivery_id = int(m[1])
    if not hmac.compare_digest(m[2].lower(), _sig(settings, delivery_id)):
        return None
    return delivery_id


def message_id(settings: Settings, edition_id: int, subscriber_id: int) -> str:
    domain = _from_address(settings.mail_from).rpartition("@")[2]
    tag = _sig(settings, "mid", edition_id, subscriber_id)
    return f"<nashra.{edition_id}.{subscriber_id}.{tag}@{domain}>"


def list_id(settings: Settings, kind: str) -> str:
    """`<digest.nashra.example>`; alerts are their own list, so readers can filter them."""
    ident = settings.list_id
    if kind == "alert" and ident.startswith("digest."):
        ident = "alerts." + ident.removeprefix("digest.")
    return f"<{ident}>"


@functools.lru_cache(maxsize=4)
def _dkim_key(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def dkim_sign(data: bytes, settings: Settings) -> bytes:
    if not (settings.dkim_selector and settings.dkim_private_key_path):
        return data
    import dkim

    domain = _from_address(settings.mail_from).rpartition("@")[2]
    signature = dkim.sign(
        data,
        settings.dkim_selector.encode(),
        domain.encode(),
        _dkim_key(str(settings.dkim_private_key_path)),
        include_headers=DKIM_HEADERS,
        canonicalize=(b"relaxed", b"relaxed"),
    )
    return signature + data


def compose(
    tpl: VariantTemplate,
    *,
    delivery_id: int,
    subscriber_id: int,
    token_version: int,
    to_addr: str,
    settings: Settings | None = None,
) -> Composed:
    """One recipient's message: their links, their Message-ID, their List-Unsubscribe."""
    settings = settings or get_settings()
    unsubscribe_url = link("unsubscribe", subscriber_id, token_version, settings)
    preferences_url = link("preferences", subscriber_id, token_version, settings)
    domain = _from_address(settings.mail_from).rpartition("@")[2]
    token = unsubscribe_url.rsplit("/", 1)[1]
    mid = message_id(settings, tpl.edition_id, subscriber_id)
    data = tpl.prepared.build(
        to_addr=to_addr,
        unsubscribe_url=unsubscribe_url,
        preferences_url=preferences_url,
        message_id=mid,
        headers={
            "List-Unsubscribe": f"<{unsubscribe_url}>, <mailto:unsubscribe@{domain}?subject=unsubscribe%20{token}>",
        },
    )
    return Composed(bounce_address(settings, delivery_id), mid, dkim_sign(data, settings))
