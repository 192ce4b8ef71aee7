"""An httpx transport that connects only where it may, and never past a deadline.

Two guarantees that httpx's default transport cannot give, both enforced where the
socket is opened (httpcore's public NetworkBackend interface):

* Address policy, pinned.  The host is resolved here, every address is checked, and the
  connection goes to the address that was checked; TLS still verifies the host name.
  Checking a name and then letting the library resolve it again would leave a window
  for DNS rebinding (a public answer for the check, 127.0.0.1 for the connect).
* One deadline for the whole fetch.  httpx's timeouts bound each network operation, so
  a server that sends its headers one byte at a time never trips them; here every read
  and write gets at most the time left before the deadline.
"""

from __future__ import annotations

import time

import httpcore
import httpx

from service.articles.urls import resolve_checked


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, deadline: float):
        self._inner = inner
        self._deadline = deadline

    def _bound(self, timeout: float | None) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the fetch deadline passed")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._bound(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._bound(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname: str | None = None, timeout: float | None = None):
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, self._bound(timeout)), self._deadline)

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    def __init__(self, *, allow_private: bool, deadline: float):
        self._inner = httpcore.SyncBackend()
        self._allow_private = allow_private
        self._deadline = deadline

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        # Raises UnsafeURL (not an httpcore error): the caller reports it as a refusal.
        address = resolve_checked(host, port, allow_private=self._allow_private)
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ConnectTimeout("the fetch deadline passed")
        stream = self._inner.connect_tcp(
            address,
            port,
            timeout=left if timeout is None else min(timeout, left),
            local_address=local_address,
            socket_options=socket_options,
        )
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(self, path, timeout=None, socket_options=None):  # pragma: no cover
        raise httpcore.ConnectError("feeds are not fetched over unix sockets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _Body(httpx.SyncByteStream):
    def __init__(self, response: httpcore.Response):
        self._response = response

    def __iter__(self):
        yield from self._response.stream

    def close(self) -> None:
        self._response.close()


class GuardedTransport(httpx.BaseTransport):
    """HTTP/1.1 through GuardedBackend; httpcore errors propagate for the caller to word."""

    def __init__(self, *, allow_private: bool, deadline: float):
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=2,
            retries=0,
            network_backend=GuardedBackend(allow_private=allow_private, deadline=deadline),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._pool.handle_request(
            httpcore.Request(
                method=request.method,
                url=httpcore.URL(
                    scheme=request.url.raw_scheme,
                    host=request.url.raw_host,
                    port=request.url.port,
                    target=request.url.raw_path,
                ),
                headers=request.headers.raw,
                content=request.stream,
                extensions=request.extensions,
            )
        )
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()
