"""Every route states the role it needs, and is walked with no credentials, an editor's
and an admin's: a route for anyone lets everyone in, an editor's route refuses the
anonymous caller, an admin's refuses an editor too (issue 10, class 11).

A refusal looks like what it is: the API answers 401 (with `WWW-Authenticate: Bearer`)
or 403; a page answers 401 with the login form (or a bare 401 for the table's script),
or 403.  The walk covers every route the app has — a new route that states nothing
stops the app from starting (`access.check_every_route`).
"""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.config import reset_settings
from service.db import session_scope
from service.models import (
    Edition,
    EditionKind,
    EditionStatus,
    Editor,
    Section,
    SubscriberStatus,
)
from service.staff.editors import create_editor, has_role
from service.staff.sessions import start
from service.subscribers.tokens import make_token
from service.web import access
from service.web.access import Role
from service.web.app import create_app
from tests.support.readers import reader

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
ALERT = {"headline": "عاجل: تجربة الأدوار", "url": "https://news.example/roles"}
LOGIN_FORM = 'action="/editor/login"'


@pytest.fixture
def setup(pg_env, queue_redis, smtp_sink):
    with session_scope() as s:
        s.add(Section(slug="world", name="عربي دولي", position=1))
        sub = reader(s, "reader@example.com", status=SubscriberStatus.pending, alerts=True)
        _, editor = create_editor(s, "سلمى", "editor")
        _, admin = create_editor(s, "منى", "admin")
        alert = Edition(kind=EditionKind.alert, status=EditionStatus.sending, title="عاجل", params=dict(ALERT))
        s.add(alert)
        s.flush()
        ids = {"subscriber": sub.id, "version": sub.token_version, "alert": alert.id}
    return {"editor": ("سلمى", editor), "admin": ("منى", admin), **ids}


def _client(app, setup, who: str | None) -> tuple[TestClient, dict, str]:
    """A client as `who` (None: nobody), the API headers, and a CSRF token its pages accept."""
    client = TestClient(app)
    if who is None:
        return client, {}, CSRF.search(client.get("/").text).group(1)
    name, token = setup[who]
    form = client.get("/editor").text
    resp = client.post("/editor/login", data={"csrf_token": CSRF.search(form).group(1), "name": name,
                                               "token": token}, follow_redirects=False)
    assert resp.status_code == 303
    return client, {"Authorization": f"Bearer {token}"}, CSRF.search(client.get("/editor").text).group(1)

SITE_ORIGIN = "https://news.example"


def _request(client, route, method: str, setup, headers: dict, csrf: str):
    def token(purpose):
        return make_token(purpose, setup["subscriber"], setup["version"])

    path = route.path
    path = path.replace("{edition_id}", str(setup["alert"])).replace("{action}", "pause")
    for purpose in ("confirm", "preferences", "unsubscribe"):
        if path.startswith(f"/{purpose}/"):
            path = path.replace("{token}", token(purpose))
    path = path.replace("{name}", "missing")
    if path.startswith("/e/"):  # a web copy's address that names no copy: its 404 page
        path = path.replace("{ref}", "A" * 22)
    if path.startswith("/r/"):  # a mail's link that nobody signed: its 400 page
        path = path.replace("{ref}", "1.AAAAAAAAAAA")
    # Rows the walk must not touch (revoking or rotating a walker would end its session):
    # ids of nothing, which every admin route answers with its page and a 404 or a 409.
    for name in ("{editor_id}", "{section_id}", "{category_id}", "{feed_id}", "{suppression_id}", "{article_id}",
                 "{newsletter_id}"):
        path = path.replace(name, "999999")
    assert "{" not in path, path
    if method == "GET":
        return client.get(path, headers=headers, follow_redirects=False)
    if method == "OPTIONS":  # a CORS preflight, as a browser on the site's own page sends it
        return client.options(path, headers={**headers, "Origin": SITE_ORIGIN,
                                             "Access-Control-Request-Method": "POST"})
    if path.startswith("/api/"):
        return client.request(method, path, json=ALERT, headers=headers, follow_redirects=False)
    data = {**ALERT, "csrf_token": csrf, "test_to": "desk@example.com", "idempotency_key": f"walk-{path}",
            "email": "walker@example.com", "frequency": "daily", "alerts": "yes", "consent": "yes"}
    if path == "/editor/logout":
        data = {"csrf_token": csrf}
    return client.request(method, path, data=data, headers=headers, follow_redirects=False)


def _refused(resp, door: str) -> bool:
    if door == "api":
        return resp.status_code == 403 or (resp.status_code == 401 and resp.headers.get("www-authenticate") == "Bearer")
    return resp.status_code in (401, 403) or LOGIN_FORM in resp.text


def test_every_route_is_walked_with_each_role_and_with_none(setup, monkeypatch):
    monkeypatch.setenv("NASHRA_DEMO", "true")  # the demo's pages are routes too
    monkeypatch.setenv("SIGNUP_ALLOWED_ORIGINS", SITE_ORIGIN)  # the site whose form calls /api/subscribe
    reset_settings()
    app = create_app()
    routes = list(access.every_route(app.routes))
    assert {r.path for r in routes} >= {"/", "/subscribe", "/editor", "/editor/login", "/editor/logout",
                                        "/api/alerts", "/api/editions/{edition_id}", "/healthz", "/metrics"}
    walked, refused = [], []
    for who in (None, "editor", "admin"):
        client, headers, csrf = _client(app, setup, who)
        for route in routes:
            needed = access.role_of(route)
            door = access.door_of(route)
            assert needed is not None, route.path
            for method in sorted(route.methods - {"HEAD"}):
                if route.path == "/editor/logout" and who is not None:
                    continue  # walked last, below: it ends the session the rest of the walk rides on
                resp = _request(client, route, method, setup, headers, csrf)
                assert resp.status_code < 500, (who, method, route.path, resp.status_code)
                if needed == Role.anyone or (who is not None and has_role(who, needed)):
                    assert not _refused(resp, door) or route.path == "/editor/login", (who, method, route.path,
                                                                                     resp.status_code)
                else:
                    assert _refused(resp, door), (who, method, route.path, resp.status_code, resp.text[:200])
                    refused.append((who, method, route.path))
                walked.append((who, method, route.path))
        if who is not None:
            resp = client.post("/editor/logout", data={"csrf_token": csrf}, follow_redirects=False)
            assert resp.status_code == 303 and LOGIN_FORM in client.get("/editor").text
    assert len({(m, p) for _, m, p in walked}) == sum(len(r.methods - {"HEAD"}) for r in routes)
    staff_only = {(m, r.path) for r in routes if access.role_of(r) != Role.anyone for m in r.methods - {"HEAD"}}
    assert len(staff_only) >= 10  # the editor's pages (7) and the API (3)
    assert {(m, p) for who, m, p in refused if who is None} == staff_only
    admin_only = {(m, r.path) for r in routes if access.role_of(r) == Role.admin for m in r.methods - {"HEAD"}}
    assert {p for _, p in admin_only} >= {"/editor/editors", "/editor/editors/{editor_id}/revoke",
                                          "/editor/editors/{editor_id}/rotate", "/editor/sections",
                                          "/editor/sections/{section_id}", "/editor/categories/{category_id}",
                                          "/editor/feeds", "/editor/feeds/{feed_id}/{action}", "/editor/suppressions",
                                          "/editor/suppressions/{suppression_id}/lift", "/editor/settings",
                                          "/editor/audit", "/editor/newsletters",
                                          "/editor/newsletters/{newsletter_id}"}
    assert {(m, p) for who, m, p in refused if who == "editor"} == admin_only  # an editor: 403 there, only there
    assert [x for x in refused if x[0] == "admin"] == []
    with session_scope() as s:  # the anonymous walk created nothing an editor's route makes
        assert [e.id for e in s.scalars(select(Edition).where(Edition.created_by.is_(None)))] == [setup["alert"]]


def test_an_admin_route_refuses_an_editor_and_every_route_must_state_a_role(setup):
    app = FastAPI()

    @app.get("/api/admin-thing")
    def api_thing(who=access.api(Role.admin)):
        return {"who": who.name}

    @app.get("/editor/admin-thing")
    def page_thing(request: Request, who=access.page(Role.admin)):
        return {"who": who.name}

    access.install(app)
    editor = TestClient(app)
    with session_scope() as s:
        editor_row = s.scalar(select(Editor).where(Editor.name == "سلمى"))
        admin_row = s.scalar(select(Editor).where(Editor.name == "منى"))
        _, editor_secret = start(s, editor_row)
        _, admin_secret = start(s, admin_row)
    assert editor.get("/api/admin-thing", headers={"Authorization": f"Bearer {setup['editor'][1]}"}).status_code == 403
    assert editor.get("/api/admin-thing").status_code == 401
    got = editor.get("/api/admin-thing", headers={"Authorization": f"Bearer {setup['admin'][1]}"})
    assert got.status_code == 200 and got.json() == {"who": "منى"}
    assert TestClient(app, cookies={"nashra_session": editor_secret}).get("/editor/admin-thing").status_code == 403
    assert TestClient(app, cookies={"nashra_session": admin_secret}).get("/editor/admin-thing").status_code == 200
    assert TestClient(app).get("/editor/admin-thing").status_code == 401

    silent = FastAPI()

    @silent.get("/forgot-to-say")
    def forgot():
        return {}

    with pytest.raises(RuntimeError, match="forgot-to-say"):
        access.check_every_route(silent)
