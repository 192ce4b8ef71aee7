"""Celery tasks for delivery: thin, ids only, `acks_late`, safe to run twice.

* ``nashra.alert.plan`` / ``nashra.digest.plan`` — `plan_edition(edition_id)`: freeze the
  audience in chunks of subscriber ids, render the variants, enqueue each chunk's
  batches as soon as the chunk commits.  One function under the alert
  name (routed to "alerts"); callers of digests set ``queue="digests"`` (or use
  `plan_digest_edition`, same function under the digest name).
* ``nashra.delivery.send_batch`` — `send_batch(edition_id, first_id, last_id)`, always sent
  with an explicit queue: "alerts" for alerts, "digests" otherwise.
* ``nashra.delivery.sweep`` — beat, every minute.
"""

from __future__ import annotations

import threading

from celery import signals

from service.celery_app import app
from service.db import session_scope
from service.logging import get_logger

log = get_logger(__name__)


def _plan_and_dispatch(edition_id: int) -> dict:
    """Plan the audience chunk by chunk, each in its own transaction, and dispatch each
    chunk's batches as soon as it commits: the first readers' batches leave after the
    first CHUNK_FIRST subscribers are written, while the rest is still being planned."""
    from service.delivery import fanout, ledger
    from service.delivery.planner import next_chunk_size, plan_chunk
    from service.models import Edition, EditionStatus

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
                batches += fanout.dispatch(session, edition, subscribers=(chunk.after, chunk.through))
                if chunk.finished:  # nobody to mail, or every batch already done: done now
                    ledger.finish_if_complete(session, edition_id)
        if chunk.finished:
            break
        after = chunk.through
    log.info("delivery.plan_edition", edition_id=edition_id, recipients=total, batches=batches, chunks=chunks)
    return {"edition_id": edition_id, "recipients": total, "batches": batches}


@app.task(name="nashra.alert.plan", acks_late=True)
def plan_edition(edition_id: int) -> dict:
    return _plan_and_dispatch(edition_id)


@app.task(name="nashra.digest.plan", acks_late=True)
def plan_digest_edition(edition_id: int) -> dict:
    return _plan_and_dispatch(edition_id)


@app.task(name="nashra.delivery.send_batch", acks_late=True)
def send_batch(edition_id: int, first_id: int, last_id: int) -> dict:
    from service.delivery.batch import send_batch as run

    return run(edition_id, first_id, last_id).as_dict()


@app.task(name="nashra.delivery.sweep", acks_late=True)
def sweep() -> dict:
    from service.celery_app import send_after_commit
    from service.delivery.sweeper import stalled_drafts
    from service.delivery.sweeper import sweep as run

    with session_scope() as session:
        report = run(session)
        replanned = stalled_drafts(session)
        for edition_id, kind in replanned:
            queue = "alerts" if kind == "alert" else "digests"
            send_after_commit(session, plan_edition.si(edition_id).set(queue=queue))
    return {"expired": report.expired, "redispatched": report.redispatched, "finished": report.finished,
            "replanned": [edition_id for edition_id, _ in replanned]}


@signals.worker_process_init.connect
def _warm_up(**_):
    """Make a fresh worker process ready before its first alert, not during it.

    A new prefork child would otherwise spend its first alert importing the planner
    and the rendering stack (Jinja2, premailer, Babel: ~0.3 s), compiling the alert
    templates, and connecting to PostgreSQL, to the broker (to queue the batches) and
    to the SMTP server.  This runs in a
    thread so that a slow database or SMTP server cannot hold up the worker's start
    (Celery gives a child a few seconds to report ready); a task that arrives
    meanwhile simply waits on the same imports.
    """
    from service.celery_app import app

    queues = {q.name for q in app.amqp.queues.consume_from.values()} if app.amqp.queues else set()
    if queues and "alerts" not in queues:
        return
    from service.db import get_engine

    get_engine()  # created here, once, so the thread below cannot race a task to it
    threading.Thread(target=_prepare_process, name="nashra-warm-up", daemon=True).start()


def _prepare_process() -> None:
    import datetime as dt

    try:
        from service.config import get_settings
        from service.db import session_factory
        from service.delivery import batch, fanout, ledger, planner  # noqa: F401 — importing is half the point
        from service.delivery.smtp import prewarm
        from service.editions import variants  # noqa: F401
        from service.rendering import contexts
        from service.rendering.render import render_variant

        settings = get_settings()
        ctx = contexts.alert_context(contexts.site_view(settings), headline="تجربة", url="https://example.com/",
                                     summary="", sent_at=dt.datetime.now(dt.UTC))
        render_variant("alert", ctx)  # compiles and caches the templates; premailer's first run
        with session_factory()() as session:  # one pooled connection, the planner's
            planner.warm_up(session)  # statements compiled; nothing is written
            fanout.batch_ranges(session, -1, fanout.ALERT_BATCH_MAX, subscribers=(0, 0))
            ledger.start_sending(session, -1)  # and a batch's: all on an edition that does not exist
            ledger.claim(session, -1, 0, 0, "warm-up", 1)
            ledger.recipient_state(session, -1, -1)
            ledger.finish_if_complete(session, -1)
            session.rollback()
        from service.celery_app import app

        with app.producer_or_acquire() as producer:  # the planner's batch messages: a pooled
            producer.connection.ensure_connection(max_retries=1)  # broker connection, open
        prewarm(settings)
        log.info("worker.warmed_up")
    except Exception as exc:  # noqa: BLE001 — warming up is an optimisation, never a failure
        log.warning("worker.warm_up_failed", error=type(exc).__name__)


@signals.worker_process_shutdown.connect
def _close_smtp(**_):
    from service.delivery.smtp import close_connection

    close_connection()
