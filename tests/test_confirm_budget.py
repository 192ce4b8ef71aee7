"""Issue 22, item 4: a signup flood from many addresses on one domain reaches few inboxes.

Beyond CONFIRM_BUDGET_PER_DOMAIN (or CONFIRM_BUDGET_TOTAL) confirmations an hour, signups
are accepted with the same answer but their confirmations are held and trickle out with
beat's job; on a real PostgreSQL, Redis, Celery worker and SMTP sink."""

from __future__ import annotations

import datetime as dt
import json
import re
import time

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from service import limits
from service.config import reset_settings
from service.db import session_scope
from service.models import Subscriber, SubscriberStatus
from service.subscribers import confirm_budget, consent, lifecycle, privacy
from service.subscribers.confirm_budget import domain_key
from service.usecases import signups
from service.usecases.confirmations import release_held
from tests.support.logs import json_log_lines
from tests.support.readers import reader

T0 = dt.datetime(2026, 12, 7, 10, 5, tzinfo=dt.UTC)  # five minutes into an hour's window


@pytest.fixture
def budget(monkeypatch):
    def set_budget(per_domain: int, total: int) -> None:
        monkeypatch.setenv("CONFIRM_BUDGET_PER_DOMAIN", str(per_domain))
        monkeypatch.setenv("CONFIRM_BUDGET_TOTAL", str(total))
        reset_settings()
    return set_budget


def sign_up(email: str, now: dt.datetime) -> lifecycle.SignupResult:
    with session_scope() as s:
        picks = signups.picks(signups.choose(s, ["daily"]), [])
        return lifecycle.signup(s, email=email, picks=picks, consent_source="web:form", now=now)


def held() -> dict[str, dt.datetime]:
    with session_scope() as s:
        rows = s.execute(sa.select(Subscriber.email, Subscriber.confirmation_due_at)
                         .where(Subscriber.confirmation_due_at.is_not(None)).order_by(Subscriber.id)).all()
    return dict(rows)


def wait_quiet(sink, count: int) -> list[str]:
    """The sink's recipients once `count` arrived and nothing more came for a moment."""
    sink.wait_for(count, timeout=60)
    time.sleep(1.0)  # a message beyond the budget would arrive in this time
    return sink.recipients()


def test_the_domain_key_groups_subdomains_and_keeps_country_registries():
    assert domain_key("a@Mail.Victim.COM") == "victim.com"
    assert domain_key("a@b.c.victim.com") == domain_key("x@victim.com")
    assert domain_key("a@news.example.co.uk") == "example.co.uk"
    assert domain_key("a@example.com.jo") == "example.com.jo"
    assert domain_key("a@example.jo") == "example.jo"
    assert domain_key("a@localhost") == "localhost"


@hsettings(max_examples=200, deadline=None)
@given(st.emails())
def test_every_address_has_a_registrable_domain_key(address):
    key = domain_key(address)
    assert key and key == key.lower() and address.lower().endswith(key)
    if key.split(".")[0] not in confirm_budget._SECOND_LEVEL:  # not an address at a registry (x@co.uk)
        assert domain_key("x@a.b." + address.rpartition("@")[2]) == key  # its subdomains share its budget


def test_a_flood_of_200_addresses_on_one_domain_is_held_to_the_budget(
        pg_env, redis_url, smtp_sink, celery_worker_factory, budget):
    budget(20, 10_000)
    victims = [f"victim{i:03d}@{'mx.' if i % 3 else ''}victim.example" for i in range(200)]
    with celery_worker_factory(queues=("default",), concurrency=2):
        results = [sign_up(email, T0 + dt.timedelta(seconds=i)) for i, email in enumerate(victims)]
        # A real reader of another domain, in the middle of the flood, is not held.
        assert sign_up("reader@other.example", T0 + dt.timedelta(minutes=5)).confirmation_queued
        sent = wait_quiet(smtp_sink, 21)
        assert sorted(sent) == sorted(victims[:20] + ["reader@other.example"])
        assert [r.outcome for r in results] == ["created"] * 20 + ["held"] * 180
        waiting = held()
        assert list(waiting) == victims[20:]  # in the order they came
        # From the next hour on, at half the budget's pace: one every 2 × 3600 / 20 s.
        assert list(waiting.values()) == [dt.datetime(2026, 12, 7, 11, tzinfo=dt.UTC) + dt.timedelta(seconds=360 * k)
                                          for k in range(180)]

        # Signing up again keeps one's place: nothing is sent, the due time stays.
        again = sign_up(victims[-1], T0 + dt.timedelta(minutes=30))
        assert again.outcome == "held" and not again.confirmation_queued
        assert held()[victims[-1]] == waiting[victims[-1]]

        # Beat's trickle, driven with explicit times: nothing is due within the flood's hour …
        assert release_held(T0 + dt.timedelta(minutes=50))["sent"] == 0
        # … half past eleven: the places up to 11:30 (six), then the rest of that hour (four).
        assert release_held(dt.datetime(2026, 12, 7, 11, 30, tzinfo=dt.UTC))["sent"] == 6
        assert release_held(dt.datetime(2026, 12, 7, 11, 59, 59, tzinfo=dt.UTC))["sent"] == 4
        assert sorted(wait_quiet(smtp_sink, 31)) == sorted(victims[:30] + ["reader@other.example"])
        # The trickle stopped for three hours: 30 are due, but one hour's budget is 20.
        late = release_held(dt.datetime(2026, 12, 7, 14, 59, tzinfo=dt.UTC))
        assert (late["sent"], late["deferred"]) == (20, 10)
        assert sorted(wait_quiet(smtp_sink, 51)) == sorted(victims[:50] + ["reader@other.example"])
        assert min(held().values()) == dt.datetime(2026, 12, 7, 15, tzinfo=dt.UTC)
        assert list(held()) == victims[50:]  # still in order
    assert smtp_sink.copies().most_common(1)[0][1] == 1  # nobody got two

    # Held and never confirmed: gone after PENDING_DAYS like any other pending signup.
    with session_scope() as s:
        assert confirm_budget.held_count(s) == 150
        privacy.purge_batch(s, T0 + dt.timedelta(days=8))
    with session_scope() as s:
        assert confirm_budget.held_count(s) == 0
        assert s.scalar(sa.select(sa.func.count()).select_from(Subscriber)
                        .where(Subscriber.status == SubscriberStatus.pending)) == 0


def test_the_total_budget_holds_every_domain(pg_env, redis_url, budget):
    budget(0, 3)
    with json_log_lines() as lines:
        results = [sign_up(f"r{i}@d{i}.example", T0) for i in range(5)]
        release_held(T0 + dt.timedelta(hours=1))
    held_lines = [x for x in lines if x["event"] == "confirmation_held"]
    assert [x["subscriber_id"] for x in held_lines] == [results[3].subscriber_id, results[4].subscriber_id]
    assert "held_confirmations_released" in {x["event"] for x in lines}
    assert "d3.example" not in json.dumps(lines)  # ids in the logs, never an address or its domain
    assert [r.confirmation_queued for r in results] == [True, True, True, False, False]
    assert list(held()) == ["r4@d4.example"]  # the next hour's trickle sent the first one
    # Operators see them on /metrics; overdue (the trickle not running) once long past due.
    from service.web.app import create_app

    with TestClient(create_app()) as client:
        body = client.get("/metrics").text
    assert "nashra_confirmations_held 1.0" in body and "nashra_confirmations_held_overdue " in body
    with session_scope() as s:  # due at 11:40 (the total's pace: 2 × 3600 / 3 s): overdue ten minutes later
        assert confirm_budget.held_counts(s, T0) == (1, 0)
        assert confirm_budget.held_counts(s, T0 + dt.timedelta(hours=2)) == (1, 1)


def test_a_flood_naming_readers_already_here_mails_their_links_within_the_budget(pg_env, redis_url, budget):
    """«إدارة اشتراكك» for readers already subscribed counts against the same budget: a flood
    that names 6 readers of one domain with a budget of 3 mails 3 of them this hour."""
    budget(3, 0)
    ids = []
    with session_scope() as s:
        for i in range(6):
            ids.append(reader(s, f"r{i}@known.example", confirmed_at=T0).id)

    def mailed() -> list[int]:  # the readers whose link was queued (their row is marked)
        with session_scope() as s:
            return list(s.scalars(sa.select(Subscriber.id).where(Subscriber.manage_link_at.is_not(None))
                                  .order_by(Subscriber.id)))

    with json_log_lines() as lines:
        results = [sign_up(f"r{i}@known.example", T0) for i in range(6)]
    assert {r.outcome for r in results} == {"already_active"}  # the same answer for all six
    assert mailed() == ids[:3]
    assert [x["subscriber_id"] for x in lines if x["event"] == "manage_link_over_budget"] == ids[3:]
    # The next hour has room again for the one who asks again.
    sign_up("r5@known.example", T0 + dt.timedelta(hours=1))
    assert mailed() == ids[:3] + [ids[5]]


def test_no_budget_holds_nothing(pg_env, redis_url, budget):
    budget(0, 0)
    assert all(sign_up(f"r{i}@same.example", T0).confirmation_queued for i in range(30))
    assert held() == {}


def test_without_redis_the_database_keeps_the_budget(pg_env, budget):
    budget(2, 0)
    assert [sign_up(f"r{i}@same.example", T0).confirmation_queued for i in range(4)] == [True, True, False, False]
    verdicts = limits.hit_many([("confirm-domain", "same.example", 2), ("confirm-total", "*", 10)], 3600,
                               now=T0.timestamp())
    assert [(v.allowed, v.count) for v in verdicts] == [(False, 5), (True, 1)]


def test_held_and_unheld_signups_get_the_same_answer(live_server, budget):
    budget(1, 0)
    site = live_server
    api = [httpx.post(site + "/api/subscribe", json={"email": f"api{i}@victim.example", "consent": consent.CURRENT})
           for i in range(3)]
    assert {a.status_code for a in api} == {202} and len({a.text for a in api}) == 1
    pages = []
    for i in range(2):
        form = httpx.get(site + "/")
        csrf_token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        pages.append(httpx.post(site + "/subscribe", data={
            "email": f"form{i}@victim.example", "frequency": "daily", "consent": "yes", "csrf_token": csrf_token}))
    assert {p.status_code for p in pages} == {200} and pages[0].text == pages[1].text
    # One confirmation went (the hour's budget of 1), the four others wait: nobody could tell.
    assert list(held()) == ["api1@victim.example", "api2@victim.example", "form0@victim.example",
                            "form1@victim.example"]


def test_beat_runs_the_trickle_every_minute_on_the_default_queue():
    from service.config import load_settings
    from service.jobs import names
    from service.jobs.app import celery_config

    entry = celery_config(load_settings())["beat_schedule"]["release-held-confirmations"]
    assert entry["task"] == names.RELEASE_HELD_CONFIRMATIONS and entry["schedule"] == 60.0
    assert names.FIXED_ROUTES[names.RELEASE_HELD_CONFIRMATIONS] == names.DEFAULT


def test_the_embedded_defaults_keep_the_budget_too(sqlite_env, budget):
    """SQLite and no Redis (`nashra demo`): the counts are upserts in the signup's own
    transaction, and the trickle's query works on SQLite's dates."""
    budget(1, 0)
    assert [sign_up(f"r{i}@same.example", T0).confirmation_queued for i in range(3)] == [True, False, False]
    assert release_held(T0 + dt.timedelta(minutes=30))["sent"] == 0
    assert release_held(dt.datetime(2026, 12, 7, 13, 59, tzinfo=dt.UTC)) == {"sent": 1, "deferred": 1, "domains": 1}
    assert list(held()) == ["r2@same.example"]
