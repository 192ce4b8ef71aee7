"""The send engine against a relay, a database and a worker that misbehave — real processes only.

Every test here runs `celery worker` subprocesses (tests/support/workers.py), a relay in
a process of its own that the test may kill and start again on the same port
(tests/support/faults.py `Relay`, recording every accepted message to a file), and plays
beat itself (the sweeper every SWEEP_SECONDS, 1 s here).  No mock, no eager mode.

1. The relay stopped for 40 s mid-digest, then started again: it was *unavailable*, not
   refusing us — every reader is reached, the edition never pauses, and the mail goes on
   by itself soon after the relay is back.
2. Two relays, the first accepts TCP and never greets: SMTP_CONNECT_TIMEOUT (5 s) bounds
   the wait, the second carries the edition.
3. `550 5.7.1 … blocked` at RCPT for one reader fails that reader only.
4. PostgreSQL (a private instance) restarted mid-digest: nothing lost, duplicates within
   the window, the same worker processes finish.
5. A worker frozen (SIGSTOP) for 2 × LEASE_SECONDS mid-batch, its rows taken over by
   another: once it wakes it sends at most its window, not the rest of its batch.
6. Two workers under SMTP_MAX_CONNECTIONS=10, 20 ms from the relay: never more than 10
   sessions, and the throughput of those sessions.

Each test prints its figures ("[measured] …").
"""

from __future__ import annotations

import os
import signal
import smtplib
import threading
import time
from collections import Counter

import pytest

from service.config import get_settings, reset_settings
from service.delivery.batch import OUTCOME_GROUP, duplicate_bound
from service.delivery.smtp_pool import WINDOW_PER_SESSION
from tests.support.delivery import email_for, ledger, planned_edition
from tests.support.faults import (
    BlackHole,
    EditionWatch,
    PrivatePostgres,
    Relay,
    SessionSampler,
    pause_audits,
    play_beat,
    process_tree,
    signal_group,
    wait_worker_ready,
)
from tests.support.workers import CONCURRENCY, dispatch, report, start_worker, worker_env

pytestmark = pytest.mark.slow

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
STATE_GROUP = 10  # service/delivery/batch.py: readers re-checked per query, right before their messages go


# ---------------------------------------------------------------------- fixtures


@pytest.fixture
def broker(redis_url, monkeypatch):
    """This process enqueues onto the test Redis (and its key prefix); plays beat every second."""
    from service.jobs.app import configure

    monkeypatch.setenv("SWEEP_SECONDS", "1")
    reset_settings()
    configure()
    yield
    monkeypatch.delenv("REDIS_URL", raising=False)
    reset_settings()
    configure()  # leave the process's Celery app pointing at no test broker of ours


@pytest.fixture
def workers():
    """Start workers with workers.append(start_worker(...)); all are stopped at the end:
    SIGCONT (one may be frozen), SIGTERM, and SIGKILL for one that does not go in 15 s."""
    procs = []
    yield procs
    for p in procs:
        signal_group(p, signal.SIGCONT)
        if p.poll() is None:
            signal_group(p, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(15)
        except Exception:  # noqa: BLE001
            signal_group(p, signal.SIGKILL)
            p.wait(10)


@pytest.fixture
def relays():
    """Relays started here are killed at the end."""
    started: list[Relay] = []
    yield started
    for r in started:
        r.kill_quietly()


@pytest.fixture
def private_pg(monkeypatch):
    """A PostgreSQL of this test's own, migrated, that it may restart; DATABASE_URL points at it."""
    try:
        pg = PrivatePostgres()
        pg.setup()
    except Exception as exc:  # noqa: BLE001
        if IN_CI:
            pytest.fail(f"a private PostgreSQL is required under CI=true: {exc}")
        pytest.skip(f"cannot run a private PostgreSQL here: {exc}")
    from service.delivery import batch

    batch.forget_prepared_variants()  # ids start over in this database
    monkeypatch.setenv("DATABASE_URL", pg.url)
    reset_settings()  # and the engine with it (service/db.py)
    yield pg
    reset_settings()
    pg.destroy()


# ---------------------------------------------------------------------- helpers


def everyone(n: int) -> set[str]:
    return {email_for(i) for i in range(n)}


def dupes(copies: Counter) -> int:
    return sum(c - 1 for c in copies.values())


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


# ---------------------------------------------------------------------- 1. the relay away for 40 s


def test_relay_stopped_40s_mid_digest_every_reader_reached_and_no_pause(pg_env, broker, workers, relays, tmp_path,
                                                                       capsys):
    n, down = 3000, 40.0
    # 40 sessions (2 processes x SMTP_CONNECTIONS 20), each answering a dot 0.2 s late:
    # ~200 messages/s, so the stop lands mid-digest; the relay comes back fast.
    relay = Relay(tmp_path, data_delay=0.2).start()
    relays.append(relay)
    eid = planned_edition(n)
    workers.append(start_worker("w", worker_env(relay.port)))
    with EditionWatch(pg_env, eid) as watch:
        dispatch(eid)
        relay.wait_for(600, timeout=60)
        relay.stop()  # SIGKILL: every session cut, the port refuses connections
        at_stop = relay.count()
        during, _, _ = play_beat(eid, timeout=down)  # returns early only if paused or done
        relay.set_delay(0.0)
        relay.start()
        back = relay.started_at[-1]
        status, _, _ = play_beat(eid, timeout=45) if during not in ("paused", "done") else (during, [], 0)
        time.sleep(0.5)
    copies = relay.copies()
    rows = Counter(ledger(eid).values())
    last = max(relay.arrivals(), default=back) - back
    report(capsys, f"relay stopped {down:g} s mid-digest: {at_stop}/{n} accepted at the stop; edition {status}; "
                   f"{len(copies)}/{n} readers reached, {dupes(copies)} duplicate(s); last message "
                   f"{last:.1f} s after the relay was back; paused: {'yes' if watch.paused else 'no'}"
                   f"{f' ({watch.pause_reason})' if watch.paused else ''}; statuses {watch.statuses}; rows {dict(rows)}")
    assert at_stop < n, "the digest finished before the stop: slow the relay down"
    assert not watch.paused and not pause_audits(eid), f"the edition paused: {watch.pause_reason}"
    assert status == "done"
    assert set(copies) == everyone(n)
    assert rows["unknown"] == 0 and rows["failed"] == 0
    assert set(rows) == {"sent"}
    assert last <= 30.0


# ---------------------------------------------------------------------- 2. a relay that never greets


def test_silent_first_relay_the_second_carries_the_edition(pg_env, broker, workers, relays, tmp_path, capsys):
    n = 500
    good = Relay(tmp_path, name="good").start()
    relays.append(good)
    eid = planned_edition(n)
    with BlackHole() as hole:
        env = worker_env(good.port) | {"SMTP_URL": f"{hole.url},{good.url}"}
        workers.append(start_worker("w", env))
        wait_worker_ready("w")
        with EditionWatch(pg_env, eid) as watch:
            dispatched = time.time()
            dispatch(eid)
            good.wait_for(1, timeout=15)
            status, _, _ = play_beat(eid, timeout=60)
        holes = hole.accepted
    arrivals = good.arrivals()
    first = arrivals[0] - dispatched if arrivals else None
    done_in = arrivals[-1] - dispatched if arrivals else None
    copies = good.copies()
    rows = Counter(ledger(eid).values())
    report(capsys, f"first relay silent (accepts TCP, no greeting), SMTP_CONNECT_TIMEOUT "
                   f"{get_settings().smtp_connect_timeout:g} s: first message at the second relay {fmt(first)} s "
                   f"after dispatch, last {fmt(done_in)} s; {holes} connection(s) to the "
                   f"silent one; {len(copies)}/{n} readers, {dupes(copies)} duplicate(s); edition {status}; "
                   f"paused: {'yes' if watch.paused else 'no'}; rows {dict(rows)}")
    assert first is not None and first <= 10.0
    assert not watch.paused and not pause_audits(eid), f"the edition paused: {watch.pause_reason}"
    assert status == "done"
    assert set(copies) == everyone(n)
    assert rows["failed"] == 0 and set(rows) == {"sent"}


# ---------------------------------------------------------------------- 3. 5.7.1 for one reader


def test_550_571_at_rcpt_fails_that_reader_only(pg_env, broker, workers, relays, tmp_path, capsys):
    n, blocked = 300, email_for(7)
    relay = Relay(tmp_path, blocked={blocked: f"550 5.7.1 <{blocked}>: recipient address blocked"}).start()
    relays.append(relay)
    eid = planned_edition(n)
    workers.append(start_worker("w", worker_env(relay.port)))
    with EditionWatch(pg_env, eid) as watch:
        dispatch(eid)
        status, _, _ = play_beat(eid, timeout=60)
    rows = ledger(eid)
    copies = relay.copies()
    report(capsys, f"550 5.7.1 at RCPT for one of {n} readers: that row {rows.get(blocked)}; "
                   f"{sum(1 for s in rows.values() if s == 'sent')} sent, {len(copies)} accepted by the relay; "
                   f"edition {status}; paused: {'yes' if watch.paused else 'no'}"
                   f"{f' ({watch.pause_reason})' if watch.paused else ''}; statuses {watch.statuses}")
    assert not watch.paused and not pause_audits(eid), f"the edition paused: {watch.pause_reason}"
    assert status == "done"
    assert rows[blocked] == "failed"
    assert {e: s for e, s in rows.items() if e != blocked} == {e: "sent" for e in everyone(n) - {blocked}}
    assert set(copies) == everyone(n) - {blocked}


# ---------------------------------------------------------------------- 4. PostgreSQL restarted


def test_postgres_restarted_mid_digest_nothing_lost_same_workers_finish(private_pg, broker, workers, relays,
                                                                        tmp_path, capsys):
    n = 3000
    relay = Relay(tmp_path, data_delay=0.2).start()  # ~200 messages/s: the restart lands mid-digest
    relays.append(relay)
    eid = planned_edition(n)
    worker = start_worker("w", worker_env(relay.port))
    workers.append(worker)
    wait_worker_ready("w")
    processes = process_tree(worker.pid)
    settings = get_settings()  # the workers': SMTP_CONNECTIONS default
    with EditionWatch(private_pg.url, eid) as watch:
        dispatch(eid)
        relay.wait_for(800, timeout=60)
        at_stop = relay.count()
        restart = threading.Thread(target=private_pg.restart, kwargs={"down_seconds": 3})
        restart.start()  # beat goes on meanwhile: its sweeps fail while the database is away
        status, _, failed_sweeps = play_beat(eid, timeout=75)
        restart.join()
        stopped, back = private_pg.stopped_at[-1], private_pg.started_at[-1]
    after = process_tree(worker.pid) if worker.poll() is None else set()
    copies = relay.copies()
    rows = Counter(ledger(eid).values())
    bound = CONCURRENCY * duplicate_bound(settings)
    last = max(relay.arrivals(), default=back) - back
    report(capsys, f"PostgreSQL restarted mid-digest ({at_stop}/{n} accepted at the stop, down "
                   f"{back - stopped:.1f} s): {len(copies)}/{n} readers reached, {dupes(copies)} duplicate(s), "
                   f"bound {bound} = {CONCURRENCY} processes x duplicate_bound {duplicate_bound(settings)}; last "
                   f"message {last:.1f} s after the database was back; edition {status}; worker processes "
                   f"{'the same' if after == processes else f'{sorted(processes)} -> {sorted(after)}'}; "
                   f"{failed_sweeps} sweep(s) failed while it was down; paused: {'yes' if watch.paused else 'no'}; "
                   f"rows {dict(rows)}")
    assert at_stop < n, "the digest finished before the restart: slow the relay down"
    assert status == "done"
    assert set(copies) == everyone(n)  # 0 lost
    assert set(rows) == {"sent"}
    assert dupes(copies) <= bound
    assert worker.poll() is None and after == processes  # the same processes finished it
    assert not watch.paused


# ---------------------------------------------------------------------- 5. a worker frozen past its lease


def test_worker_frozen_past_its_lease_sends_at_most_its_window_after_it_wakes(pg_env, broker, workers, relays,
                                                                             tmp_path, monkeypatch, capsys):
    lease, n, batch_size = 6, 1000, 500
    monkeypatch.setenv("LEASE_SECONDS", str(lease))
    reset_settings()
    settings = get_settings()
    # One process of 20 sessions answering each dot 0.2 s late: ~100 messages/s.
    relay = Relay(tmp_path, data_delay=0.2).start()
    relays.append(relay)
    eid = planned_edition(n)
    env = worker_env(relay.port, BATCH_SIZE=str(batch_size), LEASE_SECONDS=str(lease))
    first = start_worker("first", env, concurrency=1)
    workers.append(first)
    wait_worker_ready("first")
    dispatch(eid)
    relay.wait_for(150, timeout=60)
    signal_group(first, signal.SIGSTOP)  # mid-batch: its sessions, its claims, its window frozen
    frozen = time.time()
    at_freeze = relay.messages()
    first_conns = {m["conn"] for m in at_freeze}  # the relay's sessions that were the first worker's
    second = start_worker("second", env, concurrency=1)
    workers.append(second)
    woken: list[float] = []

    def wake() -> None:
        signal_group(first, signal.SIGCONT)
        woken.append(time.time())

    # The wake is on a timer: frozen inside a transaction, the worker holds row locks that a
    # sweep may wait for until it wakes.
    waker = threading.Timer(2 * lease, wake)
    waker.start()
    with EditionWatch(pg_env, eid) as watch:
        try:
            _, frozen_sweeps, _ = play_beat(eid, timeout=2 * lease, until=())  # the frozen rows handed back
        finally:
            waker.join()
        woke = woken[0]
        status, _, _ = play_beat(eid, timeout=60)
        time.sleep(1.0)
    msgs = relay.messages()
    copies = relay.copies()
    taken_over = len([m for m in msgs if m["conn"] not in first_conns and m["at"] < woke])
    after_wake = [m for m in msgs if m["conn"] in first_conns and m["at"] >= woke]
    longest_sweep = max((secs for _, secs, _ in frozen_sweeps), default=0.0)
    rest = batch_size - len(at_freeze)
    # What the frozen worker may send once it wakes: its window, and the rest of the group
    # the fence let through.  Duplicates in all may add what its writer held accepted but
    # not committed at the freeze (B sent those rows again): one OUTCOME_GROUP.
    window = settings.smtp_connections * WINDOW_PER_SESSION + STATE_GROUP
    bound = window + OUTCOME_GROUP
    report(capsys, f"worker frozen {woke - frozen:.1f} s (2 x LEASE_SECONDS {lease}) mid-batch of {batch_size}: "
                   f"{len(at_freeze)} accepted at the freeze (the rest of its batch ~{rest}); the second worker "
                   f"sent {taken_over} meanwhile; after waking the frozen one sent {len(after_wake)} on its old "
                   f"sessions (window {window} = {settings.smtp_connections} sessions x {WINDOW_PER_SESSION} + "
                   f"{STATE_GROUP}); {dupes(copies)} duplicate(s) in all, bound {bound} = window + {OUTCOME_GROUP} "
                   f"uncommitted at the freeze; {len(copies)}/{n} readers; edition {status}; "
                   f"longest sweep while it was frozen {longest_sweep:.1f} s; "
                   f"rows {dict(Counter(ledger(eid).values()))}")
    assert rest > window, "the rest of the batch must be larger than the window for this to prove anything"
    assert taken_over > 0, "the second worker never took the frozen rows over"
    assert status == "done"
    assert set(copies) == everyone(n)
    assert len(after_wake) <= window  # not the rest of its batch
    assert dupes(copies) <= bound
    assert not watch.paused


# ---------------------------------------------------------------------- 6. the connection cap, 20 ms away


def _reference(port: int, n: int, sessions: int) -> tuple[float, int]:
    """n messages over `sessions` plain smtplib connections (one thread each): (msg/s, sent)."""
    body = ("Subject: reference\r\nMessage-ID: <ref-{i}@test>\r\n\r\n" + "x" * 2000 + "\r\n")
    counter = iter(range(n))
    lock = threading.Lock()
    sent = []

    def run() -> None:
        s = smtplib.SMTP("127.0.0.1", port, timeout=30)
        try:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                s.sendmail("ref@example.org", [f"ref{i}@example.com"], body.format(i=i))
                with lock:
                    sent.append(time.time())
        finally:
            s.quit()

    t0 = time.time()
    threads = [threading.Thread(target=run) for _ in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return len(sent) / (max(sent) - t0), len(sent)


def test_two_workers_under_a_cap_of_10_never_exceed_it_and_keep_the_pace(pg_env, broker, workers, relays, tmp_path,
                                                                        capsys):
    from bench import netpath

    n, rtt, cap = 1500, 20.0, 10
    relay = Relay(tmp_path).start()
    relays.append(relay)
    eid = planned_edition(n)
    with netpath.round_trip(relay.port, rtt, mode="proxy", quiet=True) as path:
        env = worker_env(path.port, SMTP_CONNECTIONS=str(cap), SMTP_MAX_CONNECTIONS=str(cap),
                         SMTP_ALERT_CONNECTIONS="1", BATCH_SIZE="250")
        for name in ("a", "b"):
            workers.append(start_worker(name, env, concurrency=1))
        for name in ("a", "b"):
            wait_worker_ready(name)
        noop_ms = netpath.smtp_noop_ms("127.0.0.1", path.port)
        with SessionSampler(relay, every=0.05) as sampler:
            dispatch(eid)
            status, _, _ = play_beat(eid, timeout=80)
        exact_max = relay.status().get("max", 0)
        arrivals = relay.arrivals()
        engine_rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0
        for p in workers:  # their idle sessions must not share the relay with the reference
            signal_group(p, signal.SIGTERM)
        for p in workers:
            p.wait(30)
        ref_rate, ref_sent = _reference(path.port, n, cap)
    copies = relay.copies()
    ratio = engine_rate / ref_rate if ref_rate else 0.0
    report(capsys, f"2 workers x SMTP_CONNECTIONS {cap} under SMTP_MAX_CONNECTIONS {cap} (SMTP_ALERT_CONNECTIONS 1: "
                   f"digests may hold {cap - 1}), RTT {rtt:g} ms ({path.kind}; NOOP {noop_ms:.1f} ms): relay sessions "
                   f"sampled every 50 ms peaked at {sampler.peak} ({len(sampler.samples)} samples), exact max "
                   f"{exact_max}; engine {engine_rate:.0f} msg/s, reference {ref_rate:.0f} msg/s ({cap} smtplib "
                   f"connections, {ref_sent} messages): ratio {ratio:.2f}; edition {status}")
    assert status == "done"
    assert sum(1 for r in copies if r.startswith("reader")) == n
    assert sampler.peak <= cap
    assert exact_max <= cap
    # The reference is plain smtplib (4 round trips a message); the engine pipelines, so a
    # healthy engine is well above 1: 3.02-3.13 measured over three runs with the two
    # workers (3.3 with one), while the old engine's two workers thrashed at 0.33.  The
    # issue's bar, 0.8, leaves room for a busy shared machine.
    assert ratio >= 0.8
