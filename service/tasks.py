"""Celery tasks for ingestion, digests and one-off mail.

Thin by design: each task opens the transaction and calls a plain function, so the
same code runs from the CLI and the tests.  Tasks take ids, never objects or
addresses, and are safe to run twice (Celery with Redis delivers at least once).
"""

from __future__ import annotations

from service.celery_app import app
from service.db import session_scope
from service.logging import get_logger

log = get_logger(__name__)


@app.task(name="nashra.ingest.poll_due", acks_late=True)
def poll_due_feeds() -> list[dict]:
    from service.articles.ingest import ingest_all

    reports = ingest_all()
    for r in reports:
        log.info("ingest.feed", feed_id=r.feed_id, new=r.new, major=r.major, minor=r.minor, error=r.error)
    enqueue_corrections_if_major(reports)
    return [r.summary() for r in reports]


def enqueue_corrections_if_major(reports) -> bool:
    """Cheap: the corrections check runs only when a poll recorded a major update."""
    from service.config import get_settings

    if get_settings().corrections == "off" or not any(r.major for r in reports):
        return False
    try:
        make_corrections.delay()
    except Exception:  # noqa: BLE001 — the articles are committed; the next major update's run looks back 48 h
        log.exception("corrections.enqueue_failed")
        return False
    return True


@app.task(name="nashra.digest.corrections", acks_late=True)
def make_corrections() -> list[int]:
    """Correction editions for recent major updates, each planned after the commit."""
    from service.celery_app import send_after_commit
    from service.delivery.tasks import plan_edition
    from service.editions.corrections import create_corrections

    with session_scope() as session:
        # A draft whose planning message is lost is re-planned by the sweeper.
        ids = [e.id for e in create_corrections(session)]
        for edition_id in ids:
            send_after_commit(session, plan_edition.si(edition_id).set(queue="digests"))
    return ids


@app.task(name="nashra.digest.send_scheduled", acks_late=True)
def send_scheduled_digest(frequency: str) -> int | None:
    """Beat fires this at the digest's local time; a second firing finds the same edition."""
    return start_digest(frequency, scheduled=True)


def start_digest(frequency: str, *, scheduled: bool) -> int | None:
    """Create the digest edition and hand it to the planner on the digests queue."""
    from service.celery_app import send_after_commit
    from service.delivery.tasks import plan_edition
    from service.editions.digests import create_digest

    with session_scope() as session:
        edition, created = create_digest(session, frequency, scheduled=scheduled)
        if edition is None:
            log.info("digest.empty", frequency=frequency)
            return None
        if created:
            send_after_commit(session, plan_edition.si(edition.id).set(queue="digests"))
            log.info("digest.created", edition_id=edition.id, frequency=frequency, articles=len(edition.articles))
        else:
            log.info("digest.exists", edition_id=edition.id, frequency=frequency)
        return edition.id


@app.task(
    name="nashra.send_transactional",
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
    from service.editions.transactional import send_transactional as send

    with session_scope() as session:
        return send(session, kind, subscriber_id)
