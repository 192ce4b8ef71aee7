"""RATE_PER_HOUR is the provider's quota: alerts count against it and wait for it too, yet
go first within it — an alert the hour holds back takes every slot that frees before any
digest does (service/delivery/throttle.py).  Against real Redis (db 15), and the
process-local fallback where the same rule must hold."""

from __future__ import annotations

import threading
import time
import uuid

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.config import load_settings, reset_settings
from service.db import session_scope
from service.delivery import control, throttle
from tests.conftest import TEST_REDIS_URL
from tests.support.delivery import ledger, planned_edition, run_all_batches


def _settings(backend: str, **kw):
    if backend == "redis":
        # a prefix of its own per call: each example starts from empty buckets
        kw.update(redis_url=TEST_REDIS_URL, redis_key_prefix=f"nashra-test-hourly-{uuid.uuid4().hex}:")
    return load_settings(**kw)


def _try(lim: throttle.Limiter, kind: str, domain: str = "example.com") -> float:
    """Seconds this message would wait (0: it may go now, and was counted)."""
    return lim._try(throttle.buckets_for(lim.settings, kind, domain))


@pytest.fixture(params=["redis", "local"])
def backend(request):
    if request.param == "redis":
        request.getfixturevalue("redis_url")  # skips (or fails) clearly when Redis is missing
    return request.param


def test_alerts_count_against_the_hour_and_then_wait_for_it(backend):
    s = _settings(backend, rate_per_hour=3, alert_rate_per_second=1000)
    lim = throttle.Limiter(s)
    assert [_try(lim, "alert") for _ in range(3)] == [0, 0, 0]
    assert _try(lim, "alert") > 3000  # the fourth alert of the hour waits for the window
    assert _try(lim, "digest") > 0  # and so does a digest: three messages, not six


def test_an_hour_spent_on_digests_holds_an_alert_back(backend):
    s = _settings(backend, rate_per_hour=2, rate_per_second=100, alert_rate_per_second=1000)
    lim = throttle.Limiter(s)
    assert _try(lim, "digest") == 0 and _try(lim, "digest") == 0
    assert _try(lim, "alert") > 3000  # the provider would refuse it (or worse): it waits


def test_per_second_alerts_still_go_ahead_of_digests(backend):
    s = _settings(backend, rate_per_hour=1000, rate_per_second=10, alert_rate_per_second=100)
    lim = throttle.Limiter(s)
    assert _try(lim, "digest") == 0
    assert _try(lim, "digest") > 0  # the second's budget is used
    assert [_try(lim, "alert") for _ in range(5)] == [0] * 5  # an alert does not wait for it


def test_a_waiting_alert_takes_the_freed_slots_before_a_digest(backend, monkeypatch):
    monkeypatch.setattr(throttle, "HOUR_MS", 1500.0)  # an "hour" of a second and a half
    s = _settings(backend, rate_per_hour=2, alert_rate_per_second=1000)
    lim = throttle.Limiter(s)
    assert _try(lim, "digest") == 0 and _try(lim, "digest") == 0  # the hour is spent
    t0 = time.monotonic()
    done: dict[str, float] = {}

    def wait(kind: str) -> None:
        lim.wait(kind, "example.com")
        done[kind] = time.monotonic() - t0

    digest = threading.Thread(target=wait, args=("digest",))
    digest.start()  # the digest was waiting first …
    time.sleep(0.2)
    alert = threading.Thread(target=wait, args=("alert",))
    alert.start()
    digest.join(10)
    alert.join(10)
    # … yet the alert went as soon as the window freed, and the digest after it
    assert done["alert"] < 1.8, done
    assert done["alert"] < done["digest"], done


def test_the_flag_lets_digests_go_on_once_no_alert_waits(backend, monkeypatch):
    monkeypatch.setattr(throttle, "HOUR_MS", 500.0)
    s = _settings(backend, rate_per_hour=1, alert_rate_per_second=1000)
    lim = throttle.Limiter(s)
    assert _try(lim, "digest") == 0
    assert _try(lim, "alert") > 0  # held back: raises the flag
    time.sleep(0.6)
    assert _try(lim, "digest") > 0  # the slot freed, but an alert may still want it
    assert _try(lim, "alert") == 0  # and takes it
    time.sleep(throttle.FLAG_MS / 1000 + 0.6)  # the alerts are done; the flag and the window lapse
    assert _try(lim, "digest") == 0


@hypothesis.settings(max_examples=40, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@given(per_hour=st.integers(1, 6), kinds=st.lists(st.sampled_from(["alert", "digest"]), min_size=1, max_size=20))
def test_no_mix_of_alerts_and_digests_passes_the_hour(backend, per_hour, kinds):
    s = _settings(backend, rate_per_hour=per_hour, rate_per_second=0, alert_rate_per_second=1000)
    lim = throttle.Limiter(s)
    went = [_try(lim, kind) == 0 for kind in kinds]
    # exactly the first `per_hour` messages go, whatever their kind; nothing after
    assert went == [i < per_hour for i in range(len(kinds))]


# ------------------------------------------------------------------ through the send engine


def test_an_alert_edition_waits_for_the_hour_a_digest_spent(pg_env, redis_url, smtp_sink, monkeypatch):
    monkeypatch.setenv("RATE_PER_HOUR", "3")
    reset_settings()
    digest = planned_edition(3, alerts=False)
    run_all_batches(digest)
    assert len(smtp_sink.wait_for(3, timeout=20)) == 3
    alert = planned_edition(2, kind="alert", prefix="alert")
    worker = threading.Thread(target=run_all_batches, args=(alert,), daemon=True)
    worker.start()
    time.sleep(1.5)  # before, the alert went at once: a fourth and fifth message in the hour
    assert len(smtp_sink.messages) == 3
    with session_scope() as s:
        control.pause(s, alert, actor="editor:1")  # the waiting batch notices and stops
    worker.join(15)
    assert not worker.is_alive()
    assert set(ledger(alert).values()) == {"queued"}  # nothing lost: resumed, it goes when the hour frees
