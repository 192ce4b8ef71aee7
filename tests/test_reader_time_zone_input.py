"""The reader's own clock at the door (issue 22, item 2): the signup form and the
preferences page take the browser's zone (headless Chromium with its own `timezone_id`),
POST /api/subscribe takes `time_zone`, a name zoneinfo does not know is a 422 (or the
form's error) and writes nothing, the welcome mail says the hour on the reader's clock,
and their data export names it.  Real PostgreSQL, Redis and the live app.
"""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import limits
from service.config import reset_settings
from service.db import session_scope
from service.editions.transactional import build_transactional
from service.models import Subscriber
from service.subscribers import clocks, consent
from service.subscribers.tokens import link, make_token
from tests.support.readers import reader

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def client(pg_env, queue_redis, monkeypatch):
    real_hit = limits.hit
    monkeypatch.setattr("service.web.signup_limit.allow", lambda bucket, key, *a, **k: real_hit(bucket, key, 10**9, 600))
    monkeypatch.setattr("service.subscribers.lifecycle.CONFIRMATIONS_PER_DAY", 10**9)
    reset_settings()
    from service.web.app import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as c:
        yield c


def rows() -> dict[str, str | None]:
    with session_scope() as s:
        return dict(s.execute(sa.select(Subscriber.email, Subscriber.time_zone)).all())


def api_body(email: str, **over) -> dict:
    return {"email": email, "frequency": "daily", "alerts": True, "consent": consent.CURRENT, **over}


def test_the_api_stores_the_readers_zone_and_refuses_one_zoneinfo_does_not_know(client):
    ok = client.post("/api/subscribe", json=api_body("berlin@example.com", time_zone="Europe/Berlin"))
    assert ok.status_code == 202, ok.text
    assert client.post("/api/subscribe", json=api_body("plain@example.com")).status_code == 202
    assert rows() == {"berlin@example.com": "Europe/Berlin", "plain@example.com": None}  # None: TIMEZONE

    known = clocks.known_zones()
    bad_zones = st.one_of(
        st.text(max_size=80).filter(lambda t: t.strip() and t.strip() not in known),
        st.sampled_from(["Europe/Berlin2", "europe/berlin", "Mars/Olympus", "../../etc/passwd", "UTC+3",
                         "Asia/Amman\x00", "A" * 65, "Europe/Berlin" + " " * 60]),
        st.integers(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False), st.lists(st.text(max_size=5), max_size=2),
        st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=1),
    )

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(zone=bad_zones, n=st.integers(0, 10**6))
    def bad(zone, n):
        email = f"refused{n}@example.com"
        answer = client.post("/api/subscribe", json=api_body(email, time_zone=zone))
        assert answer.status_code == 422, (zone, answer.status_code, answer.text)
        assert answer.json()["error"] == "time_zone" and "منطقتك الزمنية" in answer.json()["message"]
        assert email not in rows()

    bad()
    assert set(rows()) == {"berlin@example.com", "plain@example.com"}  # nothing else was written


def test_the_form_without_javascript_keeps_the_sites_zone_and_refuses_a_bad_one(client):
    page = client.get("/")
    assert 'id="time_zone"' in page.text and 'value="Asia/Amman"' in page.text and "data-browser-zone" in page.text
    assert '<option value="Europe/Berlin">' in page.text and '<script src="/time-zone.js" defer>' in page.text
    js = client.get("/time-zone.js")
    assert js.status_code == 200 and "resolvedOptions().timeZone" in js.text
    form = {"csrf_token": CSRF.search(page.text).group(1), "email": "reader@example.com", "frequency": "daily",
            "alerts": "yes", "consent": "yes", "consent_version": consent.CURRENT}
    refused = client.post("/subscribe", data={**form, "time_zone": "Europe/Nowhere"})
    assert refused.status_code == 400 and 'aria-invalid="true"' in refused.text
    assert 'value="Europe/Nowhere"' in refused.text  # echoed back to be fixed, the details open
    assert rows() == {}
    assert client.post("/subscribe", data={**form, "time_zone": "Asia/Amman"}).status_code == 200
    assert rows() == {"reader@example.com": "Asia/Amman"}


def test_the_welcome_mail_and_the_export_say_the_readers_clock(client):
    with session_scope() as s:
        ids = {}
        for email, zone, hour in (("berlin@example.com", "Europe/Berlin", 7), ("kolkata@example.com", "Asia/Kolkata", 7),
                                  ("site@example.com", None, None)):
            sub = reader(s, email, frequency="daily", alerts=False, digest_hour=hour, time_zone=zone)
            ids[email] = sub.id
    with session_scope() as s:
        texts = {e: build_transactional(s, "welcome", i).variant.text for e, i in ids.items()}
    assert "كل يوم الساعة 07:00 بتوقيت ألمانيا" in texts["berlin@example.com"]
    # Kolkata is UTC+5:30: their 07:00 slot leaves at 06:30 their time, and the mail says so.
    assert "كل يوم الساعة 06:30 بتوقيت الهند" in texts["kolkata@example.com"]
    assert "كل يوم الساعة 07:00 بتوقيت الأردن" in texts["site@example.com"]
    with session_scope() as s:
        sub = s.get(Subscriber, ids["berlin@example.com"])
        token = make_token("preferences", sub.id, sub.token_version)
    page = client.get(f"/preferences/{token}")
    data = client.post(f"/preferences/{token}", data={"csrf_token": CSRF.search(page.text).group(1),
                                                      "action": "export"})
    assert data.status_code == 200
    profile = data.json()["profile"]
    assert (profile["time_zone"], profile["timezone"]) == ("Europe/Berlin", "Europe/Berlin")


# ------------------------------------------------------------------ in the browser


@pytest.fixture
def zoned_page(browser):
    contexts = []

    def open_in(zone: str):
        context = browser.new_context(viewport={"width": 1000, "height": 800}, timezone_id=zone, locale="ar")
        contexts.append(context)
        return context.new_page()

    yield open_in
    for context in contexts:
        context.close()


def test_signup_in_chromium_takes_the_browsers_zone(live_server, zoned_page):
    page = zoned_page("Asia/Tokyo")
    page.goto(live_server + "/")
    page.get_by_text("خيارات أخرى").click()
    field = page.get_by_label("منطقتك الزمنية")
    assert field.input_value() == "Asia/Tokyo"  # the browser's, shown
    page.locator("#email").fill("tokyo@example.com")
    page.locator("input[name=consent]").check()
    page.get_by_role("button", name="اشترك").click()
    page.wait_for_load_state()
    assert rows() == {"tokyo@example.com": "Asia/Tokyo"}

    # Changed by the reader before sending: theirs wins.
    page = zoned_page("America/New_York")
    page.goto(live_server + "/")
    page.get_by_text("خيارات أخرى").click()
    page.get_by_label("منطقتك الزمنية").fill("Asia/Qatar")
    page.locator("#email").fill("doha@example.com")
    page.locator("input[name=consent]").check()
    page.get_by_role("button", name="اشترك").click()
    page.wait_for_load_state()
    assert rows()["doha@example.com"] == "Asia/Qatar"


def test_preferences_in_chromium_offer_the_browsers_zone_and_keep_a_chosen_one(live_server, zoned_page):
    with session_scope() as s:
        never = reader(s, "never@example.com")
        chosen = reader(s, "chosen@example.com", time_zone="Asia/Kolkata")
        links = {sub.email: link("preferences", sub.id, sub.token_version) for sub in (never, chosen)}
    page = zoned_page("Europe/Berlin")
    page.goto(links["never@example.com"])
    assert page.get_by_label("منطقتك الزمنية").input_value() == "Europe/Berlin"
    page.get_by_role("button", name=re.compile("احفظ")).first.click()
    page.wait_for_load_state()
    page.goto(links["chosen@example.com"])
    assert page.get_by_label("منطقتك الزمنية").input_value() == "Asia/Kolkata"  # theirs, not the browser's
    page.get_by_label("منطقتك الزمنية").fill("Nowhere/Else")
    page.get_by_role("button", name=re.compile("احفظ")).first.click()
    page.wait_for_load_state()
    assert page.locator("#form-error").count() == 1
    assert rows() == {"never@example.com": "Europe/Berlin", "chosen@example.com": "Asia/Kolkata"}
