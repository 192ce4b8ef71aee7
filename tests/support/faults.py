"""Real processes that misbehave, for tests/test_faults_engine.py.

* `Relay` — an SMTP relay (tests/support/pipelining_smtp.py's server, with PIPELINING)
  in a process of its own on a fixed port.  `stop()` SIGKILLs it (the port then refuses
  connections), `start()` brings it back on the same port.  Every accepted message is
  appended to `accepted.jsonl` in its directory (recipient, Message-ID, arrival
  time.time(), the relay's pid), so counts survive restarts: `copies()`, `count()`,
  `wait_for(n, timeout)`, `arrivals()`.  A control file, re-read every 50 ms by the
  relay, changes its behaviour while it runs: `set_delay(s)` (the wait before each
  end-of-data reply), `block(address, reply)` (a scripted RCPT reply such as
  `550 5.7.1 blocked`).  `status()` is the relay's own count of open sessions (`current`,
  `max`, `connections`), written at every open and close.
* `BlackHole` — a TCP listener that accepts connections and never says a word.
* `PrivatePostgres` — a PostgreSQL of the test's own (initdb into a temporary directory,
  run as the `postgres` OS user, its own port and unix socket directory), migrated, that
  the test may `restart(down_seconds)`; the machine's shared server on :5432 is never
  touched.
* `EditionWatch` — reads an edition's status every 100 ms on a connection of its own
  (errors are counted, not raised: the database may be down), to prove it never paused.
* `play_beat` — tests/support/workers.py's `wait_done`, but a sweep that fails because
  the database is away is retried at the next beat, and a paused edition ends the wait
  (nothing resumes it here).
* `SessionSampler` — samples a relay's open sessions every 50 ms.

The relay runs as `python -m tests.support.faults relay --port P --dir D`; it exits when
the test process that started it goes away.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from tests.support.net import free_port

REPO = Path(__file__).resolve().parent.parent.parent


# ---------------------------------------------------------------------- the SMTP relay, in its own process


class Relay:
    """An SMTP relay in a process of its own, on a fixed port, recording to a file (see the module doc)."""

    def __init__(self, workdir: Path | str, port: int | None = None, *, name: str = "relay",
                 data_delay: float = 0.0, blocked: dict[str, str] | None = None):
        self.port = port or free_port()
        self.name = name
        self.dir = Path(workdir) / f"{name}-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.record = self.dir / "accepted.jsonl"
        self.record.touch()
        self.status_path = self.dir / "status.json"
        self.control_path = self.dir / "control.json"
        self.log_path = self.dir / "relay.log"
        self._control = {"data_delay": float(data_delay),
                         "rcpt_replies": {k.lower(): v for k, v in (blocked or {}).items()}}
        self._write_control()
        self.proc: subprocess.Popen | None = None
        self.started_at: list[float] = []  # time.time() of each start (ready to accept)
        self.stopped_at: list[float] = []  # time.time() of each stop
        self._rows: list[dict] = []
        self._offset = 0
        self._lock = threading.Lock()

    # --- lifecycle
    def start(self, timeout: float = 20.0) -> Relay:
        if self.alive:
            raise RuntimeError(f"relay :{self.port} already running")
        with contextlib.suppress(FileNotFoundError):
            self.status_path.unlink()
        log = open(self.log_path, "ab")  # noqa: SIM115 — the child keeps it
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.faults", "relay", "--port", str(self.port), "--dir", str(self.dir)],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status()
            if st.get("pid") == self.proc.pid and st.get("listening"):
                self.started_at.append(time.time())
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.kill_quietly()
        raise RuntimeError(f"relay :{self.port} did not start: {self.log_path.read_text(errors='replace')[-2000:]}")

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Stop the relay (SIGKILL by default: its sessions are cut, the port refuses connections)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)
        self.proc.wait(15)
        self.stopped_at.append(time.time())

    def kill_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                self.proc.wait(10)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill_quietly()

    # --- behaviour while it runs
    def _write_control(self) -> None:
        tmp = self.control_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._control))
        os.replace(tmp, self.control_path)

    def set_delay(self, seconds: float) -> None:
        """Seconds the relay waits before answering each end of data (per session)."""
        self._control["data_delay"] = float(seconds)
        self._write_control()

    def block(self, address: str, reply: str = "550 5.7.1 recipient blocked by policy") -> None:
        """Answer `reply` to RCPT TO:<address>."""
        self._control["rcpt_replies"][address.lower()] = reply
        self._write_control()

    # --- what it accepted (across restarts)
    def messages(self) -> list[dict]:
        """Every accepted message so far: {"rcpt", "message_id", "at" (time.time()), "pid", "conn"}."""
        with self._lock:
            with open(self.record, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1  # a line being written is read next time
            for line in chunk[:end].splitlines():
                if line.strip():
                    self._rows.append(json.loads(line))
            self._offset += end
            return list(self._rows)

    def count(self) -> int:
        return len(self.messages())

    def copies(self) -> Counter:
        """Recipient → how many accepted messages they got (duplicates show as > 1)."""
        return Counter(m["rcpt"] for m in self.messages())

    def arrivals(self) -> list[float]:
        return sorted(m["at"] for m in self.messages())

    def wait_for(self, n: int, timeout: float = 30.0) -> int:
        """Wait until at least n messages were accepted (or the timeout); the count."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.count()
            if got >= n or time.monotonic() >= deadline:
                return got
            time.sleep(0.02)

    def status(self) -> dict:
        """The relay's own figures: pid, listening, current/max open sessions, connections accepted."""
        try:
            return json.loads(self.status_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}


_MESSAGE_ID = re.compile(rb"^message-id:\s*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


def _message_id(data: bytes) -> str | None:
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    m = _MESSAGE_ID.search(head)
    return m.group(1).decode("ascii", "replace") if m else None


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def _relay_main(port: int, directory: str) -> None:
    """The relay process: PipeliningSmtpServer, recording each accepted message (see Relay)."""
    from tests.support.pipelining_smtp import PipeliningSmtpServer

    d = Path(directory)
    record = os.open(d / "accepted.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    status_path, control_path = d / "status.json", d / "control.json"
    pid = os.getpid()

    class RecordingServer(PipeliningSmtpServer):
        listening = False

        def _finish(self, txn, data, reply):
            super()._finish(txn, data, reply)
            if reply.startswith("250"):
                mid = _message_id(data)
                lines = "".join(json.dumps({"rcpt": r.lower(), "message_id": mid, "at": txn.at, "pid": pid,
                                            "conn": txn.connection}) + "\n" for r in txn.rcpt_tos)
                os.write(record, lines.encode())  # one append: whole lines, even if we are killed

        def _opened(self, session):
            super()._opened(session)
            self.write_status()

        def _closed(self, session):
            super()._closed(session)
            self.write_status()

        def write_status(self) -> None:
            with self.lock:
                st = {"pid": pid, "port": self.port, "listening": self.listening,
                      "current": self.current_connections, "max": self.max_connections,
                      "connections": self.connections}
            _write_json(status_path, st)

    server = RecordingServer(port=port)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())

    def apply_control() -> None:
        try:
            ctl = json.loads(control_path.read_text())
        except (FileNotFoundError, ValueError):
            return
        server.data_delay = float(ctl.get("data_delay") or 0.0)
        server.rcpt_replies = {k.lower(): v for k, v in (ctl.get("rcpt_replies") or {}).items()}

    apply_control()
    server.start()
    server.listening = True
    server.write_status()
    parent = os.getppid()
    seen = None
    while not done.is_set():
        if os.getppid() != parent:  # the test process went away: do not linger
            break
        with contextlib.suppress(FileNotFoundError):
            mtime = control_path.stat().st_mtime_ns
            if mtime != seen:
                seen = mtime
                apply_control()
        done.wait(0.05)
    server.stop()


# ---------------------------------------------------------------------- a relay that never answers


class BlackHole:
    """A TCP listener that accepts every connection and never sends a byte (no greeting)."""

    def __init__(self):
        self.port = free_port()
        self.accepted = 0
        self._sock: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> BlackHole:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(256)
        sock.settimeout(0.1)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="black-hole", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self._conns.append(conn)  # held open, read from never, written to never
            self.accepted += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()
        if self._sock is not None:
            self._sock.close()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def __enter__(self) -> BlackHole:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------- a PostgreSQL of our own


class PrivatePostgres:
    """A PostgreSQL server for one test, which it may restart (see the module doc).

    The cluster lives in a directory of its own under /tmp, owned by `postgres`: pytest's
    tmp_path is under root's 0700 /tmp/pytest-of-root, which the postgres user cannot enter.
    fsync is off (a clean `pg_ctl stop -m fast` loses nothing committed; only a crash of
    the machine would).
    """

    def __init__(self, database: str = "nashra"):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
        if not bins:
            raise RuntimeError("no /usr/lib/postgresql/*/bin/pg_ctl on this machine")
        self.bin = Path(bins[-1]).parent
        self.port = free_port()
        self.database = database
        self.root = Path(tempfile.mkdtemp(prefix="nashra-test-pg-"))
        pw = pwd.getpwnam("postgres")
        os.chown(self.root, pw.pw_uid, pw.pw_gid)
        os.chmod(self.root, 0o700)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"
        self.admin_url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.stopped_at: list[float] = []  # time.time()
        self.started_at: list[float] = []

    def _run(self, *cmd: str, timeout: float = 120) -> str:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        proc = subprocess.run([*as_postgres, *cmd], capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}"
                               f"{self._log_tail()}")
        return proc.stdout

    def _log_tail(self) -> str:
        try:
            return "\n--- postgres.log ---\n" + self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def init(self) -> PrivatePostgres:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        return self

    def start(self) -> None:
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                f"-c full_page_writes=off -c max_connections=200")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", opts, "start")
        self.started_at.append(time.time())

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "-m", mode, "stop")
        self.stopped_at.append(time.time())

    def restart(self, down_seconds: float = 3.0) -> tuple[float, float]:
        """Stop (-m fast: every session is cut), stay down `down_seconds`, start; (stopped, back) time.time()."""
        self.stop("fast")
        time.sleep(down_seconds)
        self.start()
        return self.stopped_at[-1], self.started_at[-1]

    def create_database(self) -> None:
        import sqlalchemy as sa

        admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{self.database}"'))
        finally:
            admin.dispose()

    def migrate(self) -> None:
        from service.migrate import upgrade

        upgrade(self.url)

    def setup(self) -> PrivatePostgres:
        """initdb, start, create the database, migrate it to head."""
        self.init()
        self.start()
        self.create_database()
        self.migrate()
        return self

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------------- watching an edition


class EditionWatch:
    """Every 100 ms, an edition's status, on a connection of its own; every status it took."""

    def __init__(self, url: str, edition_id: int, every: float = 0.1):
        import sqlalchemy as sa
        from sqlalchemy.pool import NullPool

        self._sa = sa
        self.engine = sa.create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 2})
        self.edition_id = edition_id
        self.every = every
        self.seen: list[tuple[float, str]] = []  # (time.time(), status) at each change
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edition-watch", daemon=True)

    def _run(self) -> None:
        sa = self._sa
        q = sa.text("SELECT status, pause_reason FROM editions WHERE id = :id")
        while not self._stop.is_set():
            try:
                with self.engine.connect() as conn:
                    while not self._stop.is_set():
                        status, reason = conn.execute(q, {"id": self.edition_id}).one()
                        if not self.seen or self.seen[-1][1] != status:
                            self.seen.append((time.time(), status))
                            if status == "paused":
                                self.pause_reason = reason
                        conn.rollback()
                        self._stop.wait(self.every)
            except Exception:  # noqa: BLE001 — the database is away (a restart): try again
                self.errors += 1
                self._stop.wait(self.every)

    pause_reason: str | None = None

    @property
    def statuses(self) -> list[str]:
        return [s for _, s in self.seen]

    @property
    def paused(self) -> bool:
        return "paused" in self.statuses

    def start(self) -> EditionWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.engine.dispose()

    def __enter__(self) -> EditionWatch:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def play_beat(eid: int, timeout: float, *, every: float | None = None,
              until: tuple[str, ...] = ("done", "paused", "cancelled")) -> tuple[str, list, int]:
    """Play beat (the sweeper every SWEEP_SECONDS) until the edition is done, paused or the timeout
    (`until`: the statuses that end it early; () plays for the whole `timeout`).

    Returns (final status, [(time.time() at its start, seconds it took, SweepReport)], sweeps
    that failed): a sweep that fails because the database is away is counted and tried again
    at the next beat.
    """
    from service.config import get_settings
    from service.db import session_scope
    from service.delivery.sweeper import sweep
    from service.models import Edition

    every = every or get_settings().sweep_seconds
    deadline = time.monotonic() + timeout
    sweeps: list = []
    failed = 0
    status = "?"
    while time.monotonic() < deadline:
        try:
            with session_scope() as s:
                status = s.get(Edition, eid).status.value
                if status in until:
                    return status, sweeps, failed
                started = time.time()
                result = sweep(s)
                sweeps.append((started, time.time() - started, result))
        except Exception:  # noqa: BLE001 — the database is away: the next beat tries again
            failed += 1
        time.sleep(every)
    return status if not until else f"timeout ({status})", sweeps, failed


def pause_audits(eid: int) -> list[str]:
    """The edition.pause audit entries of an edition (their reasons)."""
    import sqlalchemy as sa

    from service.db import session_scope
    from service.models import AuditLog

    with session_scope() as s:
        rows = s.execute(sa.select(AuditLog.details).where(AuditLog.action == "edition.pause",
                                                           AuditLog.target == f"edition:{eid}")).scalars()
        return [str((d or {}).get("reason", "")) for d in rows]


# ---------------------------------------------------------------------- processes


def process_tree(pid: int) -> set[int]:
    """pid and its descendants (from /proc/<pid>/task/*/children)."""
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.add(p)
        for children in glob.glob(f"/proc/{p}/task/*/children"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in Path(children).read_text().split())
    return {p for p in out if Path(f"/proc/{p}").exists()}


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send `sig` to a worker's whole process group (main process and its children)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def wait_worker_ready(name: str, timeout: float = 60.0) -> float:
    """Wait until the Celery worker `name` answers a ping; seconds it took."""
    from service.jobs.app import app

    dest = f"{name}@{socket.gethostname()}"
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        with contextlib.suppress(Exception):
            if app.control.ping(destination=[dest], timeout=0.5):
                return time.monotonic() - t0
        time.sleep(0.1)
    raise RuntimeError(f"worker {dest} did not answer a ping within {timeout}s")


# ---------------------------------------------------------------------- sampling a relay's sessions


class SessionSampler:
    """Every `every` seconds, the relay's open sessions (its own count, from its status file)."""

    def __init__(self, relay: Relay, every: float = 0.05):
        self.relay = relay
        self.every = every
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="session-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(int(self.relay.status().get("current", 0)))
            self._stop.wait(self.every)

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)

    def __enter__(self) -> SessionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="fault-injection helpers (the relay process)")
    sub = ap.add_subparsers(dest="what", required=True)
    relay = sub.add_parser("relay")
    relay.add_argument("--port", type=int, required=True)
    relay.add_argument("--dir", required=True)
    args = ap.parse_args(argv)
    if args.what == "relay":
        _relay_main(args.port, args.dir)


if __name__ == "__main__":
    main()
