"""The chained envelope (RFC 2920 §3.1) against a real MTA: Debian's Postfix, 20 ms away.

    .venv/bin/python bench/bench_chaining.py [--rtt 20] [--readers 5000] [--workers 1]
        [--connections 10] [--pairs 2] [--path auto|netem|proxy]
    .venv/bin/python bench/bench_chaining.py --cleanup     # stop a Postfix a killed run left

The question (the issue): keep the chained envelope — a session with more to send writes
the next message's MAIL, RCPT and DATA in the same write as the current message's final
dot (service/delivery/smtp.py `SmtpConnection.finish(follow=...)`, smtp_pool.py
`Lane._one/_follower`) — only if it gives at least 1.3× the messages per second at the
same connections against a real MTA at 20 ms; otherwise remove it.

Everything is real:

* Postfix (Debian's package, installed if missing with debconf "No configuration"; the
  system instance is left stopped and disabled) as an instance of its own: main.cf and
  master.cf written under a temp dir (its own queue and data directories, no chroot, a
  log file of its own through postlogd), `postfix -c DIR start`, smtpd on a free
  127.0.0.1 port.  It relays @example.com to the `discard` transport, so each message is
  accepted (queue file written and fsynced by cleanup before the 250, as in production),
  moved by qmgr and dropped by discard(8), which logs `status=sent`.  Those lines, read
  as they appear, are the Postfix-side count (and show any duplicate recipient).  Stopped
  with `postfix -c DIR stop` at the end, on SIGTERM/SIGHUP and at exit.
* bench/netpath.py `round_trip(port, rtt)` between the worker and Postfix (tc netem on lo
  for that port only, or, where the kernel has no netem, the latency proxy on loopback).
* Nashra's send path: a scratch PostgreSQL database, a redis-server of its own,
  `celery worker -Q alerts,digests -c WORKERS -P prefork` with SMTP_CONNECTIONS=C, from
  the enqueue of plan_edition to the edition's `done` in the ledger (as
  bench_send_engine.py times it), for an alert (~11 KB) to READERS readers.

Twice per pair, the same workers, connections, audience and bytes: chaining as the code
has it, and chaining off.  Chaining is turned off without touching service/: every worker
(both modes) is started through a small wrapper (`python -c WRAPPER -A service.jobs.app
worker …`) that, for "off", replaces `SmtpConnection.can_follow` with `lambda *a: False`
before Celery starts (the prefork children inherit it), and in both modes counts, per
process, the `finish()` calls and those that carried a follower's envelope (and got its
354), written to a file every 0.25 s: the proof that "on" chained and "off" did not.
Each worker is warmed up with a small alert first (uncounted).  Pairs alternate the order
(on/off, off/on, …) so drift on the shared machine does not favour one side.

Printed per run: msg/s, seconds, messages Postfix discarded (status=sent) and the ledger's
`sent` rows, duplicates, chained share, CPU µs per message (workers, PostgreSQL, Postfix:
its master and every child, the proxy); per pair the ratio on/off; the verdict on the
1.3× rule from the median ratio.  A copy goes to bench/out/chaining-<time>.txt.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import glob
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import netpath  # noqa: E402
from bench.bench_send_engine import Report, nashra_run, rendered_alert, wire_bytes  # noqa: E402
from bench.support import (  # noqa: E402
    CLK_TCK,
    _stat_fields,
    code_label,
    engine_overrides,
    free_port,
    services,
)

OUT = REPO / "bench" / "out"
TMP_PREFIX = "nashra-postfix-"


# ------------------------------------------------------------------ Postfix, an instance of our own


def _run(*cmd: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, env=env)


def ensure_postfix() -> str:
    """Debian's postfix installed (debconf "No configuration"), its system instance stopped
    and disabled: the path of `postfix`.  Raises with the reason if it cannot be had."""
    if shutil.which("postfix") and os.path.exists("/usr/lib/postfix/sbin/smtpd"):
        return shutil.which("postfix")
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError("postfix is not installed and this process cannot install it (not root / no apt-get)")
    print("bench: installing Debian's postfix package …", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["debconf-set-selections"], input="postfix postfix/main_mailer_type select No configuration\n",
                   text=True, capture_output=True)
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postfix"]
    done = _run(*install, env=env)
    if done.returncode != 0:
        _run("apt-get", "update", "-qq", env=env)
        done = _run(*install, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"apt-get install postfix failed: {(done.stderr or done.stdout).strip()[-400:]}")
    # The system instance must not run (or start at boot): only ours, on its own port.
    if _run("postfix", "status").returncode == 0:
        _run("postfix", "stop")
    if os.path.isdir("/run/systemd/system") and shutil.which("systemctl"):
        _run("systemctl", "disable", "--now", "postfix")
    elif shutil.which("update-rc.d"):
        _run("update-rc.d", "postfix", "disable")
    return shutil.which("postfix") or "/usr/sbin/postfix"


MAIN_CF = """\
# Written by bench/bench_chaining.py: a throwaway Postfix that accepts mail for
# @example.com from loopback and discards it after queueing it.
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mta.bench.invalid
mydomain = bench.invalid
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
relay_domains = example.com
local_recipient_maps =
relay_recipient_maps =
default_transport = discard:bench
relay_transport = discard:bench
local_transport = discard:bench
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit
smtpd_peername_lookup = no
biff = no
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
alternate_config_directories =
"""

# Debian's master.cf, cut to what a relay-and-discard instance uses, chroot off ("n").
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

SENT = re.compile(rb"postfix/discard\[\d+\]: [0-9A-F]+: to=<([^>]*)>.* status=sent ")


class Postfix:
    """`postfix -c DIR start` with the config above on 127.0.0.1:port; `count()` and
    `arrivals()` from its log's discard lines (one per message it accepted and dropped),
    timestamped as a thread here reads them; `cpu_seconds()` of its master and every
    child (exited children are in the master's cutime/cstime once reaped)."""

    kind = "postfix"

    def __init__(self, binary: str):
        self.binary = binary
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
        self.root.chmod(0o755)  # the postfix user walks into queue/ and data/
        for d in ("etc", "queue", "data"):
            (self.root / d).mkdir()
        shutil.chown(self.root / "data", "postfix")
        (self.root / "etc" / "main.cf").write_text(MAIN_CF.format(root=self.root))
        (self.root / "etc" / "master.cf").write_text(MASTER_CF.format(port=self.port))
        self.conf = str(self.root / "etc")
        self._arrivals: list[float] = []
        self._rcpts: list[bytes] = []
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._started = False

    # -- life
    def start(self) -> None:
        self._started = True
        done = _run(self.binary, "-c", self.conf, "start")
        if done.returncode != 0:
            raise RuntimeError(f"`postfix -c {self.conf} start` failed: {(done.stderr or done.stdout).strip()} "
                               f"— its log: {self.log_tail()}")
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.settimeout(5)
                if s.recv(100).startswith(b"220"):
                    break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"Postfix's smtpd did not greet on 127.0.0.1:{self.port} — its log: {self.log_tail()}")
        self._reader = threading.Thread(target=self._read, name="postfix-log", daemon=True)
        self._reader.start()

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        pid = self.master_pid()
        _run(self.binary, "-c", self.conf, "stop")
        for _ in range(100):
            if pid is None or not os.path.exists(f"/proc/{pid}"):
                break
            time.sleep(0.1)
        else:
            _run(self.binary, "-c", self.conf, "abort")
        self._stop.set()
        if self._reader:
            self._reader.join(2)
        shutil.rmtree(self.root, ignore_errors=True)

    def master_pid(self) -> int | None:
        try:
            return int((self.root / "queue" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join((self.root / "maillog").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def ehlo(self) -> str:
        import smtplib

        s = smtplib.SMTP("127.0.0.1", self.port, timeout=10)
        try:
            return s.ehlo()[1].decode().replace("\n", " ")
        finally:
            s.quit()

    # -- what it accepted
    def _read(self) -> None:
        path = self.root / "maillog"
        f = None
        tail = b""
        while not self._stop.is_set():
            if f is None:
                try:
                    f = open(path, "rb")  # noqa: SIM115 — closed below
                except OSError:
                    time.sleep(0.05)
                    continue
            chunk = f.read()
            if not chunk:
                time.sleep(0.01)
                continue
            now = time.monotonic()
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            for line in lines:
                m = SENT.search(line)
                if m:
                    self._rcpts.append(m.group(1))
                    self._arrivals.append(now)
        if f is not None:
            f.close()

    def count(self) -> int:
        return len(self._arrivals)

    def arrivals(self, start: int = 0, end: int | None = None) -> list[float]:
        return self._arrivals[start:end]

    def recipients(self, start: int = 0, end: int | None = None) -> list[bytes]:
        return self._rcpts[start:end]

    def cpu_seconds(self) -> float:
        master = self.master_pid()
        if master is None:
            return float("nan")
        total = 0
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            f = _stat_fields(int(name))
            if not f:
                continue
            if int(name) == master:  # itself and its reaped children
                total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
            elif int(f[1]) == master:  # a live child (smtpd, cleanup, qmgr, discard, …)
                total += int(f[11]) + int(f[12])
        return total / CLK_TCK

    def in_queue(self) -> int:
        """Queue files not yet delivered (incoming + active + deferred)."""
        n = 0
        for d in ("incoming", "active", "deferred"):
            for _root, _dirs, files in os.walk(self.root / "queue" / d):
                n += len(files)
        return n


def cleanup_leftovers() -> None:
    for conf in glob.glob(f"{tempfile.gettempdir()}/{TMP_PREFIX}*/etc"):
        print(f"stopping the Postfix of {conf}: {_run('postfix', '-c', conf, 'stop').returncode == 0}")
        shutil.rmtree(Path(conf).parent, ignore_errors=True)


# ------------------------------------------------------------------ the workers, through the wrapper

# Run as `python -c WRAPPER -A service.jobs.app worker …` in both modes.  BENCH_CHAINING=off
# makes every session answer "no" to can_follow before Celery starts (inherited by the
# prefork children); BENCH_CHAIN_DIR gets, per process, "finish-calls chained ready".
WRAPPER = r"""
import os, sys, threading, time
import service.delivery.smtp as _smtp
if os.environ.get("BENCH_CHAINING") == "off":
    _smtp.SmtpConnection.can_follow = lambda self, sender, recipient: False
_dir = os.environ.get("BENCH_CHAIN_DIR")
if _dir:
    _lock = threading.Lock()
    _counts = [0, 0, 0]
    _owner = [None]
    _finish = _smtp.SmtpConnection.finish

    def _flush(pid):
        while True:
            time.sleep(0.25)
            with _lock:
                line = " ".join(map(str, _counts))
            tmp = os.path.join(_dir, f"{pid}.tmp")
            with open(tmp, "w") as f:
                f.write(line)
            os.replace(tmp, os.path.join(_dir, str(pid)))

    def _counted(self, payload, follow=None):
        pid = os.getpid()
        if _owner[0] != pid:  # first call in this (forked) process
            with _lock:
                if _owner[0] != pid:
                    _owner[0] = pid
                    _counts[:] = [0, 0, 0]
                    threading.Thread(target=_flush, args=(pid,), daemon=True).start()
        result = _finish(self, payload, follow)
        with _lock:
            _counts[0] += 1
            if follow is not None:
                _counts[1] += 1
                if result[1]:
                    _counts[2] += 1
        return result

    _smtp.SmtpConnection.finish = _counted
sys.argv[0] = "celery"
from celery.__main__ import main
main()
"""


def chain_counts(d: Path) -> tuple[int, int, int]:
    total = [0, 0, 0]
    for p in d.iterdir():
        if p.suffix == ".tmp":
            continue
        with contextlib.suppress(OSError, ValueError):
            for i, v in enumerate(p.read_text().split()):
                total[i] += int(v)
    return tuple(total)


@contextlib.contextmanager
def wrapped_worker(mode: str, workers: int, env: dict[str, str], count_dir: Path, code: Path,
                   stop_timeout: float = 60, log: str | None = None):
    """support.celery_worker's command, through WRAPPER: yielded once it answers a ping;
    afterwards SIGTERM to its process group, SIGKILL if it has not stopped in stop_timeout."""
    output = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 — closed below
    proc = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, "-A", "service.jobs.app", "worker", "-Q", "alerts,digests",
         "-c", str(workers), "-P", "prefork", "-n", f"benchchain{mode}{uuid.uuid4().hex[:6]}@%h",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO" if log else "WARNING"],
        cwd=code, env={**os.environ, **env, "BENCH_CHAINING": mode, "BENCH_CHAIN_DIR": str(count_dir),
                       **({"LOG_LEVEL": "INFO"} if log else {})},
        start_new_session=True, stdout=output, stderr=output,
    )
    try:
        from service.jobs.app import app

        for _ in range(120):
            if proc.poll() is not None:
                raise RuntimeError(f"the wrapped Celery worker exited ({proc.returncode})")
            if app.control.ping(timeout=0.5):
                break
        else:
            raise RuntimeError("the wrapped Celery worker did not come up")
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(stop_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if log:
            output.close()


def ledger_sent(edition_kind: str = "alert") -> int:
    """`sent` rows of the latest edition."""
    import sqlalchemy as sa

    from service.db import get_engine

    with get_engine().connect() as c:
        return c.execute(sa.text("SELECT count(*) FROM deliveries WHERE status = 'sent' AND edition_id = "
                                 "(SELECT max(id) FROM editions)")).scalar_one()


# ------------------------------------------------------------------ the run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rtt", type=float, default=20.0, help="round trip between the workers and Postfix, ms")
    ap.add_argument("--readers", type=int, default=5000, help="the alert's audience per run")
    ap.add_argument("--warm", type=int, default=300, help="readers of the uncounted alert after each worker start")
    ap.add_argument("--workers", type=int, default=1, help="prefork worker processes")
    ap.add_argument("--connections", type=int, default=10, help="SMTP_CONNECTIONS per worker process")
    ap.add_argument("--timeout", type=float, default=300, help="give a run up this many seconds")
    ap.add_argument("--pairs", type=int, default=2, help="on/off pairs (the order alternates)")
    ap.add_argument("--path", choices=("auto", "netem", "proxy"), default="auto")
    ap.add_argument("--code", default=None, metavar="REV",
                    help="run on the code of git revision REV (git archive: workers and planner); default: "
                         "this working tree as it is")
    ap.add_argument("--worker-log", default=None, help="append the workers' INFO logs to this file (diagnosis)")
    ap.add_argument("--cleanup", action="store_true", help="stop a Postfix a killed run left behind, and exit")
    args = ap.parse_args()
    if args.cleanup:
        cleanup_leftovers()
        return

    started = dt.datetime.now().astimezone()
    out = Report(OUT / f"chaining-{started:%Y%m%d-%H%M%S}.txt")
    with contextlib.ExitStack() as stack:
        try:
            mta = Postfix(ensure_postfix())
            stack.enter_context(netpath._registered(mta.stop))  # atexit, SIGTERM/SIGHUP too
            mta.start()
        except Exception as exc:  # noqa: BLE001 — said, and the run stops: no silent stand-in
            out(f"Postfix could not be run here: {exc}")
            out("(the fallback would be Postfix's smtp-sink: bench_send_engine.py measures against it)")
            raise SystemExit(2) from exc
        version = _run("postconf", "-c", mta.conf, "-h", "mail_version").stdout.strip()

        svc = services(stack, args.code, "chaining", smtp_port=mta.port)
        code, db_url, env = svc.code, svc.db_url, svc.env
        from service.config import get_settings

        settings = get_settings()
        engine_env = engine_overrides(settings, args.workers, args.connections)
        rendered = rendered_alert()
        message = wire_bytes("alert", rendered)

        path = stack.enter_context(netpath.round_trip(mta.port, args.rtt, args.path, quiet=True))
        count_root = Path(tempfile.mkdtemp(prefix="nashra-chain-counts-"))
        stack.callback(shutil.rmtree, count_root, True)
        wenv = {**env, **engine_env, "SMTP_URL": f"smtp://127.0.0.1:{path.port}", "PYTHONPATH": str(code)}

        out(f"bench_chaining {started:%Y-%m-%d %H:%M %Z}; code: {code_label(args.code)}")
        out("command: .venv/bin/python bench/bench_chaining.py " + " ".join(sys.argv[1:]))
        out(f"machine: {os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.2f} "
            f"(shared with other engineers: compare the ratios, not the absolute figures)")
        out(f"MTA: Postfix {version} (Debian), own instance `postfix -c {mta.conf}`, smtpd on 127.0.0.1:{mta.port}, "
            f"relay to discard(8); queue on {mta.root}/queue (cleanup fsyncs before the 250)")
        out(f"EHLO: {mta.ehlo()}")
        out(path.describe())
        out(path.check())
        out(f"engine: {args.workers} worker process(es), "
            + " ".join(f"{k}={v}" for k, v in engine_env.items())
            + f"; alert {len(message) / 1024:.1f} KB on the wire; {args.readers:,} readers per run "
              f"(+ {args.warm} uncounted after each worker start)")
        out()

        rows: list[dict] = []
        for pair in range(args.pairs):
            order = ("on", "off") if pair % 2 == 0 else ("off", "on")
            for mode in order:
                cdir = count_root / f"{pair}-{mode}"
                cdir.mkdir()
                with wrapped_worker(mode, args.workers, wenv, cdir, code, log=args.worker_log) as proc:
                    nashra_run("alert", rendered, args.warm, "warm", sink=mta, path=path, worker_pid=proc.pid,
                               db_url=db_url, timeout=args.timeout)
                    time.sleep(0.5)  # the counters' files catch up
                    before = chain_counts(cdir)
                    c0 = mta.count()
                    r = nashra_run("alert", rendered, args.readers, "r", sink=mta, path=path, worker_pid=proc.pid,
                                   db_url=db_url, timeout=args.timeout)
                    time.sleep(0.5)
                    after = chain_counts(cdir)
                    rcpts = mta.recipients(c0, c0 + r["counted"])
                    sent = ledger_sent()
                finish, chained, ready = (a - b for a, b in zip(after, before, strict=True))
                row = {**r, "pair": pair + 1, "mode": mode, "finish": finish, "chained": chained, "ready": ready,
                       "ledger_sent": sent, "dupes": len(rcpts) - len(set(rcpts)), "load": os.getloadavg()[0]}
                rows.append(row)
                out(f"pair {pair + 1} chaining {mode:3}: {r['rate']:7.1f} msg/s ({r['seconds']:.1f} s; steady "
                    f"{r['sink_rate']:.1f}/s) | Postfix discarded {r['counted']:,}, ledger sent {sent:,}, "
                    f"dupes {row['dupes']} | finish() {finish:,}, with a follower {chained:,} "
                    f"({chained / max(finish, 1):.0%}, 354 for {ready:,}) | conns {r['conns']} | CPU µs/msg "
                    f"worker {r['cpu_us']:.0f} PG {r['pg_us']:.0f} Postfix {r['sink_us']:.0f}"
                    + (f" proxy {r['proxy_us']:.0f}" if path.kind == "proxy" else "")
                    + f" | load {row['load']:.2f}")

        out()
        out(table(rows, path.kind))
        ratios = [on["rate"] / off["rate"] for on, off in pairs_of(rows)]
        med = statistics.median(ratios)
        keep = med >= 1.3
        out(f"\nratio chained / unchained, per pair: {', '.join(f'{x:.2f}' for x in ratios)}; median {med:.2f}")
        out(f"verdict (keep only if ≥ 1.3× at the same connections): {'KEEP' if keep else 'REMOVE'} the chained "
            f"envelope ({med:.2f}× at {args.workers} × {args.connections} connections, RTT {args.rtt:g} ms, "
            f"Postfix {version})")
        bad = [r for r in rows if r["counted"] != r["n"] or r["ledger_sent"] != r["n"] or r["dupes"]]
        if bad:
            out(f"WARNING: {len(bad)} run(s) where Postfix's count, the ledger's sent rows and the audience differ")
        if any(r["mode"] == "off" and r["chained"] for r in rows) or any(r["mode"] == "on" and not r["ready"]
                                                                         for r in rows):
            out("WARNING: the chaining switch did not act as intended (see the follower counts)")
        out(f"load average at the end {os.getloadavg()[0]:.2f}; written to {out.path.relative_to(REPO)}")
    out.close()


def pairs_of(rows: list[dict]):
    by = {}
    for r in rows:
        by.setdefault(r["pair"], {})[r["mode"]] = r
    for p in sorted(by):
        if "on" in by[p] and "off" in by[p]:
            yield by[p]["on"], by[p]["off"]


def table(rows: list[dict], path_kind: str) -> str:
    head = (f"{'pair':>4} {'chaining':8} {'readers':>7} {'msg/s':>8} {'secs':>6} {'Postfix':>7} {'ledger':>7} "
            f"{'dupes':>5} {'chained':>7} │ {'worker':>6} {'PG':>5} {'Postfix':>7} {'proxy':>6}")
    lines = ["msg/s: enqueue of plan_edition → edition done; Postfix = messages its discard(8) logged as sent; "
             "chained = share of finish() calls that carried the next envelope; CPU µs per message on the right",
             head, "─" * len(head)]
    for r in rows:
        lines.append(
            f"{r['pair']:>4} {r['mode']:8} {r['n']:>7,} {r['rate']:>8.1f} {r['seconds']:>6.1f} {r['counted']:>7,} "
            f"{r['ledger_sent']:>7,} {r['dupes']:>5} {r['chained'] / max(r['finish'], 1):>7.0%} │ "
            f"{r['cpu_us']:>6.0f} {r['pg_us']:>5.0f} {r['sink_us']:>7.0f} "
            f"{(format(r['proxy_us'], '.0f') if path_kind == 'proxy' else '–'):>6}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
