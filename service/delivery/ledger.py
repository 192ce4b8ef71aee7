"""The ledger's state changes: claim, re-check, record, release.

Every change is a conditional UPDATE that names the state it expects, so two workers
(or a worker and the sweeper) that race over a row cannot both win: the loser's
UPDATE matches no row, and it moves on ("another process got there first").

These functions take a SQLAlchemy Connection or Session and never commit: the batch
(`service.delivery.batch`) decides when, and its docstring states what a killed worker
can leave sent-but-unrecorded.  The per-message hot path is grouped: one query reads
the state of a group of readers (`recipient_states`), one statement writes a group of
outcomes (`record_many`).
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

import sqlalchemy as sa

from service.delivery.verdicts import clean
from service.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    EditionStatus,
    Newsletter,
    NewsletterKind,
    Subscriber,
    Subscription,
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


def db_now(conn) -> sa.ColumnElement | dt.datetime:
    """The time leases are measured on: the database's clock on PostgreSQL (every host's
    workers and the sweeper agree, whatever their own clocks say); this process's on
    SQLite, the one-machine demo."""
    dialect = conn.dialect if hasattr(conn, "dialect") else conn.get_bind().dialect  # a Connection, or a Session
    return sa.func.now() if dialect.name == "postgresql" else utcnow()


def lease_end(conn, seconds: float) -> sa.ColumnElement | dt.datetime:
    return db_now(conn) + dt.timedelta(seconds=seconds)


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
            lease_until=lease_end(conn, lease_seconds),
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
    # Still on what the edition is for: its newsletter (a Subscription row); a catch-up,
    # some alerts newsletter; a correction (no newsletter), always.
    subscribed: bool
    suppressed: bool
    # The reader's own rules (service/subscribers/quiet.py), decided by the batch: the
    # pause is theirs, quiet hours and cap their subscription's to the edition's newsletter.
    paused_until: dt.datetime | None = None
    quiet_start: int | None = None
    quiet_end: int | None = None
    quiet_mode: str | None = None
    alert_cap: int | None = None
    alerts_day: dt.date | None = None
    alerts_today: int = 0
    time_zone: str | None = None  # their clock for quiet hours (None: TIMEZONE)


_S = Subscriber.__table__
_E = Edition.__table__
_X = Suppression.__table__
_SUB = Subscription.__table__
_N = Newsletter.__table__
_ON_ALERTS = _SUB.alias("on_alerts")

# Whether the reader is still on what the edition is for (RecipientState.subscribed).  A
# CASE, so that PostgreSQL runs the catch-up's EXISTS only for a catch-up.
_SUBSCRIBED = sa.case(
    (_E.c.newsletter_id.is_not(None), _SUB.c.subscriber_id.is_not(None)),
    (_E.c.kind == EditionKind.catchup.value, sa.exists().where(
        _ON_ALERTS.c.subscriber_id == _S.c.id, _ON_ALERTS.c.newsletter_id == _N.c.id,
        _N.c.kind == NewsletterKind.alerts.value)),
    else_=sa.true(),
).label("subscribed")


# The statements of the hot path are built once: building a SQLAlchemy statement
# costs about as much CPU as executing it (see bench/bench_alert_latency.py).  Here the
# edition, outer-joined to a group's readers: the edition's status comes back even when
# every reader of the group has been deleted meanwhile; and each reader outer-joined to
# their subscription to the edition's newsletter (by its primary key): no row = they
# left it since planning.
_RECIPIENT_STATES = (
    sa.select(
        _E.c.status,
        _S.c.id,
        _S.c.status,
        _S.c.email,
        _S.c.token_version,
        _SUBSCRIBED,
        sa.exists().where(_X.c.email == _S.c.email).label("suppressed"),
        _S.c.paused_until,
        _SUB.c.quiet_start,
        _SUB.c.quiet_end,
        _SUB.c.quiet_mode,
        _SUB.c.alert_cap,
        _SUB.c.alerts_day,
        _SUB.c.alerts_today,
        _S.c.time_zone,
    )
    .select_from(
        _E.outerjoin(_S, _S.c.id.in_(sa.bindparam("subscriber_ids", expanding=True)))
        .outerjoin(_SUB, sa.and_(_SUB.c.newsletter_id == _E.c.newsletter_id, _SUB.c.subscriber_id == _S.c.id)))
    .where(_E.c.id == sa.bindparam("edition_id"))
)


def recipient_states(conn, edition_id: int, subscriber_ids: list[int],
                     held: tuple[str, list[int], float] | None = None,
                     ) -> tuple[EditionStatus | None, dict[int, RecipientState], int | None]:
    """The edition's status and the state of a group of readers, in one query, just before
    their messages go.  A reader missing from the dict was deleted (their rows with them);
    None for the status: no such edition.

    held (worker, delivery ids, lease seconds; PostgreSQL): the group's ownership check in
    the same statement — one round trip for both — and, as the third value, how many of
    those rows are *not* safely this worker's (else None): 0 means the batch may send them
    (see _NOT_HELD); anything else, run `fence` first."""
    status: EditionStatus | None = None
    states: dict[int, RecipientState] = {}
    not_held: int | None = None
    params = {"edition_id": edition_id, "subscriber_ids": list(subscriber_ids)}
    statement = _RECIPIENT_STATES
    if held is not None:
        statement = _HELD_STATES
        # The ids as an array literal: psycopg's list dumper costs more than the join.
        ids = "{" + ",".join(str(int(i)) for i in held[1]) + "}"
        params |= {"worker": held[0], "ids": ids, "half_lease": float(held[2]) / 2}
    for row in conn.execute(statement, params):
        if held is not None:
            not_held = row[_NOT_HELD_AT]
        status = EditionStatus(row[0])
        if row[1] is not None:
            states[row[1]] = RecipientState(status, row[2], row[3], row[4], bool(row[5]), bool(row[6]),
                                            _aware(row[7]), row[8], row[9], row[10], row[11], row[12], row[13] or 0,
                                            row[14])
    return status, states, not_held


def _reply(text: str | None) -> str | None:
    """A reply as stored: no control character (psycopg refuses a NUL), bounded."""
    return clean(text)[:1000] or None


@functools.cache
def _record_statement(with_message_id: bool, sent: bool, attempted: bool, ambiguous: bool = False) -> sa.Update:
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
    if ambiguous:
        values["ambiguous"] = D.c.ambiguous + 1
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
    ambiguous: bool = False,
) -> bool:
    """Write one row's outcome, if this worker still holds it.  False = lease lost."""
    stmt = _record_statement(bool(message_id), status == DeliveryStatus.sent, attempted, ambiguous)
    params = {
        "delivery_id": delivery_id,
        "worker": worker,
        "status": status.value,
        "smtp_code": smtp_code,
        "smtp_reply": _reply(smtp_reply),
        "now": utcnow(),
        "next_attempt_at": next_attempt_at,
    }
    if message_id:
        params["message_id"] = message_id
    return conn.execute(stmt, params).rowcount == 1


@dataclass(frozen=True)
class Record:
    """One row's outcome, for `record_many`."""

    delivery_id: int
    status: DeliveryStatus
    smtp_code: int | None = None
    smtp_reply: str | None = None
    message_id: str | None = None
    next_attempt_at: dt.datetime | None = None
    attempted: bool = True
    ambiguous: bool = False  # sent once more after an ambiguous end: a possible duplicate


# One statement for a whole group, whatever its size: the outcomes travel as arrays
# and unnest() turns them back into rows, so the statement's text (and its plan) is
# always the same.  Each row is written only if this worker still holds it.
_RECORD_MANY = sa.text("""
    UPDATE deliveries AS d SET
        status = v.status,
        smtp_code = v.smtp_code,
        smtp_reply = v.smtp_reply,
        message_id = COALESCE(v.message_id, d.message_id),
        next_attempt_at = v.next_attempt_at,
        sent_at = CASE WHEN v.status = 'sent' THEN :now ELSE d.sent_at END,
        attempts = d.attempts + v.attempted,
        ambiguous = d.ambiguous + v.ambiguous,
        lease_until = NULL,
        updated_at = :now
    FROM unnest(CAST(:ids AS bigint[]), CAST(:statuses AS varchar[]), CAST(:codes AS integer[]),
                CAST(:replies AS text[]), CAST(:message_ids AS varchar[]),
                CAST(:next_attempts AS timestamptz[]), CAST(:attempted AS integer[]),
                CAST(:ambiguous AS integer[]))
         AS v(id, status, smtp_code, smtp_reply, message_id, next_attempt_at, attempted, ambiguous)
    WHERE d.id = v.id AND d.status = 'claimed' AND d.claimed_by = :worker
    RETURNING d.id
""")


def record_many(conn, worker: str, records: list[Record]) -> set[int]:
    """Write a group of outcomes in one statement; return the ids written (the others'
    leases were lost: another worker holds them now, and our answer is stale)."""
    if not records:
        return set()
    if conn.dialect.name != "postgresql":
        # SQLite (the embedded demo) writes one outcome at a time anyway (see batch.py).
        return {r.delivery_id for r in records
                if record(conn, r.delivery_id, worker, r.status, smtp_code=r.smtp_code, smtp_reply=r.smtp_reply,
                          message_id=r.message_id, next_attempt_at=r.next_attempt_at, attempted=r.attempted,
                          ambiguous=r.ambiguous)}
    params = {
        "now": utcnow(),
        "worker": worker,
        "ids": [r.delivery_id for r in records],
        "statuses": [r.status.value for r in records],
        "codes": [r.smtp_code for r in records],
        "replies": [_reply(r.smtp_reply) for r in records],
        "message_ids": [r.message_id or None for r in records],
        "next_attempts": [r.next_attempt_at for r in records],
        "attempted": [int(r.attempted) for r in records],
        "ambiguous": [int(r.ambiguous) for r in records],
    }
    return set(conn.execute(_RECORD_MANY, params).scalars())


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # A bare Connection (the batch's) reads SQLite's naive UTC as it is.
    return value.replace(tzinfo=dt.UTC) if value is not None and value.tzinfo is None else value


# The cap is per subscription: the alert's newsletter's rows of these readers.
_COUNT_ALERTS = (
    sa.update(_SUB)
    .where(_SUB.c.subscriber_id.in_(sa.bindparam("subscriber_ids", expanding=True)),
           _SUB.c.newsletter_id == sa.select(_E.c.newsletter_id).where(_E.c.id == sa.bindparam("edition_id"))
           .scalar_subquery())
    .values(
        alerts_today=sa.case((_SUB.c.alerts_day == sa.bindparam("day"), _SUB.c.alerts_today + 1), else_=1),
        alerts_day=sa.bindparam("day"),
    )
)


def count_alerts(conn, edition_id: int, subscriber_ids: list[int], day: dt.date) -> None:
    """One more alert of this edition's newsletter mailed today (`day`, local) to each of
    these readers, for their cap on it: one statement per group of outcomes, in the same
    transaction as the outcomes."""
    if subscriber_ids:
        conn.execute(_COUNT_ALERTS, {"edition_id": edition_id, "subscriber_ids": list(subscriber_ids), "day": day})


def release(conn, worker: str, ids: list[int], to: DeliveryStatus, next_attempt_at: dt.datetime | None = None,
            reply: str | None = None) -> int:
    """Hand rows this worker holds back (queued), or end them (cancelled / retry)."""
    if not ids:
        return 0
    values: dict = {"status": to.value, "claimed_by": None, "lease_until": None, "updated_at": utcnow()}
    if to == DeliveryStatus.retry:
        values["next_attempt_at"] = next_attempt_at
    if reply is not None:
        values["smtp_reply"] = _reply(reply)
    return conn.execute(
        sa.update(D)
        .where(D.c.id.in_(ids), D.c.status == DeliveryStatus.claimed.value, D.c.claimed_by == worker)
        .values(**values)
    ).rowcount


def extend_leases(conn, worker: str, edition_id: int, first_id: int, last_id: int, lease_seconds: int) -> int:
    """Renew the lease of every row of a batch's range this worker still holds (the
    batch's heartbeat): rows already answered, or handed back, are no longer `claimed`."""
    return conn.execute(
        sa.update(D)
        .where(D.c.edition_id == edition_id, D.c.id.between(first_id, last_id),
               D.c.status == DeliveryStatus.claimed.value, D.c.claimed_by == worker)
        .values(lease_until=lease_end(conn, lease_seconds))
    ).rowcount


# The fence, written once: the rows joined by primary key to the array of ids (as
# record_many does), so PostgreSQL looks each one up by its key.  Written as a plain
# `id = ANY(…) AND status = 'claimed'`, the planner went through the status index and
# walked every claimed entry of the table, dead ones included (~23,000 per fence in a
# 30,000-reader alert: bench notes in BENCHMARKS.md).
_FENCE = sa.text("""
    UPDATE deliveries AS d SET lease_until = now() + make_interval(secs => :lease)
    FROM unnest(CAST(:ids AS bigint[])) AS v(id)
    WHERE d.id = v.id AND d.status = 'claimed' AND d.claimed_by = :worker
    RETURNING d.id
""")


# The group's check, a read: how many of its rows are *not* claimed by this worker with at
# least half a lease left on the database's clock.  The sweeper takes only rows whose
# lease has ended, so a row that passes is this batch's for LEASE_SECONDS/2 more — longer
# than a group takes to go unless the process freezes, which is the window the fence
# cannot close anyway.  The heartbeat renews every LEASE_SECONDS/3, so on a live batch
# the answer is 0 and the check writes nothing (an UPDATE per group was ten row versions,
# each in every index, and a WAL flush: +70 µs of PostgreSQL's CPU a message).  Anything
# else — the heartbeat starved, the process froze, rows swept — and the batch runs the
# fence proper (`fence`), whose answer is authoritative.
#
# Written as a correlated scalar subquery per id, so each is one look-up by primary key
# whatever the statistics say.  As an anti-join (`LEFT JOIN deliveries … WHERE d.id IS
# NULL`), a generic plan on a table just filled and not yet analysed walked
# ix_deliveries_status_lease over every claimed row: 0.56 ms a group instead of 0.05.
_NOT_HELD = sa.text("""
    SELECT count(*) AS n FROM unnest(CAST(:ids AS bigint[])) AS v(id)
    WHERE (SELECT d.status = 'claimed' AND d.claimed_by = :worker
                  AND d.lease_until >= now() + make_interval(secs => :half_lease)
           FROM deliveries AS d WHERE d.id = v.id) IS NOT TRUE
""")

_HELD_STATES = _RECIPIENT_STATES.add_columns(
    sa.select(sa.text("n")).select_from(_NOT_HELD.columns(sa.column("n", sa.Integer)).subquery())
    .scalar_subquery().label("not_held")
)
# Its place in a row, after every column of _RECIPIENT_STATES (a column added there moves
# it: read by name of position, not by a number that a new column silently shifts).
_NOT_HELD_AT = len(_RECIPIENT_STATES.selected_columns)


def fence(conn, worker: str, ids: list[int], lease_seconds: int) -> set[int]:
    """The fence before a group of sends: extend the lease of the rows this worker still
    holds, on the database's clock, and return them; only those may be sent.  A process
    that froze past its lease (SIGSTOP, a long GC, a starved host) finds here that the
    sweeper gave its rows to another worker, and sends none of them."""
    if not ids:
        return set()
    if conn.dialect.name == "postgresql":
        return set(conn.execute(_FENCE, {"ids": list(ids), "worker": worker, "lease": float(lease_seconds)}).scalars())
    return set(conn.execute(
        sa.update(D)
        .where(D.c.id.in_(ids), D.c.status == DeliveryStatus.claimed.value, D.c.claimed_by == worker)
        .values(lease_until=lease_end(conn, lease_seconds))
        .returning(D.c.id)
    ).scalars())


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
