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
from service.models import AuditLog, Section, Subscriber, SubscriberStatus
from service.subscribers.tokens import make_token
from service.web import csrf
from tests.support.logs import json_log_lines

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
    assert sub.sections == [ids["sport"], ids["world"]]
    assert sub.frequency.value == "weekly" and sub.alerts is True
    assert sub.consent_source == "web:form" and sub.consented_at is not None
    assert queued_tasks(env) == [(names.SEND_TRANSACTIONAL, ["confirm", sub.id])]


def test_signup_page_is_the_same_for_an_active_address_and_nothing_changes(client, env):
    with session_scope() as s:
        s.add(Subscriber(email="reader@example.com", status=SubscriberStatus.active, frequency="daily",
                         alerts=False, sections=[]))
    first = client.post("/subscribe", data=form(client, email="new@example.com"))
    second = client.post("/subscribe", data=form(client))
    assert first.status_code == second.status_code == 200
    strip = lambda html: CSRF.sub("", html)  # noqa: E731
    assert strip(first.text) == strip(second.text)
    active = [x for x in subscribers() if x.email == "reader@example.com"][0]
    assert active.status is SubscriberStatus.active and active.frequency.value == "daily" and active.alerts is False
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


def _active(email="reader@example.com", sections=()) -> Subscriber:
    with session_scope() as s:
        sub = Subscriber(email=email, status=SubscriberStatus.active, frequency="daily", alerts=True,
                         sections=list(sections))
        s.add(sub)
        s.flush()
        return sub


def test_preferences_show_and_save_ordered_sections(client):
    ids = section_ids()
    sub = _active(sections=[ids["economy"]])
    token = make_token("preferences", sub.id, sub.token_version)
    page = client.get(f"/preferences/{token}")
    assert page.status_code == 200 and "اقتصاد" in page.text
    data = {"csrf_token": CSRF.search(page.text).group(1), "frequency": "none", "alerts": "no",
            "sections": [str(ids["world"]), str(ids["sport"])],
            f"rank_{ids['world']}": "2", f"rank_{ids['sport']}": "1"}
    resp = client.post(f"/preferences/{token}", data=data)
    assert resp.status_code == 200 and "حُفظت تفضيلاتك" in resp.text
    [saved] = subscribers()
    assert saved.sections == [ids["sport"], ids["world"]]
    assert saved.frequency.value == "none" and saved.alerts is False


def test_preferences_refuse_bad_input_and_change_nothing(client):
    ids = section_ids()
    sub = _active(sections=[ids["economy"]])
    token = make_token("preferences", sub.id, sub.token_version)
    good = CSRF.search(client.get(f"/preferences/{token}").text).group(1)
    other_sub_csrf = __import__("service.web.csrf", fromlist=["x"]).issue(f"preferences:{sub.id + 1}")
    cases = [
        {"csrf_token": good, "frequency": "daily", "alerts": "yes", "sections": ["424242"]},
        {"csrf_token": good, "frequency": "hourly", "alerts": "yes"},
        {"frequency": "weekly", "alerts": "no"},
        {"csrf_token": other_sub_csrf, "frequency": "weekly", "alerts": "no"},
    ]
    for data in cases:
        assert client.post(f"/preferences/{token}", data=data).status_code == 400
    assert client.post("/preferences/forged-token", data=cases[0]).status_code == 400
    [same] = subscribers()
    assert same.sections == [ids["economy"]] and same.frequency.value == "daily" and same.alerts is True


def test_unsubscribe_get_shows_button_and_changes_nothing(client):
    sub = _active()
    token = make_token("unsubscribe", sub.id, sub.token_version)
    page = client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200
    assert f'action="/unsubscribe/{token}"' in page.text and "<button" in page.text
    assert subscribers()[0].status is SubscriberStatus.active


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
