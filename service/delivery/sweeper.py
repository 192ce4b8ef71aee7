"""The sweeper (beat, every SWEEP_SECONDS): leases, due retries, lost batches, finished editions.

1. Rows whose lease expired belonged to a worker that died (SIGKILL, OOM, a lost
   machine): a live batch renews its leases every LEASE_SECONDS/3, so these are back to
   `queued` (or `cancelled` if the edition was cancelled meanwhile) within LEASE_SECONDS
   + SWEEP_SECONDS of the death, and re-dispatched at once — with every other claimable
   row of the edition when its queue is empty: the dead worker also took the batch
   messages it had prefetched, whose rows were never claimed.
2. Retry rows whose time has come are dispatched at the next sweep (within SWEEP_SECONDS
   of their time), once: the row's `updated_at` is set to the sweep's time, and a row is
   due for this only while `updated_at < next_attempt_at` — a later sweep does not pile
   another message on it.  (If that message is lost, rule 3 finds the row.)
3. An edition in `planned` or `sending` that has claimable rows (queued, or retry rows
   whose time has come), no live claim, no ledger move for STALL_SECONDS, and no batch
   message waiting in its queue lost its batch messages (a Redis restart without
   persistence, a worker killed while it held prefetched tasks): re-dispatch those
   rows.  Re-dispatching is harmless if a message was not in fact lost: claims are
   conditional.
4. Retry rows older than RETRY_MAX_AGE_HOURS (counted from the edition's start) → failed.
5. `sending` editions with nothing left → `done`.
6. Drafts older than STALLED_DRAFT_AFTER: created and committed, but the message that
   should have planned them was lost (the process died between commit and enqueue, or
   the broker was down at the editor's click).  Every draft that reaches the database
   is meant to go (previews roll back), and planning twice is harmless, so the sweep
   task hands them to the planner again.  So are editions whose audience was being
   written in chunks and whose last chunk is older than STALLED_DRAFT_AFTER.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.config import get_settings
from service.delivery import fanout, ledger
from service.delivery.ledger import D
from service.dispatch import Dispatcher, current
from service.logs import get_logger
from service.models import DeliveryStatus, Edition, EditionStatus, utcnow

log = get_logger(__name__)

STALLED_DRAFT_AFTER = dt.timedelta(seconds=60)
# No ledger move for this long, nothing claimed, nothing queued: the batch messages are lost.
STALL_SECONDS = 10.0
DRAFT_LOOKBACK = dt.timedelta(days=2)  # older drafts are news no more: left for an operator


@dataclass
class SweepReport:
    expired: int = 0
    redispatched: dict[int, int] = field(default_factory=dict)
    expired_retries: int = 0
    due_retries: int = 0
    stalled: list[int] = field(default_factory=list)  # editions whose batch messages were lost
    finished: list[int] = field(default_factory=list)


def sweep(session: Session, now: dt.datetime | None = None, dispatcher: Dispatcher | None = None) -> SweepReport:
    settings = get_settings()
    dispatcher = dispatcher or current()
    # Leases are on the database's clock (ledger.lease_end); `now` is given by tests only.
    lease_now = now or ledger.db_now(session)
    now = now or utcnow()
    report = SweepReport()

    # 1. expired leases.  SKIP LOCKED: a row locked by a transaction that is still open (a
    # worker frozen mid-write, SIGSTOP) is taken at a later sweep, and the sweeper never
    # waits for the frozen process — nor do the other editions' rows.
    expiring = (sa.select(D.c.id)
                .where(D.c.status == DeliveryStatus.claimed.value, D.c.lease_until < lease_now)
                .with_for_update(skip_locked=True))
    expired = session.execute(
        sa.update(D)
        .where(D.c.id.in_(expiring.scalar_subquery()), D.c.status == DeliveryStatus.claimed.value,
               D.c.lease_until < lease_now)
        .values(status=DeliveryStatus.queued.value, claimed_by=None, lease_until=None)
        .returning(D.c.id, D.c.edition_id)
    ).all()
    report.expired = len(expired)
    by_edition: dict[int, list[int]] = {}
    for row_id, edition_id in expired:
        by_edition.setdefault(edition_id, []).append(row_id)

    editions = session.scalars(
        sa.select(Edition).where(
            Edition.status.in_([EditionStatus.planned, EditionStatus.sending, EditionStatus.cancelled])
        )
    ).all()  # a paused edition keeps its due retries: the resume dispatches them
    for edition in editions:
        if edition.status == EditionStatus.cancelled:
            ids = by_edition.pop(edition.id, [])
            if ids:
                session.execute(
                    sa.update(D).where(D.c.id.in_(ids), D.c.status == DeliveryStatus.queued.value)
                    .values(status=DeliveryStatus.cancelled.value, smtp_reply="edition cancelled", updated_at=now)
                )
            continue
        # 4. retries past their maximum age
        if edition.started_at and now - edition.started_at > dt.timedelta(hours=settings.retry_max_age_hours):
            report.expired_retries += session.execute(
                sa.update(D)
                .where(D.c.edition_id == edition.id, D.c.status == DeliveryStatus.retry.value)
                .values(status=DeliveryStatus.failed.value, updated_at=now,
                        smtp_reply=sa.func.coalesce(D.c.smtp_reply, "") + " (gave up: too old)")
            ).rowcount
        # 2. retries whose time has come, each dispatched once
        due = session.execute(
            sa.update(D)
            .where(D.c.edition_id == edition.id, D.c.status == DeliveryStatus.retry.value,
                   D.c.next_attempt_at <= now,
                   sa.or_(D.c.updated_at.is_(None), D.c.updated_at < D.c.next_attempt_at))
            .values(updated_at=now)
            .returning(D.c.id)
        ).scalars().all()
        report.due_retries += len(due)
        expired_here = by_edition.pop(edition.id, [])
        ids: list[int] | None = expired_here + list(due)
        if ids:
            if expired_here and dispatcher.waiting(edition.kind.value) == 0:
                # A dead worker lost its prefetched batch messages too: send every
                # claimable row (harmless if a message was not in fact lost).
                ids = None
            report.redispatched[edition.id] = fanout.dispatch(session, edition, ids=ids, dispatcher=dispatcher)
        elif _stalled(session, edition, now, dispatcher):
            n = fanout.dispatch(session, edition, dispatcher=dispatcher)
            if n:
                report.redispatched[edition.id] = n
                report.stalled.append(edition.id)
        # 5. finished
        if ledger.finish_if_complete(session, edition.id):
            report.finished.append(edition.id)
    if report.expired or report.redispatched or report.finished or report.expired_retries:
        log.info("delivery.sweep", expired=report.expired, redispatched=report.redispatched,
                 due_retries=report.due_retries, stalled=report.stalled, finished=report.finished,
                 expired_retries=report.expired_retries)
    return report


def _stalled(session: Session, edition: Edition, now: dt.datetime, dispatcher: Dispatcher) -> bool:
    """Rule 3: work waits, nobody holds any of it, nothing moved lately, nothing is queued."""
    mine = D.c.edition_id == edition.id
    has_work = session.scalar(sa.select(sa.exists().where(mine, ledger.claimable(now))))
    if not has_work:
        return False
    live_claim = session.scalar(sa.select(sa.exists().where(
        mine, D.c.status == DeliveryStatus.claimed.value, D.c.lease_until >= now)))
    if live_claim:
        return False  # a batch is at work (its heartbeat keeps the lease): it will finish
    last_move = session.scalar(sa.select(sa.func.max(D.c.updated_at)).where(mine))
    if last_move is not None and last_move.tzinfo is None:
        last_move = last_move.replace(tzinfo=dt.UTC)
    if last_move is not None and now - last_move < dt.timedelta(seconds=STALL_SECONDS):
        return False
    return dispatcher.waiting(edition.kind.value) == 0


def stalled_drafts(session: Session, now: dt.datetime | None = None) -> list[tuple[int, str]]:
    """(edition id, kind) of recent drafts nobody planned, and of editions whose chunked
    planning stopped half-way; see step 5 above."""
    now = now or utcnow()
    rows = session.execute(
        sa.select(Edition.id, Edition.kind)
        .where(
            Edition.status == EditionStatus.draft,
            Edition.created_at >= now - DRAFT_LOOKBACK,
            Edition.created_at < now - STALLED_DRAFT_AFTER,
            # A scheduled draft waits for its time; beat starts it (editions/scheduled.py).
            Edition.send_at.is_(None),
        )
        .order_by(Edition.id)
    ).all()
    if rows:
        log.warning("delivery.sweep.stalled_drafts", edition_ids=[r[0] for r in rows])
    half = _half_planned(session, now)
    if half:
        log.warning("delivery.sweep.stalled_planning", edition_ids=[r[0] for r in half])
    return [(edition_id, kind.value) for edition_id, kind in sorted([*rows, *half])]


def _half_planned(session: Session, now: dt.datetime) -> list[tuple[int, object]]:
    """Editions whose planner wrote some chunks of the audience and then went silent (its
    process died, its message was lost).  Each chunk refreshes the PLANNING time, so a
    live planner is never taken for a dead one; planning again is harmless anyway."""
    out = []
    for edition_id, kind, params in session.execute(
        sa.select(Edition.id, Edition.kind, Edition.params).where(
            Edition.status.in_([EditionStatus.planned, EditionStatus.sending, EditionStatus.paused]),
            Edition.created_at >= now - DRAFT_LOOKBACK,
        )
    ):
        mark = (params or {}).get(ledger.PLANNING)
        if mark is None:
            continue
        try:
            last = dt.datetime.fromisoformat(mark)
        except (TypeError, ValueError):
            last = None  # unreadable: treat as stalled, re-planning is safe
        if last is not None and last.tzinfo is None:
            last = last.replace(tzinfo=dt.UTC)
        if last is None or now - last >= STALLED_DRAFT_AFTER:
            out.append((edition_id, kind))
    return out
