"""`nashra demo` on a brand-new var/: the embedded broker's queues exist before any child
starts.

kombu's SQLAlchemy transport makes a queue's row with select-then-insert, each process
on its own: the demo, its worker and beat making the same row at once on a new broker
file collided (UNIQUE constraint failed: kombu_queue.name, in the demo's first
send_task).  The demo now makes every task queue itself, before it starts a child, so
the children only ever find the rows.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from pathlib import Path

import pytest

from service.jobs import names

BROKER_QUEUES = set(names.QUEUES)


@pytest.fixture
def demo_env(monkeypatch):
    """What run_demo writes into os.environ, given back afterwards; the Celery app
    configured again for the test settings."""
    from service.config import reset_settings
    from service.jobs.app import configure

    for name, value in {
        "NASHRA_DEMO": "1",
        "FEED_ALLOW_PRIVATE": "true",
        "SMTP_URL": "smtp://127.0.0.1:1025",
        "PUBLIC_URL": "http://127.0.0.1:8000",
        "FEED_URLS": "http://127.0.0.1:8000/demo/feed.xml",
        "LOG_FORMAT": "json",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("REDIS_URL", raising=False)
    yield
    reset_settings()
    configure()


def _broker_queue_rows(broker: Path) -> set[str]:
    if not broker.exists():
        return set()
    with sqlite3.connect(broker) as db:
        try:
            return {name for (name,) in db.execute("SELECT name FROM kombu_queue")}
        except sqlite3.OperationalError:  # no table yet
            return set()


def test_declare_broker_queues_makes_every_task_queue(demo_env, tmp_path):
    from service.config import get_settings
    from service.demo.run import declare_broker_queues
    from service.jobs.app import configure

    settings = get_settings()
    settings.var_dir.mkdir(parents=True)
    app = configure(settings)
    broker = settings.var_dir / "broker.sqlite3"
    assert _broker_queue_rows(broker) == set()

    declared = declare_broker_queues(app)
    assert set(declared) >= BROKER_QUEUES
    assert set(declared) >= {q.name for q in app.conf.task_queues}
    assert _broker_queue_rows(broker) >= BROKER_QUEUES

    declare_broker_queues(app)  # a second run of the demo on the same var/: still fine
    with sqlite3.connect(broker) as db:
        rows = [name for (name,) in db.execute("SELECT name FROM kombu_queue")]
    assert sorted(rows) == sorted(set(rows))


def test_run_demo_makes_the_queues_before_it_starts_a_child(demo_env, tmp_path, monkeypatch):
    from service.config import get_settings
    from service.demo import run

    seen: list[tuple[str, set[str]]] = []

    def start(self, name, *args):
        seen.append((name, _broker_queue_rows(get_settings().var_dir / "broker.sqlite3")))
        raise RuntimeError("stop here: no child in this test")

    monkeypatch.setattr(run.Children, "start", start)
    from tests.support.net import free_port

    assert run.run_demo(once=True, web_port=free_port(), smtp_port=free_port()) == 1
    assert seen, "run_demo started no child"
    name, rows = seen[0]
    missing = BROKER_QUEUES - rows
    assert not missing, f"{name} started before the broker had queues {sorted(missing)}"


def _declare_all(url: str, at: float, results) -> None:
    from kombu import Connection

    try:
        with Connection(url) as conn:
            channel = conn.default_channel
            time.sleep(max(0.0, at - time.time()))
            for name in sorted(BROKER_QUEUES):
                channel.queue_declare(name)
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 — reported to the test
        results.put(f"{type(exc).__name__}: {exc}")


def test_children_declaring_at_once_after_the_demo_did_all_succeed(demo_env):
    """What the worker, beat and the demo itself do at start-up, at the same instant:
    once the rows exist nobody inserts, so nobody collides."""
    from service.config import get_settings
    from service.demo.run import declare_broker_queues
    from service.jobs.app import configure

    settings = get_settings()
    settings.var_dir.mkdir(parents=True)
    declare_broker_queues(configure(settings))
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    at = time.time() + 0.5
    procs = [ctx.Process(target=_declare_all, args=(settings.broker_url, at, results)) for _ in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    assert [results.get(timeout=5) for _ in procs] == ["ok"] * 3
    assert _broker_queue_rows(settings.var_dir / "broker.sqlite3") >= BROKER_QUEUES
