"""`POST /api/subscribe` for a site's own form (issue 13, item 5), over real HTTP: CORS
preflight from an allowed and a refused origin, the same answer for every address, the
same limits, honeypot and double opt-in as our form; and a plain HTML page on another
origin, in headless Chromium, posting to it with fetch()."""

from __future__ import annotations

import json
import os

import httpx
import pytest
import redis
import sqlalchemy as sa

from service.config import reset_settings
from service.db import session_scope
from service.jobs import names
from service.models import (
    Consent,
    Frequency,
    Newsletter,
    NewsletterKind,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from service.newsletters import membership
from service.subscribers import consent
from service.subscribers.tokens import make_token
from tests.support.feed_server import FeedServer
from tests.support.readers import reader

SITE = "https://news.example"
OTHER = "https://evil.example"


@pytest.fixture
def api(live_server, monkeypatch):
    monkeypatch.setenv("SIGNUP_ALLOWED_ORIGINS", f"{SITE}, http://localhost:1")
    reset_settings()
    return live_server + "/api/subscribe"


def body(**over) -> dict:
    return {"email": "reader@example.com", "sections": ["world"], "frequency": "weekly", "alerts": True,
            "consent": consent.CURRENT, "form_url": f"{SITE}/world/2021/11/24/story", **over}


def queued() -> list[tuple[str, list]]:
    r = redis.Redis.from_url(os.environ["REDIS_URL"])
    out = []
    for raw in r.lrange(os.environ.get("REDIS_KEY_PREFIX", "") + "default", 0, -1):
        msg = json.loads(raw)
        out.append((msg["headers"]["task"], json.loads(__import__("base64").b64decode(msg["body"]))[0]))
    return out


def readers() -> dict[str, Subscriber]:
    with session_scope() as s:
        return {x.email: x for x in s.scalars(sa.select(Subscriber))}


def on(subscriber_id: int) -> list[str]:
    """The slugs of the newsletters a reader is on, in the site's order."""
    with session_scope() as s:
        return [x.newsletter.slug for x in membership.of(s, subscriber_id)]


def add_newsletter(slug: str, name: str, *, hidden: bool = False, offered: bool = True) -> None:
    with session_scope() as s:
        s.add(Newsletter(slug=slug, name=name, description="كل جمعة", kind=NewsletterKind.digest,
                         frequency=Frequency.weekly, sections=[], hidden=hidden, offered=offered, position=7))


def test_preflight_answers_an_allowed_origin_and_refuses_another(api):
    ok = httpx.options(api, headers={"Origin": SITE, "Access-Control-Request-Method": "POST",
                                     "Access-Control-Request-Headers": "content-type"})
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == SITE
    assert ok.headers["access-control-allow-methods"] == "POST"
    assert ok.headers["access-control-allow-headers"].lower() == "content-type"
    assert "access-control-allow-credentials" not in ok.headers  # no cookies, ever
    assert "Origin" in ok.headers["vary"]
    for origin, method in ((OTHER, "POST"), ("null", "POST"), (SITE, "DELETE")):
        refused = httpx.options(api, headers={"Origin": origin, "Access-Control-Request-Method": method})
        assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
    # A POST that names a refused origin signs nobody up (a "simple" request needs no preflight).
    post = httpx.post(api, content=json.dumps(body()), headers={"Origin": OTHER, "Content-Type": "text/plain"})
    assert post.status_code == 403 and "access-control-allow-origin" not in post.headers
    assert readers() == {} and queued() == []


def test_the_same_answer_for_every_address_the_same_double_opt_in_and_limits(api):
    with session_scope() as s:
        reader(s, "active@example.com")
        s.add(Suppression(email="bounced@example.com", reason="hard_bounce"))
    headers = {"Origin": SITE, "User-Agent": "SiteForm/2.0"}
    answers = [httpx.post(api, json=body(email=e), headers=headers)
               for e in ("Reader@Example.com", "active@example.com", "bounced@example.com")]
    assert {a.status_code for a in answers} == {202}
    assert len({a.text for a in answers}) == 1  # nothing tells a stranger who is subscribed
    assert all(a.headers["access-control-allow-origin"] == SITE for a in answers)
    assert "set-cookie" not in answers[0].headers
    subs = readers()
    new = subs["reader@example.com"]
    assert new.status is SubscriberStatus.pending and new.consent_source == "api"
    assert on(new.id) == ["weekly", "alerts"]  # the older words, mapped as migration 0008 did
    assert subs["active@example.com"].status is SubscriberStatus.active and "bounced@example.com" not in subs
    # Double opt-in for the new address; the active one is sent its preferences link (issue 22).
    assert sorted(queued()) == [(names.SEND_TRANSACTIONAL, ["confirm", new.id]),
                                (names.SEND_TRANSACTIONAL, ["manage", subs["active@example.com"].id])]
    with session_scope() as s:
        record = s.scalars(sa.select(Consent).where(Consent.subscriber_id == new.id)).one()
    assert (record.form_url, record.user_agent, record.text_version) == (
        f"{SITE}/world/2021/11/24/story", "SiteForm/2.0", consent.CURRENT)
    assert record.ip == "127.0.0.0/24"

    # Bad input: 422 naming the field, with the CORS header so the site's page can show it.
    bad = httpx.post(api, json=body(email="not-an-address"), headers=headers)
    assert bad.status_code == 422 and bad.json()["error"] == "email"
    assert bad.headers["access-control-allow-origin"] == SITE
    # A bot filling the honeypot gets the person's answer and nothing happens (the 5th request).
    trap = httpx.post(api, json=body(email="bot@example.com", website="https://spam.example"), headers=headers)
    assert trap.status_code == 202 and trap.text == answers[0].text and "bot@example.com" not in readers()
    # The form's own limit, shared with it: the 6th signup from this client in 10 minutes.
    limited = httpx.post(api, json=body(email="sixth@example.com"), headers=headers)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    assert limited.headers["access-control-allow-origin"] == SITE
    assert "sixth@example.com" not in readers()


@pytest.mark.parametrize("payload, field", [
    (body(consent=True), "consent"),  # the version of the text the form showed, not a bare yes
    (body(consent="1999-01"), "consent"),
    (body(sections=["no-such-section"]), "sections"),
    (body(sections="world"), "sections"),
    (body(frequency="hourly"), "frequency"),
    (body(alerts="maybe"), "alerts"),
    (body(digest_hour=3), "digest_hour"),
    (body(newsletters="daily"), "newsletters"),
    (body(newsletters=[]), "newsletters"),
    (body(newsletters=["daily", 7]), "newsletters"),
    (body(newsletters=["daily", "no-such-one"]), "newsletters"),
])
def test_bad_fields_are_refused_by_name_and_change_nothing(api, payload, field):
    answer = httpx.post(api, json=payload, headers={"Origin": SITE})
    assert answer.status_code == 422 and answer.json()["error"] == field and answer.json()["message"]
    assert readers() == {} and queued() == []


def test_newsletters_by_slug_and_a_bad_one_named(api):
    add_newsletter("friday", "نشرة الجمعة")
    add_newsletter("retired", "نشرة متقاعدة", hidden=True)
    add_newsletter("staff", "نشرة داخلية", offered=False)
    headers = {"Origin": SITE}
    for slug in ("nope", "retired", "staff"):
        refused = httpx.post(api, json=body(newsletters=["daily", slug]), headers=headers)
        assert refused.status_code == 422 and refused.json()["error"] == "newsletters"
        assert slug in refused.json()["message"]  # named, so the site's page can say which
    assert readers() == {} and queued() == []
    # `newsletters` wins over the older words; sections go to the digests only.
    ok = httpx.post(api, json=body(newsletters=["Friday", "alerts"], frequency="daily"), headers=headers)
    assert ok.status_code == 202
    new = readers()["reader@example.com"]
    assert on(new.id) == ["alerts", "friday"]
    with session_scope() as s:
        rows = {x.newsletter.slug: x.sections for x in membership.of(s, new.id)}
    assert rows["alerts"] == [] and len(rows["friday"]) == 1


def test_a_body_that_is_not_a_json_object_is_a_400(api):
    for content in (b"", b"[]", b"{", b"\xff\xfe", b"null"):  # five: the limit is counted first
        answer = httpx.post(api, content=content, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400, content
    assert readers() == {}


FORM_PAGE = """<!doctype html>
<html lang="ar" dir="rtl"><head><meta charset="utf-8"><title>موقع الأخبار</title></head>
<body>
<form id="signup">
  <label for="email">بريدك</label> <input id="email" type="email">
  <label><input id="consent" type="checkbox"> أوافق على أن ترسل لي نشرة رسائل بالبريد الإلكتروني</label>
  <button type="submit">اشترك</button>
</form>
<p id="answer"></p>
<script>
document.getElementById("signup").addEventListener("submit", async (event) => {
  event.preventDefault();
  const out = document.getElementById("answer");
  try {
    const reply = await fetch(%(api)s, {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({email: document.getElementById("email").value, sections: ["sport"],
                            newsletters: ["friday", "alerts"],
                            consent: document.getElementById("consent").checked ? %(version)s : null,
                            form_url: location.href}),
    });
    out.textContent = reply.status + " " + (await reply.json()).message;
  } catch (error) {
    out.textContent = "blocked";
  }
});
</script>
</body></html>
"""


@pytest.fixture
def site():
    server = FeedServer()
    server.start()
    yield server
    server.stop()


@pytest.mark.browser
def test_a_plain_page_on_another_origin_signs_a_reader_up_and_a_refused_origin_cannot(api, site, page,
                                                                                     monkeypatch):
    html = FORM_PAGE % {"api": json.dumps(api), "version": json.dumps(consent.CURRENT)}
    url = site.serve("/article.html", html, content_type="text/html; charset=utf-8")
    origin = url.rsplit("/", 1)[0]
    monkeypatch.setenv("SIGNUP_ALLOWED_ORIGINS", f"{SITE},{origin}")
    reset_settings()
    add_newsletter("friday", "نشرة الجمعة")

    page.goto(url)
    page.fill("#email", "Reader@Example.com")
    page.check("#consent")
    page.click("button")
    page.wait_for_function("document.getElementById('answer').textContent.length > 0")
    assert page.text_content("#answer").startswith("202 تحقّق من بريدك")
    sub = readers()["reader@example.com"]
    assert sub.status is SubscriberStatus.pending and sub.consent_source == "api"
    with session_scope() as s:
        record = s.scalars(sa.select(Consent)).one()
    assert record.form_url == url and "Chrom" in (record.user_agent or "")
    assert queued() == [(names.SEND_TRANSACTIONAL, ["confirm", sub.id])]
    assert on(sub.id) == ["alerts", "friday"]  # pending, with their subscriptions

    # The reader confirms (the link their mail carries): they end on exactly those two.
    page.goto(api.removesuffix("/api/subscribe") + "/confirm/" + make_token("confirm", sub.id, sub.token_version))
    assert "نشرة الجمعة" in page.text_content("main") and "عاجل" in page.text_content("main")
    page.click("button[type=submit]")
    page.wait_for_selector("text=تم تأكيد اشتراكك")
    assert readers()["reader@example.com"].status is SubscriberStatus.active
    assert on(sub.id) == ["alerts", "friday"]

    # The same page, its origin no longer allowed: the browser's preflight is refused.
    monkeypatch.setenv("SIGNUP_ALLOWED_ORIGINS", SITE)
    reset_settings()
    page.goto(url)
    page.fill("#email", "second@example.com")
    page.check("#consent")
    page.click("button")
    page.wait_for_function("document.getElementById('answer').textContent.length > 0")
    assert page.text_content("#answer") == "blocked"
    assert "second@example.com" not in readers()
