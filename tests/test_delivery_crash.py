"""Crash safety against real worker processes: SIGKILL mid-edition, Redis restarted mid-edition.

Workers are `celery -A service.jobs.app worker` subprocesses (prefork, 2 children),
each in its own process group so that SIGKILL takes the whole worker at once, as the
kernel's OOM killer or a lost machine would.  They run with the default settings that
matter here — SMTP_CONNECTIONS sessions per process (concurrency on), LEASE_SECONDS,
the batch's heartbeat — and the test plays beat: it calls the sweeper every
SWEEP_SECONDS, as beat does.  Each test prints what it measured: the duplicate bound
and the duplicates, and the seconds recovery took.
"""

from __future__ import annotations

import contextlib
import subprocess
import time

import pytest
import redis as redis_lib

from service.config import get_settings, reset_settings
from service.delivery.batch import OUTCOME_GROUP, duplicate_bound
from service.delivery.smtp_pool import WINDOW_PER_SESSION
from tests.support.delivery import ledger, planned_edition
from tests.support.pipelining_smtp import PipeliningSmtpServer
from tests.support.workers import (
    CONCURRENCY,
    dispatch,
    kill,
    report,
    start_worker,
    stop,
    wait_done,
    worker_env,
)


@pytest.fixture(params=["aiosmtpd", "pipelining"])
def crash_sink(request):
    """The SMTP peer of the SIGKILL test: aiosmtpd (a message's envelope and body in four
    round trips), or our PIPELINING server answering each end of data 2 ms late, so that
    sessions chain the next envelope behind each dot (the window full: the widest bound)."""
    if request.param == "aiosmtpd":
        yield request.getfixturevalue("smtp_sink"), time.monotonic
        return
    with PipeliningSmtpServer() as server:
        server.data_delay = 0.002
        yield server, time.time


@pytest.mark.slow
def test_sigkill_mid_edition_loses_nothing_and_duplicates_at_most_the_in_flight(pg_env, redis_url, crash_sink,
                                                                               monkeypatch, capsys):
    from service.jobs.app import configure

    smtp_sink, clock = crash_sink  # clock: the one the sink stamps its arrivals with
    configure()  # this process enqueues onto the test Redis too
    settings = get_settings()  # the workers' LEASE_SECONDS, SWEEP_SECONDS, SMTP_CONNECTIONS: the defaults
    n = 4000
    eid = planned_edition(n)
    env = worker_env(smtp_sink.port)
    first = start_worker("first", env)
    second = None
    try:
        dispatch(eid)
        smtp_sink.wait_for(1000, timeout=90)
        kill(first)  # SIGKILL, the whole worker (main process and both children)
        killed_at, killed_on_clock = time.monotonic(), clock()
        at_kill = len(smtp_sink.messages)
        assert at_kill < n, "the edition finished before the kill: make it bigger"
        second = start_worker("second", env)
        sweeps = wait_done(eid, timeout=150)
    finally:
        stop(first)
        if second is not None:
            stop(second)
        _celery_back_to_defaults(monkeypatch)
    copies = smtp_sink.copies()
    assert set(copies) == {f"reader{i}@example.com" for i in range(n)}  # every reader got it
    duplicates = sum(c - 1 for c in copies.values())
    # Each of the killed worker's processes ran one batch: in flight at most its lane's
    # window (WINDOW_PER_SESSION per session), accepted but not committed at most one outcome group.
    bound = CONCURRENCY * duplicate_bound(settings)
    back = next((at - killed_at for at, r in sweeps if r.expired), None)
    last = max(m.at for m in smtp_sink.messages) - killed_on_clock
    chained = sum(getattr(m, "chained", False) for m in smtp_sink.messages)
    report(capsys, f"SIGKILL mid-digest: {duplicates} duplicate(s), bound {bound} = {CONCURRENCY} processes x "
                   f"({settings.smtp_connections * WINDOW_PER_SESSION} in flight + {OUTCOME_GROUP} uncommitted); "
                   f"{at_kill}/{n} sent at the kill; the dead worker's rows back in work "
                   f"{'-' if back is None else f'{back:.1f}'} s after it (LEASE_SECONDS {settings.lease_seconds} "
                   f"+ SWEEP_SECONDS {settings.sweep_seconds:g}); last message {last:.1f} s after it; "
                   f"{chained} messages chained behind the previous one's dot")
    assert duplicates <= bound
    assert set(ledger(eid).values()) == {"sent"}


@pytest.fixture
def own_redis(monkeypatch):
    """A Redis of our own that the test may restart (never the machine's :6379)."""
    from tests.support.net import free_port

    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis_lib.Redis(port=port)
        for _ in range(100):
            with contextlib.suppress(redis_lib.ConnectionError):
                if client.ping():
                    return proc
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    state = {"proc": start()}

    def restart() -> None:
        state["proc"].kill()
        state["proc"].wait(10)
        time.sleep(0.5)
        state["proc"] = start()

    url = f"redis://127.0.0.1:{port}/0"
    monkeypatch.setenv("REDIS_URL", url)
    reset_settings()
    from service.jobs.app import configure

    configure()
    yield restart
    state["proc"].kill()
    state["proc"].wait(10)
    _celery_back_to_defaults(monkeypatch)


def _celery_back_to_defaults(monkeypatch) -> None:
    """Leave the process's Celery app pointing at no test broker of ours."""
    from service.jobs.app import configure

    monkeypatch.delenv("REDIS_URL", raising=False)
    reset_settings()
    configure()


@pytest.mark.slow
def test_redis_restarted_mid_edition_the_edition_completes(pg_env, own_redis, smtp_sink, capsys):
    from service.delivery.sweeper import STALL_SECONDS

    n = 2000
    smtp_sink.delay = 0.004  # slow enough that the restart lands mid-edition
    eid = planned_edition(n)
    env = worker_env(smtp_sink.port) | {"RATE_PER_SECOND": "5000"}  # the limiter uses Redis too
    worker = start_worker("w", env)
    try:
        dispatch(eid)
        smtp_sink.wait_for(300, timeout=60)
        own_redis()  # every queued batch message is gone with it (no persistence)
        restarted_at = time.monotonic()
        at_restart = len(smtp_sink.messages)
        assert at_restart < n
        sweeps = wait_done(eid, timeout=150)
    finally:
        stop(worker)
    copies = smtp_sink.copies()
    assert set(copies) == {f"reader{i}@example.com" for i in range(n)}
    assert sum(c - 1 for c in copies.values()) == 0  # nobody died: nothing twice
    assert set(ledger(eid).values()) == {"sent"}
    resumed = next((at - restarted_at for at, r in sweeps if r.stalled), None)
    last = max(m.at for m in smtp_sink.messages) - restarted_at
    report(capsys, f"Redis restarted empty mid-digest ({at_restart}/{n} sent): lost batches re-dispatched "
                   f"{'-' if resumed is None else f'{resumed:.1f}'} s after the restart (STALL_SECONDS "
                   f"{STALL_SECONDS:g} + SWEEP_SECONDS {get_settings().sweep_seconds:g}); last message "
                   f"{last:.1f} s after it")
