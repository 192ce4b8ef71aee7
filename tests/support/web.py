"""Fixtures for the web tests, registered in tests/conftest.py.

`queue_redis`: a Redis database of the tests' own for reading what the app queued;
`live_server`: the real app under uvicorn on a free loopback port, for the browser.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.support.net import free_port


@pytest.fixture
def queue_redis(redis_url, monkeypatch):
    """Redis for tests that read the queues: a db of their own (13), so that other test
    runs sharing this machine's db 15 cannot consume or flush the messages under test."""
    import kombu.pools
    import redis as redis_lib

    from service.config import reset_settings
    from service.jobs.app import configure

    url = redis_url.rsplit("/", 1)[0] + "/13"
    client = redis_lib.Redis.from_url(url)
    client.flushdb()
    client.close()
    def point_celery_at(target: str) -> None:
        monkeypatch.setenv("REDIS_URL", target)
        reset_settings()
        configure()
        # configure() force-closes the app's pool, which is kombu's shared per-URL pool,
        # yet leaves it registered: clear the registry so the next send opens a new one.
        kombu.pools.reset()

    point_celery_at(url)
    yield url
    point_celery_at(redis_url)  # leave the Celery app as the next test expects


@pytest.fixture
def live_server(pg_env, redis_url, smtp_sink, monkeypatch):
    import kombu.pools
    import uvicorn

    from service.config import reset_settings
    from service.db import session_scope
    from service.jobs.app import configure
    from service.models import Section

    port = free_port()
    monkeypatch.setenv("PUBLIC_URL", f"http://127.0.0.1:{port}")
    reset_settings()
    configure()  # the app's producer must talk to this test's Redis
    # configure() force-closes kombu's shared per-URL pool but leaves it registered;
    # a pool closed by an earlier test would fail this test's sends: start afresh.
    kombu.pools.reset()
    with session_scope() as s:
        s.add_all([Section(slug="world", name="عربي دولي", position=1),
                   Section(slug="sport", name="رياضة", position=2)])
    from service.web.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
