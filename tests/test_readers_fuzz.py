"""Hypothesis over what issue 13 adds to what readers (and sites) may send: every field of
`POST /api/subscribe` as any JSON value, its body as any bytes, and the new fields of the
signup and preferences forms (hour, day, quiet hours, cap, pause, the data actions) as
arbitrary text.  Whatever comes in, the answer is never a 5xx, and every reader it leaves
can still be planned into a digest slot and an alert.

Over HTTP (TestClient) against PostgreSQL and Redis, with the limits raised for the run
as tests/test_hardening_fuzz.py does (FUZZ_EXAMPLES examples per property, default 40).
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from service import limits
from service.db import session_scope
from service.delivery.planner import plan
from service.editions.schedule import has_readers, slot_of
from service.models import (
    Edition,
    EditionKind,
    EditionStatus,
    Frequency,
    Section,
    Subscriber,
    SubscriberStatus,
)
from service.subscribers import consent
from service.subscribers.tokens import make_token
from service.web.app import create_app
from tests.support.delivery import renderer
from tests.test_hardening_fuzz import FUZZ, form_body, forms, text

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                        text, st.sampled_from(["", "0", "6", "23", "24", "-1", "world", "sport", consent.CURRENT]))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                                 st.dictionaries(text, inner, max_size=5)),
                          max_leaves=20)
VALID_JSON = {"email": "reader@example.com", "sections": ["world"], "frequency": "weekly", "alerts": True,
              "consent": consent.CURRENT, "form_url": "https://news.example/a", "digest_hour": 7,
              "digest_weekday": 5, "website": ""}
json_bodies = st.one_of(
    st.tuples(st.sampled_from(sorted(VALID_JSON)), json_value).map(lambda t: {**VALID_JSON, t[0]: t[1]}),
    st.fixed_dictionaries({k: st.one_of(st.just(v), json_value) for k, v in VALID_JSON.items()}),
    st.dictionaries(text, json_value, max_size=6),
)


@pytest.fixture
def app_env(pg_env, queue_redis, monkeypatch):
    real_hit = limits.hit
    monkeypatch.setattr("service.web.signup_limit.allow", lambda bucket, key, *a, **k: real_hit(bucket, key, 10**9, 600))
    monkeypatch.setattr("service.subscribers.lifecycle.CONFIRMATIONS_PER_DAY", 10**9)
    with session_scope() as s:
        s.add_all([Section(slug="world", name="عربي دولي", position=1), Section(slug="sport", name="رياضة", position=2)])
        reader = Subscriber(email="kept@example.com", status=SubscriberStatus.active, alerts=True, sections=[])
        s.add(reader)
        s.flush()
        token = make_token("preferences", reader.id, reader.token_version)
    client = TestClient(create_app(), raise_server_exceptions=False)
    return {"client": client, "token": token,
            "prefs_csrf": CSRF.search(client.get(f"/preferences/{token}").text).group(1),
            "signup_csrf": CSRF.search(client.get("/").text).group(1)}


def still_plannable() -> None:
    """Every reader left can be planned: a digest of each slot that has readers, an alert."""
    with session_scope() as s:
        rows = s.execute(sa.select(Subscriber.frequency, Subscriber.digest_hour, Subscriber.digest_weekday)
                         .where(Subscriber.status == SubscriberStatus.active)).all()
        today = dt.date(2026, 3, 28)
        for frequency, hour, weekday in set(rows):
            if frequency is Frequency.none:
                continue
            day = weekday if weekday is not None else 5
            date = today + dt.timedelta(days=(day - today.weekday()) % 7) if frequency is Frequency.weekly else today
            slot = slot_of(frequency, date, hour if hour is not None else 7)
            has_readers(s, slot, dt.datetime.now(dt.UTC))
            edition = Edition(kind=EditionKind.digest, frequency=frequency, status=EditionStatus.draft,
                              params={"slot": slot.params()})
            s.add(edition)
            s.flush()
            plan(s, edition.id, renderer=renderer())
        edition = Edition(kind=EditionKind.alert, status=EditionStatus.draft, params={"headline": "h", "url": "https://x.example/"})
        s.add(edition)
        s.flush()
        plan(s, edition.id, renderer=renderer())
        s.rollback()


def test_the_signup_api_never_answers_5xx(app_env):
    client = app_env["client"]

    @FUZZ
    @given(payload=json_bodies, origin=st.sampled_from([None, "https://news.example", "null", "x" * 300]))
    def run(payload, origin):
        headers = {"Origin": origin} if origin else {}
        answer = client.post("/api/subscribe", content=json.dumps(payload).encode("utf-8", "surrogatepass"),
                             headers={"Content-Type": "application/json", **headers})
        assert answer.status_code < 500, (answer.status_code, answer.text[:300])

    run()
    still_plannable()


def test_the_signup_api_takes_any_bytes(app_env):
    client = app_env["client"]

    @FUZZ
    @given(raw=st.binary(max_size=2000))
    def run(raw):
        answer = client.post("/api/subscribe", content=raw, headers={"Content-Type": "application/json"})
        assert answer.status_code < 500

    run()


def test_the_new_form_fields_never_answer_5xx(app_env):
    client, token = app_env["client"], app_env["token"]
    signup = {"csrf_token": app_env["signup_csrf"], "email": "reader@example.com", "frequency": "daily",
              "alerts": "yes", "consent": "yes", "consent_version": consent.CURRENT, "digest_hour": "7",
              "digest_weekday": "5", "form_url": "https://news.example/a"}
    preferences = {"csrf_token": app_env["prefs_csrf"], "frequency": "daily", "alerts": "yes", "digest_hour": "7",
                   "digest_weekday": "5", "quiet_start": "22", "quiet_end": "7", "quiet_mode": "hold",
                   "alert_cap": "3", "pause": "", "action": "save"}

    @FUZZ
    @given(fields=st.one_of(forms(signup), forms(preferences)))
    def run(fields):
        path = "/subscribe" if "email" in fields else f"/preferences/{token}"
        answer = client.post(path, content=form_body(fields),
                             headers={"Content-Type": "application/x-www-form-urlencoded"}, follow_redirects=False)
        assert answer.status_code < 500, (path, answer.status_code)

    run()
    still_plannable()
    with session_scope() as s:
        kept = s.scalar(sa.select(Subscriber).where(Subscriber.email == "kept@example.com"))
        assert kept is not None
        assert kept.digest_hour in (None, 6, 7, 8, 12, 18, 21)
        assert kept.quiet_mode in ("hold", "drop") and kept.alert_cap in (None, 1, 2, 3, 5, 10)
