"""Split an edition's ledger into id ranges and put one batch task per range on its queue.

Ranges, not lists of ids: a Celery message stays tiny whatever the batch size, and a
batch task that runs twice (at-least-once delivery) only claims what is still
claimable in its range.  The range boundaries are computed by the database with a
window function, so a million-row edition costs one query, not a Python loop.
"""

from __future__ import annotations

import sqlalchemy as sa

from service.config import get_settings
from service.delivery.ledger import D, claimable
from service.logging import get_logger
from service.models import Edition, EditionKind, utcnow

log = get_logger(__name__)

ALERT_BATCH_MAX = 50


def queue_for(kind: EditionKind | str) -> str:
    """Alerts never wait behind digests: their own queue (and their own workers)."""
    return "alerts" if EditionKind(kind) == EditionKind.alert else "digests"


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


def batch_size_for(kind: EditionKind | str, configured: int) -> int:
    """Alerts go in small batches: every alert worker starts at once and they finish
    together, instead of one worker sending a 200-row tail alone.  A batch costs one
    small Celery message and four short queries, about 1 % of 50 alert messages."""
    if EditionKind(kind) == EditionKind.alert:
        return min(configured, ALERT_BATCH_MAX)
    return configured


def signatures(edition: Edition, ranges: list[tuple[int, int]]):
    return _signatures(edition.id, edition.kind, ranges)


def _signatures(edition_id: int, kind: EditionKind | str, ranges: list[tuple[int, int]]):
    from service.delivery.tasks import send_batch

    queue = queue_for(kind)
    return [send_batch.si(edition_id, first, last).set(queue=queue) for first, last in ranges]


def dispatch_committed_ids(edition_id: int, kind: EditionKind | str, ids: list[int]) -> int:
    """Enqueue batch tasks for `ids` now: for a caller (a batch) whose writes are already
    committed and that holds no Session.  Extra runs are harmless: claims are conditional."""
    size = batch_size_for(kind, get_settings().batch_size)
    sigs = _signatures(edition_id, kind, batch_ranges(None, edition_id, size, ids))
    if sigs:
        _enqueue(edition_id, sigs)
    return len(sigs)


def dispatch(session, edition: Edition, ids: list[int] | None = None, after_commit: bool = True,
             subscribers: tuple[int, int] | None = None) -> int:
    """Enqueue batch tasks for the edition's claimable rows (or for `ids`, or for the rows
    of one planning chunk, `subscribers`=(after, through)); return how many.

    With after_commit (the default) the messages leave only once the caller's
    transaction commits, so a worker never looks for rows it cannot see yet.
    """
    size = batch_size_for(edition.kind, get_settings().batch_size)
    ranges = batch_ranges(session, edition.id, size, ids, subscribers)
    sigs = signatures(edition, ranges)
    if not sigs:
        return 0
    if after_commit:
        from sqlalchemy import event

        event.listen(session, "after_commit", lambda _s: _enqueue(edition.id, sigs), once=True)
    else:
        _enqueue(edition.id, sigs)
    return len(sigs)


def _enqueue(edition_id: int, sigs) -> None:
    # The rows are committed; a broker that is down now must not turn that commit into
    # an error.  Nothing is lost: the sweeper re-dispatches an edition whose queue is
    # empty while claimable rows wait.
    for i, sig in enumerate(sigs):
        try:
            sig.apply_async()
        except Exception as exc:  # noqa: BLE001
            log.warning("delivery.dispatch_failed", edition_id=edition_id, batches_left=len(sigs) - i,
                        error=type(exc).__name__, recovery="the sweeper re-dispatches")
            return
