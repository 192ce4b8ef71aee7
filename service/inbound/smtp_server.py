"""The inbound SMTP server for the bounce domain: DSNs and complaints come back here.

Point the MX of the envelope sender's domain (or the relay's bounce forwarding) at it.
It accepts only what we could have sent out:

* RCPT must be a VERP address that `delivery_for_bounce()` verifies (its HMAC), a
  one-off's (`+s.`/`+e.`: confirmation, welcome, test copy) that `one_off_for_bounce()`
  verifies, or one of the feedback-loop addresses given on the command line; anything
  else, a badly signed VERP address included, is refused with 550 5.1.1 before a byte
  of message is read;
* a message over `MAX_INBOUND_BYTES` is refused with 552 while it streams in;
* lines may be as long as the message may be: RFC 5321's 1,000 octets is a limit for
  senders, and real bounces break it (an HTML notice on one line, a quoted original);
* each accepted message goes to `handle_inbound()`, once per recipient, each inside
  its own `session_scope()`, in a worker thread — the database never blocks the event
  loop, so one slow transaction does not stall every other connection.

A database error answers 451: the sending MTA keeps the report and tries again, and
`handle_inbound()` being idempotent makes the retry harmless.
"""

from __future__ import annotations

import asyncio
import signal
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from service.db import session_scope
from service.delivery.compose import delivery_for_bounce, one_off_for_bounce
from service.inbound.reports import MAX_INBOUND_BYTES, InboundResult, handle_inbound
from service.logs import get_logger, redact

log = get_logger(__name__)

# A real DSN names one VERP address; a relay batching reports might name a few.
MAX_RECIPIENTS = 20


def _process(rcpt: str, content: bytes) -> InboundResult:
    with session_scope() as session:
        return handle_inbound(session, rcpt, content)


class _BounceHandler:
    def __init__(self, feedback_addresses: frozenset[str]):
        self.feedback_addresses = feedback_addresses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if delivery_for_bounce(address) is None and one_off_for_bounce(address) is None \
                and address.strip().lower() not in self.feedback_addresses:
            log.info("bounce_server.rcpt_refused", rcpt=redact(address), peer=session.peer[0] if session.peer else None)
            return "550 5.1.1 no such bounce address"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        results = []
        for rcpt in envelope.rcpt_tos:
            try:
                results.append(await asyncio.to_thread(_process, rcpt, content))
            except Exception:  # noqa: BLE001 — the peer must retry, not lose the report
                log.exception("bounce_server.failed", rcpt=redact(rcpt))
                return "451 4.3.0 temporary failure, try again later"
        if results and all(r.outcome == "rejected" for r in results):
            return f"554 5.6.0 report refused: {results[0].reason[:200]}"
        return "250 2.0.0 " + ", ".join(r.outcome for r in results)


class _LongLinesSMTP(SMTP):
    # aiosmtpd refuses a DATA line over 1,001 octets with "500 Line too long"; the whole
    # message is already bounded by data_size_limit.
    line_length_limit = MAX_INBOUND_BYTES


class _Controller(Controller):
    def factory(self):
        return _LongLinesSMTP(self.handler, **self.SMTP_kwargs)


class BounceServer:
    """aiosmtpd on (host, port); `start()`/`stop()`, or `serve_forever()` for the CLI."""

    def __init__(self, host: str = "127.0.0.1", port: int = 2525, *, feedback_addresses: tuple[str, ...] = (),
                 hostname: str | None = None):
        self.host, self.port = host, port
        handler = _BounceHandler(frozenset(a.strip().lower() for a in feedback_addresses))
        self._controller = _Controller(
            handler,
            hostname=host,
            port=port,
            data_size_limit=MAX_INBOUND_BYTES,
            server_hostname=hostname,
            timeout=60,
        )
        self._stop = threading.Event()
        self._started = False

    def start(self) -> None:
        self._controller.start()
        self._started = True
        log.info("bounce_server.started", host=self.host, port=self.port)

    def stop(self) -> None:
        self._stop.set()
        self._controller.stop()
        log.info("bounce_server.stopped", host=self.host, port=self.port)

    def serve_forever(self) -> None:
        """Until SIGTERM or Ctrl-C; starts the server first unless `start()` already did."""
        if not self._started:
            self.start()
        # SIGTERM (docker stop) ends the wait like Ctrl-C does.
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        try:
            while not self._stop.wait(3600):
                pass
        finally:
            self._controller.stop()
