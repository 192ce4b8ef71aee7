"""Signups at a promotion's pace: `nashra web --workers N` under 40 concurrent clients.

A real `nashra web` subprocess (uvicorn's supervisor and N spawned processes) against a
scratch PostgreSQL database and a redis-server of the run's own.  40 clients, each on
its own keep-alive connection, as 40 readers' browsers behind a proxy
(FORWARDED_ALLOW_IPS=127.0.0.1; each signup from an X-Forwarded-For of its own, so the
per-client limit is not what is measured):

  healthz  GET /healthz, the reference: uvicorn + FastAPI + our middleware with no work
           behind them, on the same path (same server, same clients, same connections).
  form     POST /subscribe, a new address each (CSRF, limit, validation, one transaction,
           the confirmation queued to Redis after the commit).
  api      POST /api/subscribe, the same as JSON.

Per phase: requests/s, p50/p99 latency, CPU ms per request of the server's processes
(/proc: supervisor + workers), of PostgreSQL's backends for this database, and of the
bench's own client.  Then the check: every accepted signup (a 200/202) is one pending
reader, and the broker holds exactly one confirmation for each (no worker drains it:
the queued messages are read back from Redis and matched to the readers).

    .venv/bin/python bench/bench_signup_load.py [--workers 2] [--clients 40] [--seconds 20]

Needs PostgreSQL (BENCH_PG_ADMIN_URL) and redis-server on PATH.  The client is a small
asyncio HTTP/1.1 client of its own: on a 2-core machine httpx's CPU per request would be
taken from the server under test.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import redis  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench.support import (  # noqa: E402
    PG_ADMIN,
    free_port,
    postgres_cpu_seconds,
    redis_server,
    scratch_database,
    session_cpu_seconds,
)

TARGET_RATE = 150.0  # signups/s on the 2-core machine (issue 22)
TARGET_P99 = 0.5  # seconds


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    server_cpu: float = 0.0
    db_cpu: float = 0.0
    client_cpu: float = 0.0
    db_sessions: int = 0  # PostgreSQL connections opened during the phase

    @property
    def done(self) -> int:
        return len(self.latencies)

    def pct(self, q: float) -> float:
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(len(s) * q))] if s else float("nan")

    def line(self) -> str:
        rate = self.done / self.seconds
        return (f"{self.name:<8} n={self.done:<6} {rate:8.1f} req/s   p50 {self.pct(0.50) * 1000:7.1f} ms   "
                f"p99 {self.pct(0.99) * 1000:7.1f} ms   CPU/req: server {self.server_cpu / self.done * 1000:5.2f} ms, "
                f"PostgreSQL {self.db_cpu / self.done * 1000:5.2f} ms, client {self.client_cpu / self.done * 1000:5.2f} ms"
                f"   new PostgreSQL sessions {self.db_sessions}   statuses {dict(self.statuses)}")


# ------------------------------------------------------------------ a small HTTP/1.1 client


async def _response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, keep-alive) of one response, its body read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip().lower()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status, headers.get("connection") != "close"


async def _client(port: int, make, until: float, phase: Phase) -> None:
    reader = writer = None
    while time.monotonic() < until:
        if writer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = make()
        started = time.perf_counter()
        writer.write(request)
        try:
            status, alive = await _response(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            phase.statuses["dropped"] += 1
            writer.close()
            writer = None
            continue
        phase.latencies.append(time.perf_counter() - started)
        phase.statuses[status] += 1
        if not alive:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def postgres_sessions(db_url: str) -> int:
    """Sessions PostgreSQL has opened on this database so far (pg_stat_database, 14+): a
    pool that closes and reopens connections under load shows here (backends that came
    and went are also missing from the CPU figure, which reads the live ones)."""
    engine = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as c:
            return int(c.execute(sa.text("SELECT sessions FROM pg_stat_database WHERE datname = :n"),
                                 {"n": db_url.rsplit("/", 1)[1]}).scalar() or 0)
    finally:
        engine.dispose()


def run_phase(name: str, port: int, make, clients: int, seconds: float, server_sid: int, db_url: str) -> Phase:
    phase = Phase(name)
    sessions0 = postgres_sessions(db_url)
    cpu0, db0, me0 = session_cpu_seconds(server_sid), postgres_cpu_seconds(db_url), _cpu_self()
    started = time.monotonic()

    async def all_clients():
        until = time.monotonic() + seconds
        await asyncio.gather(*(_client(port, make, until, phase) for _ in range(clients)))

    asyncio.run(all_clients())
    phase.seconds = time.monotonic() - started
    phase.server_cpu = session_cpu_seconds(server_sid) - cpu0
    phase.db_cpu = postgres_cpu_seconds(db_url) - db0
    phase.client_cpu = _cpu_self() - me0
    phase.db_sessions = postgres_sessions(db_url) - sessions0  # (counted as sessions end: approximate)
    return phase


# ------------------------------------------------------------------ requests


class Requests:
    def __init__(self, port: int, csrf: str, consent_version: str):
        self.host = f"127.0.0.1:{port}"
        self.csrf = csrf
        self.consent = consent_version
        self.n = 0

    def _next(self) -> tuple[int, str]:
        self.n += 1
        n = self.n
        return n, f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"

    def healthz(self) -> bytes:
        return f"GET /healthz HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode()

    def _post(self, path: str, content_type: str, body: bytes, ip: str) -> bytes:
        return (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nX-Forwarded-For: {ip}\r\nUser-Agent: bench\r\n\r\n").encode() + body

    def form(self) -> bytes:
        n, ip = self._next()
        body = (f"csrf_token={self.csrf}&email=form{n}%40example.com&frequency=daily&alerts=yes&consent=yes"
                f"&consent_version={self.consent}&sections=1&sections=2").encode()
        return self._post("/subscribe", "application/x-www-form-urlencoded", body, ip)

    def api(self) -> bytes:
        n, ip = self._next()
        body = json.dumps({"email": f"api{n}@example.com", "sections": ["world"], "frequency": "weekly",
                           "alerts": True, "consent": self.consent}).encode()
        return self._post("/api/subscribe", "application/json", body, ip)


# ------------------------------------------------------------------ the server


def start_server(workers: int, port: int, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "service", "web", "--workers", str(workers), "--port", str(port)],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("nashra web exited:\n" + proc.stderr.read().decode())
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("nashra web did not answer /healthz")


def queued_confirmations(redis_url: str) -> list[tuple]:
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.lrange("default", 0, -1)
    finally:
        client.close()
    return [tuple(json.loads(base64.b64decode(json.loads(m)["body"]))[0]) for m in raw]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--doors", default="form,api", help="which signup doors to load, in order")
    args = parser.parse_args()

    load0 = Path("/proc/loadavg").read_text().split()[:3]
    with scratch_database("signupload") as url, redis_server() as redis_url:
        with sa.create_engine(url).begin() as c:
            c.execute(sa.text("INSERT INTO sections (slug, name, position) "
                              "VALUES ('world', 'عربي دولي', 1), ('sport', 'رياضة', 2)"))
        port = free_port()
        env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": redis_url, "SECRET_KEY": "bench-secret-key-0123456789",
               "LOG_LEVEL": "WARNING", "LOG_FORMAT": "json", "FORWARDED_ALLOW_IPS": "127.0.0.1",
               "PUBLIC_URL": f"http://127.0.0.1:{port}", "NASHRA_VAR_DIR": str(REPO / "bench" / "out"),
               # No confirmation budget: a promotion's readers are real, and the
               # budget's own cost is measured where it is tested, not here.
               "CONFIRM_BUDGET_PER_DOMAIN": "0", "CONFIRM_BUDGET_TOTAL": "0"}
        server = start_server(args.workers, port, env)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
                page = r.read().decode()
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)[1]
            version = re.search(r'name="consent_version" value="([^"]+)"', page)[1]
            req = Requests(port, csrf, version)
            print(f"bench_signup_load: nashra web --workers {args.workers}, {args.clients} clients, "
                  f"{args.seconds:.0f} s per phase, PostgreSQL + Redis; {os.cpu_count()} cores; "
                  f"load average before {' '.join(load0)}")
            run_phase("warm-up", port, req.healthz, args.clients, 3, server.pid, url)
            ref = run_phase("healthz", port, req.healthz, args.clients, args.seconds / 2, server.pid, url)
            print(ref.line())
            phases = []
            for door in args.doors.split(","):
                phase = run_phase(door, port, getattr(req, door), args.clients, args.seconds, server.pid, url)
                phases.append(phase)
                print(phase.line())
                print(f"         ratio to /healthz: {phase.done / phase.seconds / (ref.done / ref.seconds):.2f}x the rate, "
                      f"{phase.pct(0.99) / ref.pct(0.99):.1f}x the p99, "
                      f"{(phase.server_cpu / phase.done) / (ref.server_cpu / ref.done):.1f}x the server CPU per request")
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)

        accepted = sum(p.statuses[200] + p.statuses[202] for p in phases)
        engine = sa.create_engine(url)
        with engine.connect() as c:
            readers = dict(c.execute(sa.text("SELECT id, status FROM subscribers")).all())
        engine.dispose()
        confirmations = queued_confirmations(redis_url)
        per_reader = Counter(sid for kind, sid in confirmations if kind == "confirm")
        ok = (accepted == len(readers) == len(confirmations) and set(per_reader) == set(readers)
              and set(per_reader.values()) <= {1} and set(readers.values()) <= {"pending"})
        print(f"accepted signups {accepted}, pending readers {len(readers)}, confirmations queued "
              f"{len(confirmations)} (readers with more than one: {sum(1 for v in per_reader.values() if v > 1)}) "
              f"→ {'one confirmation per accepted signup' if ok else 'MISMATCH'}")
        for p in phases:
            rate = p.done / p.seconds
            print(f"target {p.name}: ≥ {TARGET_RATE:.0f} signups/s with p99 < {TARGET_P99 * 1000:.0f} ms → "
                  f"{rate:.0f}/s, p99 {p.pct(0.99) * 1000:.0f} ms: {'met' if rate >= TARGET_RATE and p.pct(0.99) < TARGET_P99 else 'NOT met'}")
        print(f"load average after {' '.join(Path('/proc/loadavg').read_text().split()[:3])} "
              "(other work on the machine shares its cores)")
        if not ok:
            sys.exit(1)


if __name__ == "__main__":
    main()
