"""A real SMTP peer for tests: aiosmtpd on loopback, recording what it accepted.

Replies can be scripted per recipient (`sink.rcpt_replies["x@y"] = "550 5.1.1 no such user"`,
`sink.data_replies[...]`) to drive the delivery code through every SMTP answer.
"""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


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

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.sink.rcpt_replies.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        for rcpt in envelope.rcpt_tos:
            reply = self.sink.data_replies.get(rcpt.lower())
            if reply:
                return reply
        with self.sink.lock:
            self.sink.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
            )
            self.sink.cond.notify_all()
        return "250 2.0.0 Message accepted"


class SmtpSink:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port or _free_port()
        self.messages: list[Received] = []
        self.rcpt_replies: dict[str, str] = {}
        self.data_replies: dict[str, str] = {}
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self._controller = Controller(
            _Handler(self), hostname=host, port=self.port, data_size_limit=50_000_000,
            server_kwargs={"timeout": 60},
        )

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


__all__ = ["SmtpSink", "Received", "SMTP"]
