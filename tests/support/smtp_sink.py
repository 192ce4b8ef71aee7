"""A real SMTP peer for tests: aiosmtpd on loopback, recording what it accepted.

Replies can be scripted per recipient (`sink.rcpt_replies["x@y"] = "550 5.1.1 no such user"`,
`sink.data_replies[...]`) to drive the delivery code through every SMTP answer.

Fault injection, for the delivery tests:

* `sink.mail_reply = "535 5.7.8 …"`       — the reply to every MAIL FROM;
* `sink.faults["x@y"] = "close_mid_data"` — answer 354, read a little of the message,
  then reset the connection (RST) before the final dot is read;
* `sink.faults["x@y"] = "no_reply"`       — read the whole message, never answer
  (recorded in `sink.unanswered`, not in `sink.messages`): RFC 1047's case;
* `sink.delay = 0.05`                     — wait this long before answering each DATA;
* any reply starting with 421 closes the connection after it is sent, as servers do;
* `SmtpSink(auth={"user": "pass"})`, `SmtpSink(tls_context=ctx)`, `SmtpSink(ssl_context=ctx)`
  — AUTH, STARTTLS, and TLS from the first byte (smtps);
* `silent_server()` — a port that accepts connections and never says a word.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from tests.support.net import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    at: float = field(default_factory=time.monotonic)

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)


class _Handler:
    def __init__(self, sink: SmtpSink):
        self.sink = sink

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.sink.mail_reply:
            return self.sink.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.sink.rcpt_replies.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        sink = self.sink
        for rcpt in envelope.rcpt_tos:
            reply = sink.data_replies.get(rcpt.lower())
            if reply:
                return reply
        received = Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
        if any(sink.faults.get(r.lower()) == "no_reply" for r in envelope.rcpt_tos):
            with sink.lock:
                sink.unanswered.append(received)
            # Hold the reply until the client gives up (or the sink stops).
            deadline = time.monotonic() + 60
            while not sink._stopping and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return "451 4.3.0 too late"
        if sink.delay:
            await asyncio.sleep(sink.delay)
        with sink.lock:
            sink.messages.append(received)
            sink.cond.notify_all()
        return "250 2.0.0 Message accepted"


class _FaultySMTP(SMTP):
    """aiosmtpd's server with the faults above wired in."""

    def __init__(self, sink: SmtpSink, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sink = sink

    def connection_made(self, transport):
        if self._original_transport is None and self.transport is None:
            with self._sink.lock:
                self._sink.connections += 1
        super().connection_made(transport)

    async def push(self, status: str):
        await super().push(status)
        if isinstance(status, str) and status.startswith("421") and self._sink.close_on_421 and self.transport is not None:
            self.transport.close()

    async def smtp_DATA(self, arg: str) -> None:
        env = self.envelope
        if env is not None and any(self._sink.faults.get(r.lower()) == "close_mid_data" for r in env.rcpt_tos):
            await super().push("354 End data with <CR><LF>.<CR><LF>")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader.read(256), 2)
            with self._sink.lock:
                self._sink.dropped += 1
            sock = self.transport.get_extra_info("socket") if self.transport else None
            if sock is not None:  # linger 0: close with RST, as a crashing server would
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if self.transport is not None:
                self.transport.abort()
            return
        await super().smtp_DATA(arg)


class _Controller(Controller):
    def __init__(self, sink: SmtpSink, *args, **kwargs):
        self._sink = sink
        super().__init__(*args, **kwargs)

    def factory(self):
        return _FaultySMTP(self._sink, self.handler, **self.SMTP_kwargs)


class SmtpSink:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, auth: dict[str, str] | None = None,
                 tls_context=None, ssl_context=None):
        self.host = host
        self.port = port or free_port()
        self.messages: list[Received] = []
        self.unanswered: list[Received] = []
        self.rcpt_replies: dict[str, str] = {}
        self.data_replies: dict[str, str] = {}
        self.faults: dict[str, str] = {}
        self.mail_reply: str | None = None
        self.delay: float = 0.0
        self.close_on_421 = True
        self.connections = 0
        self.dropped = 0
        self._stopping = False
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        server_kwargs: dict = {"timeout": 60, "hostname": "sink.test"}
        if auth is not None:
            def authenticator(server, session, envelope, mechanism, data):
                ok = isinstance(data, LoginPassword) and auth.get(data.login.decode()) == data.password.decode()
                return AuthResult(success=ok, handled=False)

            server_kwargs.update(authenticator=authenticator, auth_require_tls=tls_context is not None)
        if tls_context is not None:
            server_kwargs.update(tls_context=tls_context)
        self._controller = _Controller(
            self, _Handler(self), hostname=host, port=self.port, data_size_limit=50_000_000,
            server_kwargs=server_kwargs, ssl_context=ssl_context,
        )

    def start(self) -> None:
        self._stopping = False
        self._controller.start()
        with self.lock:  # start() opens one connection of its own to check the server is up
            self.connections = 0

    def stop(self) -> None:
        self._stopping = True
        self._controller.stop()

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()
            self.unanswered.clear()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Block until at least `count` messages arrived (or time out)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return list(self.messages)

    def recipients(self) -> list[str]:
        with self.lock:
            return [r for m in self.messages for r in m.rcpt_tos]

    def copies(self) -> Counter:
        """How many accepted messages each recipient got (duplicates show as > 1)."""
        return Counter(self.recipients())


@contextlib.contextmanager
def silent_server(host: str = "127.0.0.1") -> Iterator[int]:
    """A port that completes TCP handshakes (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind((host, 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


__all__ = ["SmtpSink", "Received", "SMTP", "silent_server"]
