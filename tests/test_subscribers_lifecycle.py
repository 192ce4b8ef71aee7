"""The plain subscriber functions, on PostgreSQL, each test rolled back."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from service.models import AuditLog, Editor, Subscriber, SubscriberStatus
from service.newsletters import catalogue, membership
from service.staff.editors import authenticate, create_editor, hash_token
from service.subscribers import lifecycle
from service.subscribers.errors import InvalidInput
from service.subscribers.suppression import is_suppressed, suppress
from service.subscribers.tokens import BadToken, make_token
from service.subscribers.validation import normalise_email
from service.usecases import signups
from tests.support.logs import json_log_lines


@pytest.fixture(autouse=True)
def _empty_tables(db_session):
    """Start from empty tables whatever earlier committing tests left (rolled back after)."""
    from service.models import Base

    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    db_session.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    catalogue.seed_first(db_session)  # daily, weekly, alerts, as after migration 0008


@pytest.fixture
def no_broker(monkeypatch):
    """Record what would be queued after commit instead of talking to a broker."""
    sent = []
    monkeypatch.setattr("service.subscribers.lifecycle.queue_transactional",
                        lambda session, kind, sid: sent.append((kind, sid)))
    return sent


def _signup(s, email="reader@example.com", newsletters=("daily", "alerts"), sections=(), **kw):
    picks = signups.picks(signups.choose(s, list(newsletters)), list(sections))
    args = dict(email=email, picks=picks, consent_source="web:form")
    args.update(kw)
    return lifecycle.signup(s, **args)


def _on(s, subscriber_id) -> list[str]:
    return [x.newsletter.slug for x in membership.of(s, subscriber_id)]


@pytest.mark.parametrize("raw,expected", [
    ("  Reader@Example.COM ", "reader@example.com"),
    ("reader@bücher.example", "reader@xn--bcher-kva.example"),
])
def test_normalise_email(raw, expected):
    assert normalise_email(raw) == expected


@pytest.mark.parametrize("raw", ["a@b.com\nBcc: x@y.com", "x" * 10_000 + "@example.com", "a@", "@b.com",
                                 "a b@example.com", "قارئ@example.com", None, 42, "a@b.com, c@d.com"])
def test_normalise_email_refuses(raw):
    with pytest.raises(InvalidInput) as info:
        normalise_email(raw)
    assert info.value.field == "email" and info.value.message


def test_signup_then_confirm_then_unsubscribe(db_session, no_broker):
    result = _signup(db_session)
    assert result.outcome == "created" and result.confirmation_queued
    sub = db_session.get(Subscriber, result.subscriber_id)
    token = make_token("confirm", sub.id, sub.token_version)
    lifecycle.confirm(db_session, token)
    assert sub.status is SubscriberStatus.active and _on(db_session, sub.id) == ["daily", "alerts"]
    assert no_broker == [("confirm", sub.id), ("welcome", sub.id)]
    lifecycle.confirm(db_session, token)  # again: no second welcome
    assert len(no_broker) == 2
    assert lifecycle.unsubscribe(db_session, sub, actor="test") is True
    assert lifecycle.unsubscribe(db_session, sub, actor="test") is False
    assert sub.token_version == 2 and _on(db_session, sub.id) == []  # leaving all: every subscription goes
    with pytest.raises(BadToken):
        lifecycle.confirm(db_session, token)  # old links die with the unsubscribe
    actions = list(db_session.scalars(select(AuditLog.action).order_by(AuditLog.id)))
    assert actions == ["signup", "confirm", "unsubscribe"]


def test_repeat_signup_of_pending_is_throttled_then_resent(db_session, no_broker):
    first = _signup(db_session)
    assert _on(db_session, first.subscriber_id) == ["daily", "alerts"]
    again = _signup(db_session, newsletters=["weekly"])
    assert again.outcome == "refreshed" and not again.confirmation_queued
    later = _signup(db_session, now=dt.datetime.now(dt.UTC) + lifecycle.RESEND_AFTER + dt.timedelta(seconds=1),
                    newsletters=["weekly"], sections=[], digest_hour=9)
    assert later.outcome == "resent" and later.subscriber_id == first.subscriber_id
    assert no_broker == [("confirm", first.subscriber_id)] * 2
    # The newer choice replaces the older: only weekly now, at their hour.
    assert _on(db_session, first.subscriber_id) == ["weekly"]
    assert membership.of(db_session, first.subscriber_id)[0].digest_hour == 9


def test_suppressed_address_gets_no_row_and_no_mail(db_session, no_broker):
    assert suppress(db_session, "Bounced@Example.com", "hard_bounce") is True
    assert suppress(db_session, "bounced@example.com", "complaint") is False
    assert is_suppressed(db_session, "bounced@example.com")
    result = _signup(db_session, email="bounced@example.com")
    assert result.outcome == "suppressed" and result.subscriber_id is None
    assert no_broker == []
    with pytest.raises(ValueError):
        suppress(db_session, "x@example.com", "because")


def test_unsubscribe_by_token_is_idempotent(db_session, no_broker):
    sub = db_session.get(Subscriber, _signup(db_session).subscriber_id)
    token = make_token("unsubscribe", sub.id, sub.token_version)
    lifecycle.unsubscribe_by_token(db_session, token)
    lifecycle.unsubscribe_by_token(db_session, token)
    assert sub.status is SubscriberStatus.unsubscribed and sub.token_version == 2
    with pytest.raises(BadToken):
        lifecycle.unsubscribe_by_token(db_session, make_token("unsubscribe", sub.id, 7))
    with pytest.raises(BadToken):
        lifecycle.unsubscribe_by_token(db_session, make_token("unsubscribe", sub.id + 1000, 1))


def test_pending_reader_has_their_subscriptions_with_their_choices(db_session, no_broker):
    result = _signup(db_session, newsletters=["alerts", "weekly", "daily"], sections=[], digest_hour=8,
                     digest_weekday=4)
    rows = {x.newsletter.slug: x for x in membership.of(db_session, result.subscriber_id)}
    assert list(rows) == ["daily", "weekly", "alerts"]  # the site's order
    assert (rows["daily"].digest_hour, rows["weekly"].digest_weekday) == (8, 4)
    assert (rows["alerts"].digest_hour, rows["alerts"].quiet_mode, rows["alerts"].alerts_today) == (None, "hold", 0)
    assert db_session.get(Subscriber, result.subscriber_id).status is SubscriberStatus.pending


def test_leaving_one_newsletter_keeps_the_others_and_the_last_one_leaves_all(db_session, no_broker):
    sub = db_session.get(Subscriber, _signup(db_session).subscriber_id)
    sub.status = SubscriberStatus.active
    daily, alerts = catalogue.by_slug(db_session, "daily"), catalogue.by_slug(db_session, "alerts")
    token = make_token("unsubscribe", sub.id, sub.token_version)
    assert lifecycle.leave_by_token(db_session, token, daily.id) == (sub, True)
    assert _on(db_session, sub.id) == ["alerts"] and sub.status is SubscriberStatus.active
    assert lifecycle.leave_by_token(db_session, token, daily.id) == (sub, False)  # a second click: nothing
    assert sub.token_version == 1  # the reader's links still work: they are still on alerts
    assert lifecycle.leave_by_token(db_session, token, alerts.id) == (sub, True)
    assert sub.status is SubscriberStatus.unsubscribed and sub.token_version == 2 and _on(db_session, sub.id) == []
    assert lifecycle.leave_by_token(db_session, token, alerts.id) == (sub, False)  # gone: still a fine click
    actions = list(db_session.scalars(select(AuditLog.action).order_by(AuditLog.id)))
    assert actions == ["signup", "leave", "leave", "unsubscribe"]


def test_editor_tokens_are_stored_hashed_and_authenticate(db_session):
    editor, token = create_editor(db_session, "سلمى", "admin")
    stored = db_session.scalar(select(Editor.token_hash).where(Editor.id == editor.id))
    assert stored == hash_token(token) and token not in stored and len(stored) == 64
    assert authenticate(db_session, token).id == editor.id
    assert authenticate(db_session, token + "x") is None
    assert authenticate(db_session, "") is None and authenticate(db_session, None) is None
    editor.active = False
    assert authenticate(db_session, token) is None
    with pytest.raises(ValueError):
        create_editor(db_session, "سلمى", "editor")
    with pytest.raises(ValueError):
        create_editor(db_session, "other", "owner")


def test_logs_carry_ids_never_the_address_or_token(db_session, no_broker):
    with json_log_lines() as lines:
        result = _signup(db_session, email="secret.reader@example.com")
        sub = db_session.get(Subscriber, result.subscriber_id)
        token = make_token("confirm", sub.id, sub.token_version)
        lifecycle.confirm(db_session, token)
        lifecycle.unsubscribe_by_token(db_session, make_token("unsubscribe", sub.id, sub.token_version))
    events = {rec["event"]: rec for rec in lines}
    assert events["signup_recorded"]["subscriber_id"] == sub.id
    assert {"subscriber_confirmed", "subscriber_unsubscribed"} <= set(events)
    text = json.dumps(lines)
    assert "secret.reader" not in text and token not in text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_normalise_email_never_returns_anything_a_header_could_be_injected_with(raw):
    try:
        out = normalise_email(raw)
    except InvalidInput:
        return
    assert out == out.lower() and out.isascii() and len(out) <= 254
    assert not any(c in out for c in "\r\n\t\0<>,; ") and out.count("@") == 1
