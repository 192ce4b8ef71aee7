"""Feed → ingest → digest → a message at a real SMTP server, through real Celery.

Once on the production shape (PostgreSQL + Redis) and once on the embedded defaults
(SQLite + kombu's SQLAlchemy transport), with the same code paths.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.config import reset_settings
from service.db import session_scope
from service.jobs import names
from service.models import (
    Article,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    Frequency,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from tests.support.readers import reader

SAMPLE_FEED = Path(__file__).resolve().parent.parent / "service" / "demo" / "sample_feed.xml"
FIXTURE_TITLE = "المغرب والاحتلال يوقعان اتفاقا أمنيا غير مسبوق في المنطقة"


def _wait(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _count(model, *where) -> int:
    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where)) or 0


def _add_readers(n_active: int = 2) -> list[int]:
    from service.articles.sections import ensure_sections

    ids = []
    with session_scope() as s:
        ensure_sections(s)
        for i in range(n_active):
            reader(s, f"reader{i}@example.com", status=SubscriberStatus.active, frequency=Frequency.daily,
                   alerts=True, sections=[], consented_at=utcnow())
        # Neither of these may receive the digest.
        reader(s, "pending@example.com", status=SubscriberStatus.pending, frequency=Frequency.daily)
        reader(s, "weekly@example.com", status=SubscriberStatus.active, frequency=Frequency.weekly)
        s.flush()
        ids = [x for x in s.scalars(select(Subscriber.id).where(Subscriber.email.like("reader%")))]
    return ids


def _run_pipeline(feed_server, smtp_sink, celery_worker_factory, monkeypatch):
    from service.jobs.app import app
    from service.usecases.digests import start_digest

    feed_url = feed_server.serve("/feed.xml", SAMPLE_FEED.read_bytes())
    monkeypatch.setenv("FEED_URLS", feed_url)
    reset_settings()
    _add_readers(2)

    with celery_worker_factory():
        app.send_task(names.POLL_FEEDS)
        _wait(lambda: _count(Article) >= 5, 60, "articles to be ingested")
        edition_id = start_digest("daily", scheduled=False)
        assert edition_id is not None
        messages = smtp_sink.wait_for(2, timeout=60)
        _wait(
            lambda: _count(Edition, Edition.id == edition_id, Edition.status == EditionStatus.done),
            30,
            "the edition to be done",
        )
    return edition_id, messages


def _assert_digest(edition_id, messages):
    assert sorted(r for m in messages for r in m.rcpt_tos) == ["reader0@example.com", "reader1@example.com"]
    msg = messages[0].message
    assert msg.get_content_type() == "multipart/alternative"
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    assert 'dir="rtl"' in html and 'lang="ar"' in html
    assert FIXTURE_TITLE in html and FIXTURE_TITLE in text
    assert "__NASHRA_" not in html and "__NASHRA_" not in text  # every placeholder filled
    assert "/unsubscribe/" in html
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            assert part["Content-Transfer-Encoding"] != "quoted-printable"
    assert _count(Delivery, Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.sent) == 2
    assert _count(Delivery, Delivery.edition_id == edition_id) == 2  # pending and weekly readers not planned


@pytest.mark.slow
def test_feed_to_inbox_on_postgres_and_redis(pg_env, redis_url, smtp_sink, feed_server, celery_worker_factory, monkeypatch):
    from service.config import get_settings

    assert get_settings().broker_url.startswith("redis://")
    edition_id, messages = _run_pipeline(feed_server, smtp_sink, celery_worker_factory, monkeypatch)
    _assert_digest(edition_id, messages)


@pytest.mark.slow
def test_feed_to_inbox_on_embedded_defaults(sqlite_env, smtp_sink, feed_server, celery_worker_factory, monkeypatch):
    from service.config import get_settings

    settings = get_settings()
    assert settings.redis_url is None and settings.broker_url.startswith("sqla+sqlite:///")
    assert settings.database_url.startswith("sqlite:///")
    edition_id, messages = _run_pipeline(feed_server, smtp_sink, celery_worker_factory, monkeypatch)
    _assert_digest(edition_id, messages)
