"""Every Celery task: thin by design.

Each task opens the transaction (or lets the function it calls do so) and calls a
plain function, so the same code runs from the CLI and the tests.  Tasks take ids,
never objects or addresses, and are safe to run twice (Celery with Redis delivers at
least once).  Work a task asks for goes through the installed dispatcher.
"""

from __future__ import annotations

from service import dispatch
from service.db import session_scope
from service.delivery import batch, fanout, one_off, sweeper
from service.editions.digests import DigestError
from service.inbound import mailbox
from service.jobs import (
    names,
    worker,  # noqa: F401 — connects the worker signals
)
from service.jobs.app import app
from service.jobs.dispatch import install_dispatcher
from service.usecases import confirmations, digests, ingest, scheduled, subscribers

# A worker is an edge too: whatever its tasks ask for goes out as Celery messages.
install_dispatcher()


@app.task(name=names.PLAN_EDITION, acks_late=True)
def plan_edition(edition_id: int) -> dict:
    return fanout.plan_and_dispatch(edition_id)


@app.task(name=names.SEND_BATCH, acks_late=True)
def send_batch(edition_id: int, first_id: int, last_id: int) -> dict:
    return batch.send_batch(edition_id, first_id, last_id).as_dict()


@app.task(name=names.SWEEP, acks_late=True)
def sweep() -> dict:
    with session_scope() as session:
        report = sweeper.sweep(session)
        replanned = sweeper.stalled_drafts(session)
        for edition_id, kind in replanned:
            dispatch.current().plan_edition(edition_id, kind, session=session)
    return {"expired": report.expired, "redispatched": report.redispatched, "finished": report.finished,
            "replanned": [edition_id for edition_id, _ in replanned]}


@app.task(name=names.POLL_FEEDS, acks_late=True)
def poll_due_feeds() -> list[dict]:
    return [r.summary() for r in ingest.poll_due()]


@app.task(name=names.MAKE_CORRECTIONS, acks_late=True)
def make_corrections() -> list[int]:
    return digests.make_corrections()


@app.task(name=names.SEND_SCHEDULED_DIGEST, acks_late=True)
def send_scheduled_digest(frequency: str) -> int | None:
    """The default hour's digest of today of the site's own `daily` / `weekly` (what an
    older release's beat still queues); a second firing finds the same edition."""
    try:
        return digests.start_digest(frequency, scheduled=True)
    except DigestError as exc:  # that newsletter hidden (or gone): nothing to make, nothing to retry
        digests.log.info("digest.skipped", frequency=str(frequency)[:20], reason=str(exc)[:200])
        return None


@app.task(name=names.SEND_DUE_DIGESTS, acks_late=True)
def send_due_digests() -> list[int]:
    """Beat's tick: each slot's digest when it is due, and the catch-ups; safe to run twice."""
    return digests.send_due()


@app.task(name=names.START_SCHEDULED, acks_late=True)
def start_scheduled() -> list[int]:
    """Beat's tick: the scheduled alerts and special editions whose send_at has come."""
    return scheduled.start_due()


@app.task(name=names.PURGE_READERS, acks_late=True)
def purge_readers() -> dict:
    return subscribers.purge().as_dict()


@app.task(name=names.RELEASE_HELD_CONFIRMATIONS, acks_late=True)
def release_held_confirmations() -> dict:
    """Beat's trickle of confirmations the signup budget held; safe to run twice."""
    return confirmations.release_held()


@app.task(name=names.FETCH_BOUNCES, acks_late=True)
def fetch_bounces() -> dict:
    """Beat's run over the bounce mailbox; safe to run twice (and two at once)."""
    try:
        return mailbox.fetch_bounces().as_dict()
    except mailbox.MailboxError as exc:  # unset since beat queued it, or unreachable: the next tick tries again
        mailbox.log.warning("mailbox.unavailable", error=str(exc)[:300])
        return {"error": str(exc)[:300]}


@app.task(
    name=names.SEND_TRANSACTIONAL,
    acks_late=True,
    autoretry_for=(OSError,),
    # 1 s, 2 s, 4 s … capped at 10 min (well inside the broker's visibility timeout):
    # about 40 minutes of a relay being away before a confirmation is given up.
    retry_backoff=True,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=12,
)
def send_transactional(kind: str, subscriber_id: int) -> bool:
    with session_scope() as session:
        return one_off.send_transactional(session, kind, subscriber_id)
