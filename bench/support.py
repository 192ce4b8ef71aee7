"""Set-up shared by the benchmark scripts: a free port, a scratch PostgreSQL database,
an aiosmtpd sink in a process of its own, Celery workers as a subprocess, uvicorn in a
thread, and the SMTP sink's ceiling.

The scripts run as `.venv/bin/python bench/bench_X.py`; each puts the repository root
on sys.path first and then imports from here:

    REPO = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(REPO))

    from bench.support import free_port, scratch_database  # noqa: E402
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CELERY = str(Path(sys.executable).parent / "celery")
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ PostgreSQL


@contextlib.contextmanager
def scratch_database(tag: str, admin_url: str = PG_ADMIN):
    """A database of its own (nashra_bench_<tag>_<pid>_<random>), migrated to head: its URL.

    Afterwards the service's engine is reset, any backend still connected to it is
    terminated and the database dropped.
    """
    import sqlalchemy as sa

    from service.migrate import upgrade

    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"nashra_bench_{tag}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(url)
        yield url
    finally:
        from service.db import reset_engine

        reset_engine()
        with admin.connect() as c:
            c.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


# ------------------------------------------------------------------ an SMTP sink, in its own process


def serve_smtp(handler, port: int, data_size_limit: int, stop) -> None:
    """In the sink's process: aiosmtpd with `handler` on 127.0.0.1:port until `stop` is set."""
    from aiosmtpd.controller import Controller

    ctl = Controller(handler, hostname="127.0.0.1", port=port, data_size_limit=data_size_limit,
                     server_kwargs={"hostname": "sink.bench"})
    ctl.start()
    stop.wait()
    ctl.stop()


@contextlib.contextmanager
def sink_process(target, *shared):
    """`target(port, *shared, stop)` in a spawned process, on a free port: the port, once
    the process accepts connections on it.  Afterwards `stop` is set and the process joined.

    `shared` are values made with multiprocessing.get_context("spawn").
    """
    ctx = mp.get_context("spawn")
    port = free_port()
    stop = ctx.Event()
    proc = ctx.Process(target=target, args=(port, *shared, stop), daemon=True)
    proc.start()
    for _ in range(200):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            break
        time.sleep(0.05)
    try:
        yield port
    finally:
        stop.set()
        proc.join(10)


def ceiling(port: int, message: bytes, n: int, sender: str) -> float:
    """Messages per second the sink accepts: `message` sent n times with plain smtplib
    over one connection."""
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
    smtp.ehlo()
    t = time.perf_counter()
    for i in range(n):
        smtp.sendmail(sender, [f"ceiling{i}@example.com"], message)
    elapsed = time.perf_counter() - t
    smtp.quit()
    return n / elapsed


# ------------------------------------------------------------------ Celery workers, the web app


@contextlib.contextmanager
def celery_worker(queue: str, concurrency: int, node: str, env: dict[str, str], *, cwd: Path = REPO,
                  loglevel: str = "WARNING", output=subprocess.DEVNULL, stop_timeout: float = 30):
    """`celery worker -Q queue -c concurrency -P prefork` (node `<node><random>@host`) as a
    subprocess in a session of its own, with os.environ and `env`: yielded once a worker
    answers a ping; afterwards SIGTERM to its process group, waiting up to stop_timeout.
    """
    proc = subprocess.Popen(
        [CELERY, "-A", "service.jobs.app", "worker", "-Q", queue, "-c", str(concurrency), "-P", "prefork",
         "-n", f"{node}{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle",
         "--without-heartbeat", "--loglevel", loglevel],
        cwd=cwd, env={**os.environ, **env}, start_new_session=True,
        stdout=output, stderr=output,
    )
    try:
        from service.jobs.app import app

        for _ in range(120):
            if app.control.ping(timeout=0.5):
                break
        else:
            raise RuntimeError("the Celery worker did not come up")
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(stop_timeout)


@contextlib.contextmanager
def web_server(app):
    """`app` served by uvicorn on a free loopback port, in a thread: its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
