"""Split an edition's ledger into id ranges and ask for one batch per range.

Ranges, not lists of ids: a Celery message stays tiny whatever the batch size, and a
batch task that runs twice (at-least-once delivery) only claims what is still
claimable in its range.  The range boundaries are computed by the database with a
window function, so a million-row edition costs one query, not a Python loop.
"""

from __future__ import annotations

import sqlalchemy as sa

from service.config import Settings, get_settings
from service.db import session_scope
from service.delivery.ledger import D, claimable, finish_if_complete
from service.delivery.planner import next_chunk_size, plan_chunk
from service.dispatch import Dispatcher, current
from service.logs import get_logger
from service.models import Edition, EditionKind, EditionStatus, utcnow

log = get_logger(__name__)

# Alert batches: messages per SMTP session of a worker's pool (a batch ramps up and tails
# off, so it must be many times SMTP_CONNECTIONS to keep the pool busy: at 0 ms, 10,000
# alerts went at 4,742/s in batches of 200, 5,300/s of 500 and 5,503/s of 1,000 — the
# first planning chunk of 1,000 readers still makes two batches, so two workers start on
# it), and never fewer than ALERT_BATCH_MIN.
ALERT_BATCH_MIN = 50
ALERT_MESSAGES_PER_CONNECTION = 25


def batch_ranges(conn, edition_id: int, batch_size: int, ids: list[int] | None = None,
                 subscribers: tuple[int, int] | None = None) -> list[tuple[int, int]]:
    """[(first_id, last_id), …] covering the claimable rows, `batch_size` rows each.

    subscribers=(after, through): only the rows of that chunk of subscriber ids (what
    one planning chunk wrote), found through the (edition, subscriber) unique index.
    """
    if ids is not None:
        ids = sorted(ids)
        return [(chunk[0], chunk[-1]) for chunk in (ids[i : i + batch_size] for i in range(0, len(ids), batch_size))]
    now = utcnow()
    conds = [D.c.edition_id == edition_id, claimable(now)]
    if subscribers is not None:
        conds += [D.c.subscriber_id > subscribers[0], D.c.subscriber_id <= subscribers[1]]
    numbered = (
        sa.select(D.c.id, sa.func.row_number().over(order_by=D.c.id).label("rn"))
        .where(*conds)
        .subquery()
    )
    starts = conn.execute(
        sa.select(numbered.c.id).where((numbered.c.rn - 1) % batch_size == 0).order_by(numbered.c.id)
    ).scalars().all()
    if not starts:
        return []
    last = conn.execute(sa.select(sa.func.max(numbered.c.id))).scalar()
    ends = [s - 1 for s in starts[1:]] + [last]
    return list(zip(starts, ends, strict=True))


def batch_size_for(kind: EditionKind | str, settings: Settings) -> int:
    """Alerts go in batches sized to the SMTP pool rather than BATCH_SIZE: big enough to
    keep a worker's SMTP_CONNECTIONS sessions busy, small enough that every alert worker
    starts on the first planning chunk at once instead of one worker sending a long tail
    alone.  A batch costs one small Celery message and a few short queries."""
    if EditionKind(kind) == EditionKind.alert:
        return min(settings.batch_size, max(ALERT_BATCH_MIN, ALERT_MESSAGES_PER_CONNECTION * settings.smtp_connections))
    return settings.batch_size


def dispatch_committed_ids(edition_id: int, kind: EditionKind | str, ids: list[int],
                           dispatcher: Dispatcher | None = None) -> int:
    """Ask for batches over `ids` now: for a caller (a batch) whose writes are already
    committed and that holds no Session.  Extra runs are harmless: claims are conditional."""
    size = batch_size_for(kind, get_settings())
    ranges = batch_ranges(None, edition_id, size, ids)
    if ranges:
        (dispatcher or current()).send_batches(edition_id, EditionKind(kind).value, ranges)
    return len(ranges)


def dispatch(session, edition: Edition, ids: list[int] | None = None, after_commit: bool = True,
             subscribers: tuple[int, int] | None = None, dispatcher: Dispatcher | None = None) -> int:
    """Ask for batches over the edition's claimable rows (or `ids`, or the rows of one
    planning chunk, `subscribers`=(after, through)); return how many.

    With after_commit (the default) they are asked for only once the caller's
    transaction commits, so a worker never looks for rows it cannot see yet.
    """
    size = batch_size_for(edition.kind, get_settings())
    ranges = batch_ranges(session, edition.id, size, ids, subscribers)
    if ranges:
        (dispatcher or current()).send_batches(edition.id, edition.kind.value, ranges,
                                               session=session if after_commit else None)
    return len(ranges)


def plan_and_dispatch(edition_id: int, dispatcher: Dispatcher | None = None) -> dict:
    """Plan the audience chunk by chunk, each in its own transaction, and ask for each
    chunk's batches as soon as it commits: the first readers' batches leave after the
    first CHUNK_FIRST subscribers are written, while the rest is still being planned."""
    dispatcher = dispatcher or current()
    after, size, total, batches, chunks = 0, None, 0, 0, 0
    while True:
        size = next_chunk_size(size)
        with session_scope() as session:
            chunk = plan_chunk(session, edition_id, after=after, limit=size)
            chunks += 1
            total = chunk.total
            if chunk.status in (EditionStatus.planned, EditionStatus.sending):
                # A second run (retried task, double click) finds every row claimed or
                # sent and its batches claim nothing: the edition still goes out once.
                edition = session.get(Edition, edition_id)
                batches += dispatch(session, edition, subscribers=(chunk.after, chunk.through),
                                    dispatcher=dispatcher)
                if chunk.finished:  # nobody to mail, or every batch already done: done now
                    finish_if_complete(session, edition_id)
        if chunk.finished:
            break
        after = chunk.through
    log.info("delivery.plan_edition", edition_id=edition_id, recipients=total, batches=batches, chunks=chunks)
    return {"edition_id": edition_id, "recipients": total, "batches": batches}
