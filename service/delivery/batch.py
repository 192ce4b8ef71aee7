"""Send one batch of an edition: claim, re-check, compose, send, record — one row at a time.

Crash safety comes from the order of the steps and from committing after every message:

1. claim the range's claimable rows (conditional UPDATE, lease = now + LEASE_SECONDS)
   and commit, so the claim is visible to every other worker and to the sweeper;
2. per row, just before sending, re-read the reader and the edition in one query:
   unsubscribed or suppressed since planning → `skipped`/`suppressed`; edition paused
   or cancelled → hand the rest back and stop;
3. send over this process's persistent SMTP connection and commit the answer.

A SIGKILL between a 250 and the commit of step 3 (or a database that refuses that
commit RECORD_ATTEMPTS times) is the only way a message goes twice: at most one message
per worker process (its one connection) is in flight.  A row whose SMTP answer is known
is never handed back as `queued`; it keeps its claim until its answer is written or its
lease runs out.
The killed worker's remaining rows keep their lease until it expires; the sweeper then
returns them to `queued` and re-dispatches them.  While a batch runs it extends its
lease every third of LEASE_SECONDS, so a slow batch is never mistaken for a dead one.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field

import sqlalchemy as sa

from service.config import Settings, get_settings
from service.db import get_engine
from service.delivery import fanout, ledger, throttle
from service.delivery.compose import VariantTemplate, compose, prepare
from service.delivery.smtp import connection
from service.delivery.verdicts import Outcome, Verdict, scrub
from service.dispatch import Dispatcher
from service.logs import get_logger
from service.models import (
    DeliveryStatus,
    Edition,
    EditionKind,
    EditionStatus,
    EditionVariant,
    utcnow,
)
from service.subscribers import suppression

log = get_logger(__name__)

RETRY_BASE_SECONDS = 60.0
RETRY_MAX_SECONDS = 3600.0
_TEMPLATE_CACHE_SIZE = 256


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


def retry_at(attempts: int, now: dt.datetime | None = None) -> dt.datetime:
    """Exponential backoff with jitter, so that retried rows do not return in a herd."""
    delay = min(RETRY_BASE_SECONDS * 2 ** max(attempts - 1, 0), RETRY_MAX_SECONDS)
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
    tpl = prepare(edition_id, kind, variant, row[0], row[1], row[2])
    with _templates_lock:
        _templates[key] = tpl
        while len(_templates) > _TEMPLATE_CACHE_SIZE:
            _templates.popitem(last=False)
    return tpl


def forget_prepared_variants() -> None:
    """Empty this process's cache of prepared variants (tests restart ids; production never does)."""
    with _templates_lock:
        _templates.clear()


def _eligible(kind: str, state: ledger.RecipientState) -> bool:
    if state.subscriber_status != "active":
        return False
    if kind == EditionKind.alert.value and not state.alerts:
        return False
    if kind == EditionKind.digest.value and state.frequency == "none":
        return False
    return True


def _connect():
    """The batch's own connection.  On PostgreSQL every statement commits by itself
    (autocommit): each ledger write is a single conditional statement, so this is the
    same safety in one round trip instead of three (BEGIN, statement, COMMIT)."""
    engine = get_engine()
    conn = engine.connect()
    if engine.dialect.name == "postgresql":
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
    return conn


def send_batch(edition_id: int, first_id: int, last_id: int, *, settings: Settings | None = None,
               worker: str | None = None, dispatcher: Dispatcher | None = None) -> BatchReport:
    settings = settings or get_settings()
    worker = worker or worker_name()
    report = BatchReport(edition_id)
    E = Edition.__table__
    with _connect() as conn:
        info = conn.execute(sa.select(E.c.status, E.c.kind, E.c.started_at).where(E.c.id == edition_id)).first()
        if info is None or info[0] not in (EditionStatus.planned.value, EditionStatus.sending.value):
            report.stopped = info[0] if info else "missing"
            return report
        kind, started_at = EditionKind(info[1]).value, info[2] or utcnow()
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            conn.commit()  # SQLite: end the read before writing (see _send_rows)
        ledger.start_sending(conn, edition_id)
        rows = ledger.claim(conn, edition_id, first_id, last_id, worker, settings.lease_seconds)
        conn.commit()
        report.claimed = len(rows)
        if rows:
            log.info("delivery.batch.claimed", edition_id=edition_id, first_id=first_id, last_id=last_id, rows=len(rows))
            _send_rows(conn, settings, worker, edition_id, kind, started_at, rows, report, dispatcher)
        if ledger.finish_if_complete(conn, edition_id):
            log.info("delivery.edition.done", edition_id=edition_id)
        conn.commit()
    log.info("delivery.batch.done", **report.as_dict())
    if report.stopped == "sender_refused":
        raise SenderRefused(f"edition {edition_id} paused: {report.reason}")
    return report


def _send_rows(conn, settings, worker, edition_id, kind, started_at, rows, report, dispatcher) -> None:
    smtp = connection(settings)
    limiter = throttle.limiter(settings)
    max_age = dt.timedelta(hours=settings.retry_max_age_hours)
    heartbeat_every = max(settings.lease_seconds / 3, 0.5)
    next_heartbeat = time.monotonic() + heartbeat_every
    pending = collections.deque(r.id for r in rows)
    # On SQLite a transaction that has read and then writes fails at once (SQLITE_BUSY_SNAPSHOT,
    # busy_timeout does not apply) if another connection committed in between: every read
    # below ends its transaction before anything is written or sent, so each write starts
    # a transaction of its own, which waits for the lock.  PostgreSQL runs in autocommit:
    # nothing to end there, and not a round trip more.
    autocommit = conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"

    def end_read() -> None:
        if not autocommit:
            conn.commit()

    def heartbeat() -> None:
        nonlocal next_heartbeat
        if time.monotonic() >= next_heartbeat:
            ledger.extend_lease(conn, worker, list(pending), settings.lease_seconds)
            conn.commit()
            next_heartbeat = time.monotonic() + heartbeat_every

    def give_back(to: DeliveryStatus, also: tuple[int, ...] = (), **kw) -> None:
        ledger.release(conn, worker, [*also, *pending], to, **kw)
        conn.commit()

    try:
        for row in rows:
            heartbeat()
            state = ledger.recipient_state(conn, edition_id, row.subscriber_id)
            end_read()
            if state is None:  # the reader was deleted (their rows went with them)
                pending.popleft()
                continue
            if state.edition_status == EditionStatus.paused:
                released = list(pending)
                give_back(DeliveryStatus.queued)
                report.stopped = "paused"
                _redispatch_if_resumed(conn, edition_id, kind, released, autocommit, dispatcher)
                return
            if state.edition_status == EditionStatus.cancelled:
                give_back(DeliveryStatus.cancelled, reply="edition cancelled")
                report.stopped = "cancelled"
                return
            if state.suppressed:
                _finish(conn, worker, row.id, DeliveryStatus.suppressed, report, attempted=False,
                        smtp_reply="on the suppression list")
            elif not _eligible(kind, state):
                _finish(conn, worker, row.id, DeliveryStatus.skipped, report, attempted=False,
                        smtp_reply="unsubscribed or opted out since planning")
            else:
                tpl = _template(conn, edition_id, kind, row.variant)
                end_read()
                if tpl is None:
                    _finish(conn, worker, row.id, DeliveryStatus.skipped, report, attempted=False,
                            smtp_reply=f"no rendered variant {row.variant!r}")
                else:
                    domain = state.email.rpartition("@")[2].lower()
                    limiter.wait(kind, domain, on_wait=heartbeat)
                    try:
                        msg = compose(tpl, delivery_id=row.id, subscriber_id=row.subscriber_id,
                                      token_version=state.token_version, to_addr=state.email, settings=settings)
                    except ValueError as exc:  # an address no header can carry: this row only
                        _finish(conn, worker, row.id, DeliveryStatus.failed, report, smtp_reply=f"not sent: {exc}")
                        pending.popleft()
                        conn.commit()
                        continue
                    outcome = smtp.send(msg.envelope_from, state.email, msg.data, wire_ready=True)
                    # The SMTP answer is known: from here on this row is never handed back
                    # as `queued` by the error path below (it may have been accepted).
                    pending.popleft()
                    stop = _record_outcome(conn, worker, edition_id, row, state, outcome, msg.message_id,
                                           started_at, max_age, report)
                    if stop == "sender_refused":  # nothing was sent: this row and the rest, nobody's fault
                        give_back(DeliveryStatus.queued, also=(row.id,))
                        report.stopped = stop
                        return
                    if stop == "unreachable":  # the whole rest of the batch waits, not just this row
                        give_back(DeliveryStatus.retry, also=(row.id,), next_attempt_at=retry_at(row.attempts + 1),
                                  reply=outcome.reply)
                        report.stopped = stop
                        return
                    continue
            pending.popleft()
            conn.commit()
    except BaseException:
        # Not a crash of the process: hand the untouched rows straight back instead of
        # making them wait for their lease to expire.
        conn.rollback()
        try:
            give_back(DeliveryStatus.queued)
        except Exception:  # noqa: BLE001 — the sweeper will get them after the lease
            log.exception("delivery.batch.release_failed", edition_id=edition_id)
        raise


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


RECORD_ATTEMPTS = 3


def _record_outcome(conn, worker, edition_id, row, state, outcome, message_id, started_at, max_age,
                    report) -> str | None:
    """`_apply` and its commit, tried again if the database refuses the write.

    If every attempt fails the row stays `claimed` (the caller has already taken it out of
    `pending`, so the error path does not re-queue it) and the error goes up.  That is the
    state a worker killed between the 250 and its commit leaves, and it is handled the same
    way: the lease expires and the sweeper decides (it returns the row to `queued`, so this
    one message may go twice, as after a crash; an answer the database could not take is
    lost either way).  We choose this over writing some other
    status because the database has just refused three writes (a fourth, of another kind,
    would most likely fail too) and because no status the ledger has says "sent, not
    recorded": a blind `queued` — the old behaviour — re-sent every such message at once,
    for every batch that met a busy database, while this leaves at most this one message
    in doubt, the bound the design already accepts for a crash.
    """
    counted = report.by_status.copy()
    for attempt in range(1, RECORD_ATTEMPTS + 1):
        try:
            stop = _apply(conn, worker, edition_id, row, state, outcome, message_id, started_at, max_age, report)
            conn.commit()
            return stop
        except sa.exc.OperationalError as exc:
            conn.rollback()
            report.by_status = counted.copy()  # what the rolled-back attempt counted is undone too
            if attempt == RECORD_ATTEMPTS:
                log.error("delivery.record_failed", edition_id=edition_id, delivery_id=row.id,
                          verdict=outcome.verdict.value, error=type(exc).__name__,
                          action="row left claimed; the sweeper takes it back after its lease")
                raise
            log.warning("delivery.record_retry", edition_id=edition_id, delivery_id=row.id, attempt=attempt,
                        error=type(exc).__name__)
            time.sleep(0.05 * 2**attempt)
    return None  # not reached


def _finish(conn, worker, delivery_id, status, report, **kw) -> None:
    if ledger.record(conn, delivery_id, worker, status, **kw):
        report.by_status[status.value] += 1
    else:
        # The lease expired and someone else took the row: our answer is stale.
        report.by_status["lease_lost"] += 1
        log.warning("delivery.lease_lost", delivery_id=delivery_id, status=status.value)


def _apply(conn, worker, edition_id, row, state, outcome: Outcome, message_id, started_at, max_age, report) -> str | None:
    """Write one SMTP outcome to the ledger; return a reason to stop the batch, if any."""
    v = outcome.verdict
    common = {"smtp_code": outcome.code, "smtp_reply": outcome.reply}
    if v == Verdict.sent:
        _finish(conn, worker, row.id, DeliveryStatus.sent, report, message_id=message_id, **common)
    elif v == Verdict.unknown:
        _finish(conn, worker, row.id, DeliveryStatus.unknown, report, message_id=message_id, **common)
        log.warning("delivery.unknown", edition_id=edition_id, delivery_id=row.id, reply=scrub(outcome.reply))
    elif v == Verdict.failed:
        _finish(conn, worker, row.id, DeliveryStatus.failed, report, **common)
    elif v == Verdict.bounced:
        _finish(conn, worker, row.id, DeliveryStatus.failed, report, **common)
        suppression.suppress(conn, state.email, "hard_bounce", f"{outcome.code} {outcome.reply}")
        log.info("delivery.bounced", edition_id=edition_id, delivery_id=row.id, code=outcome.code)
    elif v == Verdict.retry:
        if utcnow() - started_at > max_age:
            _finish(conn, worker, row.id, DeliveryStatus.failed, report,
                    smtp_code=outcome.code, smtp_reply=f"gave up after {max_age}: {outcome.reply}")
        elif outcome.stage == "connect":
            return "unreachable"
        else:
            _finish(conn, worker, row.id, DeliveryStatus.retry, report,
                    next_attempt_at=retry_at(row.attempts + 1), **common)
    elif v == Verdict.sender_refused:
        reason = f"SMTP server refused the sender at {outcome.stage}: {outcome.code or ''} {scrub(outcome.reply)}".strip()
        ledger.pause_edition(conn, edition_id, reason)
        from service.models import AuditLog

        conn.execute(sa.insert(AuditLog.__table__).values(
            at=utcnow(), actor="system", action="edition.pause", target=f"edition:{edition_id}",
            details={"reason": reason}))
        report.reason = reason
        log.error("delivery.sender_refused", edition_id=edition_id, stage=outcome.stage, code=outcome.code,
                  reply=scrub(outcome.reply), action="edition paused; fix the SMTP settings, then resume it")
        return "sender_refused"
    return None
