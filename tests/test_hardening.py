"""Issue 10, class by class: every hostile input a clear 4xx, editors' access an attacker
cannot ride.  Over HTTP against the app on PostgreSQL (TestClient in-process; a real
uvicorn where proxy headers matter), each refusal asserting its status, that the
database did not change and that no mail left (nothing queued, nothing at the SMTP sink).

"The database did not change" is every table but `rate_counters`, whose whole job is to
remember the attempt.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import importlib
import io
import json
import os
import re
import threading
import time
from base64 import b64decode
from types import SimpleNamespace

import httpx
import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.db import session_factory, session_scope
from service.jobs import names
from service.models import (
    Base,
    Edition,
    EditionKind,
    EditionLink,
    EditionStatus,
    EditionVariant,
    EditorSession,
    Section,
    Subscriber,
    SubscriberStatus,
)
from service.staff.editors import create_editor
from service.subscribers.tokens import make_token
from tests.support.logs import json_log_lines
from tests.support.net import free_port
from tests.support.readers import reader as make_reader

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
ALERT = {"headline": "عاجل: زلزال بقوة 5 درجات يضرب شمال المغرب",
         "url": "https://news.example/world/2021/11/24/quake", "summary": "لا أنباء عن إصابات حتى الآن."}
SECURITY_HEADERS = ("content-security-policy", "x-frame-options", "x-content-type-options", "referrer-policy")
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"


# ------------------------------------------------------------------ fixtures and checks


@pytest.fixture
def env(pg_env, queue_redis, smtp_sink):
    with session_scope() as s:
        s.add_all([Section(slug="world", name="عربي دولي", position=1),
                   Section(slug="sport", name="رياضة", position=2)])
        # One reader with alerts on, so that planning an alert renders it.
        make_reader(s, "reader@example.com", frequency="daily", alerts=True)
        _, editor = create_editor(s, "سلمى", "editor")
        _, admin = create_editor(s, "منى", "admin")
    return SimpleNamespace(redis=queue_redis, smtp=smtp_sink, editor=editor, admin=admin)


@pytest.fixture
def client(env):
    from service.web.app import create_app

    with TestClient(create_app()) as c:
        yield c


def snapshot() -> dict[str, list[str]]:
    with session_scope() as s:
        return {t.name: sorted(repr(tuple(r)) for r in s.execute(sa.select(t)))
                for t in Base.metadata.sorted_tables if t.name != "rate_counters"}


def queued(env) -> list[tuple[str, list]]:
    r = redis.Redis.from_url(env.redis)
    out = []
    for queue in names.QUEUES:
        for raw in r.lrange(os.environ.get("REDIS_KEY_PREFIX", "") + queue, 0, -1):
            msg = json.loads(raw)
            out.append((msg["headers"]["task"], json.loads(b64decode(msg["body"]))[0]))
    return out


class Unchanged:
    """`with Unchanged(env):` — the block leaves every table as it was and mails nobody."""

    def __init__(self, env):
        self.env = env

    def __enter__(self):
        self.before = snapshot()
        self.queued = queued(self.env)
        self.mails = len(self.env.smtp.messages)
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            assert snapshot() == self.before, "the database changed"
            assert queued(self.env) == self.queued, "a message was queued"
            time.sleep(0.05)
            assert len(self.env.smtp.messages) == self.mails, "a mail left"
        return False


def auth(token):
    return {"Authorization": f"Bearer {token}"}


def login(client, name, token) -> httpx.Response:
    page = TestClient(client.app).get("/editor")  # the login form, as a browser without a session sees it
    return client.post("/editor/login", data={"csrf_token": CSRF.search(page.text).group(1), "name": name,
                                              "token": token}, follow_redirects=False)


def page_csrf(client) -> str:
    page = client.get("/editor")
    assert page.status_code == 200 and 'action="/editor/logout"' in page.text, page.text[:300]
    return CSRF.search(page.text).group(1)


def signup_form(client, **over) -> dict:
    page = client.get("/")
    data = {"csrf_token": CSRF.search(page.text).group(1), "email": "new@example.com", "frequency": "daily",
            "alerts": "yes", "consent": "yes", "website": ""}
    data.update(over)
    return data


def editions() -> list[Edition]:
    with session_scope() as s:
        return list(s.scalars(sa.select(Edition).order_by(Edition.id)))


def plan_and_render(edition_id: int, link_urls: set | None = None) -> EditionVariant:
    """What the planner task does, in a transaction rolled back afterwards; link_urls gets
    where the variant's tracked links lead (CLICK_TRACKING rewrites them to /r/…)."""
    from service.delivery.planner import plan

    session = session_factory()()
    try:
        assert plan(session, edition_id) >= 1
        [variant] = session.scalars(sa.select(EditionVariant).where(EditionVariant.edition_id == edition_id))
        if link_urls is not None:
            link_urls.update(session.scalars(sa.select(EditionLink.url).where(EditionLink.edition_id == edition_id)))
        session.expunge(variant)
        return variant
    finally:
        session.rollback()
        session.close()


# ------------------------------------------------------------------ 1. NUL bytes (and lone surrogates)


@pytest.mark.parametrize("field", ["headline", "url", "summary", "idempotency_key", "article_url"])
def test_1_nul_or_a_lone_surrogate_in_any_alert_field_is_a_422(client, env, field):
    for bad in ("a\u0000b", "k\ud800y"):
        body = {**ALERT, field: (ALERT.get(field) or "https://news.example/a") + bad}
        if field == "article_url":
            body = {"article_url": "https://news.example/a" + bad}
        payload = json.dumps(body).encode()  # ensure_ascii: the surrogate travels as \ud800
        with Unchanged(env):
            resp = client.post("/api/alerts", content=payload,
                               headers={**auth(env.editor), "Content-Type": "application/json"})
            assert resp.status_code == 422, resp.text
            # NUL: the field says why; a lone surrogate is refused as JSON by the parser.
            assert (field if "\x00" in bad else "JSON") in resp.json()["error"]


def test_1_nul_in_the_editors_forms_and_other_text_fields_is_a_4xx(client, env):
    assert login(client, "سلمى", env.editor).status_code == 303
    csrf = page_csrf(client)
    for field in ("headline", "url", "summary"):
        for action in ("/editor/preview", "/editor/send", "/editor/test"):
            data = {**ALERT, field: ALERT[field] + "\x00page", "csrf_token": csrf, "test_to": "desk@example.com"}
            with Unchanged(env):
                resp = client.post(action, data=data, follow_redirects=False)
                assert resp.status_code == 422, (action, field, resp.status_code)
                assert 'role="alert"' in resp.text
    with Unchanged(env):
        data = {"article_url": "https://news.example/a\x00", "csrf_token": csrf}
        assert client.post("/editor/send", data=data, follow_redirects=False).status_code == 422
        data = {**ALERT, "csrf_token": csrf, "test_to": "desk\x00@example.com"}
        assert client.post("/editor/test", data=data).status_code == 422
        data = {**ALERT, "csrf_token": csrf, "idempotency_key": "k\x00y"}
        assert client.post("/editor/send", data=data, follow_redirects=False).status_code == 422
    anon = TestClient(client.app)
    with Unchanged(env):
        assert anon.post("/subscribe", data=signup_form(anon, email="a\x00b@example.com")).status_code == 400
        assert login(anon, "سل\x00مى", env.editor).status_code == 401


# ------------------------------------------------------------------ 2. ids past 32 and 64 bits


@pytest.mark.parametrize("edition_id", [2**31, 2**63, 2**64 + 1, -(2**31) - 1, 10**30])
def test_2_ids_past_the_columns_range_are_404_not_500(client, env, edition_id):
    assert login(client, "سلمى", env.editor).status_code == 303
    csrf = page_csrf(client)
    with Unchanged(env):
        assert client.get(f"/api/editions/{edition_id}", headers=auth(env.editor)).status_code == 404
        for action in ("cancel", "pause", "resume"):
            resp = client.post(f"/api/editions/{edition_id}/{action}", headers=auth(env.editor))
            assert resp.status_code == 404, resp.text
        resp = client.post(f"/editor/editions/{edition_id}/cancel", data={"csrf_token": csrf}, follow_redirects=False)
        assert resp.status_code == 404
    with Unchanged(env):  # not an integer at all: FastAPI's 422
        assert client.get("/api/editions/1e9", headers=auth(env.editor)).status_code == 422


# ------------------------------------------------------------------ 3. 413 and 500 carry the security headers


def test_3_the_413_and_the_500_carry_the_same_security_headers(client, env, monkeypatch):
    ordinary = client.get("/")
    with Unchanged(env):
        big = client.post("/subscribe", content=b"email=" + b"x" * 300_000,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert big.status_code == 413

    def broken(edition_id):
        raise RuntimeError("a bug")

    monkeypatch.setattr("service.usecases.editions.progress", broken)
    with json_log_lines() as lines, Unchanged(env):
        boom = client.get("/api/editions/1", headers=auth(env.editor))
    assert boom.status_code == 500
    assert "a bug" not in boom.text and "Traceback" not in boom.text
    assert any(x["event"] == "http_unhandled_error" and x["route"] == "/api/editions/{edition_id}" for x in lines)
    for resp in (big, boom):
        for name in SECURITY_HEADERS:
            assert resp.headers.get(name) == ordinary.headers[name], name
        assert resp.headers["cache-control"] == "no-store"


# ------------------------------------------------------------------ 4. CSV export neutralises formulas


def test_4_csv_export_neutralises_formulas_and_imports_back_unchanged(env, tmp_path, capsys):
    from service.cli.main import main

    hostile = ["=1+2@example.org", "+cmd@example.org", "-2+3@example.org", "'=x@example.org"]
    with session_scope() as s:
        for i, address in enumerate(hostile):
            s.add(Subscriber(email=address, status=SubscriberStatus.active,
                             consent_source=["=HYPERLINK(\"https://evil.example\")", "\tform", "@SUM(A1)", "ok"][i]))
    out = tmp_path / "export.csv"
    with pytest.raises(SystemExit) as done:
        main(["subscribers", "export", str(out)])
    assert done.value.code == 0
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"))))
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
    assert {r[0] for r in rows[1:]} >= {"'=1+2@example.org", "'+cmd@example.org", "'-2+3@example.org",
                                        "''=x@example.org"}
    # An export imports as it was: no reader changes (the import audits itself), nothing is mailed.
    readers = snapshot()["subscribers"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["subscribers", "import", str(out)])
    assert done.value.code == 0
    assert "0 created, 5 already here (0 updated, 5 unchanged), 0 skipped" in capsys.readouterr().out
    assert snapshot()["subscribers"] == readers and queued(env) == [] and env.smtp.messages == []


# ------------------------------------------------------------------ 5. local part over 64


def test_5_a_local_part_over_64_octets_is_refused(client, env):
    with Unchanged(env):
        resp = client.post("/subscribe", data=signup_form(client, email="a" * 65 + "@example.com"))
        assert resp.status_code == 400 and "عنوان البريد" in resp.text
    assert login(client, "سلمى", env.editor).status_code == 303
    with Unchanged(env):
        data = {**ALERT, "csrf_token": page_csrf(client), "test_to": "d" * 65 + "@example.com"}
        assert client.post("/editor/test", data=data).status_code == 422
    ok = client.post("/subscribe", data=signup_form(client, email="a" * 64 + "@example.com"))
    assert ok.status_code == 200


# ------------------------------------------------------------------ 6. bidi controls in alert URLs


def test_6_bidi_controls_are_stripped_from_alert_urls_and_invisibles_refused(client, env):
    url = "https://x.example/\u202egpj.exe\u200f"
    assert login(client, "سلمى", env.editor).status_code == 303
    with Unchanged(env):  # the preview shows the link as it will go, and writes nothing
        resp = client.post("/editor/preview", data={**ALERT, "url": url, "csrf_token": page_csrf(client)})
        assert resp.status_code == 200
        mail = re.search(r'srcdoc="([^"]*)"', resp.text).group(1)  # the mail as readers will get it
        assert "https://x.example/gpj.exe" in mail and not any(c in mail for c in BIDI[:9])
    with Unchanged(env):
        resp = client.post("/api/alerts", json={**ALERT, "url": "https://x.example/\u200bpage"},
                           headers=auth(env.editor))
        assert resp.status_code == 422 and "url" in resp.json()["error"]
    resp = client.post("/api/alerts", json={**ALERT, "url": url}, headers=auth(env.editor))
    assert resp.status_code == 202
    [ed] = editions()
    assert ed.params["url"] == "https://x.example/gpj.exe"
    leads_to: set = set()  # the mail's link goes through /r/ (CLICK_TRACKING): where it leads
    variant = plan_and_render(ed.id, leads_to)
    assert "https://x.example/gpj.exe" in leads_to and not any(c in u for u in leads_to for c in BIDI[:9])
    assert not any(c in variant.text + variant.html for c in BIDI[:9])


# ------------------------------------------------------------------ 7. Cache-Control on token pages


def test_7_pages_that_carry_a_token_are_not_stored(client, env):
    with session_scope() as s:
        sub = s.scalar(sa.select(Subscriber))
        sub_id, version = sub.id, sub.token_version
    tokens = {p: make_token(p, sub_id, version) for p in ("confirm", "preferences", "unsubscribe")}
    with Unchanged(env):
        for purpose, token in tokens.items():
            for t in (token, token[:-3] + "abc"):
                resp = client.get(f"/{purpose}/{t}")
                assert resp.status_code in (200, 400)
                assert resp.headers["cache-control"] == "no-store", purpose
        resp = client.post(f"/preferences/{tokens['preferences']}", data={"csrf_token": "forged"})
        assert resp.status_code == 400 and resp.headers["cache-control"] == "no-store"
    resp = client.post(f"/unsubscribe/{tokens['unsubscribe']}")
    assert resp.status_code == 200 and resp.headers["cache-control"] == "no-store"


# ------------------------------------------------------------------ 8. X-Forwarded-For from FORWARDED_ALLOW_IPS only


def _nashra_web_options(monkeypatch) -> dict:
    """What `nashra web` hands uvicorn (uvicorn.run captured, not run)."""
    cli = importlib.import_module("service.cli.main")  # the module, not the `main` its package exports
    seen: dict = {}
    monkeypatch.setattr(cli.uvicorn, "run", lambda *a, **k: seen.update(k))
    cli.cmd_web(SimpleNamespace(host="127.0.0.1", port=8000, workers=1))
    return seen


class _Served:
    def __init__(self, options: dict):
        import uvicorn

        from service.web.app import create_app

        self.port = free_port()
        proxy = {k: options[k] for k in ("proxy_headers", "forwarded_allow_ips")}
        self.server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=self.port,
                                                    log_level="warning", **proxy))

    def __enter__(self) -> str:
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _signup_over_http(http: httpx.Client, email: str, forwarded_for: str) -> httpx.Response:
    page = http.get("/")
    data = {"csrf_token": CSRF.search(page.text).group(1), "email": email, "frequency": "daily",
            "alerts": "yes", "consent": "yes", "website": ""}
    return http.post("/subscribe", data=data, headers={"X-Forwarded-For": forwarded_for})


def test_8_x_forwarded_for_is_believed_only_from_forwarded_allow_ips(env, monkeypatch):
    options = _nashra_web_options(monkeypatch)
    assert options["proxy_headers"] is False  # by default nobody's header is believed, not even loopback's
    with _Served(options) as base, httpx.Client(base_url=base) as http:
        for i in range(5):
            assert _signup_over_http(http, f"r{i}@example.com", f"203.0.113.{i}").status_code == 200
        with Unchanged(env):
            resp = _signup_over_http(http, "rotated@example.com", "203.0.113.99")
            assert resp.status_code == 429 and int(resp.headers["retry-after"]) > 0

    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "127.0.0.1")  # a proxy on this host
    from service.config import reset_settings

    reset_settings()
    options = _nashra_web_options(monkeypatch)
    assert options["proxy_headers"] is True and options["forwarded_allow_ips"] == ["127.0.0.1"]
    with _Served(options) as base, httpx.Client(base_url=base) as http:
        # Behind the trusted proxy each reader has their own address (and their own limit).
        assert _signup_over_http(http, "behind-proxy@example.com", "198.51.100.7").status_code == 200


def test_8_forwarded_allow_ips_is_checked_at_start(monkeypatch):
    from service.config import ConfigError, load_settings

    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.5, 10.1.0.0/16")
    assert load_settings().forwarded_allow_ips == ["10.0.0.5", "10.1.0.0/16"]
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "proxy.local")
    with pytest.raises(ConfigError, match="FORWARDED_ALLOW_IPS"):
        load_settings()


# ------------------------------------------------------------------ 9. limits that work without Redis


def test_9_the_signup_limit_holds_without_redis(pg_env, smtp_sink, monkeypatch):
    from service.config import reset_settings
    from service.web.app import create_app

    monkeypatch.delenv("REDIS_URL", raising=False)
    reset_settings()
    env = SimpleNamespace(smtp=smtp_sink)
    with TestClient(create_app()) as c:
        for i in range(5):
            assert c.post("/subscribe", data=signup_form(c, email=f"r{i}@example.com")).status_code == 200
        before = snapshot()
        resp = c.post("/subscribe", data=signup_form(c, email="sixth@example.com"))
        assert resp.status_code == 429 and 0 < int(resp.headers["retry-after"]) <= 600
        assert "طلبات كثيرة" in resp.text
        assert snapshot() == before and env.smtp.messages == []
        # Another client is not held back by this one.
        other = TestClient(c.app, client=("192.0.2.8", 40000))
        assert other.post("/subscribe", data=signup_form(other, email="other@example.com")).status_code == 200


def test_9_the_signup_limit_holds_while_redis_is_down(pg_env, smtp_sink, monkeypatch):
    from service.config import reset_settings
    from service.web import signup_limit

    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/13")
    reset_settings()
    verdicts = [signup_limit.allow("subscribe", "192.0.2.50") for _ in range(signup_limit.SIGNUP_LIMIT + 1)]
    assert [bool(v) for v in verdicts] == [True] * signup_limit.SIGNUP_LIMIT + [False]


def test_9_one_address_gets_at_most_three_confirmations_a_day(client, env, monkeypatch):
    monkeypatch.setattr("service.subscribers.lifecycle.RESEND_AFTER", dt.timedelta(0))
    for i in range(3):  # from three places, so that the per-client limit is not what stops it
        c = TestClient(client.app, client=(f"192.0.2.{10 + i}", 40000))
        assert c.post("/subscribe", data=signup_form(c, email="victim@example.com")).status_code == 200
    assert [a for _, a in queued(env)].count(["confirm", 2]) == 3
    c = TestClient(client.app, client=("192.0.2.20", 40000))
    form = signup_form(c, email="victim@example.com")
    with Unchanged(env):
        resp = c.post("/subscribe", data=form)
        assert resp.status_code == 200 and "تحقّق من بريدك" in resp.text  # the same page: no enumeration


# ------------------------------------------------------------------ 10. editors' page sessions


def _session_rows() -> list[EditorSession]:
    with session_scope() as s:
        return list(s.scalars(sa.select(EditorSession)))


def test_10_the_page_session_is_its_own_rotated_ended_by_logout_with_csrf_and_expiring(client, env):
    resp = login(client, "سلمى", env.editor)
    assert resp.status_code == 303
    cookie = client.cookies.get("nashra_session")
    assert cookie and env.editor not in resp.headers["set-cookie"]
    [row] = _session_rows()
    assert row.secret_hash == hashlib.sha256(cookie.encode()).hexdigest()
    # The cookie opens no API, and the API token opens no page.
    with Unchanged(env):
        assert client.post("/api/alerts", json=ALERT).status_code == 401
        assert client.post("/api/alerts", json=ALERT, headers=auth(cookie)).status_code == 401
        stranger = TestClient(client.app, cookies={"nashra_session": env.editor})
        assert 'name="token"' in stranger.get("/editor").text

    # Rotated at login: logging in again ends the session the browser held.
    assert login(client, "سلمى", env.editor).status_code == 303
    new_cookie = client.cookies.get("nashra_session")
    assert new_cookie != cookie and len(_session_rows()) == 1
    old = TestClient(client.app, cookies={"nashra_session": cookie})
    assert 'name="token"' in old.get("/editor").text

    # Logout needs the page's CSRF token: a cross-site POST logs nobody out.
    with Unchanged(env):
        assert client.post("/editor/logout", data={}, follow_redirects=False).status_code == 400
        assert client.post("/editor/logout", data={"csrf_token": "forged"}, follow_redirects=False).status_code == 400
    csrf = page_csrf(client)
    resp = client.post("/editor/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert resp.status_code == 303 and _session_rows() == []
    replay = TestClient(client.app, cookies={"nashra_session": new_cookie})  # a copied cookie dies with logout
    assert 'name="token"' in replay.get("/editor").text
    assert replay.post("/editor/send", data={**ALERT, "csrf_token": csrf}, follow_redirects=False).status_code == 401
    assert editions() == []

    # Expiring: by age and by idleness.
    for column in ("expires_at", "last_seen_at"):
        assert login(client, "سلمى", env.editor).status_code == 303
        with session_scope() as s:
            s.execute(sa.update(EditorSession).values(**{column: dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)}))
        assert 'name="token"' in client.get("/editor").text, column


def test_10_failed_logins_are_throttled_per_client_and_per_name(client, env):
    for _ in range(10):
        assert login(client, "سلمى", "nse_wrong").status_code == 401
    with Unchanged(env):  # past the limit even the right token is refused, with a wait
        resp = login(client, "سلمى", env.editor)
        assert resp.status_code == 429 and 0 < int(resp.headers["retry-after"]) <= 15 * 60
        assert login(client, "منى", env.admin).status_code == 429  # per client
        elsewhere = TestClient(client.app, client=("192.0.2.30", 40000))
        assert login(elsewhere, "سلمى", env.editor).status_code == 429  # per name
    assert _session_rows() == []
    elsewhere = TestClient(client.app, client=("192.0.2.31", 40000))
    assert login(elsewhere, "منى", env.admin).status_code == 303  # another name from elsewhere


# ------------------------------------------------------------------ 11. editors apart: keys and roles


def test_11_idempotency_keys_are_each_editors_own(client, env):
    with session_scope() as s:
        _, other = create_editor(s, "ريم", "editor")
    mine = client.post("/api/alerts", json={**ALERT, "idempotency_key": "k-1"}, headers=auth(env.editor))
    theirs = client.post("/api/alerts", json={**ALERT, "url": ALERT["url"] + "?2", "idempotency_key": "k-1"},
                         headers=auth(other))
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["edition_id"] != theirs.json()["edition_id"]
    again = client.post("/api/alerts", json={**ALERT, "idempotency_key": "k-1"}, headers=auth(env.editor))
    assert again.status_code == 202 and again.json()["edition_id"] == mine.json()["edition_id"]
    assert len(editions()) == 2  # a retry is still one alert (its planning may be asked again: harmless)


def test_11_steering_a_digest_needs_an_admin(client, env):
    with session_scope() as s:
        digest = Edition(kind=EditionKind.digest, status=EditionStatus.sending, title="نشرة الصباح", params={})
        s.add(digest)
        s.flush()
        digest_id = digest.id
    assert login(client, "سلمى", env.editor).status_code == 303
    with Unchanged(env):
        resp = client.post(f"/api/editions/{digest_id}/pause", headers=auth(env.editor))
        assert resp.status_code == 403
        resp = client.post(f"/editor/editions/{digest_id}/cancel", data={"csrf_token": page_csrf(client)},
                           follow_redirects=False)
        assert resp.status_code == 403
    assert client.get(f"/api/editions/{digest_id}", headers=auth(env.editor)).status_code == 200  # watching is fine
    resp = client.post(f"/api/editions/{digest_id}/pause", headers=auth(env.admin))
    assert resp.status_code == 200 and resp.json()["status"] == "paused"


# ------------------------------------------------------------------ 12. keyed hashes in the logs


def test_12_addresses_in_the_logs_are_keyed_hashes(client, env, monkeypatch):
    assert login(client, "سلمى", env.editor).status_code == 303
    address = "desk@example.com"
    with json_log_lines() as lines:
        resp = client.post("/editor/test", data={**ALERT, "test_to": address, "csrf_token": page_csrf(client)})
    assert resp.status_code == 200
    assert [m.rcpt_tos for m in env.smtp.wait_for(1)] == [[address]] and queued(env) == []
    [sent] = [x for x in lines if x["event"] == "alert_test_sent"]
    bare = hashlib.sha256(address.encode()).hexdigest()
    assert sent["to"].startswith("h:") and bare[:12] not in sent["to"]
    assert address not in json.dumps(lines)
    from service.config import reset_settings
    from service.logs import redact

    tag = redact(address)
    assert sent["to"] == tag
    monkeypatch.setenv("SECRET_KEY", "another-secret-key-0123456789abcdef")
    reset_settings()
    assert redact(address) != tag  # keyed: without SECRET_KEY nobody can recompute it


# ------------------------------------------------------------------ 13. markup in feed titles


def test_13_markup_in_a_feed_title_is_reduced_to_text_at_ingestion(client, env, feed_server):
    from service.articles.feeds import add_feed
    from service.usecases.ingest import poll_all

    rss = """<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>
      <item><title>خبر &lt;script&gt;alert(1)&lt;/script&gt; &lt;b&gt;عاجل&lt;/b&gt;</title>
      <link>https://news.example/a/1</link><guid>https://news.example/a/1</guid>
      <pubDate>Wed, 24 Nov 2021 10:00:00 +0200</pubDate><description>نص الخبر.</description></item>
    </channel></rss>"""
    url = feed_server.serve("/hostile.xml", rss)
    with session_scope() as s:
        add_feed(s, url)
    poll_all()
    from service.models import Article

    with session_scope() as s:
        [title] = s.scalars(sa.select(Article.title)).all()
    assert title == "خبر عاجل"
    resp = client.post("/api/alerts", json={"article_url": "https://news.example/a/1"}, headers=auth(env.editor))
    assert resp.status_code == 202
    variant = plan_and_render(resp.json()["edition_id"])
    assert "<script" not in variant.text and "&lt;script" not in variant.html and "خبر عاجل" in variant.text


# ------------------------------------------------------------------ 14. 429 says when to come back


def test_14_every_429_carries_retry_after(client, env):
    for i in range(5):
        client.post("/subscribe", data=signup_form(client, email=f"r{i}@example.com"))
    for _ in range(10):
        login(client, "nobody", "nse_wrong")
    with Unchanged(env):
        signup = client.post("/subscribe", data=signup_form(client, email="late@example.com"))
        log_in = login(client, "nobody", "nse_wrong")
    for resp, window in ((signup, 600), (log_in, 900)):
        assert resp.status_code == 429
        assert resp.headers["retry-after"].isdigit() and 0 < int(resp.headers["retry-after"]) <= window
        assert resp.headers["content-type"].startswith("text/html")
