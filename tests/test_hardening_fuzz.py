"""Arbitrary text at every text field of every form and JSON body (issue 10's property):
NUL, lone surrogates, bidi controls, markup, 10,000 characters.  Whatever comes in, the
answer is never a 5xx, and no row is left that the planner cannot plan.

Over HTTP (TestClient) against the app on PostgreSQL and Redis.  The limits are raised
for the run (the code path stays: they are counted, they just do not bite), so that
the examples reach the validation they are meant to probe.  Examples are few per form
(FUZZ_EXAMPLES, default 40) so the whole module runs in CI in well under a minute.
"""

from __future__ import annotations

import json
import os
import re
from urllib.parse import quote, urlencode

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from service import limits
from service.db import session_factory, session_scope
from service.delivery.planner import plan
from service.models import Edition, EditionVariant, Section
from service.staff.editors import create_editor
from service.subscribers.tokens import make_token
from service.web.app import create_app
from tests.support.readers import reader as make_reader

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
HOSTILE = ["\x00", "\ud800", "\udfff", "\udbff\udc00", "\u202e", "\u2066", "\u200f", "\u061c", "\ufeff", "\u200b",
           "\r\n", "\t", "\x0b", "\x85", "\u2028", "<script>", "</b>", "&amp;", "%00", "'", '"', "=", "@", "|", ";"]
LONG = 10_000

hostile_char = st.sampled_from(HOSTILE)
any_char = st.characters(exclude_categories=())  # every code point, surrogates included
text = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=any_char, max_size=30),
    st.lists(st.one_of(hostile_char, st.text(max_size=4)), max_size=8).map("".join),
    st.sampled_from(HOSTILE).map(lambda c: (c * LONG)[:LONG]),
    st.text(alphabet=any_char, min_size=1, max_size=3).map(lambda s: (s * LONG)[:LONG]),
)


def near(valid: str) -> st.SearchStrategy[str]:
    """The valid value (half the time), a hostile one, or the valid one with something hostile inside."""
    return st.one_of(
        st.just(valid),
        st.just(valid),
        text,
        st.tuples(st.integers(0, len(valid)), text).map(lambda t: valid[: t[0]] + t[1] + valid[t[0]:]),
    )


# The form's own CSRF token most of the time (so the fields' checks are reached), else text.
csrf_field = st.sampled_from([False, False, False, False, True]).flatmap(lambda hostile: text if hostile else st.just(""))


def forms(valid: dict) -> st.SearchStrategy[dict]:
    """A form whose fields are valid but one, which gets arbitrary text (or the valid text
    with arbitrary text inside), so that every field's own check is reached; and now and
    then a form with every field perturbed at once."""
    keys = sorted(valid)
    one = st.tuples(st.sampled_from(keys), text, st.booleans()).map(
        lambda t: {**valid, t[0]: (t[1] if t[2] else valid[t[0]] + t[1])})
    return st.one_of(one, one, one, st.fixed_dictionaries({k: near(v) for k, v in valid.items()}))


HEADLINE = "عاجل: زلزال بقوة 5 درجات يضرب شمال المغرب"
URL = "https://news.example/world/2021/11/24/quake"
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.large_base_example])


@pytest.fixture
def app_env(pg_env, queue_redis, smtp_sink, monkeypatch):
    """The app, an editor logged in, a reader with a token, and the limits raised."""
    real_hit = limits.hit
    monkeypatch.setattr("service.web.signup_limit.allow", lambda bucket, key, *a, **k: real_hit(bucket, key, 10**9, 600))
    monkeypatch.setattr("service.usecases.sessions.LOGIN_FAILURES_PER_CLIENT", 10**9)
    monkeypatch.setattr("service.usecases.sessions.LOGIN_FAILURES_PER_NAME", 10**9)
    monkeypatch.setattr("service.subscribers.lifecycle.CONFIRMATIONS_PER_DAY", 10**9)
    with session_scope() as s:
        s.add_all([Section(slug="world", name="عربي دولي", position=1), Section(slug="sport", name="رياضة", position=2)])
        reader = make_reader(s, "reader@example.com", frequency="daily", alerts=True)
        _, token = create_editor(s, "سلمى", "editor")
        s.flush()
        reader_id, version = reader.id, reader.token_version
    app = create_app()
    editor = TestClient(app, raise_server_exceptions=False)
    form = editor.get("/editor").text
    editor.post("/editor/login", data={"csrf_token": CSRF.search(form).group(1), "name": "سلمى", "token": token})
    page = editor.get("/editor").text
    assert 'action="/editor/logout"' in page
    reader_client = TestClient(app, raise_server_exceptions=False)
    return {
        "editor": editor, "editor_csrf": CSRF.search(page).group(1), "token": token,
        "reader": reader_client, "signup_csrf": CSRF.search(reader_client.get("/").text).group(1),
        "reader_id": reader_id, "version": version, "seen": [0],
    }


def form_body(fields: dict) -> bytes:
    pairs = []
    for key, value in fields.items():
        for v in value if isinstance(value, list) else [value]:
            pairs.append((key, v))
    return urlencode(pairs, encoding="utf-8", errors="surrogatepass").encode("ascii")


def post_form(client, path: str, fields: dict):
    return client.post(path, content=form_body(fields), headers={"Content-Type": "application/x-www-form-urlencoded"},
                       follow_redirects=False)


def check(env, *responses) -> None:
    """No 5xx; every edition made since the last check plans and renders."""
    for resp in responses:
        assert resp.status_code < 500, (resp.request.method, resp.request.url.path[:80], resp.status_code, resp.text[:300])
        parts = resp.request.url.path.split("/")
        where = "/".join(parts[:3] if parts[1] in ("editor", "api") and len(parts) < 5 else parts[:2])
        event(f"{resp.request.method} {where} → {resp.status_code}")  # --hypothesis-show-statistics
    with session_scope() as s:
        new = s.scalars(sa.select(Edition.id).where(Edition.id > env["seen"][0]).order_by(Edition.id)).all()
    for edition_id in new:
        session = session_factory()()
        try:
            assert plan(session, edition_id) >= 1  # the reader with alerts on
            variants = session.scalars(sa.select(EditionVariant).where(EditionVariant.edition_id == edition_id)).all()
            assert len(variants) == 1 and variants[0].html and variants[0].text
            session.flush()
        finally:
            session.rollback()
            session.close()
        env["seen"][0] = edition_id


def in_url(value: str) -> str:
    # Percent-encoded for a path or a query; cut to what a request line can carry (servers
    # refuse longer ones before the app sees them; bodies take the 10,000 characters).
    return quote(value[:600], safe="", errors="surrogatepass")


def token_for(env, purpose: str) -> str:
    return make_token(purpose, env["reader_id"], env["version"])


# ------------------------------------------------------------------ the readers' forms

SIGNUP = {"email": "reader+fuzz@example.com", "sections": "1", "newsletters_shown": "1", "newsletters": "daily",
          "consent": "yes", "website": "", "embed": "1"}


@FUZZ
@given(fields=forms(SIGNUP), csrf=csrf_field)
def test_signup_form(app_env, fields, csrf):
    env = app_env
    fields = {**fields, "csrf_token": csrf or env["signup_csrf"]}
    check(env, post_form(env["reader"], "/subscribe", fields), env["reader"].get("/?embed=" + in_url(fields["embed"])))


# Each newsletter's part of the preferences form (n<id>_…): the reader is on daily (id 1
# after the seeding) and alerts (3).
PREFERENCES = {"n1_shown": "1", "n1_sections": "1", "n1_rank_1": "2", "n1_digest_hour": "7", "n3_shown": "1",
               "n3_quiet_start": "22", "n3_quiet_end": "6", "token": ""}


@FUZZ
@given(fields=forms(PREFERENCES), extra_key=st.one_of(st.just("sections"), text.map(lambda k: k[:200])), csrf=csrf_field)
def test_preferences_confirm_and_unsubscribe_forms(app_env, fields, extra_key, csrf):
    env = app_env
    client = env["reader"]
    responses = []
    for purpose in ("preferences", "confirm", "unsubscribe"):
        token = in_url(fields["token"]) if fields["token"] else token_for(env, purpose)
        page = client.get(f"/{purpose}/{token}")
        responses.append(page)
        found = CSRF.search(page.text)
        body = {**{k: v for k, v in fields.items() if k != "token"}, extra_key: fields["n1_sections"],
                "csrf_token": csrf or (found.group(1) if found else "")}
        if purpose != "unsubscribe" or fields["token"]:  # a real one-click would end the reader the others need
            responses.append(post_form(client, f"/{purpose}/{token}", body))
    check(env, *responses)


# ------------------------------------------------------------------ the editors' forms

LOGIN = {"name": "سلمى", "token": ""}


@FUZZ
@given(fields=forms(LOGIN), csrf=csrf_field, logout_csrf=st.one_of(st.just(""), text))
def test_login_and_logout_forms(app_env, fields, csrf, logout_csrf):
    env = app_env
    anon = TestClient(env["editor"].app, raise_server_exceptions=False)
    good = CSRF.search(anon.get("/editor").text).group(1)
    login = post_form(anon, "/editor/login", {**fields, "csrf_token": csrf or good,
                                              "token": fields["token"] or env["token"]})
    logout = post_form(env["editor"], "/editor/logout", {"csrf_token": logout_csrf})
    assert logout.status_code == 400  # never a valid CSRF token here: the editor stays logged in
    check(env, login, logout)


ALERT_FORM = {"article_url": "", "headline": HEADLINE, "url": URL, "summary": "لا أنباء عن إصابات.",
              "test_to": "desk@example.com", "idempotency_key": ""}


@FUZZ
@given(action=st.sampled_from(["/editor/preview", "/editor/test", "/editor/send"]), fields=forms(ALERT_FORM),
       csrf=csrf_field, edition_id=st.one_of(st.integers(), st.integers(min_value=2**31 - 2, max_value=2**64)))
def test_alert_forms(app_env, action, fields, csrf, edition_id):
    env = app_env
    csrf = csrf or env["editor_csrf"]
    responses = [post_form(env["editor"], action, {**fields, "csrf_token": csrf})]
    responses.append(post_form(env["editor"], f"/editor/editions/{edition_id}/cancel", {"csrf_token": csrf}))
    check(env, *responses)


# ------------------------------------------------------------------ the JSON API

ALERT_JSON = {"headline": HEADLINE, "url": URL, "summary": "ملخص الخبر.", "idempotency_key": "k-1"}


@FUZZ
@given(body=st.one_of(forms(ALERT_JSON), forms({"article_url": URL}),
                      forms(ALERT_JSON).flatmap(lambda b: text.map(lambda k: {**b, k[:50] or "extra": "x"}))),
       raw=st.one_of(st.none(), st.none(), st.none(), text), edition_id=st.one_of(st.integers(), st.integers(2**31 - 2, 2**64)),
       action=near("pause"))
def test_alert_api(app_env, body, raw, edition_id, action):
    env = app_env
    headers = {"Authorization": f"Bearer {env['token']}", "Content-Type": "application/json"}
    payload = json.dumps(body).encode() if raw is None else raw.encode("utf-8", "surrogatepass")
    client = env["editor"]
    responses = [client.post("/api/alerts", content=payload, headers=headers)]
    responses.append(client.get(f"/api/editions/{edition_id}", headers=headers))
    responses.append(client.post(f"/api/editions/{edition_id}/{in_url(action)}", headers=headers))
    check(env, *responses)
