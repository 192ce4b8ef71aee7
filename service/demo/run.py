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
from service.newsletters import catalogue, membership
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


def _load_prctl():
    """libc's prctl, looked up here in the parent: the child, between fork and exec,
    only calls it (no dlopen there, which could wait forever on a lock that another
    thread of the demo, the capture server's, held at the fork)."""
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
PR_SET_PDEATHSIG = 1

# How long `Children.stop` gives the children after SIGTERM before it kills what is left
# (each child's whole process group: the worker's prefork children too).  A warm shutdown
# of the worker on the embedded broker takes 3-6 s (its loop looks at the stop flag every
# 2 s, twice, then the pool stops); a task still running past this is killed, and the
# ledger rows it had claimed but not recorded go out again after their lease, as after
# any crashed worker.
STOP_GRACE_SECONDS = 10.0


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it if the demo itself dies.

    The children run in their own sessions (so Ctrl-C reaches only the demo, which
    stops them in order); without this, a demo killed with SIGKILL would leave them
    running.  Elsewhere than Linux this is a no-op.
    """
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """`sig` to the child's whole process group (it leads its own session)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    """Is a process of group `pgid` still running (a zombie is not: an orphan's may wait
    for an init that does not reap)?  From /proc on Linux, else kill(-pgid, 0)."""
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
            if fields[0] != "Z" and int(fields[2]) == pgid:
                return True
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

    def stop(self, grace: float = STOP_GRACE_SECONDS, say=None) -> None:
        """SIGTERM every child, wait up to `grace` seconds, then SIGKILL each process group
        still there (a second Ctrl-C meanwhile kills at once).  Returns within about
        `grace` seconds whatever the children do.  SIGTERM goes to the child alone: a
        Celery worker's warm shutdown stops its prefork children in order (a SIGTERM to
        them as well kills them mid-task, and the worker then waits to replace them).

        Beat first, so that no new tick is queued while the worker drains; then the web
        app and the worker.  A child's process group is waited for, not only the child:
        a prefork worker's children must not outlive the demo.
        """
        order = sorted(self.procs, key=lambda item: {"beat": 0, "web": 1}.get(item[0], 2))
        for _, proc in order:
            if proc.poll() is None:  # the leader only: a worker stops its prefork children itself
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        try:
            while time.monotonic() < deadline:
                for _, proc in order:
                    proc.poll()  # reaps the leader, so that its group can empty
                if not any(_group_alive(proc.pid) for _, proc in order):
                    return
                time.sleep(0.05)
            left = [name for name, proc in order if _group_alive(proc.pid)]
            if say is not None:
                say(f"still running after {grace:.0f} s, killed: {', '.join(left)}")
        except KeyboardInterrupt:
            if say is not None:
                say("killed")
        for _, proc in order:
            _signal_group(proc, signal.SIGKILL)
        for _, proc in order:
            proc.wait()


def _prepare_database() -> None:
    upgrade()
    with session_scope() as session:
        ensure_sections(session)
        sub = session.scalar(select(Subscriber).where(Subscriber.email == DEMO_READER))
        if sub is None:
            sub = Subscriber(email=DEMO_READER, status=SubscriberStatus.active, consent_source="nashra demo",
                             consented_at=utcnow(), confirmed_at=utcnow())
            session.add(sub)
            session.flush()
        else:  # a second run: the demo reader may have left or unsubscribed in the browser
            sub.status = SubscriberStatus.active
        _demo_newsletters(session, sub.id)


def _demo_newsletters(session, subscriber_id: int) -> None:
    """The demo reader is on the daily digest (all sections) and the breaking alerts, so
    the digest and an alert sent from the editor's page both land in the outbox; joining
    again keeps whatever they chose since."""
    for newsletter in (catalogue.digest_for(session, Frequency.daily), catalogue.default_alerts(session)):
        if newsletter is not None:
            membership.join(session, subscriber_id, newsletter)


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


def declare_broker_queues(app) -> list[str]:
    """Make every task queue's row on the broker now, before any child starts.

    kombu's SQLAlchemy transport creates its tables and a queue's row on first use, each
    process on its own: select, then insert.  On a brand-new var/ the demo's first
    send_task, the worker declaring its queues and beat sending its first ticks did that
    at the same moment, and one of them lost: "UNIQUE constraint failed: kombu_queue.name",
    or an OperationalError on the tables whose retry inside kombu then failed with
    "'NoneType' object has no attribute 'client'".  Made here first, the children only
    find the rows.  The other queues kombu makes (a worker's pidbox, mingle's and
    gossip's replies) are named for one process, so no other process makes them.

    Returns the queues' names.  With Redis (REDIS_URL) the declaration is harmless.
    """
    queues = list(app.amqp.queues.values())
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in queues:
            queue.bind(channel).declare()
    return [queue.name for queue in queues]


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

    def _terminate(signum, frame):
        raise KeyboardInterrupt

    # Ctrl-C (SIGINT) and SIGTERM stop the demo, whatever this process inherited: a
    # process started in the background by a non-interactive shell (`cmd &` in a script,
    # as a CI runner may do) begins with SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler, so SIGINT did nothing and the demo ran on until killed.
    previous = {sig: signal.signal(sig, _terminate) for sig in (signal.SIGINT, signal.SIGTERM)}
    capture: CaptureServer | None = None
    children = Children()
    try:
        say(f"نشرة demo — database: {settings.database_url}; broker: {settings.broker_name}")
        _prepare_database()
        declare_broker_queues(app)  # before the children, which would race to make them
        server = CaptureServer(settings.outbox_dir, port=smtp_port)
        server.start()
        capture = server  # stopped in `finally` only once it has started
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
        say(f"  demo reader:                  {DEMO_READER}, on the daily digest and the alerts")
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
        started = time.monotonic()
        children.stop(say=say)
        if capture is not None:
            capture.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if children.procs:
            say(f"stopped in {time.monotonic() - started:.1f} s")
