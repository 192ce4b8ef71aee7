"""Fetch one feed over HTTP: bounded in time, size and redirects, conditional, polite.

Redirects are followed by hand so that each hop's scheme is checked and loops are named;
the transport (transport.GuardedTransport) checks the address of every connection, so a
public feed that redirects to http://169.254.169.254/ is refused.  The whole fetch —
every hop, headers and body — shares one deadline of FEED_TIMEOUT seconds: httpx's
timeouts are per network operation, so a server that trickles one byte a second would
otherwise never time out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib.metadata import version

import httpcore
import httpx

from service.articles.transport import GuardedTransport
from service.articles.urls import (
    UnsafeURL,
    absolute_http_url,
    display_url,
)
from service.config import Settings

MAX_REDIRECTS = 5
REDIRECT_CODES = (301, 302, 303, 307, 308)
ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, application/json;q=0.9, "
    "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1"
)


# httpx wraps httpcore's errors in its own transport; ours lets them through unwrapped.
TIMEOUTS = (httpx.TimeoutException, httpcore.TimeoutException)
TRANSPORT_ERRORS = (
    httpx.HTTPError,
    httpx.InvalidURL,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ConnectionNotAvailable,
)


class FeedError(Exception):
    """A feed we cannot use this time; the message is one line for the operator."""


class FetchError(FeedError):
    pass


@dataclass(frozen=True)
class FetchResult:
    url: str  # after redirects
    status: int  # 200 or 304
    body: bytes = b""
    content_type: str = ""
    etag: str | None = None
    last_modified: str | None = None

    @property
    def not_modified(self) -> bool:
        return self.status == 304


def user_agent(settings: Settings) -> str:
    return f"Nashra/{_version()} (+{settings.public_url}; newsletter feed reader)"


def _version() -> str:
    try:

        return version("nashra")
    except Exception:  # noqa: BLE001 — running from a checkout without metadata
        return "0"


def _megabytes(n: int) -> str:
    return f"{n / 1_000_000:g} MB"


def fetch_feed(
    url: str,
    settings: Settings,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
) -> FetchResult:
    """GET the feed; 304 when the validators still match.  Raises FetchError."""
    deadline = time.monotonic() + settings.feed_timeout
    headers = {"User-Agent": user_agent(settings), "Accept": ACCEPT, "Accept-Encoding": "gzip, deflate"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    if absolute_http_url(url) is None:
        raise FetchError(f"refused: only http and https URLs may be fetched, not {display_url(url)!r}")
    transport = GuardedTransport(allow_private=settings.feed_allow_private, deadline=deadline)
    seen: list[str] = []
    try:
        with httpx.Client(transport=transport, timeout=settings.feed_timeout, follow_redirects=False) as client:
            while True:
                seen.append(url)
                with client.stream("GET", url, headers=headers) as response:
                    if response.status_code in REDIRECT_CODES:
                        url = _next_hop(url, response, seen)
                        continue
                    if response.status_code == 304:
                        return FetchResult(
                            url=url,
                            status=304,
                            etag=_header_value(response.headers.get("ETag") or etag, 500),
                            last_modified=_header_value(response.headers.get("Last-Modified") or last_modified, 100),
                        )
                    if response.status_code != 200:
                        raise FetchError(f"HTTP {response.status_code} {response.reason_phrase}".strip())
                    body = _read_capped(response, settings.feed_max_bytes, settings.feed_timeout)
                    return FetchResult(
                        url=url,
                        status=200,
                        body=body,
                        content_type=response.headers.get("Content-Type", ""),
                        etag=_header_value(response.headers.get("ETag"), 500),
                        last_modified=_header_value(response.headers.get("Last-Modified"), 100),
                    )
    except UnsafeURL as exc:
        raise FetchError(f"refused: {exc}") from None
    except TIMEOUTS as exc:
        raise FetchError(f"timed out after {settings.feed_timeout:g}s ({type(exc).__name__})") from None
    except TRANSPORT_ERRORS as exc:
        raise FetchError(f"connection failed: {type(exc).__name__}: {exc}"[:300]) from None


def _next_hop(url: str, response: httpx.Response, seen: list[str]) -> str:
    location = response.headers.get("Location")
    target = absolute_http_url(location, base=url)
    if target is None:
        raise FetchError(f"redirect to a non-http(s) or missing location: {display_url(str(location))!r}")
    if target in seen:
        raise FetchError(f"redirect loop: {display_url(target)} was already visited")
    if len(seen) > MAX_REDIRECTS:
        raise FetchError(f"more than {MAX_REDIRECTS} redirects")
    return target


def _read_capped(response: httpx.Response, limit: int, timeout_s: float) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise FetchError(f"feed is {_megabytes(int(declared))}, over the {_megabytes(limit)} limit (FEED_MAX_BYTES)")
    chunks: list[bytes] = []
    total = 0
    try:
        # iter_bytes yields decoded bytes: a gzip bomb is capped on what it expands to.
        for chunk in response.iter_bytes():
            total += len(chunk)
            if total > limit:
                raise FetchError(f"feed body exceeds the {_megabytes(limit)} limit (FEED_MAX_BYTES)")
            chunks.append(chunk)
    except TIMEOUTS:
        # Headers came; the body did not finish: a slow or trickling server.
        raise FetchError(f"server too slow: body still arriving at the {timeout_s:g}s deadline (FEED_TIMEOUT)") from None
    return b"".join(chunks)


def _header_value(value: str | None, limit: int) -> str | None:
    if not value or len(value) > limit:
        return None
    return value
