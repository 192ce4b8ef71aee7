"""Scheduled alerts (issue 17 item 5): `send_at` on POST /api/alerts — the alert waits as
a scheduled draft (nothing queued), beat's tick starts it on time and a real worker
sends it to the SMTP sink; cancelled before then, nothing goes.  A bad send_at is a 422
that says why and makes nothing; Hypothesis over the field never finds a 5xx."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.config import get_settings
from service.db import session_scope
from service.dispatch import Recorder
from service.models import Delivery, Edition, EditionStatus, SubscriberStatus, utcnow
from service.usecases import alerts, editions, scheduled
from tests.support.readers import reader
from tests.test_web_desk import ALERT, desk, queued_messages  # noqa: F401 — the fixture
from tests.test_web_desk import editions as all_editions

__all__ = ["desk"]


def _post(desk, body: dict):
    token = desk["editor"][1]
    return TestClient(desk["app"]).post("/api/alerts", json=body, headers={"Authorization": f"Bearer {token}"})


def _local(when: dt.datetime) -> str:
    return when.astimezone(get_settings().tz).strftime("%Y-%m-%dT%H:%M:%S")


def test_api_send_at_waits_shows_its_time_and_a_cancel_before_it_sends_nothing(desk):
    with session_scope() as s:
        reader(s, "r@example.com", status=SubscriberStatus.active, alerts=True)
    at = (utcnow() + dt.timedelta(hours=2)).replace(microsecond=0)
    resp = _post(desk, {**ALERT, "send_at": _local(at)})  # no offset: the site's TIMEZONE
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["send_at"] == at.isoformat()
    eid = body["edition_id"]
    assert queued_messages(desk["redis"]) == 0  # nothing asked of a worker before its time
    token = desk["editor"][1]
    client = TestClient(desk["app"], headers={"Authorization": f"Bearer {token}"})
    assert client.get(f"/api/editions/{eid}").json()["send_at"] == at.isoformat()
    # The same alert "now" is another edition: the scheduled one does not swallow it.
    now_id = _post(desk, ALERT).json()["edition_id"]
    assert now_id != eid and queued_messages(desk["redis"]) == 1
    # With an offset, and in UTC ("Z"): the same instant.
    assert _post(desk, {**ALERT, "send_at": at.isoformat(), "idempotency_key": "k2"}).json()["send_at"] == at.isoformat()
    z = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert _post(desk, {**ALERT, "send_at": z, "idempotency_key": "k3"}).json()["send_at"] == at.isoformat()

    assert client.post(f"/api/editions/{eid}/cancel").status_code == 200
    assert scheduled.start_due(now=at + dt.timedelta(seconds=5), dispatcher=Recorder()) != [eid]
    with session_scope() as s:
        assert s.get(Edition, eid).status is EditionStatus.cancelled
        assert not s.scalar(sa.select(sa.func.count()).select_from(Delivery).where(Delivery.edition_id == eid))
    assert client.get(f"/api/editions/{eid}").json()["send_at"] is None


@pytest.mark.parametrize("send_at,why", [
    ("2020-01-01T07:00", "in the past"),
    ((dt.datetime.now(dt.UTC) + dt.timedelta(days=45)).strftime("%Y-%m-%dT%H:%M"), "30 days"),
    ("tomorrow 7am", "ISO 8601"),
    ("", "ISO 8601"),
])
def test_a_bad_send_at_is_a_422_that_says_why_and_makes_nothing(desk, send_at, why):
    resp = _post(desk, {**ALERT, "send_at": send_at})
    assert resp.status_code == 422 and why in resp.json()["error"] and resp.json()["error"].startswith("send_at")
    assert all_editions() == [] and queued_messages(desk["redis"]) == 0
    dry = _post(desk, {**ALERT, "send_at": send_at, "dry_run": True})
    assert dry.status_code == 422


def test_dry_run_with_send_at_says_when(desk):
    at = (utcnow() + dt.timedelta(days=1)).replace(microsecond=0)
    resp = _post(desk, {**ALERT, "send_at": at.isoformat(), "dry_run": True})
    assert resp.status_code == 200 and resp.json()["send_at"] == at.isoformat() and all_editions() == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(send_at=st.one_of(
    st.text(max_size=60),
    st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)).map(lambda d: d.isoformat()),
    st.integers().map(str),
    st.none(),
))
def test_hypothesis_over_send_at_never_a_5xx(desk, send_at):
    resp = _post(desk, {**ALERT, "send_at": send_at, "idempotency_key": f"h{abs(hash(send_at))}"})
    assert resp.status_code in (202, 422), resp.text
    if resp.status_code == 422:
        assert resp.json()["error"]


def test_a_scheduled_alert_leaves_on_time_through_beat_and_a_worker(pg_env, redis_url, smtp_sink,
                                                                    celery_worker_factory):
    with session_scope() as s:
        for i in range(3):
            reader(s, f"r{i}@example.com", status=SubscriberStatus.active, alerts=True)
    at = (utcnow() + dt.timedelta(minutes=5)).replace(microsecond=0)
    rec = Recorder()
    eid = alerts.send_alert(editor_id=None, headline=ALERT["headline"], url=ALERT["url"], send_at=at, dispatcher=rec)
    kept = alerts.send_alert(editor_id=None, headline="خبر آخر", url="https://news.example/other", send_at=at,
                             dispatcher=rec)
    assert rec.calls == []
    editions.steer(kept, "cancel", "editor:1", role="editor")  # cancelled before its time: nothing goes
    assert scheduled.start_due(now=at - dt.timedelta(seconds=1), dispatcher=rec) == [] and rec.calls == []
    with celery_worker_factory(queues=("alerts", "default"), concurrency=2):
        # Beat's tick within DIGEST_CHECK_SECONDS after the time (explicit now: no waiting for the clock).
        assert scheduled.start_due(now=at + dt.timedelta(seconds=get_settings().digest_check_seconds)) == [eid]
        got = smtp_sink.wait_for(3, timeout=30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and editions.progress(eid)["status"] != "done":
            time.sleep(0.2)
        time.sleep(0.5)  # anything extra (the cancelled one) would have come by now
    assert sorted(r for m in got for r in m.rcpt_tos) == [f"r{i}@example.com" for i in range(3)]
    assert len(smtp_sink.messages) == 3 and all(ALERT["headline"] in m.message["Subject"] for m in got)
    # A typed alert says when it went: its scheduled time, not when it was made.
    text = got[0].message.get_body(("plain",)).get_content()
    assert at.astimezone(get_settings().tz).strftime("%H:%M") in text
    with session_scope() as s:
        assert s.get(Edition, kept).status is EditionStatus.cancelled
        assert not s.scalar(sa.select(sa.func.count()).select_from(Delivery).where(Delivery.edition_id == kept))


def test_one_beat_could_not_start_for_hours_is_left_for_an_editor_and_said_once(pg_env):
    from service.editions import scheduled as domain
    from service.models import Edition as E
    from service.models import EditionKind

    now = utcnow()
    with session_scope() as s:
        s.add(E(kind=EditionKind.alert, status=EditionStatus.draft, title="قديم", send_at=now - dt.timedelta(hours=7),
                params={"headline": "قديم", "url": "https://news.example/old", "summary": ""}))
    rec = Recorder()
    assert scheduled.start_due(now=now, dispatcher=rec) == [] and rec.calls == []
    with session_scope() as s:
        edition = s.scalars(sa.select(E)).one()
        assert edition.status is EditionStatus.draft  # still there to move or cancel
        tick = dt.timedelta(seconds=120)
        gone_past = edition.send_at + domain.MAX_LATE
        assert domain.missed(s, gone_past + dt.timedelta(seconds=30), within=tick) == [edition.id]  # said once
        assert domain.missed(s, now, within=tick) == []  # not at every tick after
