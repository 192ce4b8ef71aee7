"""Hypothesis over what issue 13 adds to what readers (and sites) may send: every field of
`POST /api/subscribe` as any JSON value, its body as any bytes, and the new fields of the
signup and preferences forms (hour, day, quiet hours, cap, pause, the data actions) as
arbitrary text; and what issue 17 adds: the `newsletters` a signup names, each
newsletter's part of the preferences form, and the `n=` of an unsubscribe link.  Whatever
comes in, the answer is never a 5xx, and every reader it leaves can still be planned into
a digest slot and an alert.

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
    Newsletter,
    NewsletterKind,
    Section,
    Subscriber,
    SubscriberStatus,
    Subscription,
)
from service.newsletters import catalogue, membership
from service.subscribers import consent
from service.subscribers.tokens import make_token
from service.web.app import create_app
from tests.support.delivery import renderer
from tests.support.readers import reader
from tests.test_hardening_fuzz import FUZZ, form_body, forms, text

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                        text, st.sampled_from(["", "0", "6", "23", "24", "-1", "world", "sport", consent.CURRENT,
                                                "daily", "weekly", "alerts", "DAILY", "retired"]))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                                 st.dictionaries(text, inner, max_size=5)),
                          max_leaves=20)
VALID_JSON = {"email": "reader@example.com", "sections": ["world"], "newsletters": ["weekly", "alerts"],
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
        s.add(Newsletter(slug="retired", name="نشرة متقاعدة", kind=NewsletterKind.digest, frequency="weekly",
                         hidden=True, position=9))
        kept = reader(s, "kept@example.com", frequency="daily", alerts=True)
        token = make_token("preferences", kept.id, kept.token_version)
        newsletters = {n.slug: n.id for n in catalogue.every(s, hidden=True)}
    client = TestClient(create_app(), raise_server_exceptions=False)
    return {"client": client, "token": token, "newsletters": newsletters,
            "prefs_csrf": CSRF.search(client.get(f"/preferences/{token}").text).group(1),
            "signup_csrf": CSRF.search(client.get("/").text).group(1)}


def still_plannable() -> None:
    """Every reader left can be planned: a digest of each slot that has readers, an alert."""
    with session_scope() as s:
        rows = s.execute(sa.select(Newsletter, Subscription.digest_hour, Subscription.digest_weekday)
                         .join(Subscription, Subscription.newsletter_id == Newsletter.id)
                         .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
                         .where(Subscriber.status == SubscriberStatus.active,
                                Newsletter.kind == NewsletterKind.digest)).all()
        today = dt.date(2026, 3, 28)
        for newsletter, hour, weekday in set(rows):
            weekly = newsletter.frequency is Frequency.weekly
            day = weekday if weekday is not None else 5
            date = today + dt.timedelta(days=(day - today.weekday()) % 7) if weekly else today
            slot = slot_of(newsletter, date, hour if hour is not None else 7)
            has_readers(s, slot, dt.datetime.now(dt.UTC))
            edition = Edition(kind=EditionKind.digest, frequency=newsletter.frequency, status=EditionStatus.draft,
                              newsletter_id=newsletter.id, params={"slot": slot.params()})
            s.add(edition)
            s.flush()
            plan(s, edition.id, renderer=renderer())
        edition = Edition(kind=EditionKind.alert, status=EditionStatus.draft, newsletter_id=catalogue.default_alerts(s).id,
                          params={"headline": "h", "url": "https://x.example/"})
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
    nl = app_env["newsletters"]
    d, a = f"n{nl['daily']}_", f"n{nl['alerts']}_"
    signup = {"csrf_token": app_env["signup_csrf"], "email": "reader@example.com", "newsletters_shown": "1",
              "newsletters": "daily", "consent": "yes", "consent_version": consent.CURRENT, "digest_hour": "7",
              "digest_weekday": "5", "form_url": "https://news.example/a"}
    preferences = {"csrf_token": app_env["prefs_csrf"], d + "shown": "1", d + "digest_hour": "7",
                   d + "sections": "1", f"{d}rank_1": "1", a + "shown": "1", a + "quiet_start": "22",
                   a + "quiet_end": "7", a + "quiet_mode": "hold", a + "alert_cap": "3", "pause": "", "action": "save"}
    membership_buttons = {"csrf_token": app_env["prefs_csrf"], "join": str(nl["weekly"])}

    @FUZZ
    @given(fields=st.one_of(forms(signup), forms(preferences), forms(membership_buttons)))
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
        for x in membership.of(s, kept.id):
            assert x.digest_hour in (None, 6, 7, 8, 12, 18, 21) and x.newsletter.slug != "retired"
            assert x.quiet_mode in ("hold", "drop") and x.alert_cap in (None, 1, 2, 3, 5, 10)


def test_the_newsletter_of_an_unsubscribe_link_never_answers_5xx(app_env):
    """Any `n=` (and `e=`) on the page and on one-click: a newsletter id leaves that one
    (200); anything else is a 400 that changes nothing."""
    from urllib.parse import quote

    client = app_env["client"]
    seen = iter(range(10**6))
    ids = [str(i) for i in app_env["newsletters"].values()]
    values = st.one_of(text, st.sampled_from([*ids, "0", "-1", "4294967296", "2147483648", "1\x00", "١", " 1",
                                             "9" * 40, ""]))

    @FUZZ
    @given(n=values.map(lambda v: v[:200]), e=st.one_of(st.none(), text.map(lambda v: v[:200])))  # a URL's length
    def run(n, e):
        with session_scope() as s:
            sub = reader(s, f"leaver{next(seen)}@example.com", frequency="daily", alerts=True)
            sub_id, token = sub.id, make_token("unsubscribe", sub.id, sub.token_version)
        query = f"?n={quote(n, errors='surrogatepass')}" + (f"&e={quote(e, errors='surrogatepass')}" if e else "")
        page = client.get(f"/unsubscribe/{token}{query}")
        answer = client.post(f"/unsubscribe/{token}{query}", content=b"List-Unsubscribe=One-Click",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert page.status_code < 500 and answer.status_code < 500, (page.status_code, answer.status_code)
        assert page.status_code == answer.status_code
        with session_scope() as s:
            left = [x.newsletter_id for x in membership.of(s, sub_id)]
        if answer.status_code == 400:
            assert len(left) == 2  # nothing changed
        else:
            assert answer.status_code == 200 and n in ids and int(n) not in left

    run()
    still_plannable()
