"""The signed parts of a tracked link: `{PUBLIC_URL}/r/<link id>.<sig><reader token>`.

`sig` is a MAC of the link id under a key derived from SECRET_KEY: a link nobody registered, or an id
changed by hand, is refused, so `/r/` redirects only to URLs an edition carried.

The reader token (24 URL-safe characters after "." and up to two "~" fillers) is what unique counting needs and
nothing more: `uid`, a keyed hash of (edition, subscriber) that cannot be turned back
into the reader without SECRET_KEY and the whole subscriber table, the time the message
was built (whether a click came seconds after delivery: a scanner), and a MAC over
both, so nobody can inflate the unique count with made-up tokens.  The token is made per
recipient when the message is composed and is never stored: the click feeds `uid` to a
HyperLogLog and forgets it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import struct
import time
from dataclasses import dataclass

from service.config import Settings, get_settings
from service.rendering.viewmodels import CLICK_TOKEN_SIZE

SIG_CHARS = 11  # 8 bytes of HMAC, base64url: forging one is 2^64 guesses
TOKEN_CHARS = CLICK_TOKEN_SIZE
MAX_REF = 80  # longer than any link we make: refused before any work
# id . sig, then "." and the reader token (after up to two "~": CLICK_FILLER, put there by
# the MIME code), or a bare "." (the web copy, whose placeholder was taken out), or nothing.
_REF = re.compile(rf"([1-9][0-9]{{0,17}})\.([A-Za-z0-9_-]{{{SIG_CHARS}}})(?:\.(?:~{{0,2}}([A-Za-z0-9_-]{{{TOKEN_CHARS}}}))?)?")


@dataclass(frozen=True)
class Ref:
    """A verified `/r/` path."""

    link_id: int
    uid: bytes | None  # the reader's keyed hash for this edition, when the token came with it
    sent_at: int | None  # when the message was built (Unix seconds)
    token: str | None  # as it came, to be checked against the link's edition


@functools.lru_cache(maxsize=8)
def _key(secret_key: str, purpose: bytes) -> bytes:
    # One key per purpose, derived from SECRET_KEY, so no value made for one purpose
    # passes for another.
    return hashlib.sha256(b"nashra.click." + purpose + b"." + secret_key.encode()).digest()


@functools.lru_cache(maxsize=8)
def _token_macs(secret_key: str) -> tuple:
    # Both MACs of the reader token, keyed once: it is made once per message, and a
    # copy of a keyed BLAKE2b skips the key's own block.
    return (hashlib.blake2b(key=_key(secret_key, b"uid"), digest_size=8),
            hashlib.blake2b(key=_key(secret_key, b"token"), digest_size=6))


def _digest(settings: Settings, purpose: bytes, data: bytes, size: int) -> bytes:
    # Keyed BLAKE2b (a MAC by design, RFC 7693 §2.5): one call, about a third of an
    # HMAC-SHA256's cost — and the reader token is made once per message.
    return hashlib.blake2b(data, key=_key(settings.secret_key, purpose), digest_size=size).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def link_sig(link_id: int, settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    return _b64(_digest(settings, b"link", str(link_id).encode(), 8))


def link_url(link_id: int, settings: Settings | None = None) -> str:
    """The tracked link without its reader token (links.py adds "." and the token's placeholder)."""
    settings = settings or get_settings()
    return f"{settings.public_url}/r/{link_id}.{link_sig(link_id, settings)}"


def reader_token(edition_id: int, subscriber_id: int, settings: Settings | None = None,
                 now: float | None = None) -> str:
    """The per-recipient part of every tracked link of one message: 24 URL-safe characters."""
    settings = settings or get_settings()
    uid_mac, token_mac = _token_macs(settings.secret_key)
    uid = uid_mac.copy()
    uid.update(b"%d.%d" % (edition_id, subscriber_id))
    body = uid.digest() + (int(now if now is not None else time.time()) & 0xFFFFFFFF).to_bytes(4, "big")
    check = token_mac.copy()
    check.update(b"%d." % edition_id + body)
    body += check.digest()
    return base64.urlsafe_b64encode(body).decode("ascii")  # 18 bytes: 24 characters, no padding


def parse(ref: str, settings: Settings | None = None) -> Ref | None:
    """The link id (and reader token) of a `/r/` path, or None when it is not one we signed."""
    if len(ref) > MAX_REF or not ref.isascii():
        return None
    m = _REF.fullmatch(ref)  # not match(): "$" would let a trailing newline through
    if m is None:
        return None
    settings = settings or get_settings()
    link_id = int(m[1])
    if not hmac.compare_digest(m[2], link_sig(link_id, settings)):
        return None
    if m[3] is None:
        return Ref(link_id, None, None, None)
    raw = base64.urlsafe_b64decode(m[3] + "=" * (-len(m[3]) % 4))
    return Ref(link_id, raw[:8], struct.unpack(">I", raw[8:12])[0], m[3])


def token_valid(ref: Ref, edition_id: int, settings: Settings | None = None) -> bool:
    """Whether the reader token was made by us for this link's edition."""
    if ref.token is None:
        return True
    settings = settings or get_settings()
    raw = base64.urlsafe_b64decode(ref.token + "=" * (-len(ref.token) % 4))
    expected = _digest(settings, b"token", b"%d." % edition_id + raw[:12], 6)
    return hmac.compare_digest(raw[12:], expected)
