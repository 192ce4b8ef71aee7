"""Celery tasks for ingestion: thin wrappers over `ingest_all` / `poll_feed`.

Beat runs `nashra.ingest.poll_due` every minute on the `ingest` queue.  Running it twice
at once is harmless: each feed row is locked while it is polled, so the second run
skips it, and an identical re-fetch writes nothing anyway.
"""

from __future__ import annotations

from service.celery_app import app


@app.task(name="nashra.ingest.poll_due", acks_late=True, ignore_result=True)
def poll_due() -> dict:
    from service.articles.ingest import ingest_all

    reports = ingest_all()
    return {"feeds": len(reports), "failed": sum(1 for r in reports if r.error)}


@app.task(name="nashra.ingest.poll_feed", acks_late=True, ignore_result=True)
def poll_one(feed_id: int, force: bool = False) -> dict:
    from service.articles.ingest import poll_feed
    from service.db import session_scope

    with session_scope() as session:
        report = poll_feed(session, feed_id, force=force)
    return {"feed_id": feed_id, "error": report.error}
