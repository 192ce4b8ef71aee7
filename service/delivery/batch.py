"""Send one batch of an edition: claim, re-check, compose, send, record — many at once.

1. Claim the range's claimable rows (conditional UPDATE, lease = the database's now() +
   LEASE_SECONDS) and commit, so the claim is visible to every other worker and to the
   sweeper.  A heartbeat thread renews the leases of the rows still claimed every
   LEASE_SECONDS/3 while the batch runs, so a slow batch is never taken for a dead one,
   and a dead worker's rows come back after at most LEASE_SECONDS (plus one sweep).
2. In groups of STATE_GROUP rows, right before they go, *fence* them: check that this
   batch still holds them with at least half a lease left on the database's clock (a
   read, in the same query as their state: `ledger._NOT_HELD`); when one is short, one
   conditional UPDATE … RETURNING extends their lease and returns those this batch still
   owns (`ledger.fence`).  A row missing from it was swept and given to another worker —
   this process froze past its lease (SIGSTOP, a starved host) — and the batch sends
   nothing more.  The same query re-reads the edition and the group's readers: unsubscribed, off the
   edition's newsletter (their Subscription row gone) or suppressed since planning →
   `skipped`/`suppressed`; edition paused or cancelled → the rows not yet handed to
   SMTP go back (`queued` / `cancelled`) and the batch stops: within one group of the
   pause, plus the messages already handed to the lane (its window).  The same row holds the reader's own
   rules (service/subscribers/quiet.py), decided here with the clock of that moment: a
   pause → `skipped`; an alert in their quiet hours → `held` for their catch-up mail
   (or `skipped`, as they chose) unless the edition overrides quiet hours; an alert
   past their daily cap → `skipped`.  Such a row is written like any outcome that sent
   nothing (grouped, no query of its own); an alert a capped reader was sent adds one
   statement per outcome group (`ledger.count_alerts`), in the same transaction.
3. Compose each message (the variant is prepared once per process) and hand it to this
   process's pool of SMTP sessions for the lane (`smtp_pool`): at most 3 × SMTP_CONNECTIONS
   messages of a lane are in flight in a process (the lane's window), one dialogue at a
   time on a session, the next one's envelope sent with the current one's end; the rate
   limiter is asked on that session, right before the envelope goes.
4. The answers go to a writer thread that records them in groups: one transaction per
   OUTCOME_GROUP outcomes or OUTCOME_WAIT seconds, whichever comes first, as one
   statement (`ledger.record_many`) — never a synchronous commit per message.  The
   writer takes at most OUTCOME_GROUP outcomes that are not yet committed: beyond that
   the batch waits for it, and so does the sending.

**Duplicate bound.**  A message goes twice only if the server accepted it and its
outcome was not committed when the process died: its row is still `claimed`, its lease
runs out, the sweeper queues it again.  At any moment such messages are

* in flight — handed to the lane, the answer not yet handed to the writer: at most
  the lane's window, 3 × SMTP_CONNECTIONS per process (smtp_pool.WINDOW_PER_SESSION: per
  session one message past its final dot, one whose envelope follows it in the same
  write, one queued; only the first can have been accepted yet, but an answered message
  keeps its room until the batch thread takes it);
* accepted but not committed — held by a batch's writer: at most OUTCOME_GROUP per
  running batch;

so a SIGKILL re-sends at most 3 × SMTP_CONNECTIONS + OUTCOME_GROUP messages per process
and lane (60 + 32 by default), with one more OUTCOME_GROUP per extra batch a process
runs at once (the threads pool; prefork runs one) — `duplicate_bound()`.  A database
that goes away is tried again (`_Db`) until the lease's deadline, so a restart or a
failover shorter than the lease loses and doubles nothing; a longer one leaves the same
state as a kill, and the same bound.  A process that freezes and wakes after the sweeper
gave its rows away sends at most its window and the rest of its current group (the
fence stops it at the next one).  A row whose SMTP answer is known is never handed back
as `queued`.  Each re-sent message carries the same Message-ID (compose.py), so mail
clients fold the duplicate.

**After the final dot** (verdicts.py): a lost answer is ambiguous.  With SMTP_AMBIGUOUS
=resend (the default) the row goes back as `retry` with its Message-ID and one more
`ambiguous` count — the possible duplicate status and metrics show; with `hold` it is
`unknown` until a person decides (control.resend_unknown).  When no relay is left the
rows wait as `retry` until one is back (`relays.soonest()`), and the edition goes on by
itself; only a relay that refuses *us* pauses it.

SQLite (the embedded demo) has one writer at a time: there a batch sends one message
at a time and commits each outcome before the next message goes (at most one in doubt).
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import os
import queue
import random
import socket
import threading
import time
from dataclasses import dataclass, field

import sqlalchemy as sa

from service.config import Settings, get_settings
from service.db import get_engine
from service.delivery import fanout, ledger, metrics, priority, smtp_pool, throttle
from service.delivery.compose import VariantTemplate, compose, newsletter_of_edition, prepare
from service.delivery.verdicts import Outcome, Verdict, refusal_key, scrub
from service.dispatch import Dispatcher
from service.logs import get_logger
from service.models import (
    AuditLog,
    DeliveryStatus,
    Edition,
    EditionKind,
    EditionStatus,
    EditionVariant,
    utcnow,
)
from service.subscribers import clocks, quiet, suppression

log = get_logger(__name__)

STATE_GROUP = 10  # readers re-checked per query, right before their messages go
RECHECK_SECONDS = 1.0  # a batch waiting for room (rate limits, a busy pool) re-reads its edition this often
OUTCOME_GROUP = 32  # outcomes per transaction, and the most a writer holds uncommitted
OUTCOME_WAIT = 0.005  # seconds a writer waits for more outcomes before it commits
LEASE_MARGIN = 2.0  # seconds before the lease ends that the batch stops trying the database
REFUSAL_STREAK = 10  # the same 5.7.x for this many readers in a row: the relay refuses *us*
_TEMPLATE_CACHE_SIZE = 256


def duplicate_bound(settings: Settings, batches_per_process: int = 1) -> int:
    """Messages one killed worker process (one lane) may send again: see the module doc."""
    return settings.smtp_connections * smtp_pool.WINDOW_PER_SESSION + batches_per_process * OUTCOME_GROUP


class SenderRefused(RuntimeError):
    """The SMTP server refuses *us* (auth, policy, TLS, nothing listening): an operator must act.

    The edition has been paused and its unsent rows handed back; no reader was blamed.
    """


@dataclass
class BatchReport:
    edition_id: int
    claimed: int = 0
    by_status: collections.Counter = field(default_factory=collections.Counter)
    stopped: str | None = None  # paused | cancelled | sender_refused | unreachable
    reason: str | None = None

    def as_dict(self) -> dict:
        return {"edition_id": self.edition_id, "claimed": self.claimed, "stopped": self.stopped, **self.by_status}


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"[:200]


def retry_at(attempts: int, now: dt.datetime | None = None, settings: Settings | None = None) -> dt.datetime:
    """Exponential backoff with jitter, so that retried rows do not return in a herd."""
    settings = settings or get_settings()
    delay = min(settings.retry_base_seconds * 2 ** max(attempts - 1, 0), settings.retry_max_seconds)
    return (now or utcnow()) + dt.timedelta(seconds=delay * random.uniform(0.5, 1.5))


_templates: collections.OrderedDict[tuple[int, str], VariantTemplate] = collections.OrderedDict()
_templates_lock = threading.Lock()


def _template(conn, edition_id: int, kind: str, variant: str) -> VariantTemplate | None:
    """A variant as stored by the planner, prepared once per process (they never change)."""
    key = (edition_id, variant)
    with _templates_lock:
        if key in _templates:
            _templates.move_to_end(key)
            return _templates[key]
    V = EditionVariant.__table__
    row = conn.execute(
        sa.select(V.c.subject, V.c.html, V.c.text).where(V.c.edition_id == edition_id, V.c.variant == variant)
    ).first()
    if row is None:
        return None
    tpl = prepare(edition_id, kind, variant, row[0], row[1], row[2],
                  newsletter=newsletter_of_edition(conn, edition_id))  # its List-Id, From name, n=
    with _templates_lock:
        _templates[key] = tpl
        while len(_templates) > _TEMPLATE_CACHE_SIZE:
            _templates.popitem(last=False)
    return tpl


def forget_prepared_variants() -> None:
    """Empty this process's cache of prepared variants (tests restart ids; production never does)."""
    with _templates_lock:
        _templates.clear()


def _eligible(state: ledger.RecipientState) -> bool:
    # A reader who left the edition's newsletter since it was planned (their subscription
    # row is gone) has left its audience; their other newsletters' mail still goes.
    return state.subscriber_status == "active" and state.subscribed


def _connect():
    """A connection of the batch's own.  On PostgreSQL each statement commits by itself
    (autocommit): every write of the batch thread is a single conditional statement, so
    this is the same safety in one round trip instead of three (BEGIN, statement, COMMIT)."""
    engine = get_engine()
    conn = engine.connect()
    if engine.dialect.name == "postgresql":
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
    return conn


# What a database blip raises: the server restarted or failed over, the connection
# dropped.  A statement that met one is tried again on a new connection.
_BLIPS = (sa.exc.OperationalError, sa.exc.InterfaceError)


class _Lease:
    """When the batch's lease runs out, on this host's monotonic clock: a conservative
    copy of the database's own (every renewal is measured from before it was asked)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._renewed = time.monotonic()

    def renewed(self, asked_at: float) -> None:
        self._renewed = max(self._renewed, asked_at)

    def deadline(self) -> float:
        return self._renewed + self.seconds - LEASE_MARGIN


class _Db:
    """A connection of the batch's that rides out a database blip: a statement that
    fails for the connection's sake is tried again, on a new connection, until the
    lease's deadline (after it the rows may be another worker's, and the sweeper's rule
    takes over).  Every statement the batch runs is conditional, so running one again
    is harmless."""

    def __init__(self, conn, deadline, edition_id: int):
        self.conn, self._deadline, self._edition_id = conn, deadline, edition_id
        # As `_connect` decides: PostgreSQL statements commit by themselves; SQLite's
        # reads are ended by a commit before anything is written or sent.
        self.autocommit = get_engine().dialect.name == "postgresql"

    def run(self, fn):
        pause = 0.05
        while True:
            try:
                if self.conn is None:
                    self.conn = _connect()
                result = fn(self.conn)
                if not self.autocommit:
                    self.conn.commit()  # SQLite: end every read before anything is written or sent
                return result
            except _BLIPS as exc:
                self.close()
                if time.monotonic() + pause >= self._deadline():
                    raise
                log.warning("delivery.db_retry", edition_id=self._edition_id, error=type(exc).__name__,
                            retry_in=round(pause, 2))
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            try:
                conn.close()
            except Exception:  # noqa: BLE001 — an invalidated connection may refuse even that
                pass


def send_batch(edition_id: int, first_id: int, last_id: int, *, settings: Settings | None = None,
               worker: str | None = None, dispatcher: Dispatcher | None = None) -> BatchReport:
    settings = settings or get_settings()
    worker = worker or worker_name()
    report = BatchReport(edition_id)
    E = Edition.__table__
    lease = _Lease(settings.lease_seconds)
    db = _Db(_connect(), lease.deadline, edition_id)
    try:
        info = db.run(lambda c: c.execute(
            sa.select(E.c.status, E.c.kind, E.c.started_at, E.c.created_at, E.c.params).where(E.c.id == edition_id)
        ).first())
        if info is None or info[0] not in (EditionStatus.planned.value, EditionStatus.sending.value):
            report.stopped = info[0] if info else "missing"
            return report
        kind, started_at, created_at = EditionKind(info[1]).value, info[2] or utcnow(), info[3]
        db.run(lambda c: ledger.start_sending(c, edition_id))
        asked = time.monotonic()
        rows = db.run(lambda c: ledger.claim(c, edition_id, first_id, last_id, worker, settings.lease_seconds))
        lease.renewed(asked)
        report.claimed = len(rows)
        if rows:
            log.info("delivery.batch.claimed", edition_id=edition_id, first_id=first_id, last_id=last_id, rows=len(rows))
            _Batch(db, lease, settings, worker, edition_id, kind, started_at, created_at, (first_id, last_id), rows,
                   report, dispatcher, override_quiet=bool((info[4] or {}).get(quiet.OVERRIDE))).run()
        if db.run(lambda c: ledger.finish_if_complete(c, edition_id)):
            log.info("delivery.edition.done", edition_id=edition_id)
    finally:
        db.close()
    log.info("delivery.batch.done", **report.as_dict())
    if report.stopped == "sender_refused":
        raise SenderRefused(f"edition {edition_id} paused: {report.reason}")
    return report


@dataclass(eq=False, kw_only=True)
class _Message(smtp_pool.Job):
    """One row handed to the lane's sessions, and what became of it."""

    batch: _Batch
    row: ledger.Claimed
    message_id: str
    domain: str
    outcome: Outcome | None = None
    accepted_at: float = 0.0  # time.time() when the answer came
    error: BaseException | None = None  # the sending code itself failed (a bug): row left claimed
    given_up: bool = False  # the batch stopped while it waited (limiter, a session): not sent
    counted: bool = False  # an alert to a reader with a daily cap: counted once it is mailed

    # On a sender thread (smtp_pool.Job):
    def before(self, wait: bool) -> bool:
        return self.batch.limiter.take(self.batch.kind, self.domain, wait=wait, on_wait=self.batch._still_wanted)

    def still_wanted(self) -> None:
        self.batch._still_wanted()

    def answer(self, outcome: Outcome | None, error: BaseException | None) -> None:
        self.outcome = outcome
        if isinstance(error, _GivenUp):
            self.given_up = True
        elif error is not None:
            self.error = error
        self.accepted_at = time.time()
        self.batch.done.put(self)


class _GivenUp(Exception):
    """Raised in a sender thread waiting for the rate limiter or a session once its batch stops."""


@dataclass(frozen=True)
class _Write:
    record: ledger.Record
    bounced_email: str | None = None  # a hard bounce: the address goes on the suppression list
    bounce_detail: str = ""
    counted: int | None = None  # an alert mailed to a reader with a cap: their id (ledger.count_alerts)


_STOP_PRECEDENCE = {"paused": 1, "unreachable": 2, "sender_refused": 3, "cancelled": 4, "lease_lost": 5}


class _Batch:
    def __init__(self, db: _Db, lease: _Lease, settings: Settings, worker: str, edition_id: int, kind: str,
                 started_at: dt.datetime, created_at: dt.datetime | None, id_range: tuple[int, int],
                 rows: list[ledger.Claimed], report: BatchReport, dispatcher: Dispatcher | None,
                 override_quiet: bool = False):
        self.db, self.lease, self.settings, self.worker = db, lease, settings, worker
        self.edition_id, self.kind, self.started_at, self.rows = edition_id, kind, started_at, rows
        self.report, self.dispatcher = report, dispatcher
        self.created_at = _aware(created_at).timestamp() if created_at else None
        self.max_age = dt.timedelta(hours=settings.retry_max_age_hours)
        self.lane = smtp_pool.lane(settings, kind)
        self.limiter = throttle.limiter(settings)
        self.alert_flag = priority.flag(settings)
        self.is_alert = kind == EditionKind.alert.value
        # SQLite (the demo) has one writer at a time: one message at a time, each outcome
        # committed before the next goes.
        self.one_at_a_time = one_at_a_time = not db.autocommit
        self.group = 1 if one_at_a_time else min(STATE_GROUP, self.lane.size)
        self.unsent: dict[int, ledger.Claimed] = {r.id: r for r in rows}  # not handed to SMTP yet
        self.in_flight = 0  # handed to a sender thread, answer not settled (each holds window room)
        self.room = 0  # window room taken for a message not handed over yet
        self.done: queue.SimpleQueue[_Message] = queue.SimpleQueue()
        self.stop: str | None = None
        self.stop_outcome: Outcome | None = None
        self.next_recheck = time.monotonic() + RECHECK_SECONDS
        self.returned: list[ledger.Claimed] = []  # answered, nothing sent, and the batch stops for it
        self.suspects: list[_Message] = []  # 5.7.x refusals in a row, not written yet (REFUSAL_STREAK)
        self.fence_ok: set[int] = set()  # the rows the last fence returned (`_fenced`)
        # PostgreSQL, groups of STATE_GROUP: each group's fence rides in its state read.
        self.fence_with_state = not one_at_a_time and self.group == STATE_GROUP
        self.error: BaseException | None = None
        self.writer = _Writer(worker, edition_id, db if one_at_a_time else None, settings, lease.deadline)
        self.override_quiet = override_quiet
        self.now, self.local = utcnow(), utcnow().astimezone(settings.tz)  # the clock of the current group
        self.heartbeat = _Heartbeat(worker, edition_id, id_range, settings.lease_seconds, lease,
                                    self.alert_flag if self.is_alert else None)

    # ------------------------------------------------------------------ the run

    def run(self) -> None:
        if self.is_alert:
            self.alert_flag.raise_()
        self.heartbeat.start()
        try:
            try:
                self._feed()
            except BaseException as exc:
                self.error = self.error or exc  # messages still queued in the lane are given up
                raise
            finally:
                self._drain_all()  # never leave while messages of ours are on the wire
                self._write_suspects()
            self.writer.close()  # every outcome committed (or the error it met raised)
            if self.error is not None:
                raise self.error
        except BaseException:
            # Not a crash of the process: write what was answered (the writer tries until
            # the lease's end), and hand the untouched rows straight back instead of
            # making them wait for their lease.
            self.error = self.error or RuntimeError("batch stopped")
            try:
                self.writer.close()
            except BaseException as exc:  # noqa: BLE001 — those rows keep their claim: the sweeper's
                log.error("delivery.record_failed", edition_id=self.edition_id, error=type(exc).__name__,
                          action="rows left claimed; the sweeper takes them back after their lease")
            self._give_back_untouched()
            raise
        finally:
            self._give_room(self.room)  # whatever an error left taken
            self.heartbeat.stop()
            self.report.by_status.update(self.writer.counts)
        self._act_on_stop()

    def _feed(self) -> None:
        """Each message takes room in the window as it goes, so the window stays full; the
        group's rows are fenced and their state read when its first message gets room."""
        for start in range(0, len(self.rows), self.group):
            chunk = self.rows[start:start + self.group]
            if not self._room():
                return
            subscriber_ids = [r.subscriber_id for r in chunk]
            if self.fence_with_state:  # one round trip: the ownership check rides in the state read
                ids = [r.id for r in chunk]
                status, states, not_held = self.db.run(lambda c, sids=subscriber_ids, ids=ids: ledger.recipient_states(
                    c, self.edition_id, sids, held=(self.worker, ids, self.settings.lease_seconds)))
                # Only a definite 0 skips the fence: anything else (rows short, or no answer) fences.
                lost = not_held != 0 and not self._fence(ids)
            else:
                lost = not self._fenced(start)
                status, states, _ = self.db.run(
                    lambda c, sids=subscriber_ids: ledger.recipient_states(c, self.edition_id, sids))
            if lost:
                # The lease ran out (this process froze, or could not renew) and the
                # sweeper gave rows away: send nothing more of this batch.  (Rows still
                # ours are handed back by the conditional release.)
                log.warning("delivery.batch.lease_lost", edition_id=self.edition_id)
                self._give_room()
                self._stop("lease_lost")
                return
            self.now = utcnow()
            self.local = self.now.astimezone(self.settings.tz)
            if status in (EditionStatus.paused, EditionStatus.cancelled, None):
                self._give_room()
                self._stop("paused" if status == EditionStatus.paused else "cancelled")
                return
            for i, row in enumerate(chunk):
                if i and not self._room():
                    return
                self._one(row, states.get(row.subscriber_id))

    def _fenced(self, start: int) -> bool:
        """Whether this batch still owns the rows from `start` on, fenced STATE_GROUP at a
        time whatever the group read for their state (SQLite, or groups of other sizes)."""
        if self.rows[start].id in self.fence_ok:
            return True
        return self._fence([r.id for r in self.rows[start:start + STATE_GROUP]])

    def _fence(self, ids: list[int]) -> bool:
        """The fence proper: one conditional UPDATE extends the lease of the rows this
        batch still holds, on the database's clock, and returns them.  False: the lease ran
        out (this process froze, or could not renew) and the sweeper gave rows away —
        send nothing more of this batch."""
        asked = time.monotonic()
        owned = self.db.run(lambda c: ledger.fence(c, self.worker, ids, self.settings.lease_seconds))
        if len(owned) < len(ids):
            for row_id in set(ids) - owned:
                self.unsent.pop(row_id, None)  # another worker's now
            log.warning("delivery.batch.lease_lost", edition_id=self.edition_id, rows=len(ids) - len(owned))
            return False
        self.lease.renewed(asked)
        self.fence_ok = owned
        return True

    def _one(self, row: ledger.Claimed, state: ledger.RecipientState | None) -> None:
        """Send one row's message, or decide it without sending (its window room given back)."""
        write: _Write | None = None
        if state is None:  # the reader was deleted (their rows went with them)
            pass
        elif state.suppressed:
            write = _Write(ledger.Record(row.id, DeliveryStatus.suppressed, smtp_reply="on the suppression list",
                                         attempted=False))
        elif not _eligible(state):
            write = _Write(ledger.Record(row.id, DeliveryStatus.skipped, attempted=False,
                                         smtp_reply="unsubscribed or opted out since planning"))
        elif (withheld := self._withheld(state)) is not None:
            write = _Write(ledger.Record(row.id, DeliveryStatus(withheld.status), attempted=False,
                                         smtp_reply=withheld.reason))
        else:
            tpl = self.db.run(lambda c: _template(c, self.edition_id, self.kind, row.variant))
            if tpl is None:
                write = _Write(ledger.Record(row.id, DeliveryStatus.skipped, attempted=False,
                                             smtp_reply=f"no rendered variant {row.variant!r}"))
            else:
                try:
                    msg = compose(tpl, delivery_id=row.id, subscriber_id=row.subscriber_id,
                                  token_version=state.token_version, to_addr=state.email, settings=self.settings)
                except ValueError as exc:  # an address no header can carry: this row only
                    write = _Write(ledger.Record(row.id, DeliveryStatus.failed, smtp_reply=f"not sent: {exc}"))
                else:
                    self.lane.submit(_Message(
                        sender=msg.envelope_from, recipient=state.email, data=msg.data, batch=self, row=row,
                        message_id=msg.message_id, domain=state.email.rpartition("@")[2].lower(),
                        counted=state.alert_cap is not None and self.kind == EditionKind.alert.value))
                    # From here on the row is never handed back as `queued`: it may be accepted.
                    del self.unsent[row.id]
                    self.room -= 1  # the room goes with the message: _drain gives it back
                    self.in_flight += 1
                    if self.one_at_a_time:  # SQLite: its answer is written before the next message goes
                        self._drain_all()
                    return
        del self.unsent[row.id]
        self._give_room()
        if write is not None:
            metrics.message(self.kind, write.record.status.value)
            self._put(write)

    def _withheld(self, state: ledger.RecipientState) -> quiet.Withheld | None:
        # Quiet hours on the reader's clock; the cap counts the site's day (ledger.count_alerts).
        local = self.local if state.time_zone is None else clocks.local(self.now, state.time_zone, self.settings)
        return quiet.decide(self.kind, now=self.now, local=local, day=self.local.date(),
                            paused_until=state.paused_until,
                            quiet_start=state.quiet_start, quiet_end=state.quiet_end, quiet_mode=state.quiet_mode,
                            alert_cap=state.alert_cap, alerts_day=state.alerts_day, alerts_today=state.alerts_today,
                            override_quiet=self.override_quiet)

    def _still_wanted(self) -> None:
        if self.stop is not None or self.error is not None:
            raise _GivenUp

    # ------------------------------------------------------------------ answers

    def _room(self) -> bool:
        """Take room in the window for one message, settling answers while waiting; False: stop.

        A long wait (the rate limiter holds the messages in flight, or other batches hold
        the pool) re-reads the edition every RECHECK_SECONDS, so that a pause or a cancel
        also stops a batch that is not sending."""
        while True:
            self._drain(block=False)
            self._recheck()
            if self.stop is not None or self.error is not None:
                return False
            if self.in_flight >= priority.STEPPED_DOWN_WINDOW and not self.is_alert and self.alert_flag.up():
                self._drain(block=True)  # an alert is sending: digests step down (priority.py)
                continue
            if (self.lane.window.acquire(timeout=0.05) if self.in_flight == 0  # the room is other batches'
                    else self.lane.window.acquire(blocking=False)):
                self.room += 1
                return True
            if self.in_flight:
                self._drain(block=True)

    def _give_room(self, n: int = 1) -> None:
        for _ in range(n):
            self.room -= 1
            self.lane.window.release()

    def _drain(self, block: bool) -> None:
        while self.in_flight:
            try:
                message = self.done.get(timeout=0.05) if block else self.done.get_nowait()
            except queue.Empty:
                return
            block = False
            self.in_flight -= 1
            try:
                self._settle(message)
            finally:
                self.lane.window.release()

    def _drain_all(self) -> None:
        while self.in_flight:
            self._drain(block=True)
            self._recheck()

    def _recheck(self) -> None:
        """Every RECHECK_SECONDS of waiting, read the edition: paused or cancelled → stop
        (the messages still waiting for the rate limiter are then given up)."""
        now = time.monotonic()
        if now < self.next_recheck:
            return
        self.next_recheck = now + RECHECK_SECONDS
        if self.stop is not None:
            return
        try:
            status = self.db.run(lambda c: ledger.edition_status(c, self.edition_id))
        except Exception as exc:  # noqa: BLE001 — waiting goes on; the next group's read will tell
            log.warning("delivery.batch.recheck_failed", edition_id=self.edition_id, error=type(exc).__name__)
            return
        if status in (EditionStatus.paused, EditionStatus.cancelled, None):
            self._stop("paused" if status == EditionStatus.paused else "cancelled")

    def _settle(self, message: _Message) -> None:
        """What one answer means for the ledger (verdicts.py's table)."""
        row, outcome = message.row, message.outcome
        if message.given_up:  # never went out: handed back with the rows not sent
            self.unsent[row.id] = row
            return
        if outcome is None:
            log.error("delivery.send_crashed", edition_id=self.edition_id, delivery_id=row.id,
                      error=type(message.error).__name__, action="row left claimed; the sweeper decides")
            self.error = self.error or message.error
            return
        v = outcome.verdict
        latency = None
        if v == Verdict.sent and self.created_at is not None:
            latency = message.accepted_at - self.created_at
        metrics.message(self.kind, v.value, outcome.code, latency)
        if refusal_key(outcome) is not None:
            self._suspect(message)
            return
        if v == Verdict.sent and self.suspects and row.id > min(m.row.id for m in self.suspects):
            # The relay took a message sent after the first refusal (answers come back in
            # any order; ids are the sending order): those were each reader's own.
            self._write_suspects()
        common = {"smtp_code": outcome.code, "smtp_reply": outcome.reply}
        D = DeliveryStatus
        counted = row.subscriber_id if message.counted else None
        if v == Verdict.sent:
            self._put(_Write(ledger.Record(row.id, D.sent, message_id=message.message_id, **common), counted=counted))
        elif v == Verdict.unknown and self.settings.smtp_ambiguous == "resend":
            # The dot may have left: send it once more, same Message-ID (mail clients fold
            # the copy), counted as a possible duplicate — never a reader without the news.
            metrics.possible_duplicate(self.kind)
            self._put(_Write(ledger.Record(row.id, D.retry, message_id=message.message_id, ambiguous=True,
                                           next_attempt_at=self._relays_back(), **common), counted=counted))
            log.warning("delivery.ambiguous_resend", edition_id=self.edition_id, delivery_id=row.id,
                        reply=scrub(outcome.reply))
        elif v == Verdict.unknown:  # SMTP_AMBIGUOUS=hold: a person decides (resend-unknown)
            self._put(_Write(ledger.Record(row.id, D.unknown, message_id=message.message_id, **common),
                             counted=counted))
            log.warning("delivery.unknown", edition_id=self.edition_id, delivery_id=row.id, reply=scrub(outcome.reply))
        elif v in (Verdict.failed, Verdict.bounced):
            self._fail(message)
        elif v == Verdict.retry:  # this reader, later
            if utcnow() - self.started_at > self.max_age:
                self._put(_Write(ledger.Record(row.id, D.failed, smtp_code=outcome.code,
                                               smtp_reply=f"gave up after {self.max_age}: {outcome.reply}")))
            else:
                self._put(_Write(ledger.Record(row.id, D.retry, next_attempt_at=retry_at(
                    row.attempts + 1, settings=self.settings), **common)))
        elif v == Verdict.unavailable:  # no relay left: the rest waits for one, never a pause
            self.returned.append(row)
            self._stop("unreachable", outcome)
        elif v == Verdict.sender_refused:  # nothing was sent: this row and the rest, nobody's fault
            self.returned.append(row)
            self._stop("sender_refused", outcome)

    def _fail(self, message: _Message) -> None:
        row, outcome = message.row, message.outcome
        assert outcome is not None
        record = ledger.Record(row.id, DeliveryStatus.failed, smtp_code=outcome.code, smtp_reply=outcome.reply)
        if outcome.verdict == Verdict.bounced:
            self._put(_Write(record, bounced_email=message.recipient, bounce_detail=f"{outcome.code} {outcome.reply}"))
            log.info("delivery.bounced", edition_id=self.edition_id, delivery_id=row.id, code=outcome.code)
        else:
            self._put(_Write(record))

    def _suspect(self, message: _Message) -> None:
        """A 5.7.x for one reader is theirs (RFC 3463: X.7.1 is also a per-recipient
        policy answer), unless the same 5.7.x comes for REFUSAL_STREAK readers in a row:
        then the relay refuses *us*, and none of them is blamed."""
        assert message.outcome is not None
        if self.stop == "sender_refused":  # in flight when the streak was seen: the same refusal
            self.returned.append(message.row)
            return
        key = refusal_key(message.outcome)
        if self.suspects and refusal_key(self.suspects[0].outcome) != key:  # type: ignore[arg-type]
            self._write_suspects()
        self.suspects.append(message)
        if len(self.suspects) >= REFUSAL_STREAK:
            self.returned.extend(m.row for m in self.suspects)
            self.suspects = []
            self._stop("sender_refused", message.outcome)

    def _write_suspects(self) -> None:
        suspects, self.suspects = self.suspects, []
        for message in suspects:
            if self.stop == "sender_refused":  # nobody is blamed for a refusal of us
                self.returned.append(message.row)
            else:
                self._fail(message)

    def _relays_back(self) -> dt.datetime:
        """When a relay is usable again (at least a second from now): the time for rows
        that wait for one."""
        return utcnow() + dt.timedelta(seconds=max(1.0, self.lane.relays.soonest()))

    def _put(self, write: _Write) -> None:
        if self.writer.error is not None:
            return  # the writer failed: this row keeps its claim (the sweeper's)
        try:
            self.writer.put(write)
        except Exception as exc:  # noqa: BLE001 — raised by run() once nothing is in flight
            self.error = exc

    def _stop(self, why: str, outcome: Outcome | None = None) -> None:
        if self.stop is None or _STOP_PRECEDENCE[why] > _STOP_PRECEDENCE[self.stop]:
            self.stop, self.stop_outcome = why, outcome or self.stop_outcome

    # ------------------------------------------------------------------ the end

    def _give_back(self, to: DeliveryStatus, ids: list[int], **kw) -> None:
        self.db.run(lambda c: ledger.release(c, self.worker, ids, to, **kw))

    def _give_back_untouched(self) -> None:
        try:
            self._give_back(DeliveryStatus.queued, list(self.unsent))
        except Exception:  # noqa: BLE001 — the sweeper gets them after the lease
            log.exception("delivery.batch.release_failed", edition_id=self.edition_id)

    def _act_on_stop(self) -> None:
        if self.stop is None:
            return
        self.report.stopped = self.stop
        ids = [*self.unsent, *(r.id for r in self.returned)]
        if self.stop == "cancelled":
            self._give_back(DeliveryStatus.cancelled, ids, reply="edition cancelled")
        elif self.stop in ("paused", "lease_lost"):
            # lease_lost: the rows still ours (the release is conditional) go to whoever is sending.
            self._give_back(DeliveryStatus.queued, ids)
            self.db.run(lambda c: _redispatch_if_resumed(c, self.edition_id, self.kind, ids, self.db.autocommit,
                                                         self.dispatcher))
        elif self.stop == "unreachable":
            outcome = self.stop_outcome
            self._give_back(DeliveryStatus.retry, ids, reply=outcome.reply if outcome else None,
                            next_attempt_at=self._relays_back())
            log.warning("delivery.batch.waiting_for_relay", edition_id=self.edition_id, rows=len(ids),
                        reply=scrub(outcome.reply) if outcome else None)
        elif self.stop == "sender_refused":
            self.db.run(lambda c: self._pause_for(c, self.stop_outcome))
            self._give_back(DeliveryStatus.queued, ids)

    def _pause_for(self, conn, outcome: Outcome | None) -> None:
        stage, code, reply = (outcome.stage, outcome.code, outcome.reply) if outcome else ("?", None, "")
        reason = f"SMTP server refused the sender at {stage}: {code or ''} {scrub(reply)}".strip()
        self.report.reason = reason
        if ledger.pause_edition(conn, self.edition_id, reason):
            conn.execute(sa.insert(AuditLog.__table__).values(
                at=utcnow(), actor="system", action="edition.pause", target=f"edition:{self.edition_id}",
                details={"reason": reason}))
        log.error("delivery.sender_refused", edition_id=self.edition_id, stage=stage, code=code,
                  reply=scrub(reply), action="edition paused; fix the SMTP settings, then resume it")


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)  # SQLite returns naive UTC


def _redispatch_if_resumed(conn, edition_id: int, kind: str, released: list[int], autocommit: bool,
                           dispatcher: Dispatcher | None) -> None:
    """A resume that committed between our read of `paused` and our hand-back dispatched
    only the rows that were claimable then; ours were still claimed, so no batch covers
    them.  Look again now that they are `queued` (and committed), and send them on.

    The read waits for a resume still in progress (it holds the edition's row: FOR UPDATE
    on PostgreSQL; SQLite has one writer at a time, and our hand-back was a write): either
    the resume's own range query ran after our hand-back committed and covers the rows,
    or we see its new status here.  A batch sent twice claims nothing the second time.
    """
    if not released:
        return
    status = ledger.edition_status(conn, edition_id, wait_for_writers=True)
    if not autocommit:
        conn.commit()
    if status in (EditionStatus.planned, EditionStatus.sending):
        batches = fanout.dispatch_committed_ids(edition_id, kind, released, dispatcher)
        log.info("delivery.batch.resumed_meanwhile", edition_id=edition_id, rows=len(released), batches=batches)


# ---------------------------------------------------------------------- helpers


_STOP = object()


class _Writer:
    """Writes a batch's outcomes in groups from a thread of its own, or one at a time on
    the batch's connection (`db`: SQLite).  See the module doc for the bound it keeps.

    A database that refuses a group (a restart, a failover) is tried again on a new
    connection until the lease's deadline: after it the rows may be another worker's,
    and what is not written stays `claimed` for the sweeper — the state a worker killed
    before its commit leaves, within the same bound."""

    def __init__(self, worker: str, edition_id: int, db: _Db | None, settings: Settings, deadline):
        self.worker, self.edition_id = worker, edition_id
        self.tz = settings.tz
        self.counts: collections.Counter = collections.Counter()
        self.error: BaseException | None = None
        self._db = db
        self._deadline = deadline
        self._thread: threading.Thread | None = None
        if db is None:
            self._room = threading.Semaphore(OUTCOME_GROUP)
            self._queue: queue.SimpleQueue = queue.SimpleQueue()
            self._wake = threading.Event()  # a group is full, or the batch ends: write now
            self._thread = threading.Thread(target=self._run, name=f"nashra-ledger-{edition_id}", daemon=True)
            self._thread.start()

    def put(self, write: _Write) -> None:
        """Hand one outcome over; waits while OUTCOME_GROUP are not yet committed."""
        if self.error is not None:
            raise self.error
        if self._thread is None:
            self._write(self._db, [write])  # type: ignore[arg-type]
            return
        while not self._room.acquire(timeout=0.2):
            if self.error is not None:
                raise self.error
        self._queue.put(write)
        if self._queue.qsize() >= OUTCOME_GROUP - 1:  # with the one the writer holds: a full group
            self._wake.set()

    def close(self) -> None:
        """Wait until every outcome handed over is committed; raise what went wrong."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._wake.set()
            self._thread.join()
            self._thread = None
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        db = _Db(None, self._deadline, self.edition_id)
        try:
            self._loop(db)
        except BaseException as exc:  # noqa: BLE001 — a bug: put() and close() raise it in the batch
            self.error = self.error or exc
            while self._queue.get() is not _STOP:  # let a waiting put() and close() go on
                self._room.release()
        finally:
            db.close()

    def _loop(self, db: _Db) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            group, stopping = [first], False
            # Gather for OUTCOME_WAIT without waking up for each outcome (a wake-up per
            # message cost more CPU than writing it): put() cuts the wait short when a
            # group is full, close() when the batch ends.
            if self._queue.qsize() < OUTCOME_GROUP - 1:
                self._wake.wait(OUTCOME_WAIT)
            self._wake.clear()
            while len(group) < OUTCOME_GROUP:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                group.append(item)
            try:
                if self.error is None:
                    self._write(db, group)
            except BaseException as exc:  # noqa: BLE001 — put() and close() raise it in the batch
                self.error = exc
                log.error("delivery.record_failed", edition_id=self.edition_id,
                          delivery_ids=[w.record.delivery_id for w in group], error=type(exc).__name__,
                          action="rows left claimed; the sweeper takes them back after their lease")
            finally:
                self._room.release(len(group))
            if stopping:
                return

    def _write(self, db: _Db, group: list[_Write]) -> None:
        """One transaction for the group (tried again through a database blip by `db`)."""
        def write(conn) -> set[int]:
            try:
                written = ledger.record_many(conn, self.worker, [w.record for w in group])
                for w in group:
                    if w.bounced_email:
                        suppression.suppress(conn, w.bounced_email, "hard_bounce", w.bounce_detail)
                counted = [w.counted for w in group if w.counted is not None and w.record.delivery_id in written]
                ledger.count_alerts(conn, self.edition_id, counted, utcnow().astimezone(self.tz).date())
                conn.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.rollback()
                raise
            return written

        written = db.run(write)
        for w in group:
            if w.record.delivery_id in written:
                self.counts[w.record.status.value] += 1
            else:
                # The lease expired and someone else took the row (or a retry after a blip
                # finds it written already): our answer is not needed.
                self.counts["lease_lost"] += 1
                log.warning("delivery.lease_lost", delivery_id=w.record.delivery_id, status=w.record.status.value)


class _Heartbeat:
    """Renews the batch's leases every LEASE_SECONDS/3 from a thread of its own, so that
    neither a slow relay nor the rate limiter makes a live batch look dead (an alert
    batch also keeps the alert flag up: priority.py)."""

    def __init__(self, worker: str, edition_id: int, id_range: tuple[int, int], lease_seconds: int, lease: _Lease,
                 alert_flag: priority.AlertFlag | None = None):
        self.worker, self.edition_id, self.id_range, self.lease_seconds = worker, edition_id, id_range, lease_seconds
        self.lease, self.alert_flag = lease, alert_flag
        self.every = max(lease_seconds / 3, 0.2)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"nashra-lease-{edition_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stopped.wait(self.every):
            if self.alert_flag is not None:
                self.alert_flag.raise_()
            asked = time.monotonic()
            try:
                with _connect() as conn:
                    ledger.extend_leases(conn, self.worker, self.edition_id, *self.id_range, self.lease_seconds)
                    conn.commit()
                self.lease.renewed(asked)
            except Exception as exc:  # noqa: BLE001 — try again at the next beat
                log.warning("delivery.heartbeat_failed", edition_id=self.edition_id, error=type(exc).__name__)
