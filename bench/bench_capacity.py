"""Per-message cost of a big alert as worker processes are added: does it stay flat?

    .venv/bin/python bench/bench_capacity.py [--readers 30000] [--workers 1,2,4] [--rtt 20]

Runs bench_alert_100k.py --cold once per worker count (each run: its own scratch
PostgreSQL database, its own redis-server, Postfix's smtp-sink RTT ms away) and prints,
per message: the workers' CPU, PostgreSQL's CPU and WAL bytes, Redis commands, the
workers' traffic (bytes through read/write: relay, PostgreSQL, Redis), and the rate —
with each figure's ratio to the one-process run.  docs/capacity.md turns these into the
hosts a 100,000 / 1,000,000 / 5,000,000-reader alert needs.

On a 2-core machine more processes cannot send faster once the cores are busy; what this
checks is that the cost of a message does not grow with the number of processes (no
contention in the ledger, the cap or the broker that would make more hosts worth less).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_FIGURES = {
    "rate": re.compile(r"steady rate after the first 10 %: ([\d,.]+) msg/s"),
    "worker_us": re.compile(r"CPU µs per message: workers ([\d,]+)"),
    "pg_us": re.compile(r"PostgreSQL ([\d,]+)(?:,| *$)"),
    "wal_bytes": re.compile(r"PostgreSQL WAL ([\d,]+) bytes"),
    "redis_cmds": re.compile(r"Redis ([\d.]+) commands"),
    "relay_sent": re.compile(r"worker traffic ([\d,]+) bytes sent"),
    "pg_sent": re.compile(r", ([\d,]+) / [\d,]+ to PostgreSQL"),
    "pg_received": re.compile(r"/ ([\d,]+) to PostgreSQL"),
    "p90": re.compile(r"90 % accepted\s+([\d.]+) s"),
}


def run(readers: int, workers: int, rtt: float) -> dict[str, float]:
    cmd = [sys.executable, str(REPO / "bench" / "bench_alert_100k.py"), "--cold", "--readers", str(readers),
           "--workers", str(workers), "--rtt", str(rtt), "--max-seconds", "600"]
    text = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
    figures = {}
    for line in text.splitlines():
        for name, pattern in _FIGURES.items():
            m = pattern.search(line)
            if m and name not in figures and ("CPU µs" in line or name not in ("pg_us",)):
                figures[name] = float(m[1].replace(",", ""))
    missing = set(_FIGURES) - set(figures)
    if missing:
        raise RuntimeError(f"bench_alert_100k printed no {sorted(missing)}:\n{text[-2000:]}")
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readers", type=int, default=30_000)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--rtt", type=float, default=20.0)
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    print(f"bench_capacity: {args.readers:,}-reader cold alert at {args.rtt:g} ms, worker processes {counts}")
    rows = {w: run(args.readers, w, args.rtt) for w in counts}
    base = rows[counts[0]]
    names = ["rate", "p90", "worker_us", "pg_us", "wal_bytes", "redis_cmds", "relay_sent", "pg_sent", "pg_received"]
    print(f"{'workers':>7} " + " ".join(f"{n:>14}" for n in names))
    for w, fig in rows.items():
        print(f"{w:>7} " + " ".join(f"{fig[n]:>14,.1f}" for n in names))
    print(f"{'ratio':>7} (to {counts[0]} process{'es' if counts[0] > 1 else ''})")
    for w, fig in rows.items():
        print(f"{w:>7} " + " ".join(f"{fig[n] / base[n] if base[n] else float('nan'):>14.2f}" for n in names))


if __name__ == "__main__":
    main()
