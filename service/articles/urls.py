"""URLs from feeds: only absolute http(s), canonical form for ids, and where they point.

A feed URL is fetched by our workers from inside our network, so "where it points" is
checked on the resolved addresses, on every connection (transport.GuardedBackend: so on
every redirect hop too, and pinned to the address checked), not on the host string: `http://localtest.me/` or a DNS name
that resolves to 10.0.0.5 must be refused as surely as `http://127.0.0.1/`.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from service.articles.text import BIDI_EMBEDDINGS, BIDI_MARKS

ALLOWED_SCHEMES = ("http", "https")
# The URL columns are String(2000): a longer URL would fail the whole feed's store.
MAX_URL_LENGTH = 2000
# Query parameters that only track the reader; dropped from canonical URLs so that the
# same article shared with different campaigns is still one article.
TRACKING_PARAMS = ("utm_", "fbclid", "gclid", "mc_cid", "mc_eid", "igshid", "ref_src")


_BIDI_CONTROLS = dict.fromkeys(map(ord, BIDI_EMBEDDINGS + BIDI_MARKS))


class UnsafeURL(ValueError):
    """The URL is not http(s), has no host, or points at an address we may not fetch."""


def absolute_http_url(value: str | None, base: str | None = None) -> str | None:
    """`value` resolved against `base`, if the result is an http(s) URL with a host; else None."""
    if not value:
        return None
    # Bidi controls have no place in a link and can disguise one (…/\u202egpj.exe reads
    # as …/exe.jpg): removed, as from titles.  Other control characters refuse the link.
    value = value.strip().translate(_BIDI_CONTROLS)
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value) or len(value) > MAX_URL_LENGTH:
        return None
    try:
        if base:
            value = urljoin(base, value)
        parts = urlsplit(value)
        parts.port  # noqa: B018 — raises ValueError on a bad port
    except ValueError:
        return None
    if parts.scheme.lower() not in ALLOWED_SCHEMES or not parts.hostname:
        return None
    if len(value) > MAX_URL_LENGTH:  # checked on the joined URL: a relative one grows
        return None
    return value


def display_url(value: str) -> str:
    """A URL fit for a log line or an error message: no credentials, no query.

    Feed URLs sometimes carry an access key in the query string; logs never carry tokens.
    """
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:
        return value.split("?", 1)[0][:200]
    shown = urlunsplit((parts.scheme, host, parts.path, "", ""))
    return (shown + ("?…" if parts.query else ""))[:200]


def canonical_url(value: str) -> str:
    """Lower-case scheme and host, no default port, no fragment, no tracking parameters."""
    parts = urlsplit(value.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    if port and not ((scheme == "http" and port == 80) or (scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    if parts.username:
        host = f"{parts.username}@{host}"
    query = urlencode(
        [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not k.lower().startswith(TRACKING_PARAMS)]
    )
    return urlunsplit((scheme, host, parts.path or "/", query, ""))


def validate_feed_url(url: str) -> str:
    """Syntax only (no DNS): an absolute http(s) URL with a host and no credentials."""
    if not isinstance(url, str) or not url.strip():
        raise UnsafeURL("a feed URL is required, e.g. https://news.example/rss.xml")
    url = url.strip()
    good = absolute_http_url(url)
    if good is None:
        raise UnsafeURL(f"not an absolute http(s) URL: {display_url(url)!r}")
    if urlsplit(good).username or urlsplit(good).password:
        raise UnsafeURL("feed URLs may not carry a user name or password")
    return good


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved)


def resolve_checked(host: str, port: int, *, allow_private: bool) -> str:
    """The address to connect to for `host`: with private addresses refused, the first of
    its addresses, after checking that every one of them is public.

    Every address must be public: a resolver that answers one public and one private
    address is otherwise a coin toss away from our internal network.
    """
    if allow_private:
        return host
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnsafeURL(f"cannot resolve {host}: {exc.strerror or exc}") from None
    for info in infos:
        address = info[4][0]
        if not is_public_address(address):
            raise UnsafeURL(
                f"{host} resolves to {address}, a loopback or private address "
                "(set FEED_ALLOW_PRIVATE=true to allow it)"
            )
    return infos[0][4][0]


def check_destination(url: str, *, allow_private: bool) -> None:
    """Refuse a URL that is not http(s) or whose host resolves to a non-public address."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ALLOWED_SCHEMES or not parts.hostname:
        raise UnsafeURL(f"only http and https URLs may be fetched, not {display_url(url)!r}")
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    resolve_checked(parts.hostname, port, allow_private=allow_private)
