"""The SMTP connection cap: shared by every process through Redis, with an alert share.

Two ConnectionCap instances stand for two worker processes (and one test uses a real
second process, SIGKILLed while it holds slots).  The cap's rule: digests (every lane but
"alert") hold at most max − alert share; alerts may hold up to max in all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid

import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from service.config import ConfigError, load_settings
from service.delivery import shared_redis
from service.delivery.connection_cap import ConnectionCap
from tests.conftest import REPO
from tests.support.net import free_port


def _settings(max_connections: int = 3, alert: int = 1, **extra):
    return load_settings(smtp_max_connections=max_connections, smtp_alert_connections=alert, **extra)


def _relay() -> str:
    return f"relay-{uuid.uuid4().hex[:8]}.test:25"


def _raw(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


# ------------------------------------------------------------------ the rule, shared


def test_two_processes_share_one_cap_through_redis(redis_url):
    s = _settings(3, 1)
    a, b = ConnectionCap(s), ConnectionCap(s)
    assert a.shared and b.shared
    relay = _relay()
    d1 = a.acquire(relay, "digest")
    d2 = b.acquire(relay, "digest")
    assert d1 and d2 and d1 != d2
    # Digests are at max − alert share (2) across both "processes".
    assert a.acquire(relay, "digest") is None
    assert b.acquire(relay, "correction") is None  # every lane but "alert" is the general pool
    alert = b.acquire(relay, "alert")
    assert alert is not None
    assert a.acquire(relay, "alert") is None  # max (3) in all
    assert a.counts(relay) == b.counts(relay) == {"alert": 1, "general": 2}

    # It is in Redis, under the run's key prefix.
    prefix = s.redis_key_prefix
    keys = {k.decode() for k in _raw(redis_url).scan_iter(match=f"{prefix}nashra:smtpcap:*")}
    keys.discard(f"{prefix}nashra:smtpcap:{{{relay}}}:wanted")  # a refused slot's one-second flag
    assert keys == {f"{prefix}nashra:smtpcap:{{{relay}}}:a", f"{prefix}nashra:smtpcap:{{{relay}}}:g"}

    # A slot released through one instance is free for the other.
    b.release(relay, d1)
    d3 = a.acquire(relay, "digest")
    assert d3 is not None
    # Other relays have caps of their own.
    assert a.acquire(_relay(), "digest") is not None


def test_alerts_keep_their_share_however_busy_digests_are(redis_url):
    s = _settings(5, 2)
    cap = ConnectionCap(s)
    relay = _relay()
    digests = [cap.acquire(relay, "digest") for _ in range(5)]
    assert sum(1 for d in digests if d) == 3  # max − share
    alerts = [cap.acquire(relay, "alert") for _ in range(3)]
    assert alerts[0] and alerts[1] and alerts[2] is None


def test_an_alert_borrows_a_free_slot_and_digests_wait_for_it(redis_url):
    s = _settings(4, 1)
    cap = ConnectionCap(s)
    relay = _relay()
    d1, d2 = cap.acquire(relay, "digest"), cap.acquire(relay, "digest")
    a1, a2 = cap.acquire(relay, "alert"), cap.acquire(relay, "alert")  # share 1, borrows 1
    assert all((d1, d2, a1, a2))
    assert cap.acquire(relay, "digest") is None  # digests hold 2 < 3, but max is reached
    assert cap.acquire(relay, "alert") is None
    cap.release(relay, a2)
    assert cap.acquire(relay, "digest") is not None


_ops = st.lists(
    st.tuples(st.sampled_from(["acquire", "release", "renew"]), st.sampled_from(["alert", "digest"]), st.integers(0, 9)),
    max_size=40,
)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(maximum=st.integers(2, 6), data=st.data(), ops=_ops)
def test_the_lua_script_and_the_process_local_cap_keep_the_same_rule(redis_url, maximum, data, ops):
    share = data.draw(st.integers(1, maximum - 1))
    shared = ConnectionCap(_settings(maximum, share))
    local = ConnectionCap(_settings(maximum, share, redis_url=None))
    assert shared.shared and not local.shared
    relay = _relay()
    held: dict[str, list[tuple[str, str]]] = {"alert": [], "digest": []}  # (shared slot, local slot)
    for op, lane, pick in ops:
        if op == "acquire":
            got = shared.acquire(relay, lane), local.acquire(relay, lane)
            assert (got[0] is None) == (got[1] is None)
            alerts, digests = len(held["alert"]), len(held["digest"])
            may = alerts + digests < maximum and (lane == "alert" or digests < maximum - share)
            assert (got[0] is not None) == may
            if may:
                held[lane].append(got)
        elif held[lane]:
            pair = held[lane][pick % len(held[lane])]
            if op == "release":
                held[lane].remove(pair)
                shared.release(relay, pair[0])
                local.release(relay, pair[1])
            else:
                assert shared.renew(relay, pair[0]) and local.renew(relay, pair[1])
        counts = {"alert": len(held["alert"]), "general": len(held["digest"])}
        assert shared.counts(relay) == local.counts(relay) == counts
        assert counts["alert"] + counts["general"] <= maximum
        assert counts["general"] <= maximum - share


# ------------------------------------------------------------------ expiry and renewal


def _expire(url: str, prefix: str, relay: str, slot: str) -> None:
    """Make a slot's holder look dead: its expiry (the score) is in the past."""
    key = f"{prefix}nashra:smtpcap:{{{relay}}}:{slot[0]}"
    assert _raw(url).zadd(key, {slot: 1}, xx=True, ch=True) == 1


def test_an_expired_holders_slot_comes_back(redis_url):
    s = _settings(2, 1)
    dead, alive = ConnectionCap(s), ConnectionCap(s)
    relay = _relay()
    slot = dead.acquire(relay, "digest")
    assert alive.acquire(relay, "digest") is None
    _expire(redis_url, s.redis_key_prefix, relay, slot)
    assert alive.acquire(relay, "digest") is not None
    assert alive.counts(relay) == {"alert": 0, "general": 1}


def test_renew_keeps_a_slot_and_says_false_when_a_lost_slot_no_longer_fits(redis_url):
    s = _settings(2, 1)
    cap, other = ConnectionCap(s), ConnectionCap(s)
    relay = _relay()
    slot = cap.acquire(relay, "digest")
    assert cap.renew(relay, slot) is True
    assert cap.counts(relay) == {"alert": 0, "general": 1}

    _expire(redis_url, s.redis_key_prefix, relay, slot)  # the holder stalled past the TTL…
    taken = other.acquire(relay, "digest")  # …and someone else took the room
    assert taken is not None
    assert cap.renew(relay, slot) is False  # close the connection
    other.release(relay, taken)
    assert cap.renew(relay, slot) is True  # room again: taken back under the same rule
    assert cap.renew(relay, "not-a-slot") is False


def test_after_redis_restarts_empty_holders_register_again_on_renew(redis_url):
    s = _settings(3, 1)
    cap = ConnectionCap(s)
    relay = _relay()
    slots = [cap.acquire(relay, "digest"), cap.acquire(relay, "digest"), cap.acquire(relay, "alert")]
    raw = _raw(redis_url)
    for key in raw.scan_iter(match=f"{s.redis_key_prefix}nashra:smtpcap:*"):
        raw.delete(key)
    assert cap.counts(relay) == {"alert": 0, "general": 0}
    assert all(cap.renew(relay, slot) for slot in slots)
    assert cap.counts(relay) == {"alert": 1, "general": 2}
    assert cap.acquire(relay, "digest") is None  # the cap holds again


def test_release_is_harmless_twice_and_for_unknown_slots(redis_url):
    cap = ConnectionCap(_settings(2, 1))
    relay = _relay()
    slot = cap.acquire(relay, "digest")
    cap.release(relay, slot)
    cap.release(relay, slot)
    cap.release(relay, "g.unknown")
    cap.release(relay, "garbage")
    assert cap.counts(relay) == {"alert": 0, "general": 0}


_HOLDER = """
import sys, time
from service.config import load_settings
from service.delivery.connection_cap import ConnectionCap
cap = ConnectionCap(load_settings(smtp_max_connections=3, smtp_alert_connections=1), ttl_seconds=1.0)
slots = [cap.acquire(sys.argv[1], lane) for lane in ("digest", "digest", "alert")]
print("held" if all(slots) else "failed", flush=True)
time.sleep(600)
"""


def test_a_sigkilled_holder_frees_its_slots_within_the_ttl(redis_url, tmp_path):
    relay = _relay()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, relay], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = ""
        while line not in ("held", "failed") and child.poll() is None:
            line = child.stdout.readline().strip()  # (skipping any log line)
        assert line == "held", line or child.stderr.read()
        cap = ConnectionCap(_settings(3, 1))
        assert cap.acquire(relay, "alert") is None  # the other process holds all three
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        # No renewals any more: within the child's TTL (1 s) every slot is free again.
        got = [cap.acquire(relay, lane, wait_seconds=20) for lane in ("digest", "digest", "alert")]
        assert all(got)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        child.stdout.close()
        child.stderr.close()


def test_a_waiting_acquire_gets_the_slot_released_meanwhile(redis_url):
    s = _settings(2, 1)
    holder, waiter = ConnectionCap(s), ConnectionCap(s)
    relay = _relay()
    slot = holder.acquire(relay, "digest")
    started = threading.Event()
    result: list[str | None] = []

    def wait_for_slot():
        started.set()
        result.append(waiter.acquire(relay, "digest", wait_seconds=30))

    t = threading.Thread(target=wait_for_slot)
    t.start()
    started.wait(10)
    holder.release(relay, slot)
    t.join(30)
    assert result and result[0] is not None


# ------------------------------------------------------------------ without Redis


def test_without_redis_a_process_local_cap_with_the_same_rule():
    s = _settings(3, 1)
    assert s.redis_url is None
    a, b = ConnectionCap(s), ConnectionCap(s)
    assert not a.shared
    relay = _relay()
    assert a.acquire(relay, "digest") and b.acquire(relay, "digest")
    assert a.acquire(relay, "digest") is None  # one process: the instances share its cap
    alert = b.acquire(relay, "alert")
    assert alert and a.acquire(relay, "alert") is None
    a.release(relay, alert)
    assert b.acquire(relay, "alert") is not None


def test_without_redis_a_holder_that_stops_renewing_loses_its_slot():
    s = _settings(2, 1)
    short = ConnectionCap(s, ttl_seconds=0.05)
    relay = _relay()
    assert short.acquire(relay, "digest") is not None  # never renewed
    other = ConnectionCap(s)
    assert other.acquire(relay, "digest", wait_seconds=20) is not None


def test_unreachable_redis_fails_open_to_the_local_cap_and_logs_once(monkeypatch):
    port = free_port()
    monkeypatch.setattr(shared_redis, "REDIS_RETRY_AFTER", 0.0)  # try Redis at every call
    cap = ConnectionCap(_settings(3, 1, redis_url=f"redis://127.0.0.1:{port}/0"))
    relay = _relay()
    with capture_logs() as logs:
        slots = [cap.acquire(relay, "digest") for _ in range(3)]
        assert slots[0] and slots[1] and slots[2] is None  # the rule still holds, locally
        assert cap.renew(relay, slots[0])
        cap.release(relay, slots[0])
        assert cap.counts(relay) == {"alert": 0, "general": 1}
    events = [e for e in logs if e["event"] == "smtp_cap.redis_unavailable"]
    assert len(events) == 1
    assert events[0]["log_level"] == "warning"
    text = repr(events)
    assert "127.0.0.1" not in text and str(port) not in text


# ------------------------------------------------------------------ settings


def test_connection_settings_defaults():
    s = load_settings()
    assert (s.smtp_connections, s.smtp_max_connections, s.smtp_alert_connections) == (20, 100, 20)
    cap = ConnectionCap(s)
    assert (cap.max_connections, cap.alert_connections, cap.ttl_seconds) == (100, 20, 30.0)
    assert cap.renew_every == 10.0


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"SMTP_CONNECTIONS": "0"}, "SMTP_CONNECTIONS"),
        ({"SMTP_MAX_CONNECTIONS": "0"}, "SMTP_MAX_CONNECTIONS"),
        ({"SMTP_ALERT_CONNECTIONS": "0"}, "SMTP_ALERT_CONNECTIONS"),
        ({"SMTP_MAX_CONNECTIONS": "10", "SMTP_ALERT_CONNECTIONS": "10"}, "SMTP_ALERT_CONNECTIONS"),
        ({"SMTP_MAX_CONNECTIONS": "many"}, "SMTP_MAX_CONNECTIONS"),
    ],
)
def test_bad_connection_settings_name_the_variable(monkeypatch, env, needle):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert needle in str(err.value)


def test_connection_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("SMTP_CONNECTIONS", "40")
    monkeypatch.setenv("SMTP_MAX_CONNECTIONS", "50")
    monkeypatch.setenv("SMTP_ALERT_CONNECTIONS", "10")
    s = load_settings()
    assert (s.smtp_connections, s.smtp_max_connections, s.smtp_alert_connections) == (40, 50, 10)
