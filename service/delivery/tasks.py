"""Celery tasks for delivery: thin, ids only, `acks_late`, safe to run twice.

* ``nashra.alert.plan`` / ``nashra.digest.plan`` — `plan_edition(edition_id)`: freeze the
  audience, render the variants, enqueue the batches.  One function under the alert
  name (routed to "alerts"); callers of digests set ``queue="digests"`` (or use
  `plan_digest_edition`, same function under the digest name).
* ``nashra.delivery.send_batch`` — `send_batch(edition_id, first_id, last_id)`, always sent
  with an explicit queue: "alerts" for alerts, "digests" otherwise.
* ``nashra.delivery.sweep`` — beat, every minute.
"""

from __future__ import annotations

from celery import signals

from service.celery_app import app
from service.db import session_scope
from service.logging import get_logger

log = get_logger(__name__)


def _plan_and_dispatch(edition_id: int) -> dict:
    from service.delivery import fanout, ledger
    from service.delivery.planner import plan
    from service.models import Edition, EditionStatus

    with session_scope() as session:
        total = plan(session, edition_id)
        edition = session.get(Edition, edition_id)
        batches = 0
        if edition is not None and edition.status in (EditionStatus.planned, EditionStatus.sending):
            # A second run (retried task, double click) finds every row claimed or sent
            # and its batches claim nothing: the edition still goes out once.
            batches = fanout.dispatch(session, edition)
            if batches == 0:  # nobody to mail (or every variant empty): done already
                ledger.finish_if_complete(session, edition_id)
    log.info("delivery.plan_edition", edition_id=edition_id, recipients=total, batches=batches)
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


@signals.worker_process_shutdown.connect
def _close_smtp(**_):
    from service.delivery.smtp import close_connection

    close_connection()
