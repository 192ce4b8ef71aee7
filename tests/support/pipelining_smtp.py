"""A small SMTP server that offers ESMTP PIPELINING (RFC 2920), for tests and benchmarks.

aiosmtpd does not advertise PIPELINING, so a client that pipelines when the server allows
it cannot be tested against tests/support/smtp_sink.py.  This one is our own, on asyncio,
in a thread of its own:

    with PipeliningSmtpServer() as server:      # or server.start() … server.stop()
        send to 127.0.0.1:server.port
        server.wait_for(1)
        t = server.messages[0]   # .mail_from, .rcpt_tos, .data, .pipelined

What it records:

* every transaction (`server.transactions`; the ones that ended in an accepted message are
  `server.messages`): envelope sender, accepted recipients, refused recipients with their
  replies, the data (dot-unstuffed, as the client meant it), the final reply, and
  **`pipelined`**: whether the RCPT commands and DATA had arrived before the server wrote
  its reply to MAIL, i.e. the client sent MAIL, RCPT… and DATA in one turn.  As RFC 2920
  asks of a server, replies are held until the input holds no complete command (or a
  command needs an answer before the client can go on: DATA's 354, the end of data), so a
  client that waits for each reply (smtplib) shows `pipelined=False`, and one that writes
  its commands together shows True; and **`chained`**: whether MAIL had arrived before the
  server answered the end of data of the connection's previous message, i.e. the client
  sent it in the same turn as that message's final dot (RFC 2920 §3.1);
* `server.arrivals` (wall-clock time of each accepted message), `server.per_second()`
  (messages per calendar second) and `server.max_in_window(1.0)` (the most in any sliding
  second) — for rate-limit tests;
* `server.connections` (accepted so far), `server.current_connections`,
  `server.max_connections` (the most open at once) — for connection-cap tests.

Scripted replies (addresses compared lower-cased):

* `server.rcpt_replies["x@y"] = "550 5.1.1 no such user"` (or "450 4.2.0 …") — at RCPT;
* `server.data_replies["x@y"] = "452 …"` — the reply to the end of data for a message to x@y;
* `server.mail_reply = "535 5.7.8 …"` — the reply to every MAIL;
* `server.messages_per_connection = N` — after N messages on one connection the next MAIL
  gets `421 4.7.0` and the connection is closed (a relay's per-connection limit);
* `server.rcpt_delays["x@y"] = 0.5` — a slow RCPT reply (seconds, or a threading.Event:
  wait until it is set); `server.data_delay` — seconds before each end-of-data reply;
* any scripted reply that starts with 421 closes the connection after it is sent;
* `PipeliningSmtpServer(pipelining=False)` — the same server without the extension.

Not supported (use smtp_sink for these): AUTH, STARTTLS, BDAT/CHUNKING.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

MAX_LINE = 4096  # a command line longer than this is refused (RFC 5321 says 512)
MAX_DATA_LINE = 1_000_000
MAX_MESSAGE = 50_000_000

_MAIL = re.compile(r"^MAIL FROM:\s*<([^<>]*)>(.*)$", re.IGNORECASE)
_RCPT = re.compile(r"^RCPT TO:\s*<([^<>]*)>(.*)$", re.IGNORECASE)


@dataclass
class Transaction:
    """One MAIL … (RCPT …)* [DATA …] exchange on one connection."""

    connection: int
    mail_from: str
    rcpt_tos: list[str] = field(default_factory=list)  # accepted
    refused: dict[str, str] = field(default_factory=dict)  # recipient → reply
    data: bytes | None = None  # None: no message was transferred
    reply: str | None = None  # the answer to the end of data (or to a refused DATA)
    pipelined: bool = False
    chained: bool = False  # MAIL had arrived before the server answered the previous message's end of data
    at: float = 0.0  # time.time() when the message was accepted

    # stream offsets (bytes received on the connection), to decide `pipelined`
    _mail_reply_sent_at: int | None = field(default=None, repr=False)

    @property
    def accepted(self) -> bool:
        return self.data is not None and (self.reply or "").startswith("250")

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data or b"", policy=email.policy.default)


class _Session(asyncio.Protocol):
    def __init__(self, server: PipeliningSmtpServer, number: int):
        self.server = server
        self.number = number
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.received = 0  # bytes received so far on this connection
        self.more = asyncio.Event()
        self.closed = False
        self.pending: list[bytes] = []
        self.awaiting_mail_flush: Transaction | None = None
        self.dot_answered_at: int | None = None  # bytes received when the last end of data was answered
        self.task: asyncio.Task | None = None

    # --- asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server._opened(self)
        self.task = asyncio.get_running_loop().create_task(self._run())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.received += len(data)
        self.more.set()

    def eof_received(self):
        self.closed = True
        self.more.set()
        return False  # close the transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.more.set()
        self.server._closed(self)

    # --- I/O helpers
    def reply(self, line: str) -> None:
        self.pending.append(line.encode("utf-8", "replace") + b"\r\n")

    def flush(self) -> None:
        if self.pending and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.pending))
        self.pending.clear()
        txn = self.awaiting_mail_flush
        if txn is not None:
            # What had arrived when the server answered MAIL: the rest came in a later turn.
            txn._mail_reply_sent_at = self.received
            self.awaiting_mail_flush = None

    async def readline(self, limit: int) -> bytes | None:
        while True:
            idx = self.buf.find(b"\n")
            if idx >= 0:
                line = bytes(self.buf[: idx + 1])
                del self.buf[: idx + 1]
                return line
            if len(self.buf) > limit:
                return b""  # too long: the caller refuses it
            if self.closed:
                return None
            # No complete command left: answer what we hold (RFC 2920 §3.2).
            self.flush()
            self.more.clear()
            await self.more.wait()

    async def pause(self, delay) -> None:
        self.flush()
        if isinstance(delay, threading.Event):
            while not delay.is_set() and not self.server._stopping and not self.closed:
                await asyncio.sleep(0.01)
        elif delay:
            await asyncio.sleep(delay)

    def close(self) -> None:
        self.flush()
        if self.transport is not None:
            self.transport.close()
        self.closed = True

    # --- the protocol
    async def _run(self) -> None:
        srv = self.server
        try:
            self.reply(f"220 {srv.hostname} ESMTP nashra test server")
            self.flush()
            greeted = False
            txn: Transaction | None = None
            messages_here = 0
            while not self.closed:
                raw = await self.readline(MAX_LINE)
                if raw is None:
                    return
                if raw == b"":
                    self.reply("500 5.5.2 line too long")
                    self.buf.clear()
                    continue
                line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
                verb = line.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    greeted = True
                    txn = None
                    if verb == "HELO":
                        self.reply(f"250 {srv.hostname}")
                    else:
                        caps = [srv.hostname]
                        if srv.pipelining:
                            caps.append("PIPELINING")
                        caps += ["8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", f"SIZE {MAX_MESSAGE}"]
                        for cap in caps[:-1]:
                            self.reply(f"250-{cap}")
                        self.reply(f"250 {caps[-1]}")
                elif verb == "MAIL":
                    m = _MAIL.match(line)
                    if not greeted:
                        self.reply("503 5.5.1 EHLO first")
                    elif txn is not None:
                        self.reply("503 5.5.1 nested MAIL command")
                    elif not m:
                        self.reply("501 5.5.4 syntax: MAIL FROM:<address>")
                    elif srv.messages_per_connection is not None and messages_here >= srv.messages_per_connection:
                        self.reply("421 4.7.0 too many messages on this connection, closing")
                        self.close()
                        return
                    elif srv.mail_reply:
                        self.reply(srv.mail_reply)
                        if srv.mail_reply.startswith("421"):
                            self.close()
                            return
                    else:
                        mail_end = self.received - len(self.buf)  # stream offset after this MAIL line
                        txn = Transaction(self.number, m.group(1), chained=(
                            self.dot_answered_at is not None and mail_end <= self.dot_answered_at))
                        srv._record(txn)
                        self.reply("250 2.1.0 OK")
                        self.awaiting_mail_flush = txn
                elif verb == "RCPT":
                    m = _RCPT.match(line)
                    if txn is None:
                        self.reply("503 5.5.1 MAIL first")
                        continue
                    if not m:
                        self.reply("501 5.5.4 syntax: RCPT TO:<address>")
                        continue
                    addr = m.group(1)
                    delay = srv.rcpt_delays.get(addr.lower())
                    if delay:
                        await self.pause(delay)
                    scripted = srv.rcpt_replies.get(addr.lower())
                    if scripted and not scripted.startswith("2"):
                        with srv.lock:
                            txn.refused[addr] = scripted
                        self.reply(scripted)
                        if scripted.startswith("421"):
                            self.close()
                            return
                    else:
                        with srv.lock:
                            txn.rcpt_tos.append(addr)
                        self.reply(scripted or "250 2.1.5 OK")
                elif verb == "DATA":
                    if txn is None:
                        self.reply("503 5.5.1 MAIL first")
                        continue
                    data_end = self.received - len(self.buf)  # stream offset after "DATA\r\n"
                    sent_at = txn._mail_reply_sent_at
                    txn.pipelined = self.awaiting_mail_flush is txn or (
                        sent_at is not None and data_end <= sent_at
                    )
                    if not txn.rcpt_tos:
                        # RFC 2920: a pipelined DATA after every RCPT failed is refused.
                        txn.reply = "554 5.5.1 no valid recipients"
                        self.reply(txn.reply)
                        txn = None
                        continue
                    self.reply("354 End data with <CR><LF>.<CR><LF>")
                    self.flush()
                    body = await self._read_data()
                    if body is None:
                        return  # the client went away mid-message
                    if srv.data_delay:
                        await self.pause(srv.data_delay)
                    answer = next(
                        (srv.data_replies[r.lower()] for r in txn.rcpt_tos if r.lower() in srv.data_replies),
                        None,
                    )
                    if body is False:
                        answer = "552 5.3.4 message too big"
                        body = b""
                    final = answer or "250 2.0.0 message accepted"
                    srv._finish(txn, body, final)
                    if final.startswith("250"):
                        messages_here += 1
                    self.reply(final)
                    self.flush()
                    self.dot_answered_at = self.received
                    txn = None
                    if final.startswith("421"):
                        self.close()
                        return
                elif verb == "RSET":
                    txn = None
                    self.reply("250 2.0.0 OK")
                elif verb == "NOOP":
                    self.reply("250 2.0.0 OK")
                elif verb == "QUIT":
                    self.reply("221 2.0.0 bye")
                    self.close()
                    return
                elif verb == "VRFY":
                    self.reply("252 2.1.5 cannot verify, send some mail")
                else:
                    self.reply("500 5.5.2 command not recognised")
        except asyncio.CancelledError:
            pass
        finally:
            with contextlib.suppress(Exception):
                self.flush()

    async def _read_data(self) -> bytes | bool | None:
        """The message up to the lone dot, dot-unstuffed; False if too big; None if closed."""
        parts: list[bytes] = []
        size = 0
        too_big = False
        while True:
            raw = await self.readline(MAX_DATA_LINE)
            if raw is None:
                return None
            if raw == b"":  # an absurd line: keep reading, refuse at the end
                too_big = True
                self.buf.clear()
                continue
            if raw in (b".\r\n", b".\n"):
                break
            if raw.startswith(b"."):
                raw = raw[1:]
            size += len(raw)
            if size > MAX_MESSAGE:
                too_big = True
            if not too_big:
                parts.append(raw)
        return False if too_big else b"".join(parts)


class PipeliningSmtpServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, pipelining: bool = True,
                 hostname: str = "pipelining.test"):
        self.host = host
        self.port = port
        self.pipelining = pipelining
        self.hostname = hostname
        # scripting
        self.rcpt_replies: dict[str, str] = {}
        self.data_replies: dict[str, str] = {}
        self.rcpt_delays: dict[str, float | threading.Event] = {}
        self.mail_reply: str | None = None
        self.messages_per_connection: int | None = None
        self.data_delay: float = 0.0
        # records
        self.transactions: list[Transaction] = []
        self.arrivals: list[float] = []
        self.connections = 0
        self.current_connections = 0
        self.max_connections = 0
        # Re-entrant: wait_until's predicate may read .messages while the lock is held.
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self._sessions: set[_Session] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._stopping = False

    # --- lifecycle
    def start(self) -> PipeliningSmtpServer:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._stopping = False
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(lambda: _Session(self, self._next_number()), self.host, self.port)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # noqa: BLE001 — reported by start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=run, name="pipelining-smtp", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None
        self._loop = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.abort()
            if session.task is not None:
                session.task.cancel()
        tasks = [s.task for s in list(self._sessions) if s.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def __enter__(self) -> PipeliningSmtpServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- bookkeeping (called on the server's loop)
    def _next_number(self) -> int:
        with self.lock:
            self.connections += 1
            return self.connections

    def _opened(self, session: _Session) -> None:
        with self.lock:
            self._sessions.add(session)
            self.current_connections += 1
            self.max_connections = max(self.max_connections, self.current_connections)
            self.cond.notify_all()

    def _closed(self, session: _Session) -> None:
        with self.lock:
            if session in self._sessions:
                self._sessions.discard(session)
                self.current_connections -= 1
            self.cond.notify_all()

    def _record(self, txn: Transaction) -> None:
        with self.lock:
            self.transactions.append(txn)

    def _finish(self, txn: Transaction, data: bytes, reply: str) -> None:
        with self.lock:
            txn.data = data
            txn.reply = reply
            if reply.startswith("250"):
                txn.at = time.time()
                self.arrivals.append(txn.at)
            self.cond.notify_all()

    # --- reading what happened (any thread)
    @property
    def messages(self) -> list[Transaction]:
        with self.lock:
            return [t for t in self.transactions if t.accepted]

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Transaction]:
        """Block until at least `count` messages were accepted (or time out)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while sum(1 for t in self.transactions if t.accepted) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return [t for t in self.transactions if t.accepted]

    def wait_until(self, predicate, timeout: float = 30.0) -> bool:
        """Block until predicate(server) is true (checked when anything changes)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.05))
            return True

    def clear(self) -> None:
        with self.lock:
            self.transactions.clear()
            self.arrivals.clear()

    def recipients(self) -> list[str]:
        return [r for t in self.messages for r in t.rcpt_tos]

    def copies(self) -> Counter:
        return Counter(self.recipients())

    def per_second(self) -> Counter:
        """Accepted messages per calendar second (int(time.time()) → count)."""
        with self.lock:
            return Counter(int(at) for at in self.arrivals)

    def max_in_window(self, seconds: float = 1.0) -> int:
        """The most messages accepted within any `seconds`-long window."""
        with self.lock:
            times = sorted(self.arrivals)
        best = start = 0
        for end, t in enumerate(times):
            while t - times[start] >= seconds:
                start += 1
            best = max(best, end - start + 1)
        return best


__all__ = ["PipeliningSmtpServer", "Transaction"]
