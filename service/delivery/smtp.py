"""One SMTP session and the dialogue over it: where a message stopped, in one Outcome.

smtplib does the wire work; we drive MAIL/RCPT/DATA ourselves instead of `sendmail`
because the ledger needs to know *where* a dialogue stopped (verdicts.py sorts it):

* nothing sent yet, or the line lost before the final dot could leave → the relay is
  `unavailable`: nothing was accepted, another session or relay takes the message;
* the final dot may have left and no reply came (timeout, reset, a write error in the
  same write as the dot) → `unknown` (RFC 1047): the batch applies SMTP_AMBIGUOUS;
* a reply → judged at its stage.

Connect and the greeting wait SMTP_CONNECT_TIMEOUT (a relay that accepts TCP and never
greets is set aside quickly); each command SMTP_TIMEOUT; the reply to the final dot
SMTP_DATA_TIMEOUT (RFC 5321 §4.5.3.2.6: 10 minutes, a content filter may be slow).

When the server offers ESMTP PIPELINING (RFC 2920), MAIL, RCPT and DATA leave in one
write and their three replies are read after it: one round trip instead of three
before the body.  Every reply is still read and judged at its own stage: the first
refusal decides (a refused MAIL makes RCPT and DATA fail with 503 — ignored), and a DATA
that got 354 although MAIL or RCPT was refused is ended with a lone "." and nothing else,
as RFC 2920 §3.1 asks: no message body ever follows a refused envelope.

Sessions are held by `service.delivery.smtp_pool`, for every mail Nashra sends.
"""

from __future__ import annotations

import os
import re
import smtplib
import socket
import ssl
import threading

from service.config import Settings, SmtpTarget
from service.delivery.verdicts import Outcome, Verdict, judge, scrub
from service.logs import get_logger

log = get_logger(__name__)

CRLF = b"\r\n"
_BARE_EOL = re.compile(rb"\r\n|\n|\r(?!\n)")
_DOT_AT_LINE_START = re.compile(rb"(?m)^\.")
# A plain dot-atom address (RFC 5321 Mailbox without quotes, brackets or comments): what
# smtplib.quoteaddr would return as <address> after an email.utils.parseaddr that costs
# ~10 µs; anything else still goes through quoteaddr.
_DOT_ATOM_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)
# What a dialogue that broke off raises: the peer went away, a timeout, a garbled reply.
_LOST = (smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException, OSError)


class SmtpError(Exception):
    """A one-off message could not be sent; `.outcome` says why."""

    def __init__(self, outcome: Outcome):
        # The text reaches Celery's own log lines (failure, "Retry in …"): no address in it.
        super().__init__(f"{outcome.stage}: {outcome.code or ''} {scrub(outcome.reply)}".strip())
        self.outcome = outcome


class SmtpTransientError(SmtpError, OSError):
    """Worth trying again later (4xx, connection trouble)."""


def quoteaddr(address: str) -> str:
    """smtplib.quoteaddr, without its address parser for a plain address (every reader's)."""
    if _DOT_ATOM_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def data_payload(message: bytes, wire_ready: bool = False) -> bytes:
    """The DATA section as it goes on the wire: CRLF lines, dot-stuffed, ending CRLF.CRLF.

    wire_ready: the caller guarantees CRLF-only lines, none starting with "." (what
    `compose` builds: headers without bare CR/LF, base64 bodies, "--" boundaries).
    """
    if wire_ready:
        return message + (b"" if message.endswith(CRLF) else CRLF) + b"." + CRLF
    # The regexes cost about a millisecond on a 100 KB message; our own messages are
    # CRLF-only base64 and rarely need either, so look before rewriting (C-speed find).
    q = message
    if q.count(b"\n") != q.count(CRLF) or b"\r" in q.replace(CRLF, b""):
        q = _BARE_EOL.sub(CRLF, q)
    if q.startswith(b".") or b"\n." in q:
        q = _DOT_AT_LINE_START.sub(b"..", q)
    if not q.endswith(CRLF):
        q += CRLF
    return q + b"." + CRLF


class SmtpConnection:
    """A lazily opened, reusable connection to the configured SMTP server."""

    def __init__(self, target: SmtpTarget, timeout: float, local_hostname: str | None = None,
                 pipelining: bool = True, connect_timeout: float | None = None, data_timeout: float | None = None):
        self.target = target
        self.timeout = timeout
        self.connect_timeout = min(timeout, connect_timeout) if connect_timeout else timeout
        self.data_timeout = data_timeout or timeout
        self.local_hostname = local_hostname
        self.pipelining = pipelining  # use PIPELINING when the server offers it
        self._smtp: smtplib.SMTP | None = None
        self.pid = os.getpid()
        self.opened = 0  # how many times a connection was opened (for tests and logs)
        self.pipelined = 0  # messages whose MAIL, RCPT and DATA went in one write

    # ------------------------------------------------------------------ connection

    def _open(self) -> smtplib.SMTP:
        t = self.target
        ctx = tls_context() if t.security in ("ssl", "starttls") else None
        # TCP, TLS and the greeting wait connect_timeout; every later step `timeout`.
        if t.security == "ssl":
            smtp = smtplib.SMTP_SSL(t.host, t.port, local_hostname=self.local_hostname, timeout=self.connect_timeout,
                                    context=ctx)
        else:
            smtp = smtplib.SMTP(t.host, t.port, local_hostname=self.local_hostname, timeout=self.connect_timeout)
        try:
            smtp.timeout = self.timeout
            if smtp.sock is not None:
                smtp.sock.settimeout(self.timeout)
            smtp.ehlo_or_helo_if_needed()
            if t.security == "starttls":
                smtp.starttls(context=ctx)
                smtp.ehlo()
            if t.username:
                smtp.login(t.username, t.password or "")
        except BaseException:
            _quiet_close(smtp)
            raise
        return smtp

    def connect(self) -> Outcome | None:
        """Make sure a connection is open; return an Outcome only if that failed (one
        attempt: a relay that cannot be reached is the pool's to set aside, not ours to
        hammer)."""
        if self._smtp is not None:
            return None
        try:
            self._smtp = self._open()
        except smtplib.SMTPAuthenticationError as exc:
            return Outcome(Verdict.sender_refused, exc.smtp_code, _text(exc.smtp_error, "authentication failed"),
                           "connect")
        except smtplib.SMTPNotSupportedError as exc:
            return Outcome(Verdict.sender_refused, None, f"TLS/AUTH not offered by the server: {exc}", "connect")
        except ssl.SSLError as exc:
            return Outcome(Verdict.sender_refused, None, f"TLS failure: {exc}", "connect")
        except smtplib.SMTPResponseException as exc:  # greeting, EHLO or STARTTLS refused
            return judge("connect", exc.smtp_code, _text(exc.smtp_error, ""))
        except (OSError, smtplib.SMTPException) as exc:  # refused, reset, timeouts, no greeting, DNS
            return Outcome(Verdict.unavailable, None, f"cannot reach {self.target!r}: {_why(exc)}", "connect")
        self.opened += 1
        log.info("smtp.connected", server=repr(self.target))
        return None

    def close(self) -> None:
        if self._smtp is not None:
            smtp, self._smtp = self._smtp, None
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                _quiet_close(smtp)

    def _drop(self) -> None:
        if self._smtp is not None:
            _quiet_close(self._smtp)
            self._smtp = None

    @property
    def is_open(self) -> bool:
        return self._smtp is not None

    # ------------------------------------------------------------------ one message

    def send(self, sender: str, recipient: str, message: bytes, wire_ready: bool = False) -> Outcome:
        """Send one message to one recipient and say what became of it."""
        outcome = self.begin(sender, recipient)
        if outcome is not None:
            return outcome
        return self.finish(data_payload(message, wire_ready))[0]

    def begin(self, sender: str, recipient: str) -> Outcome | None:
        """MAIL, RCPT and DATA: None once the server waits for the message (354), or what
        became of it (nothing of it was sent)."""
        reused = self._smtp is not None
        outcome = self._begin_once(sender, recipient)
        if (reused and outcome is not None and outcome.stage == "mail" and outcome.verdict == Verdict.unavailable
                and outcome.code in (None, 421)):
            # An idle connection the server closed meanwhile, or one it closes now with
            # 421 (a relay's messages-per-connection limit): nothing was sent, so one
            # attempt on a fresh connection is safe.
            outcome = self._begin_once(sender, recipient)
        return outcome

    def can_follow(self, sender: str, recipient: str) -> bool:
        """Whether the envelope of a next message may go in the same write as the end of
        the current one (`finish(..., follow=...)`): the server pipelines, and takes the
        addresses as they are."""
        smtp = self._smtp
        return (smtp is not None and self.pipelining and smtp.has_extn("pipelining")
                and self._options(smtp, sender, recipient) is not None)

    def finish(self, payload: bytes,
               follow: tuple[str, str] | None = None) -> tuple[Outcome, bool, Outcome | None]:
        """After 354: the message (`data_payload`) and its final dot, then the reply that decides.

        `follow` (sender, recipient; `can_follow` said yes): the next message's MAIL, RCPT
        and DATA leave in the same write as the dot — RFC 2920 §3.1 lets the message
        content begin a group, and a group end with DATA — so a message costs one round
        trip, not two.  Their replies are read after the dot's, which alone decides this
        message.  The second value says whether the server now waits for the follower's
        message (354); if not, nothing of the follower was accepted and the dialogue is
        back in step (or the connection dropped), and the third is what its envelope got
        (a refusal, judged as `begin` judges it), or None if its replies never came.
        """
        smtp = self._smtp
        assert smtp is not None
        envelope = b""
        if follow is not None:
            options = self._options(smtp, *follow)
            assert options is not None, "can_follow() first"
            envelope = self._envelope(smtp, *follow, options)
        try:
            # One write: a second one, smaller than a segment, could wait for the ACK of
            # the first (Nagle), a round trip of its own.
            smtp.send(payload + envelope if envelope else payload)
        except _LOST as exc:
            self._drop()
            if envelope:
                # The dot came before the follower's envelope in this write: it may have left.
                return (Outcome(Verdict.unknown, None, f"lost after the final dot: {_why(exc)}", "dot"),
                        False, None)
            # Not all of DATA left us, so the final dot did not: nothing was accepted.
            return (Outcome(Verdict.unavailable, None, f"connection lost during DATA: {_why(exc)}", "data"),
                    False, None)

        try:
            smtp.sock.settimeout(self.data_timeout)  # type: ignore[union-attr]
            try:
                code, reply = smtp.getreply()
            finally:
                if smtp.sock is not None:
                    smtp.sock.settimeout(self.timeout)
        except _LOST as exc:
            # Timeout, reset or a clean close: the server may have queued it (RFC 1047).
            self._drop()
            cause = exc.__context__ if isinstance(exc, smtplib.SMTPServerDisconnected) else exc
            return (Outcome(Verdict.unknown, None, f"DATA sent, no reply (RFC 1047): {_why(cause or exc)}", "dot"),
                    False, None)
        outcome = judge("dot", code, reply)
        if code == 421:
            self._drop()
            return outcome, False, None
        if follow is None:
            return outcome, False, None
        refusal = self._envelope_replies(smtp)
        return outcome, refusal is None, refusal

    # ------------------------------------------------------------------ the envelope

    def _options(self, smtp: smtplib.SMTP, sender: str, recipient: str) -> list[str] | None:
        """MAIL's options for these addresses; None if the server cannot take them."""
        if sender.isascii() and recipient.isascii():
            return []
        return ["SMTPUTF8"] if smtp.has_extn("smtputf8") else None

    def _begin_once(self, sender: str, recipient: str) -> Outcome | None:
        failed = self.connect()
        if failed is not None:
            return failed
        smtp = self._smtp
        assert smtp is not None
        options = self._options(smtp, sender, recipient)
        if options is None:
            return Outcome(Verdict.failed, None, "address is not ASCII and the server lacks SMTPUTF8", "rcpt")
        if self.pipelining and smtp.has_extn("pipelining"):
            try:
                smtp.send(self._envelope(smtp, sender, recipient, options))
            except _LOST as exc:
                self._drop()
                return Outcome(Verdict.unavailable, None, f"connection lost at mail: {_why(exc)}", "mail")
            return self._envelope_replies(smtp)
        stage = "mail"
        try:
            code, reply = smtp.mail(sender, options)
            if code != 250:
                return self._refused("mail", code, reply)
            stage = "rcpt"
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                return self._refused("rcpt", code, reply)
            stage = "data"
            smtp.putcmd("data")
            code, reply = smtp.getreply()
            if code != 354:
                return self._refused("data", code, reply)
        except _LOST as exc:
            self._drop()
            return Outcome(Verdict.unavailable, None, f"connection lost at {stage}: {_why(exc)}", stage)
        return None

    @staticmethod
    def _envelope(smtp: smtplib.SMTP, sender: str, recipient: str, options: list[str]) -> bytes:
        """MAIL, RCPT and DATA as one pipelined group (RFC 2920)."""
        if options:
            smtp.command_encoding = "utf-8"  # what smtplib.mail() does for SMTPUTF8
        extra = " " + " ".join(options) if options else ""
        return (f"MAIL FROM:{quoteaddr(sender)}{extra}\r\n"
                f"RCPT TO:{quoteaddr(recipient)}\r\n"
                "DATA\r\n").encode(smtp.command_encoding)

    def _envelope_replies(self, smtp: smtplib.SMTP) -> Outcome | None:
        """The three replies to a pipelined envelope, in order: None when DATA got 354."""
        # The first refusal decides the verdict; later replies are read only to keep the
        # dialogue in step (after a refused MAIL, RCPT and DATA get 503).
        refusal: tuple[str, int, bytes] | None = None
        stage = "mail"
        try:
            code, reply = smtp.getreply()
            if code != 250:
                refusal = ("mail", code, reply)
            stage = "rcpt"
            code, reply = smtp.getreply()
            if refusal is None and code not in (250, 251):
                refusal = ("rcpt", code, reply)
            stage = "data"
            code, reply = smtp.getreply()
        except _LOST as exc:
            self._drop()
            if refusal is not None:  # the server said no, then went away (e.g. 421)
                return judge(*refusal)
            return Outcome(Verdict.unavailable, None, f"connection lost at {stage}: {_why(exc)}", stage)
        self.pipelined += 1
        if refusal is not None:
            if code == 354:
                # DATA accepted although MAIL or RCPT was refused: end the (empty)
                # message with a lone dot, never the body; its reply does not matter.
                try:
                    smtp.send(b"." + CRLF)
                    smtp.getreply()
                except _LOST:
                    self._drop()
                    return judge(*refusal)
            return self._refused(*refusal)
        if code != 354:
            return self._refused("data", code, reply)
        return None

    def _refused(self, stage: str, code: int, reply: bytes) -> Outcome:
        outcome = judge(stage, code, reply)
        if code == 421 or code < 0:
            self._drop()  # the server is closing this connection
        else:
            try:
                self._smtp.rset()  # type: ignore[union-attr]
            except (smtplib.SMTPException, OSError):
                self._drop()
        return outcome


_tls_contexts: dict[tuple, ssl.SSLContext] = {}
_tls_lock = threading.Lock()


def tls_context() -> ssl.SSLContext:
    """The default verifying TLS context, made once per process (and CA settings): loading
    the system's CA bundle costs tens of milliseconds of CPU, and a pool opens many
    connections.  An SSLContext is safe to share between threads."""
    key = (os.getpid(), os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    with _tls_lock:
        ctx = _tls_contexts.get(key)
        if ctx is None:
            ctx = _tls_contexts[key] = ssl.create_default_context()
        return ctx


def _text(value: object, default: str) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value) if value else default


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _quiet_close(smtp: smtplib.SMTP) -> None:
    try:
        smtp.close()
    except OSError:
        pass


def helo_name(settings: Settings) -> str:
    return settings.mail_from_address.rpartition("@")[2] or socket.getfqdn()
