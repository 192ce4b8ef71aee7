"""A bounce mailbox read over IMAP: `nashra bounces fetch`, and beat when BOUNCE_IMAP_URL is set.

Many sites point the envelope sender's domain at an ordinary mailbox instead of at
`nashra bounces serve`.  `fetch_bounces()` empties that mailbox's folder into the same
handler the bounce server uses:

1. connect (IMAPS with a verifying TLS context; `imap://` is plain text, for a trusted
   network only), LOGIN, SELECT the folder of the URL (default INBOX);
2. UID SEARCH every message still there (not deleted, not flagged `$NashraFailed`) —
   not only the unseen ones: the folder is the bounce mailbox's and whatever is in it
   is not yet processed (a person who opened a bounce in a mail client must not make
   it invisible to us).  At most `limit` per run, oldest first; the rest wait for the
   next run;
3. FETCH each (`BODY.PEEK[]`: reading sets no \\Seen flag, so a crash before handling
   leaves the mailbox as it was), in groups; a message over MAX_INBOUND_BYTES is never
   downloaded (a report about our mail is far smaller) and counts as `too_large`;
4. work out the address it was sent to — Delivered-To, X-Original-To, Envelope-To,
   then To, in that order of trust; the first that has the shape of one of our signed
   VERP addresses wins, else the first address at all (an ARF report to a feedback
   address) — and hand it to `handle_inbound(source="imap")` in a transaction of its
   own.  The header is only a hint: the HMAC in the VERP address is the authority, and
   a forged one is refused there (`rejected`);
5. move every message that was handled — applied, ignored or rejected alike — to
   BOUNCE_IMAP_DONE_FOLDER (created when missing), marked \\Seen: UID MOVE when the
   server has MOVE, else UID COPY + \\Deleted + (UID) EXPUNGE.

A message whose handling raised (a bug, not the report's fault: hostile reports are
`rejected`, not raised) stays in the folder flagged `$NashraFailed`, so it is not
tried again at every run; removing the flag in a mail client retries it.  A database
that is away stops the run instead (nothing is flagged; the next run retries all).

Safe to run twice at once and after a crash: `handle_inbound()` is idempotent, so a
message handled but not yet moved (a crash in between) is handled again by the next run
and changes nothing more.  Only one run reads the mailbox at a time (a PostgreSQL
advisory lock; an flock on SQLite): a second one started meanwhile — beat's next tick
while a long run goes on, an operator's `nashra bounces fetch` — returns at once,
`busy`.  Without that it would still be correct, only wasteful (and a server's MOVE is
not atomic between two sessions: a message could land twice in the done folder).

Log lines carry counts and the folder, never an address or the password.
"""

from __future__ import annotations

import base64
import contextlib
import email.policy
import email.utils
import fcntl
import imaplib
import re
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from service.config import Settings, get_settings
from service.db import get_engine, session_scope
from service.inbound.reports import MAX_INBOUND_BYTES, handle_inbound
from service.logs import get_logger

log = get_logger(__name__)

FAILED_KEYWORD = "$NashraFailed"
# A run ends after this many messages; the rest wait for the next (beat: minutes later).
MAX_PER_RUN = 500
# Messages fetched per FETCH command (fewer when they are large): one round trip each.
FETCH_GROUP = 25
FETCH_GROUP_BYTES = 8_000_000
TIMEOUT = 60.0
# The headers that may say which address a message was delivered to, most trusted first:
# the receiving MTA writes the first three; To is what the sender of the report wrote.
RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "To")
_OURS = re.compile(r"^[^@+\s]+\+[bse]\.[^@\s]+@[^@\s]+$", re.IGNORECASE)
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
# Database errors that mean "the database is away", not "this message is bad".
_DB_AWAY = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)
# pg_try_advisory_lock's key for "a run is reading the bounce mailbox" (per database).
_LOCK_KEY = int.from_bytes(b"nashraMB", "big") & 0x7FFF_FFFF_FFFF_FFFF


class MailboxError(Exception):
    """The mailbox cannot be read at all (not configured, unreachable, login refused)."""


@dataclass(frozen=True)
class MailboxConfig:
    host: str
    port: int
    tls: bool
    user: str
    password: str
    folder: str

    @classmethod
    def from_url(cls, url: str) -> MailboxConfig:
        parts = urlsplit(url)
        if parts.scheme not in ("imap", "imaps") or not parts.hostname or not parts.username:
            raise MailboxError("BOUNCE_IMAP_URL must be imaps://user:password@host[:port][/FOLDER]")
        tls = parts.scheme == "imaps"
        try:
            port = parts.port or (993 if tls else 143)
        except ValueError as exc:
            raise MailboxError(f"BOUNCE_IMAP_URL: bad port ({exc})") from None
        folder = unquote(parts.path.lstrip("/")) or "INBOX"
        return cls(parts.hostname, port, tls, unquote(parts.username), unquote(parts.password or ""), folder)


@dataclass
class FetchSummary:
    """What one run did: `fetched` messages read, each counted once in `outcomes`
    (handle_inbound's outcome, or `too_large`), `failed` (handling raised; left flagged),
    `moved` to the done folder, `remaining` still in the folder past the cap."""

    folder: str
    found: int = 0
    fetched: int = 0
    outcomes: Counter = field(default_factory=Counter)
    failed: int = 0
    moved: int = 0
    remaining: int = 0
    stopped: str | None = None  # why the run ended early (the database or the server went away)
    busy: bool = False  # another run was reading the mailbox: this one did nothing
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"folder": self.folder, "busy": self.busy, "found": self.found, "fetched": self.fetched, "outcomes": dict(self.outcomes),
                "failed": self.failed, "moved": self.moved, "remaining": self.remaining, "stopped": self.stopped,
                "seconds": round(self.seconds, 3)}


# ---------------------------------------------------------------- IMAP details


def imap_utf7(name: str) -> str:
    """A folder name in IMAP's modified UTF-7 (RFC 3501 5.1.3): Arabic names included."""
    out, pending = [], []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def quoted(name: str) -> str:
    """A mailbox name as an IMAP quoted string (imaplib passes arguments as they are)."""
    encoded = imap_utf7(name)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(data) -> str:
    return b" ".join(d for d in data or [] if isinstance(d, bytes)).decode("ascii", "replace")[:200]


def _ok(typ: str, data, what: str) -> list:
    if typ != "OK":
        raise imaplib.IMAP4.error(f"{what}: {typ} {_text(data)}")
    return data


def _uid_set(uids: list[int]) -> str:
    """1,2,3,7 → "1:3,7" (a short command line however many there are)."""
    ranges: list[str] = []
    start = prev = None
    for uid in sorted(uids):
        if start is None:
            start = prev = uid
        elif uid == prev + 1:
            prev = uid
        else:
            ranges.append(f"{start}:{prev}" if start != prev else str(start))
            start = prev = uid
    if start is not None:
        ranges.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(ranges)


def connect(config: MailboxConfig, *, ssl_context: ssl.SSLContext | None = None,
            timeout: float = TIMEOUT) -> imaplib.IMAP4:
    """Connected and logged in; MailboxError (no password in it) when that fails."""
    where = f"{config.host}:{config.port}"
    try:
        if config.tls:
            imap = imaplib.IMAP4_SSL(config.host, config.port, ssl_context=ssl_context or ssl.create_default_context(),
                                     timeout=timeout)
        else:
            imap = imaplib.IMAP4(config.host, config.port, timeout=timeout)
    except ssl.SSLError as exc:
        raise MailboxError(f"TLS with the bounce mailbox at {where} failed: {exc.reason or exc}") from None
    except (OSError, imaplib.IMAP4.error) as exc:
        raise MailboxError(f"cannot connect to the bounce mailbox at {where}: {exc}") from None
    try:
        imap.login(config.user, config.password)
    except imaplib.IMAP4.error as exc:
        _close(imap)
        reason = str(exc).replace(config.password, "…") if config.password else str(exc)
        raise MailboxError(f"the bounce mailbox at {where} refused the login of BOUNCE_IMAP_URL's user "
                           f"(check the user and password): {reason[:200]}") from None
    except OSError as exc:
        _close(imap)
        raise MailboxError(f"the bounce mailbox at {where} went away during login: {exc}") from None
    return imap


def _close(imap: imaplib.IMAP4) -> None:
    try:
        if imap.state == "SELECTED":
            imap.close()
        imap.logout()
    except (imaplib.IMAP4.error, OSError):
        pass


def _capabilities(imap: imaplib.IMAP4) -> frozenset[str]:
    """After LOGIN (the greeting's list may be the pre-login one)."""
    typ, data = imap.capability()
    if typ == "OK" and data and data[-1]:
        return frozenset(data[-1].decode("ascii", "replace").upper().split())
    return frozenset(c.upper() for c in imap.capabilities)


def _ensure_folder(imap: imaplib.IMAP4, name: str) -> None:
    typ, data = imap.create(quoted(name))
    if typ != "OK":
        text = b" ".join(d for d in data if isinstance(d, bytes)).upper()
        if b"ALREADYEXISTS" not in text and b"EXISTS" not in text:
            # Some servers say only NO; the folder is there if we can see it listed.
            typ, listed = imap.list('""', quoted(name))
            if typ != "OK" or not any(listed):
                raise MailboxError(f"cannot create the done folder {name!r}: {text.decode('ascii', 'replace')[:200]}")


# ---------------------------------------------------------------- one message


def recipient_of(message: bytes) -> str | None:
    """The address this message was delivered to, by RECIPIENT_HEADERS' order of trust:
    the first of ours (a signed-looking VERP or one-off address), else the first address."""
    head = message.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    try:
        headers = BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    except Exception:  # noqa: BLE001 — the stdlib parser on hostile bytes
        return None
    first = None
    for name in RECIPIENT_HEADERS:
        values = [str(v) for v in headers.get_all(name) or []]
        for _, address in email.utils.getaddresses(values):
            address = address.strip()
            if not address or "@" not in address or len(address) > 320:
                continue
            if _OURS.match(address):
                return address
            first = first or address
    return first


def _handle(rcpt: str, message: bytes, settings: Settings) -> str:
    with session_scope(write=True) as session:
        return handle_inbound(session, rcpt, message, settings, source="imap").outcome


# ---------------------------------------------------------------- one run at a time


@contextlib.contextmanager
def _one_run_at_a_time(settings: Settings):
    """True when this run may read the mailbox, False when another is reading it now.

    Two runs at once would be correct anyway (every message is handled idempotently), but
    both would download everything, and a server's MOVE is not atomic between sessions
    (Dovecot's maildir copies, then expunges): both copies can land in the done folder.
    PostgreSQL: a session advisory lock, released by the server if this process dies.
    SQLite (one machine): an flock on a file beside it.
    """
    engine = get_engine()
    if engine.dialect.name == "postgresql":
        conn = engine.connect()
        got = False
        try:
            got = bool(conn.scalar(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": _LOCK_KEY}))
            conn.commit()  # the lock is the session's: no transaction left open meanwhile
            yield got
        finally:
            try:
                if got:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
                    conn.commit()
                conn.close()
            except sa_exc.DBAPIError:  # never hand a connection that may hold the lock back to the pool
                conn.invalidate()
                conn.close()
        return
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.var_dir / "bounce-mailbox.lock", "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------- a run


class _Run:
    def __init__(self, imap: imaplib.IMAP4, config: MailboxConfig, done: str, settings: Settings,
                 summary: FetchSummary, max_bytes: int):
        self.imap, self.config, self.done, self.settings = imap, config, done, settings
        self.summary, self.max_bytes = summary, max_bytes
        caps = _capabilities(imap)
        self.can_move = "MOVE" in caps
        self.uidplus = "UIDPLUS" in caps
        self.to_move: list[int] = []

    def search(self) -> list[int]:
        typ, data = self.imap.uid("SEARCH", f"UNDELETED UNKEYWORD {FAILED_KEYWORD}")
        _ok(typ, data, "SEARCH")
        return sorted(int(x) for x in b" ".join(d for d in data if d).split())

    def _fetch(self, uids: list[int], items: str) -> list:
        typ, data = self.imap.uid("FETCH", _uid_set(uids), items)
        if typ == "NO":  # some expunged meanwhile (another run moved them): what is left is returned
            log.info("mailbox.fetch_partial", items=items)
            return [d for d in data if d]
        return [d for d in _ok(typ, data, f"FETCH {items}") if d]

    def sizes(self, uids: list[int]) -> dict[int, int]:
        data = self._fetch(uids, "(RFC822.SIZE)")
        sizes = {}
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            if isinstance(line, bytes):
                u, s = _UID.search(line), _SIZE.search(line)
                if u and s:
                    sizes[int(u[1])] = int(s[1])
        return sizes

    def bodies(self, uids: list[int]) -> dict[int, bytes]:
        data = self._fetch(uids, "(BODY.PEEK[])")
        out = {}
        for item in data:
            if isinstance(item, tuple) and len(item) == 2:
                u = _UID.search(item[0])
                if u:
                    out[int(u[1])] = item[1]
        return out

    def handle(self, uid: int, message: bytes) -> None:
        rcpt = recipient_of(message) or ""
        try:
            outcome = _handle(rcpt, message, self.settings)
        except _DB_AWAY:
            raise
        except Exception as exc:  # noqa: BLE001 — one bad message must not stop the others
            log.exception("mailbox.message_failed", uid=uid, error=type(exc).__name__)
            self.summary.failed += 1
            self.flag_failed(uid)
            return
        self.summary.outcomes[outcome] += 1
        self.to_move.append(uid)

    def flag_failed(self, uid: int) -> None:
        typ, data = self.imap.uid("STORE", str(uid), "+FLAGS.SILENT", f"({FAILED_KEYWORD})")
        if typ != "OK":  # a server without keywords: it is tried again next run
            log.warning("mailbox.flag_refused", uid=uid)

    def move(self) -> None:
        """The handled messages to the done folder: one command for the lot."""
        if not self.to_move:
            return
        count, uids, self.to_move = len(set(self.to_move)), _uid_set(self.to_move), []
        self.imap.uid("STORE", uids, "+FLAGS.SILENT", "(\\Seen)")
        if self.can_move:
            typ, data = self.imap.uid("MOVE", uids, quoted(self.done))
        else:
            typ, data = self.imap.uid("COPY", uids, quoted(self.done))
            if typ == "OK":
                _ok(*self.imap.uid("STORE", uids, "+FLAGS.SILENT", "(\\Deleted)"), "STORE \\Deleted")
                if self.uidplus:  # only ours, not a message someone else marked \Deleted
                    _ok(*self.imap.uid("EXPUNGE", uids), "UID EXPUNGE")
                else:
                    _ok(*self.imap.expunge(), "EXPUNGE")
        if typ != "OK":
            # Typically another run moved some of them first ([EXPUNGEISSUED]); whatever is
            # still here is found, handled again (harmlessly) and moved by the next run.
            log.warning("mailbox.move_refused", count=count, reply=_text(data))
            return
        self.summary.moved += count


def fetch_bounces(settings: Settings | None = None, *, limit: int = MAX_PER_RUN, max_bytes: int = MAX_INBOUND_BYTES,
                  ssl_context: ssl.SSLContext | None = None, timeout: float = TIMEOUT) -> FetchSummary:
    """One run over the bounce mailbox of BOUNCE_IMAP_URL (see the module's docstring).

    Raises MailboxError when the mailbox cannot be read at all; an error midway ends the
    run early with `summary.stopped` saying why (whatever was handled and not moved is
    handled again, harmlessly, next run).
    """
    settings = settings or get_settings()
    if not settings.bounce_imap_url:
        raise MailboxError("BOUNCE_IMAP_URL is not set: there is no bounce mailbox to read "
                           "(imaps://user:password@host[:port][/FOLDER])")
    config = MailboxConfig.from_url(settings.bounce_imap_url)
    done = settings.bounce_imap_done_folder.strip()
    if not done or done.lower() == config.folder.lower():
        raise MailboxError("BOUNCE_IMAP_DONE_FOLDER must name another folder than the one read")
    started = time.monotonic()
    summary = FetchSummary(folder=config.folder)
    with _one_run_at_a_time(settings) as mine:
        if not mine:
            summary.busy = True
            log.info("mailbox.busy", folder=config.folder)
            return summary
        imap = connect(config, ssl_context=ssl_context, timeout=timeout)
        try:
            typ, data = imap.select(quoted(config.folder))
            if typ != "OK":
                raise MailboxError(f"the bounce mailbox has no folder {config.folder!r}")
            _ensure_folder(imap, done)
            run = _Run(imap, config, done, settings, summary, max_bytes)
            _read(run, limit)
        finally:
            _close(imap)
            summary.seconds = time.monotonic() - started
    fields = summary.as_dict()
    outcomes = fields.pop("outcomes")
    log.info("mailbox.fetched", **fields, **{f"n_{k}": v for k, v in sorted(outcomes.items())})
    return summary


def _read(run: _Run, limit: int) -> None:
    summary = run.summary
    try:
        uids = run.search()
        summary.found = len(uids)
        uids, summary.remaining = uids[:limit], max(0, len(uids) - limit)
        sizes = run.sizes(uids) if uids else {}
        group: list[int] = []
        group_bytes = 0
        for uid in uids:
            size = sizes.get(uid)
            if size is None:  # gone since the SEARCH (another run moved it)
                continue
            if size > run.max_bytes:
                summary.fetched += 1
                summary.outcomes["too_large"] += 1
                run.to_move.append(uid)
                continue
            if group and (len(group) >= FETCH_GROUP or group_bytes + size > FETCH_GROUP_BYTES):
                _handle_group(run, group)
                group, group_bytes = [], 0
            group.append(uid)
            group_bytes += size
        if group:
            _handle_group(run, group)
        run.move()
    except _DB_AWAY as exc:
        summary.stopped = f"the database is unavailable ({type(exc).__name__})"
        log.warning("mailbox.stopped", reason="database", error=type(exc).__name__)
        _move_quietly(run)
    except (imaplib.IMAP4.error, OSError) as exc:  # abort is an error; a timeout is an OSError
        summary.stopped = f"the IMAP server failed: {str(exc)[:200]}"
        log.warning("mailbox.stopped", reason="imap", error=type(exc).__name__)


def _handle_group(run: _Run, group: list[int]) -> None:
    bodies = run.bodies(group)
    for uid in group:
        message = bodies.get(uid)
        if message is None:  # gone since the SEARCH
            continue
        run.summary.fetched += 1
        run.handle(uid, message)
    # Move as we go: a crash loses at most one group's moves (handled again, harmlessly).
    run.move()


def _move_quietly(run: _Run) -> None:
    try:
        run.move()
    except (imaplib.IMAP4.error, OSError):
        pass
