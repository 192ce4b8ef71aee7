"""The reader's hour with a real beat and a real worker (issue 13, item 1): a digest that
falls due while no worker runs waits in Redis as beat's ticks, goes once when a worker
comes back — to the readers of that hour only — and never again while beat keeps ticking.

Real processes (`nashra beat`, a prefork `celery worker`), Redis, PostgreSQL and an SMTP
peer.  Nothing is timed: the test waits for what it expects, with generous timeouts.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time

import redis
import sqlalchemy as sa

from service.config import get_settings
from service.db import session_scope
from service.models import (
    Article,
    ArticleVersion,
    Edition,
    EditionKind,
    VersionKind,
    utcnow,
)
from service.subscribers.hours import offered_hours
from tests.support.readers import reader
from tests.support.workers import REPO, kill, start_worker, stop, worker_env


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


def test_a_digest_due_while_workers_were_down_goes_once_when_they_return(pg_env, redis_url, smtp_sink, tmp_path):
    settings = get_settings()
    now = utcnow()
    due = (now - dt.timedelta(minutes=3)).astimezone(settings.tz).replace(second=0, microsecond=0)
    at = f"{due.hour:02d}:{due.minute:02d}"  # this hour's slot fell due three minutes ago
    other_hour = next(h for h in offered_hours() if h != due.hour)
    with session_scope() as s:
        for n in range(3):
            reader(s, f"reader{n}@example.com", frequency="daily", alerts=False)
        reader(s, "other-hour@example.com", frequency="daily", alerts=False, digest_hour=other_hour)
        seen = now - dt.timedelta(minutes=30)
        article = Article(guid="urn:t:1", url="https://news.example/a/1", title="خبر الصباح", summary="ملخص",
                          content_hash="1" * 64, first_seen_at=seen, last_major_at=seen, version=1)
        s.add(article)
        s.flush()
        s.add(ArticleVersion(article_id=article.id, version=1, kind=VersionKind.new, content_hash="1" * 64,
                             title=article.title, created_at=seen))

    env = dict(os.environ)
    env.update(worker_env(smtp_sink.port, DIGEST_DAILY_AT=at, DIGEST_CHECK_SECONDS="1", VAR_DIR=str(tmp_path / "var"),
                          TIMEZONE=settings.timezone, SECRET_KEY=settings.secret_key))
    queue = redis.Redis.from_url(os.environ["REDIS_URL"])
    default = os.environ.get("REDIS_KEY_PREFIX", "") + "default"
    beat = subprocess.Popen([sys.executable, "-m", "service", "beat"], cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        # Workers down: beat's ticks pile up in Redis, and nothing is made or sent.
        wait_until(lambda: queue.llen(default) >= 3, 60, "beat's ticks waiting in Redis")
        with session_scope() as s:
            assert s.scalar(sa.select(sa.func.count()).select_from(Edition)) == 0
        assert smtp_sink.messages == []

        worker = start_worker("digest-beat", env, queues="default,digests")
        got = wait_until(lambda: len(smtp_sink.messages) >= 3 and smtp_sink.messages, 90, "the digest")
        # Beat goes on ticking while the worker runs; let several more ticks be consumed.
        ticks = queue.llen(default)
        wait_until(lambda: _consumed_ticks(queue, default, ticks), 30, "more ticks run")
        time.sleep(3)
    finally:
        if worker is not None:
            stop(worker)
            worker.wait(60)
        kill(beat)
    got = list(smtp_sink.messages)
    assert sorted(r for m in got for r in m.rcpt_tos) == [f"reader{n}@example.com" for n in range(3)]
    with session_scope() as s:
        [edition] = s.scalars(sa.select(Edition).where(Edition.kind == EditionKind.digest))
    at = due.astimezone(dt.UTC)  # slots are keyed by their UTC hour and date (issue 22)
    assert edition.idempotency_key == f"digest:daily:u{at.hour:02d}:{at.date().isoformat()}"
    assert edition.status.value == "done" and edition.recipients == 3
    assert edition.window_end <= due.astimezone(dt.UTC)  # the slot's own window, however late it went


def _consumed_ticks(queue, key: str, before: int) -> bool:
    return queue.llen(key) <= max(before - 1, 0) or queue.llen(key) == 0
