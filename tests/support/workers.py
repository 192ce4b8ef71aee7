"""Real Celery workers as subprocesses, for the tests that kill them or count their processes.

`start_worker` runs `celery -A service.jobs.app worker` (prefork, CONCURRENCY children)
in its own process group, so that `kill` takes the whole worker at once, as the kernel's
OOM killer or a lost machine would.  The in-process worker of tests/conftest.py
(`celery_worker_factory`) is for everything else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from service.config import get_settings
from service.db import session_scope
from service.delivery.sweeper import SweepReport, sweep
from service.models import Edition, EditionStatus
from tests.support.delivery import ledger

REPO = Path(__file__).resolve().parent.parent.parent
CELERY = str(Path(sys.executable).parent / "celery")
CONCURRENCY = 2


def start_worker(name: str, extra_env: dict[str, str], queues: str = "digests,alerts",
                 concurrency: int = CONCURRENCY) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(extra_env)
    return subprocess.Popen(
        [CELERY, "-A", "service.jobs.app", "worker", "-Q", queues, "-c", str(concurrency),
         "-P", "prefork", "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
         "--loglevel", "WARNING"],
        cwd=REPO, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=open(os.devnull, "w") if not os.environ.get("NASHRA_TEST_VERBOSE") else None,
    )


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    proc.wait(30)


def stop(proc: subprocess.Popen) -> None:
    """A warm shutdown (SIGTERM): running tasks finish, then the worker exits."""
    if proc.poll() is None:
        kill(proc, signal.SIGTERM)


def worker_env(smtp_port: int, **more: str) -> dict[str, str]:
    """What a worker of this test needs: the test's database, Redis (and key prefix) and SMTP peer."""
    return {
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "REDIS_URL": os.environ["REDIS_URL"],
        "REDIS_KEY_PREFIX": os.environ.get("REDIS_KEY_PREFIX", ""),
        "SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
        "BATCH_SIZE": "100",
        "LOG_LEVEL": "WARNING",
        **more,
    }


def dispatch(eid: int, queue: str = "digests") -> None:
    """What the editor's click (or beat) does: the planner task, on the edition's queue."""
    from service.jobs.tasks import plan_edition  # registers the tasks in this process

    plan_edition.si(eid).apply_async(queue=queue)


def wait_done(eid: int, timeout: float) -> list[tuple[float, SweepReport]]:
    """Play beat: sweep every SWEEP_SECONDS until the edition is done; (when, report) of each sweep."""
    every = get_settings().sweep_seconds
    deadline = time.monotonic() + timeout
    sweeps = []
    while time.monotonic() < deadline:
        with session_scope() as s:
            if s.get(Edition, eid).status == EditionStatus.done:
                return sweeps
            sweeps.append((time.monotonic(), sweep(s)))
        time.sleep(every)
    raise AssertionError(f"edition {eid} not done after {timeout}s: {sorted(set(ledger(eid).values()))}")


def report(capsys, text: str) -> None:
    """Print a measurement past pytest's capture (recovery seconds, duplicate bounds)."""
    with capsys.disabled():
        print(f"\n[measured] {text}")
