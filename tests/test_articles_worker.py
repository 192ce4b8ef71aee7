"""Beat's ingest task runs on a real Celery worker (Redis broker) that only consumes `ingest`."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from service.models import Article, Feed

DEMO = Path(__file__).resolve().parent.parent / "service" / "demo" / "sample_feed.xml"


def test_the_beat_task_polls_feed_urls_on_the_ingest_queue(pg_env, redis_url, feed_server, monkeypatch, celery_worker_factory):
    from service.jobs.app import app

    app.loader.import_default_modules()  # the `include` list: service.jobs.tasks …
    from service.config import reset_settings
    from service.db import session_scope

    url = feed_server.serve("/feed.xml", DEMO.read_bytes())
    monkeypatch.setenv("FEED_URLS", url)
    reset_settings()
    schedule = app.conf.beat_schedule["ingest-every-minute"]
    assert schedule["schedule"] == 60.0
    task = app.tasks[schedule["task"]]
    assert app.amqp.router.route({}, task.name)["queue"].name == "ingest"
    # Other test sessions on this machine share Redis db 15 and may run workers on
    # "ingest": this run's message goes to a queue of its own so none can take it.
    queue = f"ingest-{uuid.uuid4().hex[:8]}"
    with celery_worker_factory(queues=(queue,), concurrency=1):
        task.apply_async(queue=queue)
        deadline = time.monotonic() + 20
        count = 0
        while time.monotonic() < deadline:
            with session_scope() as s:
                count = s.scalar(sa.select(sa.func.count()).select_from(Article))
            if count == 9:
                break
            time.sleep(0.2)
    assert count == 9
    with session_scope() as s:
        feed = s.scalar(sa.select(Feed).where(Feed.url == url))
        assert feed.last_success_at is not None and feed.consecutive_failures == 0


def test_the_embedded_sqlite_default_ingests_and_versions_too(sqlite_env, feed_server, monkeypatch):
    """`nashra demo` runs on SQLite: the same code path, the same answers."""
    from service.articles.ingest import ingest_all
    from service.articles.queries import major_updates_since
    from service.config import reset_settings
    from service.db import session_scope
    from service.models import utcnow

    url = feed_server.serve("/feed.xml", DEMO.read_bytes(), headers={"ETag": '"1"'})
    monkeypatch.setenv("FEED_URLS", url)
    reset_settings()
    started = utcnow()
    [report] = ingest_all()
    assert (report.error, report.new) == (None, 9)
    [report] = ingest_all(all_feeds=True)
    assert report.not_modified
    feed_server.serve("/feed.xml", (DEMO.parent / "sample_feed_updated.xml").read_bytes(), headers={"ETag": '"2"'})
    [report] = ingest_all(force=True)
    assert (report.major, report.minor, report.unchanged) == (1, 1, 7)
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Article)) == 9
        assert [v.version for v in major_updates_since(s, started)] == [2]
