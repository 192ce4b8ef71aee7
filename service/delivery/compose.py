"""Per-recipient messages from a variant rendered once.

The expensive work (rendering, CSS inlining, encoding the subject and the From name,
choosing a MIME boundary) happens once per edition variant in `prepare()`.  Per
recipient `compose()` only fills in the two links, base64-encodes the two bodies (C
code, tens of microseconds for a 65 KB digest), adds the per-recipient headers and,
when configured, a DKIM signature.  Arabic HTML goes as base64, never
quoted-printable (which would cost six bytes a letter).

Headers, per recipient: Message-ID (stable per ledger row, so a message re-sent after a
crash carries the same id and mail clients fold the duplicate), List-Id,
List-Unsubscribe with an https one-click URL and a mailto, List-Unsubscribe-Post
(RFC 8058), Feedback-ID, and a VERP envelope sender naming the ledger row, so that a
bounce leads straight back to it (`delivery_for_bounce()`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from email.header import Header
from email.utils import format_datetime, formataddr, parseaddr

from service.config import Settings, get_settings
from service.models import utcnow
from service.rendering.views import PREFERENCES_URL, UNSUBSCRIBE_URL
from service.subscribers.tokens import link, make_token

CRLF = "\r\n"
# Headers DKIM signs; the List-Unsubscribe pair must be covered (RFC 8058 §4).
DKIM_HEADERS = [
    b"From", b"To", b"Subject", b"Date", b"Message-ID", b"MIME-Version", b"Content-Type",
    b"List-Id", b"List-Unsubscribe", b"List-Unsubscribe-Post", b"Feedback-ID",
]


@dataclass(frozen=True)
class VariantTemplate:
    """One edition × variant, ready to be personalised."""

    edition_id: int
    kind: str
    variant: str
    subject: str  # already RFC 2047-encoded, folded
    html: str
    text: str
    boundary: str


@dataclass(frozen=True)
class Composed:
    envelope_from: str
    message_id: str
    data: bytes


def _encode_header(name: str, value: str) -> str:
    if value.isascii():
        return value
    return Header(value, "utf-8", header_name=name).encode(linesep=CRLF)


def prepare(edition_id: int, kind: str, variant: str, subject: str, html: str, text: str) -> VariantTemplate:
    # '=_' never occurs in base64 output (only a final '=' or '=='), so the boundary
    # cannot collide with a body line.
    boundary = f"=_nashra_{edition_id}_{secrets.token_hex(8)}"
    subject = " ".join(subject.split())  # no CR/LF can reach a header
    return VariantTemplate(edition_id, kind, variant, _encode_header("Subject", subject), html, text, boundary)


def _b64(text: str) -> str:
    # encodebytes wraps at 76 characters with \n; SMTP wants CRLF.
    return base64.encodebytes(text.encode("utf-8")).decode("ascii").replace("\n", CRLF)


def _personalise(html: str, text: str, unsubscribe_url: str, preferences_url: str) -> tuple[str, str]:
    try:  # the rendering package's own substitution, when it is installed
        from service.rendering.personalise import personalise
        from service.rendering.views import RenderedVariant

        return personalise(
            RenderedVariant(subject="", html=html, text=text),
            unsubscribe_url=unsubscribe_url,
            preferences_url=preferences_url,
        )
    except ImportError:
        pass
    out = []
    for body in (html, text):
        out.append(body.replace(UNSUBSCRIBE_URL, unsubscribe_url).replace(PREFERENCES_URL, preferences_url))
    return out[0], out[1]


def _sig(settings: Settings, *parts: object) -> str:
    msg = ".".join(str(p) for p in parts).encode()
    return hmac.new(settings.secret_key.encode(), b"nashra.verp." + msg, hashlib.sha256).hexdigest()[:10]


def bounce_address(settings: Settings, delivery_id: int) -> str:
    """VERP: newsletter+b.<delivery id>.<hmac>@domain — no reader address in it."""
    local, _, domain = settings.mail_from_address.rpartition("@")
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
    domain = settings.mail_from_address.rpartition("@")[2]
    tag = _sig(settings, "mid", edition_id, subscriber_id)
    return f"<nashra.{edition_id}.{subscriber_id}.{tag}@{domain}>"


def list_id(settings: Settings, kind: str) -> str:
    ident = settings.list_id
    if kind == "alert" and ident.startswith("digest."):
        ident = "alerts." + ident.removeprefix("digest.")
    return f"{_encode_header('List-Id', settings.site_name)} <{ident}>"


@functools.lru_cache(maxsize=4)
def _dkim_key(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def dkim_sign(data: bytes, settings: Settings) -> bytes:
    if not (settings.dkim_selector and settings.dkim_private_key_path):
        return data
    import dkim

    domain = settings.mail_from_address.rpartition("@")[2]
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
    settings = settings or get_settings()
    unsubscribe_url = link("unsubscribe", subscriber_id, token_version, settings)
    preferences_url = link("preferences", subscriber_id, token_version, settings)
    html, text = _personalise(tpl.html, tpl.text, unsubscribe_url, preferences_url)
    domain = settings.mail_from_address.rpartition("@")[2]
    token = make_token("unsubscribe", subscriber_id, token_version, settings)
    mid = message_id(settings, tpl.edition_id, subscriber_id)
    name, addr = parseaddr(settings.mail_from)
    b = tpl.boundary
    headers = [
        f"From: {formataddr((name, addr), charset='utf-8')}",
        f"To: {to_addr}",
        f"Subject: {tpl.subject}",
        f"Date: {format_datetime(utcnow())}",
        f"Message-ID: {mid}",
        "MIME-Version: 1.0",
        f"List-Id: {list_id(settings, tpl.kind)}",
        f"List-Unsubscribe: <{unsubscribe_url}>,{CRLF} <mailto:unsubscribe@{domain}?subject=unsubscribe%20{token}>",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        f"Feedback-ID: {tpl.edition_id}:{tpl.kind}:nashra:{domain}",
        "Precedence: bulk",
        f"X-Entity-Ref-ID: {uuid.uuid5(uuid.NAMESPACE_URL, mid)}",
        f'Content-Type: multipart/alternative; boundary="{b}"',
    ]
    body = (
        f"--{b}{CRLF}Content-Type: text/plain; charset=utf-8{CRLF}Content-Transfer-Encoding: base64{CRLF}{CRLF}"
        f"{_b64(text)}"
        f"--{b}{CRLF}Content-Type: text/html; charset=utf-8{CRLF}Content-Transfer-Encoding: base64{CRLF}{CRLF}"
        f"{_b64(html)}"
        f"--{b}--{CRLF}"
    )
    data = (CRLF.join(headers) + CRLF + CRLF + body).encode("ascii")
    return Composed(bounce_address(settings, delivery_id), mid, dkim_sign(data, settings))
