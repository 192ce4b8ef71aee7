"""`nashra web --workers N`: several processes behind one port, as an operator runs it.

A real `nashra web` subprocess against PostgreSQL and Redis: it answers, a signup made
through it is one reader and one queued confirmation, more than one process answers,
and SIGTERM stops them all cleanly.  On SQLite it stays one process.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from sqlalchemy import func, select

from service.config import get_settings, reset_settings
from service.db import session_scope
from service.models import Section, Subscriber, SubscriberStatus
from service.web.server import cores, worker_count
from tests.support.net import free_port


class WebProcess:
    """`nashra web` in a session of its own, its JSON log lines collected as they come."""

    def __init__(self, *args: str):
        self.port = free_port()
        env = {**os.environ, "LOG_FORMAT": "json", "LOG_LEVEL": "INFO",
               "PUBLIC_URL": f"http://127.0.0.1:{self.port}"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "web", "--port", str(self.port), *args],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.lines: list[dict] = []
        self.raw: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.base = f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.raw.append(line)
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                pass

    def wait_up(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "".join(self.raw)
            try:
                if httpx.get(self.base + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("nashra web did not answer /healthz:\n" + "".join(self.raw))

    def children(self) -> set[int]:
        """The processes uvicorn's supervisor spawned to serve."""
        found = set()
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat") as f:
                        stat = f.read()
                except OSError:
                    continue
                if int(stat[stat.rindex(")") + 2:].split()[1]) != self.proc.pid:  # field 4: ppid
                    continue
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    # uvicorn's workers, not multiprocessing's resource tracker beside them
                    if b"spawn_main" in f.read():
                        found.add(int(name))
        return found

    def answered_by(self, route: str) -> set[int]:
        return {line["pid"] for line in list(self.lines)
                if line.get("event") == "http_request" and line.get("route") == route}

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:  # pragma: no cover — only when the test already failed
                os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture
def sections(pg_env):
    with session_scope() as s:
        s.add_all([Section(slug="world", name="عربي دولي", position=1),
                   Section(slug="sport", name="رياضة", position=2)])


def _queued_confirmations(redis_url: str) -> list:
    import base64

    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        messages = client.lrange(get_settings().redis_key_prefix + "default", 0, -1)
    finally:
        client.close()
    out = []
    for raw in messages:
        body = json.loads(base64.b64decode(json.loads(raw)["body"]))
        out.append(tuple(body[0]))
    return out


def test_two_processes_serve_one_port_and_stop_on_sigterm(sections, queue_redis):
    web = WebProcess("--workers", "2")
    try:
        web.wait_up()
        workers = web.children()
        assert len(workers) == 2, f"expected 2 worker processes under the supervisor, found {workers}"

        # A reader signs up through it: one pending reader, one confirmation asked for.
        page = httpx.get(web.base + "/")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]
        done = httpx.post(web.base + "/subscribe", data={
            "csrf_token": token, "email": "reader@example.com", "frequency": "daily", "alerts": "yes",
            "consent": "yes", "sections": ["1"]})
        assert done.status_code == 200
        assert "تحقّق من بريدك" in done.text
        with session_scope() as s:
            sub = s.scalar(select(Subscriber).where(Subscriber.email == "reader@example.com"))
            assert sub is not None and sub.status is SubscriberStatus.pending
        assert _queued_confirmations(queue_redis) == [("confirm", sub.id)]

        # Connections are spread by the kernel over the processes accepting on the socket:
        # keep opening fresh ones until both have answered.
        deadline = time.monotonic() + 60
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            while len(web.answered_by("/healthz")) < 2 and time.monotonic() < deadline:
                list(pool.map(lambda _: httpx.get(web.base + "/healthz", timeout=10).status_code, range(32)))
                time.sleep(0.3)  # the log lines come through a pipe
        assert web.answered_by("/healthz") <= workers
        assert len(web.answered_by("/healthz")) == 2, "only one of the two processes answered"
    finally:
        code = web.stop()
    assert code == 0, "".join(web.raw[-20:])
    assert all(not os.path.exists(f"/proc/{pid}") or _zombie(pid) for pid in workers)
    # The shutdown is quiet: no traceback from any process.
    assert not any("Traceback" in line for line in web.raw), "".join(web.raw)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def test_the_embedded_sqlite_database_keeps_one_process(sqlite_env, monkeypatch):
    monkeypatch.setenv("WEB_WORKERS", "4")
    reset_settings()
    assert worker_count() == (1, "sqlite")
    assert worker_count(3) == (1, "sqlite")
    web = WebProcess("--workers", "3")
    try:
        web.wait_up()
        assert web.children() == set(), "on SQLite the app runs in the command's own process"
        assert any(line.get("event") == "web.one_process" for line in web.lines)
    finally:
        # One process: uvicorn shuts down, then re-raises the SIGTERM it caught, so that
        # whoever started it sees how it ended (as any process killed by SIGTERM).
        assert web.stop() in (0, -signal.SIGTERM)
    assert not any("Traceback" in line for line in web.raw), "".join(web.raw)


def test_the_number_of_processes_follows_the_setting_and_the_cores(pg_env, monkeypatch):
    assert worker_count() == (cores(), None)  # WEB_WORKERS=0: one per core
    monkeypatch.setenv("WEB_WORKERS", "3")
    reset_settings()
    assert worker_count() == (3, None)
    assert worker_count(2) == (2, None)  # --workers wins over the setting


@pytest.mark.parametrize("bad", ["-1", "65", "two", ""])
def test_a_bad_number_of_processes_is_refused_before_anything_starts(pg_env, bad):
    proc = subprocess.run([sys.executable, "-m", "service", "web", "--workers", bad, "--port", str(free_port())],
                          env=os.environ.copy(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--workers" in proc.stderr
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Subscriber)) == 0
