"""`nashra demo`: the whole pipeline on one machine with only Python.

SQLite for the database, Celery on kombu's SQLAlchemy transport (a SQLite file) unless
REDIS_URL is set, a capture SMTP server whose messages show at /outbox, and the web
app serving the bundled sample feed that the worker ingests through the real code
path.  Ctrl-C stops every child process.  Running it again reuses what is there.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import delete, func, select

from service.articles.sections import ensure_sections
from service.config import get_settings, reset_settings
from service.db import session_scope
from service.demo.capture import CaptureServer
from service.jobs import install_dispatcher, names
from service.jobs.app import configure
from service.logs import setup_logging
from service.migrate import upgrade
from service.models import (
    Article,
    Edition,
    EditionStatus,
    Editor,
    Frequency,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from service.staff.editors import create_editor
from service.usecases.digests import start_digest

DEMO_READER = "reader@nashra-demo.example"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it if the demo itself dies.

    The children run in their own sessions (so Ctrl-C reaches only the demo, which
    stops them in order); without this, a demo killed with SIGKILL would leave them
    running.  Elsewhere than Linux this is a no-op.
    """
    try:

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Children:
    """The demo's child processes, each in its own session so we stop them ourselves."""
    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, *args: str) -> None:
        log_path = get_settings().var_dir / f"demo-{name}.log"
        log = open(log_path, "ab")  # noqa: SIM115 — lives as long as the child
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.procs.append((name, proc))

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                log = get_settings().var_dir / f"demo-{name}.log"
                raise RuntimeError(f"the {name} process exited with code {proc.returncode}; see {log}")

    def stop(self, timeout: float = 15.0) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _prepare_database() -> None:
    upgrade()
    with session_scope() as session:
        ensure_sections(session)
        sub = session.scalar(select(Subscriber).where(Subscriber.email == DEMO_READER))
        if sub is None:
            session.add(
                Subscriber(
                    email=DEMO_READER,
                    status=SubscriberStatus.active,
                    frequency=Frequency.daily,
                    alerts=True,
                    sections=[],
                    consent_source="nashra demo",
                    consented_at=utcnow(),
                    confirmed_at=utcnow(),
                )
            )
        else:  # a second run: make sure the demo reader still gets the digest
            sub.status, sub.frequency = SubscriberStatus.active, Frequency.daily


def _demo_editor_token() -> str:
    """A fresh token for the demo editor on every run (tokens are shown only once)."""
    with session_scope() as session:
        session.execute(delete(Editor).where(Editor.name == "demo"))
        _, token = create_editor(session, "demo", "admin")
    return token


def _article_count() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(Article)) or 0


def _edition_done(edition_id: int) -> bool:
    with session_scope() as session:
        edition = session.get(Edition, edition_id)
        return edition is not None and edition.status == EditionStatus.done


def run_demo(once: bool = False, web_port: int = 8000, smtp_port: int = 1025) -> int:
    web_port = web_port if _port_free(web_port) else _free_port()
    smtp_port = smtp_port if _port_free(smtp_port) else _free_port()
    base = f"http://127.0.0.1:{web_port}"
    os.environ.update(
        NASHRA_DEMO="1",
        FEED_ALLOW_PRIVATE="true",
        SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
        PUBLIC_URL=base,
        FEED_URLS=f"{base}/demo/feed.xml",
    )
    os.environ.setdefault("LOG_FORMAT", "console")
    reset_settings()
    settings = get_settings()
    setup_logging()
    app = configure(settings)
    install_dispatcher()
    say = print

    say(f"نشرة demo — database: {settings.database_url}; broker: {settings.broker_name}")
    _prepare_database()
    capture = CaptureServer(settings.outbox_dir, port=smtp_port)
    capture.start()
    children = Children()

    def _terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        children.start("web", "web", "--port", str(web_port))
        children.start("worker", "worker", "--concurrency", "2", "--hostname", f"demo-{os.getpid()}@%h")
        children.start("beat", "beat")

        def _web_up():
            children.check()
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(_web_up, 60, "the web app")
        say(f"web app up at {base}; ingesting the sample feed through the worker …")

        app.send_task(names.POLL_FEEDS)
        _wait(lambda: children.check() or _article_count() > 0, 90, "the sample feed to be ingested")
        say(f"{_article_count()} articles ingested; sending the daily digest …")

        before = set(capture.messages())
        edition_id = start_digest("daily", scheduled=False)
        if edition_id is None:
            raise RuntimeError("the digest found no articles")
        new_mail = _wait(
            lambda: children.check() or [p for p in capture.messages() if p not in before],
            120,
            "the digest to reach the outbox",
        )
        _wait(lambda: _edition_done(edition_id), 30, "the edition to finish")
        say("")
        say(f"  digest (edition {edition_id}) delivered: {base}/outbox/{Path(new_mail[0]).stem}")
        say(f"  outbox (every captured mail):  {base}/outbox")
        say(f"  signup form:                  {base}/")
        say(f"  editor pages:                 {base}/editor   (log in as 'demo', token {_demo_editor_token()})")
        say(f"  metrics:                      {base}/metrics")
        say(f"  progress:                     nashra status {edition_id}")
        say("")
        if once:
            return 0
        say("running — press Ctrl-C to stop")
        while True:
            children.check()
            time.sleep(1)
    except KeyboardInterrupt:
        say("\nstopping …")
        return 0
    except (RuntimeError, TimeoutError) as exc:
        print(f"nashra demo: {exc}", file=sys.stderr)
        return 1
    finally:
        children.stop()
        capture.stop()
        signal.signal(signal.SIGTERM, previous)
