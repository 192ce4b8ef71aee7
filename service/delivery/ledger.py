"""The ledger's state changes: claim, re-check, record, release.

Every change is a conditional UPDATE that names the state it expects, so two workers
(or a worker and the sweeper) that race over a row cannot both win: the loser's
UPDATE matches no row, and it moves on ("another process got there first").

These functions take a SQLAlchemy Connection or Session and never commit: the batch
(`service.delivery.batch`) commits after each message so that a killed worker can
only ever have *one* sent-but-unrecorded message per connection.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

import sqlalchemy as sa

from service.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    Subscriber,
    Suppression,
    utcnow,
)

D = Delivery.__table__
# Present in an edition's params while the planner is still writing its audience in
# chunks (value: the ISO time of the last chunk); see planner.plan_chunk.
PLANNING = "planning"
REMAINING = (DeliveryStatus.queued, DeliveryStatus.claimed, DeliveryStatus.retry)


@dataclass(frozen=True)
class Claimed:
    id: int
    subscriber_id: int
    variant: str
    attempts: int


def claimable(now: dt.datetime) -> sa.ColumnElement[bool]:
    return sa.or_(
        D.c.status == DeliveryStatus.queued.value,
        sa.and_(D.c.status == DeliveryStatus.retry.value, D.c.next_attempt_at <= now),
    )


def claim(conn, edition_id: int, first_id: int, last_id: int, worker: str, lease_seconds: int) -> list[Claimed]:
    """Take the claimable rows of one id range; rows another worker holds are left alone."""
    now = utcnow()
    rows = conn.execute(
        sa.update(D)
        .where(D.c.edition_id == edition_id, D.c.id.between(first_id, last_id), claimable(now))
        .values(
            status=DeliveryStatus.claimed.value,
            claimed_by=worker,
            lease_until=now + dt.timedelta(seconds=lease_seconds),
            updated_at=now,
        )
        .returning(D.c.id, D.c.subscriber_id, D.c.variant, D.c.attempts)
    ).all()
    return sorted((Claimed(*r) for r in rows), key=lambda c: c.id)


def edition_status(conn, edition_id: int, *, wait_for_writers: bool = False) -> EditionStatus | None:
    """wait_for_writers: FOR UPDATE (PostgreSQL), so that a transaction that holds the
    edition's row (control.pause/resume lock it) is waited for and its status seen."""
    stmt = sa.select(Edition.__table__.c.status).where(Edition.__table__.c.id == edition_id)
    if wait_for_writers:
        stmt = stmt.with_for_update()
    value = conn.execute(stmt).scalar()
    return EditionStatus(value) if value is not None else None


@dataclass(frozen=True)
class RecipientState:
    edition_status: EditionStatus
    subscriber_status: str
    email: str
    token_version: int
    alerts: bool
    frequency: str
    suppressed: bool


_S = Subscriber.__table__
_E = Edition.__table__
_X = Suppression.__table__


# The two statements every message runs are built once: building a SQLAlchemy
# statement costs about as much CPU as executing it (the state query and the outcome
# write are the per-message hot path; see bench/bench_alert_latency.py).
_RECIPIENT_STATE = (
    sa.select(
        _E.c.status,
        _S.c.status,
        _S.c.email,
        _S.c.token_version,
        _S.c.alerts,
        _S.c.frequency,
        sa.exists().where(_X.c.email == _S.c.email).label("suppressed"),
    )
    .select_from(_S.join(_E, _E.c.id == sa.bindparam("edition_id")))
    .where(_S.c.id == sa.bindparam("subscriber_id"))
)


def recipient_state(conn, edition_id: int, subscriber_id: int) -> RecipientState | None:
    """Everything the send decision needs, read in one round trip just before sending."""
    row = conn.execute(_RECIPIENT_STATE, {"edition_id": edition_id, "subscriber_id": subscriber_id}).first()
    if row is None:
        return None
    return RecipientState(EditionStatus(row[0]), row[1], row[2], row[3], bool(row[4]), row[5], bool(row[6]))


@functools.cache
def _record_statement(with_message_id: bool, sent: bool, attempted: bool) -> sa.Update:
    values: dict = {
        "status": sa.bindparam("status"),
        "smtp_code": sa.bindparam("smtp_code"),
        "smtp_reply": sa.bindparam("smtp_reply"),
        "lease_until": None,
        "updated_at": sa.bindparam("now"),
        "next_attempt_at": sa.bindparam("next_attempt_at"),
    }
    if with_message_id:
        values["message_id"] = sa.bindparam("message_id")
    if sent:
        values["sent_at"] = sa.bindparam("now")
    if attempted:
        values["attempts"] = D.c.attempts + 1
    return (
        sa.update(D)
        .where(D.c.id == sa.bindparam("delivery_id"), D.c.status == DeliveryStatus.claimed.value,
               D.c.claimed_by == sa.bindparam("worker"))
        .values(**values)
    )


def record(
    conn,
    delivery_id: int,
    worker: str,
    status: DeliveryStatus,
    *,
    smtp_code: int | None = None,
    smtp_reply: str | None = None,
    message_id: str | None = None,
    next_attempt_at: dt.datetime | None = None,
    attempted: bool = True,
) -> bool:
    """Write one row's outcome, if this worker still holds it.  False = lease lost."""
    stmt = _record_statement(bool(message_id), status == DeliveryStatus.sent, attempted)
    params = {
        "delivery_id": delivery_id,
        "worker": worker,
        "status": status.value,
        "smtp_code": smtp_code,
        "smtp_reply": (smtp_reply or None) and smtp_reply[:1000],
        "now": utcnow(),
        "next_attempt_at": next_attempt_at,
    }
    if message_id:
        params["message_id"] = message_id
    return conn.execute(stmt, params).rowcount == 1


def release(conn, worker: str, ids: list[int], to: DeliveryStatus, next_attempt_at: dt.datetime | None = None,
            reply: str | None = None) -> int:
    """Hand rows this worker holds back (queued), or end them (cancelled / retry)."""
    if not ids:
        return 0
    values: dict = {"status": to.value, "claimed_by": None, "lease_until": None, "updated_at": utcnow()}
    if to == DeliveryStatus.retry:
        values["next_attempt_at"] = next_attempt_at
    if reply is not None:
        values["smtp_reply"] = reply[:1000]
    return conn.execute(
        sa.update(D)
        .where(D.c.id.in_(ids), D.c.status == DeliveryStatus.claimed.value, D.c.claimed_by == worker)
        .values(**values)
    ).rowcount


def extend_lease(conn, worker: str, ids: list[int], lease_seconds: int) -> int:
    if not ids:
        return 0
    return conn.execute(
        sa.update(D)
        .where(D.c.id.in_(ids), D.c.status == DeliveryStatus.claimed.value, D.c.claimed_by == worker)
        .values(lease_until=utcnow() + dt.timedelta(seconds=lease_seconds))
    ).rowcount


def start_sending(conn, edition_id: int) -> None:
    """planned → sending, once (the first batch to arrive does it)."""
    conn.execute(
        sa.update(_E)
        .where(_E.c.id == edition_id, _E.c.status == EditionStatus.planned.value)
        .values(status=EditionStatus.sending.value, started_at=utcnow())
    )


def finish_if_complete(conn, edition_id: int) -> bool:
    """planned/sending → done when no row is left to send (unknown rows wait for the operator)
    and the audience is complete (no chunk of it is still being written: see planner.PLANNING)."""
    left = sa.exists().where(D.c.edition_id == edition_id, D.c.status.in_([s.value for s in REMAINING]))
    return (
        conn.execute(
            sa.update(_E)
            .where(
                _E.c.id == edition_id,
                _E.c.status.in_([EditionStatus.planned.value, EditionStatus.sending.value]),
                _E.c.params[PLANNING].as_string().is_(None),
                ~left,
            )
            .values(status=EditionStatus.done.value, finished_at=utcnow())
        ).rowcount
        == 1
    )


def pause_edition(conn, edition_id: int, reason: str) -> bool:
    return (
        conn.execute(
            sa.update(_E)
            .where(_E.c.id == edition_id, _E.c.status.in_([EditionStatus.planned.value, EditionStatus.sending.value]))
            .values(status=EditionStatus.paused.value, pause_reason=reason[:2000])
        ).rowcount
        == 1
    )
