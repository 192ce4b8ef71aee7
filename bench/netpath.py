"""A real round-trip time between Nashra and the SMTP sink, on loopback only.

    .venv/bin/python bench/netpath.py --rtt 20 [--port P] [--mode auto|netem|proxy]   # check it
    .venv/bin/python bench/netpath.py --cleanup                                       # after a SIGKILL

    with round_trip(sink_port, rtt_ms=20) as path:   # path.port: where the sender connects
        ...

Two ways, the first that works:

* ``netem``: on the loopback device, a prio qdisc (handle 7e57:) whose 4th band is a
  netem qdisc delaying every packet by RTT/2, and two u32 filters that send only the
  packets to or from the sink's TCP port (dport, then sport) into that band.  Both
  directions cross `lo` once, so a round trip costs RTT; PostgreSQL, Redis and every
  other port on loopback are not delayed.  The sender connects to the sink's own port.
  Installed by `tc`, always removed: the context manager, an atexit hook, and SIGTERM /
  SIGHUP handlers (turned into SystemExit so the `with` unwinds); a SIGKILLed run leaves
  it behind, and `--cleanup` removes it (only ours: the handle 7e57:).
* ``proxy``: when tc, prio, u32 or netem is missing (a kernel without sch_netem, a
  container without CAP_NET_ADMIN) or the installed delay does not show in a probe, an
  asyncio TCP proxy on 127.0.0.1 in a process of its own: every chunk read from one side
  is written to the other RTT/2 later, in order, per direction (reads continue meanwhile,
  so like netem it adds latency, not a bandwidth cap); a new connection is joined to the
  sink one RTT after it is accepted, as a TCP handshake across the path would cost.  The
  sender connects to the proxy's port.  The proxy costs CPU on this machine (printed by
  the benchmarks): netem costs none.

Only loopback addresses are ever used.  `path.kind` says which one is in use ("loopback"
for RTT 0: no path at all), and `check()` prints a ping-like measure: TCP connect time and
an SMTP NOOP round trip to the path's port, beside a TCP connect to another port
(PostgreSQL's) that must stay undelayed.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import collections
import contextlib
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"
DEV = "lo"
HANDLE = "7e57"  # our prio qdisc on lo; --cleanup removes only this one
NETEM_HANDLE = "7e58"


class NetemUnavailable(RuntimeError):
    pass


@dataclass
class Path:
    target_port: int
    rtt_ms: float
    kind: str  # loopback | netem | proxy
    port: int  # where a sender connects
    note: str = ""
    pids: list[int] = field(default_factory=list)  # the proxy's processes (their CPU is on this machine)

    def describe(self) -> str:
        if self.kind == "loopback":
            return f"RTT 0: plain loopback to :{self.target_port}"
        if self.kind == "netem":
            return (f"RTT {self.rtt_ms:g} ms: tc netem on {DEV}, {self.rtt_ms / 2:g} ms each way, only TCP port "
                    f"{self.target_port}")
        return (f"RTT {self.rtt_ms:g} ms: latency proxy ({proxy_loop()}) 127.0.0.1:{self.port} → :{self.target_port}, "
                f"{self.rtt_ms / 2:g} ms per direction{' (' + self.note + ')' if self.note else ''}")

    def open_connections(self) -> int:
        """TCP connections established to this path's port right now (the senders' side)."""
        return established_to(self.port)

    def check(self, other_port: int = 5432) -> str:
        c = tcp_connect_ms(HOST, self.port)
        n = smtp_noop_ms(HOST, self.port)
        o = tcp_connect_ms(HOST, other_port)
        return (f"path check: TCP connect to :{self.port} {c:.2f} ms, SMTP NOOP round trip {n:.2f} ms; "
                f"TCP connect to :{other_port} (not on the path) {o:.2f} ms")


# ---------------------------------------------------------------------- probes


def tcp_connect_ms(host: str, port: int, n: int = 5) -> float:
    """Median time of a TCP connect (SYN → SYN-ACK: one round trip across netem)."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        try:
            with socket.create_connection((host, port), timeout=5):
                times.append((time.perf_counter() - t) * 1e3)
        except OSError:
            return float("nan")
    return statistics.median(times)


def established_to(port: int) -> int:
    """Sockets on this machine in ESTABLISHED state whose remote port is `port`."""
    want = f":{port:04X}"
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split(None, 4)
                    if parts[3] == "01" and parts[2].endswith(want):
                        n += 1
        except OSError:
            pass
    return n


def smtp_noop_ms(host: str, port: int, n: int = 5) -> float:
    """Median round trip of an SMTP NOOP on one connection (after the greeting)."""
    import smtplib

    try:
        s = smtplib.SMTP(host, port, timeout=10)
    except OSError:
        return float("nan")
    try:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            s.noop()
            times.append((time.perf_counter() - t) * 1e3)
        return statistics.median(times)
    finally:
        with contextlib.suppress(Exception):
            s.quit()


# ---------------------------------------------------------------------- cleanup, whatever happens

_cleanups: dict[int, callable] = {}
_signals_installed = False


def _run_cleanups() -> None:
    for key in list(_cleanups):
        fn = _cleanups.pop(key, None)
        if fn is not None:
            with contextlib.suppress(Exception):
                fn()


def _on_signal(signum, _frame):
    # Unwind the `with` blocks (their finally removes the path); atexit covers the rest.
    raise SystemExit(128 + signum)


def _install_signal_handlers() -> None:
    global _signals_installed
    if _signals_installed:
        return
    _signals_installed = True
    atexit.register(_run_cleanups)
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _on_signal)


@contextlib.contextmanager
def _registered(fn):
    _install_signal_handlers()
    key = id(fn)
    _cleanups[key] = fn
    try:
        yield
    finally:
        if _cleanups.pop(key, None) is not None:
            fn()


# ---------------------------------------------------------------------- netem


def _tc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(["tc", *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise NetemUnavailable(f"`tc {' '.join(args)}`: {(out.stderr or out.stdout).strip()}")
    return out


def netem_remove() -> bool:
    """Remove our qdisc from lo if it is there (the filters and netem go with it)."""
    if not shutil.which("tc"):
        return False
    shown = _tc("qdisc", "show", "dev", DEV, check=False).stdout
    if f"qdisc prio {HANDLE}: root" not in shown:
        return False
    _tc("qdisc", "del", "dev", DEV, "root", "handle", f"{HANDLE}:", check=False)
    return True


def _netem_install(port: int, rtt_ms: float) -> None:
    if not shutil.which("tc"):
        raise NetemUnavailable("no `tc` on this machine")
    if os.geteuid() != 0:
        raise NetemUnavailable("tc needs root (CAP_NET_ADMIN)")
    shown = _tc("qdisc", "show", "dev", DEV).stdout
    root = next((line for line in shown.splitlines() if " root " in line), "")
    if root and not root.startswith(("qdisc noqueue", "qdisc pfifo_fast")):
        # Someone else's qdisc on lo (another run?): never replace it.
        raise NetemUnavailable(f"{DEV} already has a root qdisc: {root.strip()}")
    half = f"{rtt_ms / 2:g}ms"
    try:
        _tc("qdisc", "add", "dev", DEV, "root", "handle", f"{HANDLE}:", "prio", "bands", "4")
        _tc("qdisc", "add", "dev", DEV, "parent", f"{HANDLE}:4", "handle", f"{NETEM_HANDLE}:", "netem",
            "delay", half, "limit", "100000")
        for direction in ("dport", "sport"):
            _tc("filter", "add", "dev", DEV, "parent", f"{HANDLE}:", "protocol", "ip", "prio", "1", "u32",
                "match", "ip", direction, str(port), "0xffff", "flowid", f"{HANDLE}:4")
    except NetemUnavailable:
        netem_remove()
        raise


@contextlib.contextmanager
def _netem(port: int, rtt_ms: float):
    with _registered(netem_remove):
        _netem_install(port, rtt_ms)
        measured = tcp_connect_ms(HOST, port)
        if not measured >= 0.5 * rtt_ms:  # also catches nan (nothing listening)
            raise NetemUnavailable(f"installed, but a TCP connect took {measured:.2f} ms for an RTT of {rtt_ms} ms")
        yield Path(port, rtt_ms, "netem", port)


# ---------------------------------------------------------------------- the latency proxy


class _Pipe:
    """One direction of one proxied connection: what arrives at t leaves at t + delay, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float):
        self.loop, self.delay = loop, delay
        self.queue: collections.deque = collections.deque()
        self.dst: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.done = False

    def feed(self, data: bytes | None) -> None:  # None: the source closed
        if self.done:
            return
        self.queue.append((self.loop.time() + self.delay, data))
        self._arm()

    def attach(self, dst: asyncio.Transport) -> None:
        self.dst = dst
        self._arm()

    def _arm(self) -> None:
        if self.timer is None and self.dst is not None and self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self._flush)

    def _flush(self) -> None:
        self.timer = None
        now = self.loop.time() + 1e-4
        chunks = []
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            if data is None:
                if chunks:
                    self.dst.writelines(chunks)
                self.dst.close()  # flushes what is buffered, then closes
                self.done = True
                self.queue.clear()
                return
            chunks.append(data)
        if chunks:
            self.dst.writelines(chunks)
        self._arm()


class _Side(asyncio.Protocol):
    def __init__(self, out: _Pipe):
        self.out = out  # towards the other side
        self.transport: asyncio.Transport | None = None
        self.other: _Side | None = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.out.feed(data)

    def eof_received(self):
        self.out.feed(None)
        return False

    def connection_lost(self, exc):
        self.out.feed(None)

    # back-pressure: our socket is full, so stop reading from the other side
    def pause_writing(self):
        if self.other and self.other.transport:
            self.other.transport.pause_reading()

    def resume_writing(self):
        if self.other and self.other.transport:
            with contextlib.suppress(Exception):
                self.other.transport.resume_reading()


async def _proxy(listen_port: int, target_port: int, half_delay: float, handshake: float, ready) -> None:
    loop = asyncio.get_running_loop()

    def accept() -> _Side:
        up = _Pipe(loop, half_delay)  # client → sink
        down = _Pipe(loop, half_delay)  # sink → client
        client = _Side(up)

        async def join() -> None:
            await asyncio.sleep(handshake)
            try:
                _, server = await loop.create_connection(lambda: _Side(down), HOST, target_port)
            except OSError:
                if client.transport:
                    client.transport.close()
                return
            client.other, server.other = server, client
            up.attach(server.transport)
            down.attach(client.transport)

        loop.create_task(join())
        return client

    server = await loop.create_server(accept, HOST, listen_port, reuse_port=True, backlog=1024)
    ready.set()
    parent = os.getppid()
    async with server:
        while os.getppid() == parent:  # the benchmark died: do not linger
            await asyncio.sleep(1)


def _proxy_main(listen_port: int, target_port: int, rtt_ms: float, ready) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    coro = _proxy(listen_port, target_port, rtt_ms / 2000.0, rtt_ms / 1000.0, ready)
    with contextlib.suppress(KeyboardInterrupt):
        if proxy_loop() == "uvloop":
            import uvloop

            uvloop.run(coro)
        else:
            asyncio.run(coro)


def proxy_loop() -> str:
    """The proxy's event loop: asyncio's own; BENCH_PROXY_LOOP=uvloop uses uvloop if it is
    installed (it is not a dependency: about a third less proxy CPU on 110 KB messages)."""
    if os.environ.get("BENCH_PROXY_LOOP") == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "asyncio"
        return "uvloop"
    return "asyncio"


@contextlib.contextmanager
def _latency_proxy(target_port: int, rtt_ms: float, note: str, processes: int = 1):
    from bench.support import free_port

    ctx = mp.get_context("spawn")
    port = free_port()
    procs = []

    def stop() -> None:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(5)

    with _registered(stop):
        for _ in range(processes):  # SO_REUSEPORT: the kernel spreads connections over them
            ready = ctx.Event()
            p = ctx.Process(target=_proxy_main, args=(port, target_port, rtt_ms, ready), daemon=True)
            p.start()
            procs.append(p)
            if not ready.wait(20):
                raise RuntimeError("the latency proxy did not start")
        yield Path(target_port, rtt_ms, "proxy", port, note, [p.pid for p in procs])


# ---------------------------------------------------------------------- the one entry point


@contextlib.contextmanager
def round_trip(target_port: int, rtt_ms: float, mode: str = "auto", proxy_processes: int = 1, quiet: bool = False):
    """A path to 127.0.0.1:target_port with rtt_ms of round trip: a Path (connect to .port)."""
    if rtt_ms <= 0:
        yield Path(target_port, 0, "loopback", target_port)
        return
    note = ""
    if mode in ("auto", "netem"):
        try:
            with _netem(target_port, rtt_ms) as path:
                if not quiet:
                    print(f"netpath: {path.describe()}", flush=True)
                yield path
            return
        except NetemUnavailable as exc:
            if mode == "netem":
                raise
            note = f"tc netem unavailable: {exc}"
    with _latency_proxy(target_port, rtt_ms, note, proxy_processes) as path:
        if not quiet:
            print(f"netpath: {path.describe()}", flush=True)
        yield path


def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rtt", type=float, default=20.0, help="round-trip time in ms")
    ap.add_argument("--port", type=int, default=None, help="an SMTP server's port (default: an aiosmtpd sink of our own)")
    ap.add_argument("--mode", choices=("auto", "netem", "proxy"), default="auto")
    ap.add_argument("--cleanup", action="store_true", help="remove a qdisc a killed run left on lo, and exit")
    args = ap.parse_args()
    if args.cleanup:
        print("removed our qdisc from lo" if netem_remove() else "nothing of ours on lo")
        return

    from bench.support import smtp_sink

    with contextlib.ExitStack() as stack:
        port = args.port
        if port is None:
            port = stack.enter_context(smtp_sink()).port
        print(f"direct:     TCP connect to :{port} {tcp_connect_ms(HOST, port):.2f} ms, "
              f"SMTP NOOP {smtp_noop_ms(HOST, port):.2f} ms")
        with round_trip(port, args.rtt, args.mode) as path:
            print(path.check())


if __name__ == "__main__":
    main()
