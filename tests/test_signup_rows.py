"""A new address's signup in one round trip (service/subscribers/signup_rows.py) writes
what the ORM path wrote, on PostgreSQL and on SQLite: the pending reader, the audit line,
the consent record, the per-address confirmation count; nothing when it rolls back."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from service import dispatch
from service.config import reset_settings
from service.db import session_scope
from service.models import (
    AUDIT_ORIGIN,
    AuditLog,
    Consent,
    Frequency,
    Newsletter,
    NewsletterKind,
    RateCounter,
    Subscriber,
    SubscriberStatus,
    Subscription,
)
from service.newsletters import membership
from service.subscribers import consent, lifecycle
from service.subscribers.consent import Evidence
from service.usecases import signups
from tests.support.logs import json_log_lines

NOW = dt.datetime(2026, 12, 7, 10, 5, tzinfo=dt.UTC)
EVIDENCE = Evidence(ip="203.0.113.77", user_agent="Mozilla/5.0 (X11)", form_url="https://news.example/signup",
                    text_version=consent.CURRENT)


@pytest.fixture(params=["postgresql", "sqlite"])
def store(request, monkeypatch):
    """Each test on both databases, without Redis (the counters are in the database)."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("CONFIRM_BUDGET_PER_DOMAIN", "0")
    monkeypatch.setenv("CONFIRM_BUDGET_TOTAL", "0")
    request.getfixturevalue("pg_env" if request.param == "postgresql" else "sqlite_env")
    reset_settings()
    recorder = dispatch.Recorder()
    previous = dispatch._installed
    dispatch.install(recorder)
    yield recorder
    dispatch.install(previous)


def sign_up(email: str, now: dt.datetime = NOW, evidence: Evidence | None = EVIDENCE, *,
            newsletters=("weekly",), sections=(2, 1), **kw):
    args = dict(consent_source="web:embed", digest_hour=7, digest_weekday=3, time_zone="Asia/Riyadh")
    args.update(kw)
    with session_scope(write=True) as s:
        # None asked for: what the one statement writes then (a form refuses it before).
        picks = signups.picks(signups.choose(s, list(newsletters)), list(sections)) if newsletters else []
        return lifecycle.signup(s, email=email, now=now, evidence=evidence, picks=picks, **args)


def subscriptions(s, subscriber_id: int) -> dict:
    """slug → (sections, digest hour, digest weekday, quiet mode, alerts today)."""
    return {x.newsletter.slug: (x.sections, x.digest_hour, x.digest_weekday, x.quiet_mode, x.alerts_today)
            for x in membership.of(s, subscriber_id)}


def test_new_address_rows(store):
    token = AUDIT_ORIGIN.set("web 203.0.113.77")
    try:
        result = sign_up("new@example.com")
    finally:
        AUDIT_ORIGIN.reset(token)
    assert (result.outcome, result.confirmation_queued) == ("created", True)
    assert store.calls == [("send_transactional", "confirm", result.subscriber_id)]
    with session_scope() as s:
        sub = s.scalar(sa.select(Subscriber))
        assert (sub.id, sub.email, sub.status) == (result.subscriber_id, "new@example.com", SubscriberStatus.pending)
        assert subscriptions(s, sub.id) == {"weekly": ([2, 1], 7, 3, "hold", 0)}
        assert (sub.consent_source, sub.consented_at, sub.confirmed_at, sub.token_version) == (
            "web:embed", NOW, None, 1)
        assert sub.time_zone == "Asia/Riyadh"
        assert sub.created_at is not None and sub.updated_at is not None and sub.confirmation_due_at is None
        line = s.scalar(sa.select(AuditLog))
        target = f"subscriber:{sub.id}"
        assert (line.actor, line.action, line.target, line.details, line.origin) == (
            target, "signup", target, {"source": "web:embed"}, "web 203.0.113.77")
        record = s.scalar(sa.select(Consent))
        assert (record.subscriber_id, record.event, record.at, record.source) == (sub.id, "signup", NOW, "web:embed")
        assert (record.ip, record.user_agent, record.form_url) == (
            "203.0.113.0/24", "Mozilla/5.0 (X11)", "https://news.example/signup")
        assert (record.text_version, record.text) == (consent.CURRENT, consent.text_of(consent.CURRENT))
        counter = s.scalar(sa.select(RateCounter))
        assert (counter.bucket, counter.count) == ("confirm-mail", 1)
        assert "new@example.com" not in counter.key
        # What the reader is shown of it is what an ORM-written record shows.
        assert consent.history(s, sub)[0]["consent_text"] == consent.text_of(consent.CURRENT)


def test_rolled_back_signup_writes_and_sends_nothing(store):
    with pytest.raises(RuntimeError), session_scope() as s:
        picks = signups.picks(signups.choose(s, ["daily", "alerts"]), [])
        lifecycle.signup(s, email="gone@example.com", picks=picks, consent_source="web:form", now=NOW,
                         evidence=EVIDENCE)
        raise RuntimeError("the request failed after the signup")
    assert store.calls == []
    with session_scope() as s:
        for model in (Subscriber, Subscription, AuditLog, Consent, RateCounter):
            assert s.scalar(sa.select(sa.func.count()).select_from(model)) == 0


def test_the_per_address_cap_counts_the_first_signup(store):
    """Three confirmations a day to one address, the first one (the one-statement path)
    included: sign up, leave, sign up again … the fourth is capped and writes nothing."""
    outcomes = []
    for minutes in range(0, 40, 10):
        result = sign_up("again@example.com", now=NOW + dt.timedelta(minutes=minutes))
        outcomes.append(result.outcome)
        with session_scope() as s:
            sub = s.get(Subscriber, result.subscriber_id)
            lifecycle.unsubscribe(s, sub, actor="test", now=NOW + dt.timedelta(minutes=minutes + 1))
    assert outcomes == ["created", "created", "created", "capped"]
    assert [c[1] for c in store.calls] == ["confirm"] * 3
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Consent)) == 3
        assert s.scalar(sa.select(RateCounter.count)) == 3


def test_existing_addresses_take_the_locked_path(store):
    first = sign_up("twice@example.com")
    again = sign_up("twice@example.com", now=NOW + dt.timedelta(minutes=1))
    later = sign_up("twice@example.com", now=NOW + dt.timedelta(minutes=11), sections=[1], time_zone=None,
                    newsletters=["daily", "alerts"], digest_weekday=None)
    assert [r.outcome for r in (first, again, later)] == ["created", "refreshed", "resent"]
    assert first.subscriber_id == again.subscriber_id == later.subscriber_id
    with session_scope() as s:
        sub = s.scalar(sa.select(Subscriber))
        assert (sub.time_zone, sub.consented_at) == (None, NOW + dt.timedelta(minutes=11))
        # The newer signup's newsletters replace the older's, with its choices.
        assert subscriptions(s, sub.id) == {"daily": ([1], 7, None, "hold", 0), "alerts": ([], None, None, "hold", 0)}
        assert s.scalar(sa.select(sa.func.count()).select_from(Consent)) == 2
        assert s.scalar(sa.select(RateCounter.count)) == 2


def test_several_newsletters_in_the_one_statement(store):
    """Every newsletter chosen is a subscription row written with the reader: digests with
    the sections, hour and day, alerts with their defaults; none chosen, none written."""
    result = sign_up("many@example.com", newsletters=["alerts", "daily", "weekly"])
    nothing = sign_up("none@example.com", newsletters=[])
    with session_scope() as s:
        assert subscriptions(s, result.subscriber_id) == {
            "daily": ([2, 1], 7, 3, "hold", 0), "weekly": ([2, 1], 7, 3, "hold", 0),
            "alerts": ([], None, None, "hold", 0)}
        assert subscriptions(s, nothing.subscriber_id) == {}


def test_a_digest_of_some_sections_keeps_the_readers_among_them(store):
    with session_scope() as s:
        s.add(Newsletter(slug="sport", name="الرياضة", kind=NewsletterKind.digest, frequency=Frequency.weekly,
                         sections=[2, 5], position=5))
    result = sign_up("sport@example.com", newsletters=["sport", "daily"], sections=[1, 2])
    with session_scope() as s:
        rows = subscriptions(s, result.subscriber_id)
        assert (rows["daily"][0], rows["sport"][0]) == ([1, 2], [2])


def test_held_confirmation_on_the_new_path(store, monkeypatch):
    monkeypatch.setenv("CONFIRM_BUDGET_PER_DOMAIN", "1")
    reset_settings()
    first = sign_up("a@flood.example")
    assert first.outcome == "created"
    held = sign_up("b@flood.example")
    assert (held.outcome, held.confirmation_queued) == ("held", False)
    assert [c[2] for c in store.calls] == [first.subscriber_id]
    with session_scope() as s:
        assert s.get(Subscriber, held.subscriber_id).confirmation_due_at > NOW


def test_logs_name_the_reader_by_id_only(store):
    with json_log_lines() as lines:
        result = sign_up("private.reader@example.com")
    recorded = [line for line in lines if line.get("event") == "signup_recorded"]
    assert recorded and recorded[-1]["subscriber_id"] == result.subscriber_id
    assert "private.reader" not in str(lines)


_text = st.text(st.characters(codec="utf-8"), max_size=600)


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ip=_text, user_agent=_text, form_url=_text | st.just("https://news.example/ok"),
       version=st.sampled_from([consent.CURRENT, "1999-01", ""]) | _text)
def test_any_evidence_is_recorded_as_the_orm_records_it(store, ip, user_agent, form_url, version):
    """Whatever a client sends as its user agent, form URL or consent version, the
    consent row of a new address is what `consent.record` writes for the same evidence."""
    evidence = Evidence(ip=ip, user_agent=user_agent, form_url=form_url, text_version=version)
    with session_scope() as s:
        s.execute(sa.delete(Consent))
        s.execute(sa.delete(Subscription))
        s.execute(sa.delete(Subscriber))
    result = sign_up("fuzz@example.com", evidence=evidence)
    with session_scope() as s:
        consent.record(s, result.subscriber_id, "confirm", evidence, source="web:embed", now=NOW)
    with session_scope() as s:
        rows = s.scalars(sa.select(Consent).order_by(Consent.id)).all()
        fields = [(c.source, c.ip, c.user_agent, c.form_url, c.text_version, c.text) for c in rows]
        assert [c.event for c in rows] == ["signup", "confirm"]
        assert fields[0] == fields[1]


def test_now_and_then_a_signup_purges_expired_counters_only(store, monkeypatch):
    """The purge a counting request does now and then goes by that request's time: a
    counter whose window ended goes, a live one (of any bucket) stays."""
    with session_scope() as s:
        s.add_all([RateCounter(bucket="subscribe", key="h:old", window=1, count=4,
                               expires_at=NOW - dt.timedelta(seconds=1)),
                   RateCounter(bucket="subscribe", key="h:live", window=2, count=4,
                               expires_at=NOW + dt.timedelta(seconds=60))])
    monkeypatch.setattr("service.subscribers.signup_rows.random.randrange", lambda n: 0)
    sign_up("purge@example.com")
    with session_scope() as s:
        keys = set(s.scalars(sa.select(RateCounter.key)))
    assert "h:old" not in keys and "h:live" in keys and len(keys) == 2
