"""Set-up shared by the benchmark scripts: a free port, a scratch PostgreSQL database,
an aiosmtpd sink in a process of its own, Celery workers as a subprocess, uvicorn in a
thread, and the SMTP sink's ceiling; a redis-server of the run's own; Postfix's
smtp-sink (installed if missing) with per-message arrival times; CPU seconds of a
process, a worker's process group and a database's backends; the reference senders
(smtplib in threads, aiosmtplib on one event loop).

The scripts run as `.venv/bin/python bench/bench_X.py`; each puts the repository root
on sys.path first and then imports from here:

    REPO = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(REPO))

    from bench.support import free_port, scratch_database  # noqa: E402
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing as mp
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
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


# ------------------------------------------------------------------ a Redis of our own


@contextlib.contextmanager
def redis_server():
    """redis-server on a free loopback port, no persistence: its URL (db 0)."""
    import redis

    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        with contextlib.suppress(redis.ConnectionError):
            if client.ping():
                break
        time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


# ------------------------------------------------------------------ CPU time from /proc

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # [0] is field 3 (state)


def pid_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 if it is gone)."""
    f = _stat_fields(pid)
    return (int(f[11]) + int(f[12])) / CLK_TCK if f else 0.0


def session_cpu_seconds(sid: int) -> float:
    """User + system CPU seconds of every live process in session `sid` (a Celery worker
    started by celery_worker: its main process and its prefork children)."""
    total = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            f = _stat_fields(int(name))
            if f and int(f[3]) == sid:
                total += int(f[11]) + int(f[12])
    return total / CLK_TCK


def session_socket_bytes(sid: int) -> dict[str, tuple[int, int]]:
    """Bytes sent and received on the open TCP sockets of session `sid`'s processes, by
    what is at the other end ("postgres" for port 5432, else "other": the relay, Redis),
    from the kernel's tcp_info (`ss -tinp`).  A worker's pooled sessions and database
    connections stay open through a run, so two readings bracket its traffic."""
    pids = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            f = _stat_fields(int(name))
            if f and int(f[3]) == sid:
                pids.add(int(name))
    text = subprocess.run(["ss", "-tinpH"], capture_output=True, text=True, check=False).stdout
    totals = {"postgres": [0, 0], "other": [0, 0]}
    owner = peer = None
    for line in text.splitlines():
        if not line.startswith(("\t", " ")):
            fields = line.split()
            owner = {int(p) for p in re.findall(r"pid=(\d+)", line)} & pids
            peer = fields[4].rsplit(":", 1)[-1] if len(fields) > 4 else ""
            continue
        if owner:
            sent = re.search(r"bytes_sent:(\d+)", line)
            received = re.search(r"bytes_received:(\d+)", line)
            where = totals["postgres" if peer == "5432" else "other"]
            where[0] += int(sent[1]) if sent else 0
            where[1] += int(received[1]) if received else 0
    return {k: (v[0], v[1]) for k, v in totals.items()}


def postgres_wal_lsn() -> str:
    """The cluster's WAL position now (pg_current_wal_lsn): the difference of two is the
    WAL written between them, by every database of the cluster (run the bench alone)."""
    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            return c.execute(sa.text("SELECT pg_current_wal_lsn()::text")).scalar()
    finally:
        admin.dispose()


def postgres_wal_bytes_since(lsn: str) -> int:
    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            return int(c.execute(sa.text("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), CAST(:l AS pg_lsn))"),
                                 {"l": lsn}).scalar())
    finally:
        admin.dispose()


def redis_commands(redis_url: str) -> int:
    """Commands the bench's own redis-server has processed so far (INFO stats)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.info("stats")["total_commands_processed"])
    finally:
        client.close()


def postgres_cpu_seconds(database_url: str) -> float:
    """CPU seconds of the PostgreSQL backends connected to this database right now (they
    run on this machine; a backend that ended meanwhile is not counted)."""
    import sqlalchemy as sa

    name = database_url.rsplit("/", 1)[1]
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            pids = c.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :n"), {"n": name}).scalars().all()
    finally:
        admin.dispose()
    return sum(pid_cpu_seconds(p) for p in pids)


# ------------------------------------------------------------------ smtp-sink (Postfix), or aiosmtpd


def _quiet(*cmd: str) -> int:
    return subprocess.run(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode


def ensure_smtp_sink() -> str | None:
    """Path of Postfix's smtp-sink, installing Debian's postfix package if it is missing
    (root only); None if it cannot be had.  The postfix daemon is left stopped and disabled."""
    found = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None)
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print("bench: installing Debian's postfix package for smtp-sink …", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postfix"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            return None
    # No mail daemon of ours may keep running (or start at boot).
    if shutil.which("postfix") and _quiet("postfix", "status") == 0:
        _quiet("postfix", "stop")
    if os.path.isdir("/run/systemd/system") and shutil.which("systemctl"):
        _quiet("systemctl", "disable", "--now", "postfix")
    elif shutil.which("update-rc.d"):
        _quiet("update-rc.d", "postfix", "disable")
    return shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None)


class PostfixSink:
    """`smtp-sink -c` (C, one process, offers PIPELINING) on 127.0.0.1:port.

    With -c it writes "sess=N quit=N mesg=N\\r" each time a message's final "." is
    answered; a thread here reads that pipe and timestamps each new message
    (CLOCK_MONOTONIC, shared by every process on the machine, read within about a
    millisecond of the 250).
    """

    kind = "smtp-sink"

    def __init__(self, binary: str, port: int):
        self.port = port
        self._arrivals: list[float] = []
        cmd = [binary, "-c", "-h", "sink.bench", "-m", "2048"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # required as root: drop to nobody after binding
        self.proc = subprocess.Popen([*cmd, f"127.0.0.1:{port}", "1024"], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self._reader = threading.Thread(target=self._read, name="smtp-sink-counter", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        fd = self.proc.stdout.fileno()
        seen, tail = 0, b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            now = time.monotonic()
            records = (tail + chunk).split(b"\r")
            tail = records.pop()
            for rec in reversed(records):  # the last complete record has the newest count
                i = rec.rfind(b"mesg=")
                if i >= 0:
                    n = int(rec[i + 5:])
                    if n > seen:
                        self._arrivals.extend([now] * (n - seen))
                        seen = n
                    break

    def count(self) -> int:
        return len(self._arrivals)

    def arrivals(self, start: int = 0, end: int | None = None) -> list[float]:
        return self._arrivals[start:end]

    def cpu_seconds(self) -> float:
        return pid_cpu_seconds(self.proc.pid)

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        self.proc.wait(10)
        self._reader.join(2)


def _aiosmtpd_main(port: int, count, arrivals, stop) -> None:
    class Recording:
        async def handle_DATA(self, server, session, envelope):
            now = time.monotonic()
            with count.get_lock():
                i = count.value
                if i < len(arrivals):
                    arrivals[i] = now
                count.value = i + 1
            return "250 2.0.0 OK"

    serve_smtp(Recording(), port, 50_000_000, stop)


class AiosmtpdSink:
    """The fallback: an aiosmtpd sink in a process of its own (Python: a far lower ceiling,
    no PIPELINING), recording the arrival of up to `capacity` messages."""

    kind = "aiosmtpd"

    def __init__(self, capacity: int):
        ctx = mp.get_context("spawn")
        self._count = ctx.Value("q", 0)
        self._arr = ctx.Array("d", capacity, lock=False)
        self.port = free_port()
        self._stop = ctx.Event()
        self._proc = ctx.Process(target=_aiosmtpd_main, args=(self.port, self._count, self._arr, self._stop),
                                 daemon=True)
        self._proc.start()
        self.pid = self._proc.pid

    def count(self) -> int:
        return self._count.value

    def arrivals(self, start: int = 0, end: int | None = None) -> list[float]:
        end = min(self.count() if end is None else end, len(self._arr))
        return list(self._arr[start:end])

    def cpu_seconds(self) -> float:
        return pid_cpu_seconds(self.pid) if self.pid else float("nan")

    def close(self) -> None:
        self._stop.set()
        self._proc.join(10)


@contextlib.contextmanager
def smtp_sink(capacity: int = 2_000_000, prefer: str = "smtp-sink"):
    """An SMTP sink on a free loopback port that counts what it accepts and when:
    Postfix's smtp-sink (installed if missing), else the aiosmtpd sink.  Prints which."""
    binary = ensure_smtp_sink() if prefer == "smtp-sink" else None
    sink = None
    if binary:
        port = free_port()
        sink = PostfixSink(binary, port)
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.recv(100)  # its greeting
                break
            time.sleep(0.05)
        else:
            sink.close()
            sink = None
    if sink is None:
        sink = AiosmtpdSink(capacity)
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", sink.port), timeout=1):
                break
            time.sleep(0.05)
        print("sink: aiosmtpd (smtp-sink not available)", flush=True)
    else:
        print(f"sink: Postfix smtp-sink ({binary}) on 127.0.0.1:{sink.port}", flush=True)
    try:
        yield sink
    finally:
        sink.close()


# ------------------------------------------------------------------ reference senders


@dataclass
class Sent:
    messages: int
    seconds: float
    cpu_seconds: float  # this process's CPU time (every thread) while sending

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else float("nan")

    @property
    def cpu_us(self) -> float:
        return self.cpu_seconds / self.messages * 1e6 if self.messages else float("nan")


def smtplib_threads(port: int, message: bytes, sender: str, connections: int, seconds: float,
                    host: str = "127.0.0.1") -> Sent:
    """The plain sender: `connections` threads, each with one persistent smtplib
    connection, `sendmail` per message (MAIL, RCPT, DATA, the body: four round trips),
    until `seconds` have passed; the same bytes every time, one recipient each."""
    opened: list[smtplib.SMTP] = []
    lock = threading.Lock()

    def connect(i: int) -> None:
        s = smtplib.SMTP(host, port, timeout=60)
        s.ehlo()
        with lock:
            opened.append(s)

    with concurrent.futures.ThreadPoolExecutor(connections) as pool:
        list(pool.map(connect, range(connections)))
    start = threading.Barrier(connections + 1)
    counts = [0] * connections
    ends = [0.0] * connections
    deadline = [0.0]

    def run(i: int, smtp: smtplib.SMTP) -> None:
        start.wait()
        n = 0
        while time.perf_counter() < deadline[0]:
            smtp.sendmail(sender, [f"ref{i}-{n}@example.com"], message)
            n += 1
        counts[i], ends[i] = n, time.perf_counter()

    threads = [threading.Thread(target=run, args=(i, s), daemon=True) for i, s in enumerate(opened)]
    for t in threads:
        t.start()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    start.wait()
    for t in threads:
        t.join()
    cpu = time.process_time() - cpu0
    for s in opened:
        with contextlib.suppress(Exception):
            s.quit()
    return Sent(sum(counts), max(ends) - t0, cpu)


def aiosmtplib_tasks(port: int, message: bytes, sender: str, connections: int, seconds: float,
                     host: str = "127.0.0.1") -> Sent | None:
    """The same with asyncio: `connections` aiosmtplib clients on one event loop (in a
    thread of its own), `sendmail` per message.  None if aiosmtplib is not installed."""
    try:
        import aiosmtplib
    except ImportError:
        return None
    import asyncio

    async def main() -> Sent:
        clients = [aiosmtplib.SMTP(hostname=host, port=port, timeout=60, use_tls=False, start_tls=False)
                   for _ in range(connections)]
        await asyncio.gather(*(c.connect() for c in clients))
        await asyncio.gather(*(c.ehlo() for c in clients))
        counts = [0] * connections
        ends = [0.0] * connections
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        deadline = t0 + seconds

        async def run(i: int, c) -> None:
            n = 0
            while time.perf_counter() < deadline:
                await c.sendmail(sender, [f"aref{i}-{n}@example.com"], message)
                n += 1
            counts[i], ends[i] = n, time.perf_counter()

        await asyncio.gather(*(run(i, c) for i, c in enumerate(clients)))
        cpu = time.process_time() - cpu0
        for c in clients:
            with contextlib.suppress(Exception):
                await c.quit()
        return Sent(sum(counts), max(ends) - t0, cpu)

    out: list[Sent] = []
    t = threading.Thread(target=lambda: out.append(asyncio.run(main())))
    t.start()
    t.join()
    return out[0] if out else None


# ------------------------------------------------------------------ the workers' code


@contextlib.contextmanager
def code_of(rev: str | None):
    """A directory holding the service's code at git revision `rev` (`git archive` of
    service/, templates/, alembic.ini and tests/ — the benchmarks' sample contexts live in
    tests/support — whichever exist there); None: this working tree, as it is now (other
    engineers' uncommitted edits included); an existing directory: that copy of the tree
    (to measure a change before it is committed)."""
    if rev is None:
        yield REPO
        return
    if Path(rev).is_dir():
        yield Path(rev).resolve()
        return
    top = subprocess.run(["git", "ls-tree", "--name-only", rev], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.split()
    wanted = [p for p in ("service", "templates", "alembic.ini", "migrations", "tests") if p in top]
    tmp = Path(tempfile.mkdtemp(prefix="nashra-code-"))
    try:
        archive = subprocess.run(["git", "archive", rev, *wanted], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def code_label(rev: str | None) -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()

    if rev is not None:
        return f"git {git('rev-parse', '--short', rev)} ({rev})"
    dirty = git("status", "--porcelain", "--", "service", "templates")
    return f"this working tree: git {git('rev-parse', '--short', 'HEAD')}" + (
        " + uncommitted changes under service/" if dirty else "")


@dataclass
class Services:
    """What one send benchmark runs against (see `services`)."""

    code: Path
    sink: object
    db_url: str
    redis_url: str
    env: dict[str, str]


def services(stack: contextlib.ExitStack, rev: str | None, tag: str, smtp_port: int | None = None) -> Services:
    """The code under test (`code_of(rev)`, this process included), an SMTP sink (or the
    server already listening on `smtp_port`: then `sink` is None), a scratch PostgreSQL
    database and a redis-server of their own, entered on `stack`; the environment a worker
    of the run needs (also set in this process, whose settings, logging and Celery app are
    configured from it)."""
    code = stack.enter_context(code_of(rev))
    if rev:  # this process too (planner, web app, migrations): one version of the code
        sys.path.insert(0, str(code))
    sink = stack.enter_context(smtp_sink()) if smtp_port is None else None
    db_url = stack.enter_context(scratch_database(tag))
    redis_url = stack.enter_context(redis_server())
    env = {
        "DATABASE_URL": db_url, "REDIS_URL": redis_url, "NASHRA_VAR_DIR": tempfile.mkdtemp(prefix=f"nashra-bench-{tag}-"),
        "SECRET_KEY": "bench-secret-key-0123456789", "LOG_LEVEL": "WARNING", "LOG_FORMAT": "json",
        "SMTP_URL": f"smtp://127.0.0.1:{sink.port if sink is not None else smtp_port}",
    }
    os.environ.update(env)
    from service.config import reset_settings  # noqa: I001 — after sys.path names the code under test
    from service.jobs.app import configure
    from service.logs import setup_logging

    reset_settings()
    setup_logging()
    configure()
    return Services(code, sink, db_url, redis_url, env)


def engine_overrides(settings, workers: int, connections: int | None) -> dict[str, str]:
    """SMTP_CONNECTIONS for the workers (the engine's default unless `connections`), and an
    SMTP_MAX_CONNECTIONS with room for all of them above the alerts' share; empty for an
    engine without those settings (a revision from before issue 9)."""
    fields = type(settings).model_fields
    if "smtp_connections" not in fields:
        return {}
    per_process = connections or settings.smtp_connections
    out = {"SMTP_CONNECTIONS": str(per_process)}
    if "smtp_max_connections" in fields and settings.smtp_max_connections < workers * per_process + 1:
        out["SMTP_MAX_CONNECTIONS"] = str(workers * per_process + getattr(settings, "smtp_alert_connections", 0) + 1)
    return out


def add_readers(n: int, prefix: str) -> None:
    """n active subscribers (daily digest, alerts on, every section): PREFIXi@example.com."""
    from service.db import session_scope  # here: sys.path names the code under test first

    with session_scope() as s:
        insert_readers(s, n, email=":p || i || '@example.com'", params={"p": prefix})


# ------------------------------------------------------------------ readers, in bulk


def has_newsletters(bind) -> bool:
    """Is the database on 0008 or later (readers' choices on `subscriptions` rows)?  A run
    of a revision from before (`--rev`) still keeps them on the reader's row."""
    import sqlalchemy as sa

    return bind.execute(sa.text("SELECT to_regclass('subscriptions') IS NOT NULL")).scalar()


def newsletter_fields(bind, slug: str) -> dict:
    """{"newsletter_id": …} for an Edition of the site's `slug` newsletter; {} before 0008."""
    import sqlalchemy as sa

    if not has_newsletters(bind):
        return {}
    return {"newsletter_id": bind.execute(sa.text("SELECT id FROM newsletters WHERE slug = :s"),
                                          {"s": slug}).scalar_one()}


def insert_readers(bind, n: int, *, email: str, digest: str | None = "daily", alerts: str = "true",
                   sections: str = "'[]'", created: str = "now()", params: dict | None = None) -> None:
    """n active readers from one INSERT … SELECT over generate_series(1, :n) AS i.

    `email`, `alerts` (boolean) and `sections` (JSON text) are SQL expressions of i;
    `digest` is the digest newsletter they are on (`daily`, `weekly`; None: none) and
    `created` their created_at.  From 0008 on, the readers and their subscription rows
    are written by the same statement (data-modifying CTEs: the new ids come back through
    RETURNING); before it, the reader's row carries frequency, alerts and sections."""
    import sqlalchemy as sa

    rows = (f"SELECT i, {email} AS email, ({alerts}) AS alerts, CAST({sections} AS json) AS sections "
            "FROM generate_series(1, :n) AS i")
    values = {**(params or {}), "n": n}
    if not has_newsletters(bind):
        bind.execute(sa.text(
            f"WITH g AS ({rows}) INSERT INTO subscribers (email, status, frequency, alerts, sections, token_version,"
            f" created_at, updated_at) SELECT email, 'active', :frequency, alerts, sections, 1, {created}, {created}"
            " FROM g"), {**values, "frequency": digest or "none"})
        return
    subscription = ("INSERT INTO subscriptions (newsletter_id, subscriber_id, sections, quiet_mode, alerts_today,"
                    " created_at) SELECT (SELECT id FROM newsletters WHERE slug = {slug}), r.id, {sections}, 'hold',"
                    " 0, " + created + " FROM r JOIN g USING (email)")
    digest_rows = (", d AS (" + subscription.format(slug=":digest", sections="g.sections") + ")") if digest else ""
    bind.execute(sa.text(
        f"WITH g AS ({rows}),"
        " r AS (INSERT INTO subscribers (email, status, token_version, created_at, updated_at)"
        f" SELECT email, 'active', 1, {created}, {created} FROM g RETURNING id, email)"
        f"{digest_rows} "
        + subscription.format(slug="'alerts'", sections="CAST('[]' AS json)") + " WHERE g.alerts"),
        {**values, "digest": digest} if digest else values)
