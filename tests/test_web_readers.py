"""Readers' pages over HTTP against PostgreSQL: signup, confirm, preferences, unsubscribe,
and every hostile input the form may see."""

from __future__ import annotations

import json
import os
import re

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service.db import session_scope
from service.jobs import names
from service.models import (
    AuditLog,
    Newsletter,
    NewsletterKind,
    Section,
    Subscriber,
    SubscriberStatus,
    Subscription,
)
from service.newsletters import catalogue, membership
from service.subscribers.tokens import make_token
from service.web import csrf
from tests.support.logs import json_log_lines
from tests.support.readers import reader

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def env(pg_env, queue_redis):
    with session_scope() as s:
        s.add_all([
            Section(slug="world", name="عربي دولي", position=1),
            Section(slug="sport", name="رياضة", position=2),
            Section(slug="economy", name="اقتصاد", position=3),
        ])
    return queue_redis


@pytest.fixture
def client(env):
    from service.web.app import create_app

    with TestClient(create_app()) as c:
        yield c


def section_ids() -> dict[str, int]:
    with session_scope() as s:
        return {x.slug: x.id for x in s.scalars(select(Section))}


def csrf_from(client, url="/") -> str:
    page = client.get(url)
    assert page.status_code == 200
    return CSRF.search(page.text).group(1)


def form(client, **over) -> dict:
    data = {"csrf_token": csrf_from(client), "email": "Reader@Example.COM", "frequency": "weekly",
            "alerts": "yes", "consent": "yes", "website": ""}
    data.update(over)
    return {k: v for k, v in data.items() if v is not None}


def subscribers() -> list[Subscriber]:
    with session_scope() as s:
        return list(s.scalars(select(Subscriber).order_by(Subscriber.id)))


def on(subscriber_id: int) -> dict[str, Subscription]:
    """slug → the reader's subscription, in the site's order of newsletters."""
    with session_scope() as s:
        rows = membership.of(s, subscriber_id)
        for x in rows:
            s.expunge(x)
        return {x.newsletter.slug: x for x in rows}


def newsletter_ids() -> dict[str, int]:
    with session_scope() as s:
        return {n.slug: n.id for n in catalogue.every(s, hidden=True)}


def queued_tasks(redis_url) -> list[tuple[str, list]]:
    """What the web app put on the default queue in Redis (no worker is running)."""
    r = redis.Redis.from_url(redis_url)
    out = []
    # Celery's keys carry the test run's prefix, if the redis_url fixture sets one.
    for raw in r.lrange(os.environ.get("REDIS_KEY_PREFIX", "") + "default", 0, -1):
        msg = json.loads(raw)
        body = json.loads(__import__("base64").b64decode(msg["body"]))
        out.append((msg["headers"]["task"], body[0]))
    return out


def test_signup_form_is_rtl_arabic_with_sections_csrf_and_honeypot(client):
    page = client.get("/")
    assert page.status_code == 200
    assert '<html lang="ar" dir="rtl">' in page.text
    for name in ("عربي دولي", "رياضة", "اقتصاد"):
        assert name in page.text
    assert 'name="csrf_token"' in page.text and 'name="website"' in page.text
    assert page.headers["x-frame-options"] == "DENY"
    assert "http://" not in page.text.replace('"http://www.w3.org', "") and "https://" not in page.text


def test_embed_form_is_compact_and_frameable(client):
    page = client.get("/?embed=1")
    assert page.status_code == 200
    assert 'class="embed"' in page.text and 'name="embed" value="1"' in page.text
    assert "frame-ancestors *" in page.headers["content-security-policy"]
    assert "x-frame-options" not in page.headers


def test_signup_creates_pending_subscriber_and_queues_confirmation(client, env):
    ids = section_ids()
    data = form(client)
    data["sections"] = [str(ids["sport"]), str(ids["world"])]
    resp = client.post("/subscribe", data=data)
    assert resp.status_code == 200
    assert "تحقّق من بريدك" in resp.text
    [sub] = subscribers()
    assert sub.email == "reader@example.com"
    assert sub.status is SubscriberStatus.pending
    # An older form's words (frequency, alerts): mapped onto the weekly digest and alerts.
    subscriptions = on(sub.id)
    assert list(subscriptions) == ["weekly", "alerts"]
    assert subscriptions["weekly"].sections == [ids["sport"], ids["world"]] and subscriptions["alerts"].sections == []
    assert sub.consent_source == "web:form" and sub.consented_at is not None
    assert queued_tasks(env) == [(names.SEND_TRANSACTIONAL, ["confirm", sub.id])]


def test_signup_page_is_the_same_for_an_active_address_and_nothing_changes(client, env):
    with session_scope() as s:
        reader(s, "reader@example.com", frequency="daily", alerts=False)
    first = client.post("/subscribe", data=form(client, email="new@example.com"))
    second = client.post("/subscribe", data=form(client))
    assert first.status_code == second.status_code == 200
    strip = lambda html: CSRF.sub("", html)  # noqa: E731
    assert strip(first.text) == strip(second.text)
    active = [x for x in subscribers() if x.email == "reader@example.com"][0]
    assert active.status is SubscriberStatus.active and list(on(active.id)) == ["daily"]
    # The new address gets a confirmation; the active one only its preferences link (issue 22).
    new = [x for x in subscribers() if x.email == "new@example.com"][0]
    assert sorted(queued_tasks(env)) == [(names.SEND_TRANSACTIONAL, ["confirm", new.id]),
                                         (names.SEND_TRANSACTIONAL, ["manage", active.id])]


def confirm_by_button(client, token: str):
    """What a reader does: open the link (a page with one button), then press it."""
    page = client.get(f"/confirm/{token}")
    assert page.status_code == 200
    return client.post(f"/confirm/{token}", data={"csrf_token": CSRF.search(page.text).group(1)})


def test_confirm_link_shows_a_button_and_changes_nothing(client, env):
    client.post("/subscribe", data=form(client))
    [sub] = subscribers()
    token = make_token("confirm", sub.id, sub.token_version)
    for _ in range(3):  # a mail scanner following the link, more than once
        resp = client.get(f"/confirm/{token}")
        assert resp.status_code == 200
        assert '<html lang="ar" dir="rtl">' in resp.text
        assert f'<form method="post" action="/confirm/{token}">' in resp.text
        assert ">تأكيد الاشتراك</button>" in resp.text and 'name="csrf_token"' in resp.text
        assert "/preferences/" not in resp.text
    [sub] = subscribers()
    assert sub.status is SubscriberStatus.pending and sub.confirmed_at is None
    assert [a for _, a in queued_tasks(env)] == [["confirm", sub.id]]  # no welcome


@pytest.mark.parametrize("csrf_value", [None, "", "forged", "preferences-of-someone-else", "for-another-reader"])
def test_confirm_post_without_a_valid_csrf_token_is_refused_and_changes_nothing(client, env, csrf_value):
    from service.web import csrf

    client.post("/subscribe", data=form(client))
    client.post("/subscribe", data=form(client, email="other@example.com"))
    sub, other = subscribers()
    token = make_token("confirm", sub.id, sub.token_version)
    csrf_value = {"preferences-of-someone-else": csrf.issue(f"preferences:{sub.id}"),
                  "for-another-reader": csrf.issue(f"confirm:{other.id}")}.get(csrf_value, csrf_value)
    data = {} if csrf_value is None else {"csrf_token": csrf_value}
    resp = client.post(f"/confirm/{token}", data=data)
    assert resp.status_code == 400
    assert "انتهت صلاحية هذه الصفحة" in resp.text and ">تأكيد الاشتراك</button>" in resp.text
    assert all(x.status is SubscriberStatus.pending and x.confirmed_at is None for x in subscribers())
    assert all(a[0] != "welcome" for _, a in queued_tasks(env))
    # The refusal page carries a fresh token that works.
    resp = client.post(f"/confirm/{token}", data={"csrf_token": CSRF.search(resp.text).group(1)})
    assert resp.status_code == 200 and subscribers()[0].status is SubscriberStatus.active


def test_confirm_button_activates_then_shows_preferences_link_and_queues_welcome(client, env):
    client.post("/subscribe", data=form(client))
    [sub] = subscribers()
    token = make_token("confirm", sub.id, sub.token_version)
    resp = confirm_by_button(client, token)
    assert resp.status_code == 200
    assert "تم تأكيد اشتراكك" in resp.text and "/preferences/" in resp.text
    [sub] = subscribers()
    assert sub.status is SubscriberStatus.active and sub.confirmed_at is not None
    assert (names.SEND_TRANSACTIONAL, ["welcome", sub.id]) in queued_tasks(env)
    # Opening the link again says it is done; pressing again is harmless: no second welcome.
    again = client.get(f"/confirm/{token}")
    assert again.status_code == 200 and "تم تأكيد اشتراكك" in again.text and "<form" not in again.text
    twice = client.post(f"/confirm/{token}", data={"csrf_token": csrf.issue(f"confirm:{sub.id}")})
    assert twice.status_code == 200 and "تم تأكيد اشتراكك" in twice.text
    assert [a for _, a in queued_tasks(env)].count(["welcome", sub.id]) == 1


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("kind", ["garbage", "tampered", "other_key", "expired"])
def test_forged_confirm_token_is_refused_and_changes_nothing(client, env, kind, method, monkeypatch):
    from itsdangerous import URLSafeTimedSerializer

    client.post("/subscribe", data=form(client))
    [sub] = subscribers()
    good = make_token("confirm", sub.id, sub.token_version)
    token = {
        "garbage": "forged",
        "tampered": good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
        "other_key": URLSafeTimedSerializer("someone-elses-key-0123456789", salt="nashra.confirm").dumps(
            [sub.id, sub.token_version]),
        "expired": good,
    }[kind]
    if kind == "expired":
        monkeypatch.setattr("service.subscribers.tokens.confirm_max_age", lambda settings=None: -1)
    if method == "GET":
        resp = client.get(f"/confirm/{token}")
    else:  # even with a CSRF token that is genuine for this reader
        resp = client.post(f"/confirm/{token}", data={"csrf_token": csrf.issue(f"confirm:{sub.id}")})
    assert resp.status_code == 400
    assert "هذا الرابط غير صالح" in resp.text and "<form" not in resp.text
    [sub] = subscribers()
    assert sub.status is SubscriberStatus.pending and sub.confirmed_at is None
    assert all(a[0] != "welcome" for _, a in queued_tasks(env))


def test_token_for_another_purpose_does_not_confirm(client):
    client.post("/subscribe", data=form(client))
    [sub] = subscribers()
    token = make_token("unsubscribe", sub.id, sub.token_version)
    assert client.get(f"/confirm/{token}").status_code == 400
    resp = client.post(f"/confirm/{token}", data={"csrf_token": csrf.issue(f"confirm:{sub.id}")})
    assert resp.status_code == 400
    assert subscribers()[0].status is SubscriberStatus.pending


def test_confirm_link_of_an_unsubscribed_reader_is_refused(client):
    client.post("/subscribe", data=form(client))
    [sub] = subscribers()
    token = make_token("confirm", sub.id, sub.token_version)
    client.post(f"/unsubscribe/{make_token('unsubscribe', sub.id, sub.token_version)}")
    assert client.get(f"/confirm/{token}").status_code == 400
    resp = client.post(f"/confirm/{token}", data={"csrf_token": csrf.issue(f"confirm:{sub.id}")})
    assert resp.status_code == 400
    assert subscribers()[0].status is SubscriberStatus.unsubscribed


HOSTILE_EMAILS = {
    "header_injection": "victim@example.com\r\nBcc: everyone@example.com",
    "ten_kb": "a" * 10_000 + "@example.com",
    "not_an_address": "not-an-address",
    "empty": "",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_EMAILS))
def test_hostile_email_gets_a_clear_error_and_changes_nothing(client, env, case):
    resp = client.post("/subscribe", data=form(client, email=HOSTILE_EMAILS[case]))
    assert resp.status_code == 400
    assert 'role="alert"' in resp.text
    assert ("عنوان البريد الإلكتروني غير صالح" in resp.text) or ("أدخل عنوان بريدك" in resp.text)
    assert "Bcc" not in resp.text and "a" * 300 not in resp.text
    assert subscribers() == [] and queued_tasks(env) == []


def test_unknown_section_ids_are_refused(client, env):
    for bad in (["999999"], ["1; DROP TABLE subscribers"], ["-1"]):
        data = form(client)
        data["sections"] = bad
        resp = client.post("/subscribe", data=data)
        assert resp.status_code == 400
        assert "اختر الأقسام من القائمة" in resp.text
    assert subscribers() == [] and queued_tasks(env) == []


def test_missing_or_forged_csrf_token_is_refused(client, env):
    no_token = form(client)
    del no_token["csrf_token"]
    forged = form(client, csrf_token="WyJzaWdudXAiLCAiMDAwMCJd.forged.sig")
    from service.web import csrf

    other_purpose = form(client, csrf_token=csrf.issue("editor-login"))
    for data in (no_token, forged, other_purpose):
        resp = client.post("/subscribe", data=data)
        assert resp.status_code == 400
        assert "انتهت صلاحية هذه الصفحة" in resp.text
    assert subscribers() == [] and queued_tasks(env) == []


def test_missing_consent_and_bad_frequency_are_refused(client, env):
    assert client.post("/subscribe", data=form(client, consent=None)).status_code == 400
    assert client.post("/subscribe", data=form(client, frequency="hourly")).status_code == 400
    assert client.post("/subscribe", data=form(client, frequency="none")).status_code == 400
    assert subscribers() == []


def test_honeypot_gets_the_normal_page_but_nothing_is_stored(client, env):
    resp = client.post("/subscribe", data=form(client, website="http://spam.example"))
    assert resp.status_code == 200 and "تحقّق من بريدك" in resp.text
    assert subscribers() == [] and queued_tasks(env) == []


def test_signup_is_rate_limited_per_client_ip(client, env):
    from service.web.signup_limit import SIGNUP_LIMIT

    for i in range(SIGNUP_LIMIT):
        assert client.post("/subscribe", data=form(client, email=f"r{i}@example.com")).status_code == 200
    resp = client.post("/subscribe", data=form(client, email="one-too-many@example.com"))
    assert resp.status_code == 429
    assert "طلبات كثيرة" in resp.text
    assert "one-too-many@example.com" not in [s.email for s in subscribers()]


def _active(email="reader@example.com", sections=(), **kw) -> Subscriber:
    kw = {"frequency": "daily", "alerts": True, **kw}
    with session_scope() as s:
        return reader(s, email, sections=list(sections), **kw)


def test_preferences_show_and_save_each_newsletters_choices(client):
    ids, nl = section_ids(), newsletter_ids()
    sub = _active(sections=[ids["economy"]])
    token = make_token("preferences", sub.id, sub.token_version)
    page = client.get(f"/preferences/{token}")
    assert page.status_code == 200 and "اقتصاد" in page.text
    assert "النشرة اليومية" in page.text and "عاجل" in page.text
    assert f'name="join" value="{nl["weekly"]}"' in page.text  # offered, not theirs: a button to join
    d, a = f"n{nl['daily']}_", f"n{nl['alerts']}_"
    data = {"csrf_token": CSRF.search(page.text).group(1), "action": "save",
            d + "shown": "1", d + "sections": [str(ids["world"]), str(ids["sport"])],
            f"{d}rank_{ids['world']}": "2", f"{d}rank_{ids['sport']}": "1", d + "digest_hour": "7",
            a + "shown": "1", a + "quiet_start": "22", a + "quiet_end": "6", a + "quiet_mode": "drop",
            a + "alert_cap": "3"}
    resp = client.post(f"/preferences/{token}", data=data)
    assert resp.status_code == 200 and "حُفظت تفضيلاتك" in resp.text
    saved = on(sub.id)
    assert saved["daily"].sections == [ids["sport"], ids["world"]]
    assert saved["daily"].digest_hour is None  # the default hour, as shown: they keep following it
    assert (saved["alerts"].quiet_start, saved["alerts"].quiet_end, saved["alerts"].quiet_mode,
            saved["alerts"].alert_cap) == (22, 6, "drop", 3)
    with session_scope() as s:
        actions = list(s.scalars(select(AuditLog.action).order_by(AuditLog.id)))
    assert actions == ["preferences", "preferences"]  # one line per newsletter changed


def test_preferences_join_leave_and_leave_all(client):
    nl = newsletter_ids()
    sub = _active()
    token = make_token("preferences", sub.id, sub.token_version)
    good = CSRF.search(client.get(f"/preferences/{token}").text).group(1)
    joined = client.post(f"/preferences/{token}", data={"csrf_token": good, "join": str(nl["weekly"])})
    assert joined.status_code == 200 and list(on(sub.id)) == ["daily", "weekly", "alerts"]
    assert f'name="leave" value="{nl["weekly"]}"' in joined.text
    left = client.post(f"/preferences/{token}", data={"csrf_token": good, "leave": str(nl["daily"])})
    assert left.status_code == 200 and list(on(sub.id)) == ["weekly", "alerts"]
    assert subscribers()[0].status is SubscriberStatus.active
    # Joining what is not offered (or not a newsletter) is refused and changes nothing.
    with session_scope() as s:
        s.add(Newsletter(slug="internal", name="داخلية", kind=NewsletterKind.digest, frequency="daily",
                         offered=False, position=9))
    for bad in (str(newsletter_ids()["internal"]), "99999", "x", "1" * 40):
        refused = client.post(f"/preferences/{token}", data={"csrf_token": good, "join": bad})
        assert refused.status_code == 400 and list(on(sub.id)) == ["weekly", "alerts"]
    gone = client.post(f"/preferences/{token}", data={"csrf_token": good, "action": "leave_all"})
    assert gone.status_code == 200 and "أُلغي اشتراكك" in gone.text
    [after] = subscribers()
    assert after.status is SubscriberStatus.unsubscribed and on(sub.id) == {}
    assert client.get(f"/preferences/{token}").status_code == 400  # its links died with it


def test_leaving_the_last_newsletter_from_the_preferences_leaves_all(client):
    nl = newsletter_ids()
    sub = _active(email="one@example.com", alerts=False)
    token = make_token("preferences", sub.id, sub.token_version)
    good = CSRF.search(client.get(f"/preferences/{token}").text).group(1)
    resp = client.post(f"/preferences/{token}", data={"csrf_token": good, "leave": str(nl["daily"])})
    assert resp.status_code == 200 and "لن تصلك منّا رسائل" in resp.text
    assert subscribers()[0].status is SubscriberStatus.unsubscribed


def test_preferences_refuse_bad_input_and_change_nothing(client):
    ids, nl = section_ids(), newsletter_ids()
    sub = _active(sections=[ids["economy"]])
    token = make_token("preferences", sub.id, sub.token_version)
    good = CSRF.search(client.get(f"/preferences/{token}").text).group(1)
    other_sub_csrf = __import__("service.web.csrf", fromlist=["x"]).issue(f"preferences:{sub.id + 1}")
    d, a = f"n{nl['daily']}_", f"n{nl['alerts']}_"
    cases = [
        {"csrf_token": good, d + "shown": "1", d + "sections": ["424242"]},
        {"csrf_token": good, d + "shown": "1", d + "digest_hour": "3"},
        {"csrf_token": good, a + "shown": "1", a + "quiet_start": "5", a + "quiet_end": "5"},
        {"csrf_token": good, a + "shown": "1", a + "alert_cap": "1000"},
        {"csrf_token": good, "leave": "\x00"},
        {d + "shown": "1", "leave": str(nl["daily"])},
        {"csrf_token": other_sub_csrf, "action": "leave_all"},
    ]
    for data in cases:
        assert client.post(f"/preferences/{token}", data=data).status_code == 400, data
    assert client.post("/preferences/forged-token", data=cases[0]).status_code == 400
    [same] = subscribers()
    assert same.status is SubscriberStatus.active
    saved = on(sub.id)
    assert list(saved) == ["daily", "alerts"] and saved["daily"].sections == [ids["economy"]]
    assert (saved["daily"].digest_hour, saved["alerts"].quiet_start, saved["alerts"].alert_cap) == (None, None, None)


def test_unsubscribe_get_shows_button_and_changes_nothing(client):
    sub = _active()
    token = make_token("unsubscribe", sub.id, sub.token_version)
    page = client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200
    assert f'action="/unsubscribe/{token}"' in page.text and "<button" in page.text
    assert subscribers()[0].status is SubscriberStatus.active


def test_unsubscribe_page_offers_this_newsletter_or_all(client):
    nl = newsletter_ids()
    sub = _active()
    token = make_token("unsubscribe", sub.id, sub.token_version)
    page = client.get(f"/unsubscribe/{token}?n={nl['daily']}&e=12")
    assert page.status_code == 200
    assert f'action="/unsubscribe/{token}?n={nl["daily"]}&amp;e=12"' in page.text  # this newsletter, named
    assert "«النشرة اليومية» فقط" in page.text
    assert f'action="/unsubscribe/{token}?e=12"' in page.text and "إلغاء الاشتراك من كل النشرات" in page.text
    assert list(on(sub.id)) == ["daily", "alerts"]  # a GET changes nothing
    this = client.post(f"/unsubscribe/{token}?n={nl['daily']}", data={"List-Unsubscribe": "One-Click"})
    assert this.status_code == 200 and "«النشرة اليومية»" in this.text and "/preferences/" in this.text
    assert list(on(sub.id)) == ["alerts"] and subscribers()[0].status is SubscriberStatus.active
    # The same page again: no longer on it, so only «all» is offered.
    again = client.get(f"/unsubscribe/{token}?n={nl['daily']}")
    assert again.status_code == 200 and "لم تعد مشتركاً في «النشرة اليومية»" in again.text
    assert f'?n={nl["daily"]}' not in again.text.split("<form", 1)[1]
    every = client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert every.status_code == 200 and "لن تصلك منّا رسائل" in every.text
    assert subscribers()[0].status is SubscriberStatus.unsubscribed and on(sub.id) == {}


@pytest.mark.parametrize("n", ["abc", "99999999999", "4294967296", "1%00", "%00", "", "-1", "0", "1.0", "٣",
                               "999999"])
def test_a_bad_newsletter_in_the_unsubscribe_link_is_a_400_and_changes_nothing(client, n):
    sub = _active()
    token = make_token("unsubscribe", sub.id, sub.token_version)
    for answer in (client.get(f"/unsubscribe/{token}?n={n}"),
                   TestClient(client.app).post(f"/unsubscribe/{token}?n={n}", content=b"List-Unsubscribe=One-Click",
                                               headers={"Content-Type": "application/x-www-form-urlencoded"})):
        assert answer.status_code == 400 and "لا يسمّي نشرة" in answer.text
    assert subscribers()[0].status is SubscriberStatus.active and list(on(sub.id)) == ["daily", "alerts"]


def test_one_click_with_a_newsletter_leaves_only_it_and_the_last_one_leaves_all(client):
    nl = newsletter_ids()
    sub = _active()
    token = make_token("unsubscribe", sub.id, sub.token_version)
    bare = TestClient(client.app)
    one_click = {"content": b"List-Unsubscribe=One-Click",
                 "headers": {"Content-Type": "application/x-www-form-urlencoded"}}
    with json_log_lines() as lines:
        for _ in range(2):  # a second click is fine and changes nothing more
            assert bare.post(f"/unsubscribe/{token}?n={nl['alerts']}", **one_click).status_code == 200
            assert list(on(sub.id)) == ["daily"] and subscribers()[0].token_version == sub.token_version
    left = [x for x in lines if x.get("event") == "newsletter_left"]
    assert len(left) == 1 and (left[0]["subscriber_id"], left[0]["newsletter_id"]) == (sub.id, nl["alerts"])
    logged = json.dumps(lines)
    assert "reader@example.com" not in logged and token not in logged
    assert bare.post(f"/unsubscribe/{token}?n={nl['weekly']}", **one_click).status_code == 200  # not on it: fine
    assert list(on(sub.id)) == ["daily"]
    assert bare.post(f"/unsubscribe/{token}?n={nl['daily']}", **one_click).status_code == 200
    [gone] = subscribers()
    assert gone.status is SubscriberStatus.unsubscribed and gone.token_version == sub.token_version + 1
    assert bare.post(f"/unsubscribe/{token}?n={nl['daily']}", **one_click).status_code == 200  # still fine
    with session_scope() as s:
        actions = list(s.scalars(select(AuditLog.action).order_by(AuditLog.id)))
    assert actions == ["leave", "leave", "unsubscribe"]


def test_our_form_offers_the_newsletters_and_signs_up_to_those_ticked(client, env):
    with session_scope() as s:
        s.add(Newsletter(slug="friday", name="نشرة الجمعة", description="قراءات طويلة كل جمعة",
                         kind=NewsletterKind.digest, frequency="weekly", position=5))
        s.add(Newsletter(slug="retired", name="نشرة متقاعدة", kind=NewsletterKind.digest, frequency="daily",
                         hidden=True, position=6))
    page = client.get("/")
    for text in ("النشرة اليومية", "النشرة الأسبوعية", "عاجل", "نشرة الجمعة", "قراءات طويلة كل جمعة"):
        assert text in page.text
    assert "نشرة متقاعدة" not in page.text
    assert re.search(r'name="newsletters" value="daily"[^>]*checked', page.text)  # as before: daily + alerts
    ours = {"csrf_token": CSRF.search(page.text).group(1), "email": "two@example.com", "consent": "yes",
            "newsletters_shown": "1", "newsletters": ["friday", "alerts"], "website": ""}
    assert client.post("/subscribe", data=ours).status_code == 200
    [sub] = subscribers()
    assert list(on(sub.id)) == ["alerts", "friday"]
    # Ticking none is an answer: «choose one»; naming a hidden one is refused by name.
    for bad, says in (([], "اختر نشرة واحدة"), (["retired"], "retired"), (["daily", "x\x00y"], "xy")):
        data = {**ours, "email": "three@example.com", "newsletters": bad,
                "csrf_token": CSRF.search(client.get("/").text).group(1)}
        answer = client.post("/subscribe", data=data)
        assert answer.status_code == 400 and says in answer.text
        # The error is tied to the newsletters' boxes, as to any field (the first one says so).
        assert re.search(r'value="daily" aria-describedby="form-error about-daily"[^>]*aria-invalid="true"',
                         answer.text)
    assert len(subscribers()) == 1


def test_one_click_unsubscribe_rfc8058_is_idempotent_and_kills_old_links(client):
    sub = _active()
    token = make_token("unsubscribe", sub.id, sub.token_version)
    prefs = make_token("preferences", sub.id, sub.token_version)
    # A mail client's one-click POST: no cookie, no CSRF token.
    bare = TestClient(client.app)
    resp = bare.post(f"/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 200
    [gone] = subscribers()
    assert gone.status is SubscriberStatus.unsubscribed and gone.unsubscribed_at is not None
    assert gone.token_version == sub.token_version + 1
    again = bare.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200
    assert subscribers()[0].token_version == sub.token_version + 1  # bumped once
    assert client.get(f"/preferences/{prefs}").status_code == 400


def test_forged_unsubscribe_token_is_refused(client):
    sub = _active()
    for path in ("/unsubscribe/forged", f"/unsubscribe/{make_token('preferences', sub.id, 1)}"):
        assert client.get(path).status_code == 400
        assert client.post(path).status_code == 400
    assert subscribers()[0].status is SubscriberStatus.active


def test_resubscribe_after_unsubscribe_goes_back_to_pending(client, env):
    sub = _active()
    client.post(f"/unsubscribe/{make_token('unsubscribe', sub.id, sub.token_version)}")
    resp = client.post("/subscribe", data=form(client))
    assert resp.status_code == 200
    [back] = subscribers()
    assert back.status is SubscriberStatus.pending and back.unsubscribed_at is None
    assert list(on(back.id)) == ["weekly", "alerts"]  # what they chose this time
    assert (names.SEND_TRANSACTIONAL, ["confirm", back.id]) in queued_tasks(env)
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Subscriber)) == 1


def test_request_logs_carry_no_address_and_no_token(client):
    with json_log_lines() as lines:
        client.post("/subscribe", data=form(client, email="Private.Person@Example.com"))
        [sub] = subscribers()
        tokens = [make_token(p, sub.id, sub.token_version) for p in ("confirm", "preferences", "unsubscribe")]
        confirm_by_button(client, tokens[0])
        client.get(f"/preferences/{tokens[1]}")
        client.post(f"/unsubscribe/{tokens[2]}")
        client.get("/confirm/forged-token-value")
        client.post("/confirm/forged-token-value", data={"csrf_token": "forged"})
    err = "\n".join(json.dumps(x, ensure_ascii=False) for x in lines)
    assert '"route": "/confirm/{token}"' in err and '"subscriber_id": ' in err
    assert "private.person" not in err.lower()
    for token in [*tokens, "forged-token-value"]:
        assert token not in err


def test_embedded_defaults_sqlite_without_redis_sign_up_and_confirm(sqlite_env):
    """`nashra demo`'s setup: SQLite, no REDIS_URL (the SQLite broker; the per-IP limit
    is kept in the database, so it holds here too)."""
    from service.web.app import create_app

    app = create_app()
    with TestClient(app) as c:
        for i in range(5):
            assert c.post("/subscribe", data=form(c, email=f"demo{i}@example.com")).status_code == 200
        over = c.post("/subscribe", data=form(c, email="demo5@example.com"))
        assert over.status_code == 429 and int(over.headers["retry-after"]) > 0
        sub = subscribers()[0]
        assert sub.status is SubscriberStatus.pending
        assert confirm_by_button(c, make_token("confirm", sub.id, sub.token_version)).status_code == 200
        assert c.get("/readyz").status_code == 200
    with TestClient(app, client=("192.0.2.7", 50000)) as other:
        # The same address again takes the INSERT … ON CONFLICT DO NOTHING path on SQLite too.
        assert other.post("/subscribe", data=form(other, email="demo1@example.com")).status_code == 200
    assert len(subscribers()) == 5 and subscribers()[0].status is SubscriberStatus.active


def test_oversized_form_body_is_refused_before_parsing(client, env):
    huge = form(client, email="big@example.com", website="x" * 400_000)
    resp = client.post("/subscribe", data=huge)
    assert resp.status_code == 413
    assert subscribers() == [] and queued_tasks(env) == []

    def chunks():  # no Content-Length: counted as it arrives
        yield b"email=big%40example.com&website="
        for _ in range(50):
            yield b"x" * 10_000

    resp = client.post("/subscribe", content=chunks(), headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 413
    assert subscribers() == []


def test_broker_down_after_commit_still_shows_the_page_and_logs_the_id(client, monkeypatch):
    from service.config import reset_settings
    from tests.support.net import free_port
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/13")
    reset_settings()
    from service.jobs.app import configure

    configure()
    monkeypatch.setattr("service.web.signup_limit.allow", lambda *a, **k: True)
    with json_log_lines() as lines:
        resp = client.post("/subscribe", data=form(client))
    assert resp.status_code == 200 and "تحقّق من بريدك" in resp.text
    [sub] = subscribers()
    assert sub.status is SubscriberStatus.pending
    failed = [x for x in lines if x["event"] == "transactional_enqueue_failed"]
    assert failed and failed[0]["subscriber_id"] == sub.id and failed[0]["kind"] == "confirm"


def test_one_click_unsubscribe_accepts_a_multipart_body(client):
    sub = _active()
    token = make_token("unsubscribe", sub.id, sub.token_version)
    resp = TestClient(client.app).post(f"/unsubscribe/{token}", files={"List-Unsubscribe": (None, "One-Click")})
    assert resp.status_code == 200
    assert subscribers()[0].status is SubscriberStatus.unsubscribed


def test_double_submitted_signup_is_one_row_and_the_same_page_for_both(client, env, monkeypatch):
    """Two POSTs of the same address at once: both reach INSERT having seen no row (held
    there by a barrier), so without a race-safe insert one hits the unique constraint."""
    import threading

    from sqlalchemy import event

    from service.db import get_engine
    monkeypatch.setattr("service.web.signup_limit.allow", lambda *a, **k: True)
    barrier = threading.Barrier(2, timeout=10)
    held = []

    def hold_inserts(conn, cursor, statement, params, context, executemany):
        # The insert may open the statement or be its first CTE (a new address's one
        # round trip, service/subscribers/signup_rows.py).
        if "INSERT INTO SUBSCRIBERS" in statement.upper():
            held.append(1)
            barrier.wait()

    datas = [form(client), form(client)]
    results: list = [None, None]

    def post(i: int) -> None:
        try:
            with TestClient(client.app) as c:
                results[i] = c.post("/subscribe", data=datas[i])
        except BaseException as exc:  # noqa: BLE001 — reported below
            results[i] = exc

    event.listen(get_engine(), "before_cursor_execute", hold_inserts)
    try:
        with json_log_lines() as lines:
            threads = [threading.Thread(target=post, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
    finally:
        event.remove(get_engine(), "before_cursor_execute", hold_inserts)
    assert not barrier.broken and len(held) == 2, "the two signups did not reach INSERT together"
    for r in results:
        assert not isinstance(r, BaseException), repr(r)
        assert r.status_code == 200 and "تحقّق من بريدك" in r.text
    assert CSRF.sub("", results[0].text) == CSRF.sub("", results[1].text)
    [sub] = subscribers()
    assert sub.email == "reader@example.com" and sub.status is SubscriberStatus.pending
    assert [a for _, a in queued_tasks(env)] == [["confirm", sub.id]]
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(AuditLog).where(AuditLog.action == "signup")) == 1
    logged = "\n".join(json.dumps(x, ensure_ascii=False) for x in lines)
    assert "reader@example.com" not in logged.lower()
    assert not [x for x in lines if x.get("level") in ("error", "critical") or "exception" in x]
