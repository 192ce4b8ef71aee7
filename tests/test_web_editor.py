"""Editors: the JSON API (Bearer token) and the pages (cookie + CSRF), on PostgreSQL + Redis."""

from __future__ import annotations

import json
import os
import re
from base64 import b64decode

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service.db import session_scope
from service.jobs import names
from service.models import Delivery, Edition, EditionStatus
from service.staff.editors import create_editor
from tests.support.readers import reader

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
KEY = re.compile(r'name="idempotency_key" value="([^"]+)"')
ALERT = {"headline": "عاجل: زلزال بقوة 5 درجات يضرب شمال المغرب",
         "url": "https://news.example/world/2021/11/24/quake", "summary": "لا أنباء عن إصابات حتى الآن."}


@pytest.fixture
def token(pg_env, queue_redis):
    with session_scope() as s:
        _, tok = create_editor(s, "سلمى", "editor")
    return tok


@pytest.fixture
def client(token):
    from service.web.app import create_app

    with TestClient(create_app()) as c:
        yield c


def auth(tok):
    return {"Authorization": f"Bearer {tok}"}


def queued(redis_url, queue):
    r = redis.Redis.from_url(redis_url)
    out = []
    # Celery's keys carry the test run's prefix (see the redis_url fixture).
    for raw in r.lrange(os.environ.get("REDIS_KEY_PREFIX", "") + queue, 0, -1):
        msg = json.loads(raw)
        out.append((msg["headers"]["task"], json.loads(b64decode(msg["body"]))[0]))
    return out


def editions():
    with session_scope() as s:
        return list(s.scalars(select(Edition).order_by(Edition.id)))


def test_api_refuses_missing_or_wrong_token(client):
    for headers in ({}, auth("nse_wrong"), {"Authorization": "Basic abc"}, auth("x" * 5000)):
        resp = client.post("/api/alerts", json=ALERT, headers=headers)
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/editions/1").status_code == 401
    assert client.post("/api/editions/1/cancel").status_code == 401
    assert editions() == []


def test_api_alert_is_accepted_and_planned_after_commit(client, token, queue_redis):
    resp = client.post("/api/alerts", json={**ALERT, "idempotency_key": "k-1"}, headers=auth(token))
    assert resp.status_code == 202
    edition_id = resp.json()["edition_id"]
    [ed] = editions()
    assert ed.id == edition_id and ed.kind.value == "alert" and ed.params["headline"] == ALERT["headline"]
    assert queued(queue_redis, "alerts") == [(names.PLAN_EDITION, [edition_id])]
    again = client.post("/api/alerts", json={**ALERT, "idempotency_key": "k-1"}, headers=auth(token))
    assert again.status_code == 202 and again.json()["edition_id"] == edition_id
    assert len(editions()) == 1


@pytest.mark.parametrize("body,fragment", [
    ({"headline": "", "url": ALERT["url"]}, "headline"),
    ({"headline": "عاجل", "url": "javascript:alert(1)"}, "url"),
    ({"headline": "عاجل", "url": ALERT["url"], "colour": "red"}, "colour"),
    ({"article_url": "https://news.example/not-ingested"}, "article"),
    ({"headline": "ع" * 5000, "url": ALERT["url"]}, "headline"),
])
def test_api_bad_alert_is_422_with_a_message_and_creates_nothing(client, token, queue_redis, body, fragment):
    resp = client.post("/api/alerts", json=body, headers=auth(token))
    assert resp.status_code == 422
    assert fragment in resp.json()["error"]
    assert editions() == [] and queued(queue_redis, "alerts") == []


def test_api_malformed_json_is_422(client, token):
    resp = client.post("/api/alerts", content=b"{not json", headers={**auth(token), "Content-Type": "application/json"})
    assert resp.status_code == 422 and editions() == []


def test_api_progress_and_cancel(client, token):
    edition_id = client.post("/api/alerts", json=ALERT, headers=auth(token)).json()["edition_id"]
    with session_scope() as s:
        sub = reader(s, "r@example.com")
        s.add(Delivery(edition_id=edition_id, subscriber_id=sub.id))
    progress = client.get(f"/api/editions/{edition_id}", headers=auth(token))
    assert progress.status_code == 200
    assert progress.json()["total"] == 1 and progress.json()["remaining"] == 1
    assert client.get("/api/editions/999999", headers=auth(token)).status_code == 404
    cancelled = client.post(f"/api/editions/{edition_id}/cancel", headers=auth(token))
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["by_status"]["cancelled"] == 1
    assert client.post(f"/api/editions/{edition_id}/cancel", headers=auth(token)).status_code == 409
    assert client.post("/api/editions/999999/cancel", headers=auth(token)).status_code == 404


def test_api_pause_and_resume(client, token):
    edition_id = client.post("/api/alerts", json=ALERT, headers=auth(token)).json()["edition_id"]
    # A draft cannot be paused: nothing is sending yet.
    refused = client.post(f"/api/editions/{edition_id}/pause", headers=auth(token))
    assert refused.status_code == 409 and "paused" in refused.json()["error"]
    with session_scope() as s:
        s.get(Edition, edition_id).status = EditionStatus.sending
    paused = client.post(f"/api/editions/{edition_id}/pause", headers=auth(token))
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    resumed = client.post(f"/api/editions/{edition_id}/resume", headers=auth(token))
    assert resumed.status_code == 200 and resumed.json()["status"] in ("planned", "sending")
    assert client.post(f"/api/editions/{edition_id}/explode", headers=auth(token)).status_code == 404
    assert client.post(f"/api/editions/{edition_id}/pause").status_code == 401


# ------------------------------------------------------------------ pages


def login(client, tok, name="سلمى"):
    page = client.get("/editor")
    assert page.status_code == 200 and 'name="token"' in page.text and 'name="name"' in page.text
    return client.post("/editor/login", data={"csrf_token": CSRF.search(page.text).group(1), "name": name,
                                              "token": tok}, follow_redirects=False)


def test_login_sets_an_httponly_strict_cookie_and_wrong_token_is_refused(client, token):
    bad = login(client, "nse_wrong")
    assert bad.status_code == 401 and "رمز الدخول غير صحيح" in bad.text
    ok = login(client, token)
    assert ok.status_code == 303
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    page = client.get("/editor")
    assert "إرسال تنبيه عاجل" in page.text and "سلمى" in page.text


def test_page_send_needs_csrf_and_then_creates_one_alert(client, token):
    login(client, token)
    page = client.get("/editor").text
    forged = client.post("/editor/send", data={**ALERT, "csrf_token": "forged"}, follow_redirects=False)
    assert forged.status_code == 400 and editions() == []
    data = {**ALERT, "csrf_token": CSRF.search(page).group(1), "idempotency_key": KEY.search(page).group(1)}
    first = client.post("/editor/send", data=data, follow_redirects=False)
    double_click = client.post("/editor/send", data=data, follow_redirects=False)
    assert first.status_code == double_click.status_code == 303
    [ed] = editions()
    assert first.headers["location"] == f"/editor?sent={ed.id}"
    listing = client.get(first.headers["location"]).text
    assert ALERT["headline"] in listing and f"أُنشئ التنبيه رقم {ed.id}" in listing
    # A stranger's page (no cookie) cannot send.
    anon = TestClient(client.app)
    refused = anon.post("/editor/send", data=data, follow_redirects=False)
    assert refused.status_code == 401 and 'name="token"' in refused.text  # the login form
    assert len(editions()) == 1


def test_page_preview_renders_the_alert_and_writes_nothing(client, token):
    login(client, token)
    csrf = CSRF.search(client.get("/editor").text).group(1)
    resp = client.post("/editor/preview", data={**ALERT, "csrf_token": csrf})
    assert resp.status_code == 200, resp.text
    assert "srcdoc=" in resp.text and "زلزال" in resp.text and 'sandbox=""' in resp.text
    assert "لن يصل إلى أحد" in resp.text  # no reader yet: the page says so before anyone presses send
    assert editions() == []
    bad = client.post("/editor/preview", data={"headline": "", "url": "ftp://x", "csrf_token": csrf})
    assert bad.status_code == 422 and 'role="alert"' in bad.text
    assert editions() == []


def test_page_sends_a_test_copy_to_one_address(client, token, smtp_sink):
    login(client, token)
    csrf = CSRF.search(client.get("/editor").text).group(1)
    resp = client.post("/editor/test", data={**ALERT, "test_to": "desk@example.com", "csrf_token": csrf})
    assert resp.status_code == 200, resp.text
    assert "أُرسلت نسخة تجريبية" in resp.text
    [msg] = smtp_sink.wait_for(1, timeout=10)
    assert msg.rcpt_tos == ["desk@example.com"]
    assert msg.message["Subject"].startswith("[تجربة]")
    assert editions() == []
    bad = client.post("/editor/test", data={**ALERT, "test_to": "desk@example.com\r\nBcc: x@y", "csrf_token": csrf})
    assert bad.status_code == 422
    assert len(smtp_sink.messages) == 1


def test_page_cancel_button(client, token):
    login(client, token)
    page = client.get("/editor").text
    data = {**ALERT, "csrf_token": CSRF.search(page).group(1), "idempotency_key": "page-1"}
    client.post("/editor/send", data=data)
    [ed] = editions()
    page = client.get("/editor").text
    assert f'action="/editor/editions/{ed.id}/cancel"' in page
    resp = client.post(f"/editor/editions/{ed.id}/cancel", data={"csrf_token": CSRF.search(page).group(1)},
                       follow_redirects=False)
    assert resp.status_code == 303
    assert editions()[0].status is EditionStatus.cancelled
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Edition)) == 1
