"""The newsroom's desk over HTTP on PostgreSQL + Redis (issue 11): editors see whom they
reach before sending, start from a recent article, pause and resume, send the offered
correction, see tomorrow's digest; admins run editors, sections, feeds, suppressions,
and read the settings and the audit log — and an editor is refused all of that."""

from __future__ import annotations

import datetime as dt
import json
import os
import re

import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.db import session_scope
from service.delivery.planner import plan
from service.models import (
    Article,
    ArticleVersion,
    AuditLog,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionArticle,
    EditionKind,
    EditionStatus,
    Editor,
    Feed,
    Frequency,
    Section,
    SubscriberStatus,
    Suppression,
    VersionKind,
    utcnow,
)
from service.staff.editors import create_editor
from service.usecases.audience import reach, readers
from tests.support.readers import reader

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
KEY = re.compile(r'name="idempotency_key" value="([^"]+)"')
ALERT = {"headline": "زلزال بقوة 5 درجات يضرب شمال المغرب", "url": "https://news.example/world/quake",
         "summary": "لا أنباء عن إصابات حتى الآن."}


@pytest.fixture
def desk(pg_env, queue_redis):
    with session_scope() as s:
        s.add_all([Section(slug="world", name="عربي دولي", position=1), Section(slug="sport", name="رياضة", position=2)])
        _, editor = create_editor(s, "سلمى", "editor")
        _, admin = create_editor(s, "منى", "admin")
    from service.web.app import create_app

    with TestClient(create_app()) as app_client:
        yield {"app": app_client.app, "editor": ("سلمى", editor), "admin": ("منى", admin), "redis": queue_redis}


def log_in(desk, who: str) -> TestClient:
    client = TestClient(desk["app"])
    name, token = desk[who]
    form = client.get("/editor").text
    resp = client.post("/editor/login", data={"csrf_token": CSRF.search(form).group(1), "name": name, "token": token},
                       follow_redirects=False)
    assert resp.status_code == 303, resp.text
    return client


def csrf_of(client, path: str = "/editor") -> str:
    return CSRF.search(client.get(path).text).group(1)


def readers_for_alerts():
    """Three who get the alert; one with alerts off, one unconfirmed, one suppressed do not."""
    with session_scope() as s:
        for i, (status, alerts) in enumerate([("active", True)] * 3 + [("active", False), ("pending", True),
                                                                     ("active", True)]):
            reader(s, f"r{i}@example.com", status=SubscriberStatus(status), alerts=alerts)
        s.add(Suppression(email="r5@example.com", reason="hard_bounce"))


def queued_messages(url: str) -> int:
    r = redis.Redis.from_url(url)
    prefix = os.environ.get("REDIS_KEY_PREFIX", "")
    return sum(r.llen(prefix + q) for q in ("alerts", "digests", "default"))


def editions() -> list[Edition]:
    with session_scope() as s:
        return list(s.scalars(sa.select(Edition).order_by(Edition.id)))


# ------------------------------------------------------------------ 1. the audience before sending


def test_the_arabic_count_agrees_with_its_number():
    assert readers(1) == "مشترك واحد" and readers(2) == "مشتركَين"
    assert readers(3) == "3 مشتركين" and readers(10) == "10 مشتركين"
    assert readers(11) == "11 مشتركاً" and readers(12480) == "12,480 مشتركاً"
    assert readers(100) == "100 مشترك" and readers(1002) == "1,002 مشترك" and readers(1005) == "1,005 مشتركين"
    assert reach(12480) == "سيصل إلى 12,480 مشتركاً" and "لن يصل" in reach(0)


def test_api_dry_run_counts_with_the_planners_rule_and_queues_nothing(desk):
    readers_for_alerts()
    token = desk["editor"][1]
    resp = TestClient(desk["app"]).post("/api/alerts", json={**ALERT, "dry_run": True},
                                        headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"audience": 3, "subject": f"عاجل | {ALERT['headline']}"}
    assert editions() == [] and queued_messages(desk["redis"]) == 0
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(AuditLog).where(AuditLog.action == "alert.create")) == 0
    bad = TestClient(desk["app"]).post("/api/alerts", json={"headline": "x", "url": "ftp://x", "dry_run": True},
                                       headers={"Authorization": f"Bearer {token}"})
    assert bad.status_code == 422 and editions() == []
    # The count is the ledger's: the real send plans exactly that many rows.
    sent = TestClient(desk["app"]).post("/api/alerts", json=ALERT, headers={"Authorization": f"Bearer {token}"})
    with session_scope() as s:
        assert plan(s, sent.json()["edition_id"]) == 3


def test_the_page_says_whom_the_alert_reaches_and_the_send_button_repeats_it(desk):
    readers_for_alerts()
    client = log_in(desk, "editor")
    resp = client.post("/editor/preview", data={**ALERT, "csrf_token": csrf_of(client)})
    assert resp.status_code == 200, resp.text
    assert "سيصل إلى 3 مشتركين" in resp.text
    assert "أرسل إلى 3 مشتركين" in resp.text and 'data-confirm="سيصل إلى 3 مشتركين. أأرسل التنبيه الآن؟"' in resp.text
    assert editions() == []


# ------------------------------------------------------------------ 6. the form filled from a recent article


def _article(s, *, title: str, summary: str, url: str = "https://news.example/world/morocco", version: int = 1,
             seen: dt.datetime | None = None, section: str = "world") -> Article:
    seen = seen or utcnow() - dt.timedelta(hours=1)
    section_id = s.scalar(sa.select(Section.id).where(Section.slug == section))
    article = Article(guid=url, url=url, title=title, summary=summary, body_html=f"<p>{summary}</p>",
                      section_id=section_id, lead_image_url="https://news.example/img/lead.jpg",
                      lead_image_caption="عناصر من الأمن المغربي", published_at=seen, first_seen_at=seen,
                      last_major_at=seen, version=version, content_hash="h" * 64)
    s.add(article)
    s.flush()
    s.add(ArticleVersion(article_id=article.id, version=1, kind=VersionKind.new, content_hash="h" * 64, title=title,
                         summary=summary, created_at=seen))
    s.flush()
    return article


LONG_SUMMARY = ("أعلنت السلطات المغربية تفكيك خلية إرهابية من أربعة عناصر في عملية مشتركة مع الاستخبارات. "
                "وقالت المديرية العامة للأمن الوطني إن العناصر كانوا يخططون لتنفيذ هجمات على منشآت حيوية، "
                "وإن التحقيقات لا تزال جارية تحت إشراف النيابة العامة المختصة بقضايا الإرهاب في الرباط ") * 3


def test_a_recent_article_fills_the_form_and_its_alert_says_breaking_once(desk):
    readers_for_alerts()
    with session_scope() as s:
        article_id = _article(s, title="عاجل: المغرب يفكك خلية إرهابية", summary=LONG_SUMMARY).id
    client = log_in(desk, "editor")
    home = client.get("/editor").text
    assert f'href="/editor?article={article_id}#alert-form"' in home and "المغرب يفكك خلية إرهابية" in home
    page = client.get(f"/editor?article={article_id}").text
    headline = re.search(r'id="headline" name="headline" maxlength="200" value="([^"]*)"', page).group(1)
    summary = re.search(r'<textarea id="summary"[^>]*>([^<]*)</textarea>', page).group(1)
    assert headline == "المغرب يفكك خلية إرهابية"  # the mail says «عاجل» itself
    cut = summary[:-1]
    assert summary.endswith("…") and len(summary) <= 300
    assert LONG_SUMMARY.startswith(cut) and LONG_SUMMARY[len(cut)] in " .،"  # at a sentence or a word, not mid-word
    assert 'src="https://news.example/img/lead.jpg"' in page and "عناصر من الأمن المغربي" in page
    assert 'value="https://news.example/world/morocco"' in page
    csrf, key = CSRF.search(page).group(1), KEY.search(page).group(1)
    data = {"article_url": "https://news.example/world/morocco", "headline": "عاجل: عاجل: " + headline,
            "summary": summary, "url": "", "csrf_token": csrf, "idempotency_key": key}
    preview = client.post("/editor/preview", data=data)
    assert preview.status_code == 200 and "سيصل إلى 3 مشتركين" in preview.text
    assert client.post("/editor/send", data=data, follow_redirects=False).status_code == 303
    [ed] = editions()
    assert ed.params["headline"] == "عاجل: المغرب يفكك خلية إرهابية"  # twice typed, stored once
    assert ed.params["summary"] == summary and ed.params["url"] == "https://news.example/world/morocco"
    with session_scope() as s:
        assert s.scalars(sa.select(EditionArticle.article_id).where(EditionArticle.edition_id == ed.id)).all() == [
            article_id]  # the alert carries the article: its image and caption go with it


# ------------------------------------------------------------------ 5. pause, resume; the correction offer


def test_pause_and_resume_beside_cancel(desk):
    with session_scope() as s:
        ed = Edition(kind=EditionKind.alert, status=EditionStatus.sending, title="عاجل: تجربة", params={},
                     started_at=utcnow())
        s.add(ed)
        s.flush()
        edition_id = ed.id
    client = log_in(desk, "editor")
    page = client.get("/editor").text
    for action in ("pause", "cancel"):
        assert f'action="/editor/editions/{edition_id}/{action}"' in page
    assert f'action="/editor/editions/{edition_id}/resume"' not in page
    resp = client.post(f"/editor/editions/{edition_id}/pause", data={"csrf_token": csrf_of(client)},
                       follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == f"/editor?paused={edition_id}"
    assert editions()[0].status is EditionStatus.paused
    page = client.get(resp.headers["location"]).text
    assert f'action="/editor/editions/{edition_id}/resume"' in page and "أُوقفت النشرة رقم" in page
    again = client.post(f"/editor/editions/{edition_id}/pause", data={"csrf_token": csrf_of(client)})
    assert again.status_code == 409
    resp = client.post(f"/editor/editions/{edition_id}/resume", data={"csrf_token": csrf_of(client)},
                       follow_redirects=False)
    assert resp.status_code == 303 and editions()[0].status is EditionStatus.sending
    forged = client.post(f"/editor/editions/{edition_id}/pause", data={"csrf_token": "forged"})
    assert forged.status_code == 400 and editions()[0].status is EditionStatus.sending


def test_after_a_major_update_the_page_offers_the_correction_to_exactly_the_alerts_readers(desk):
    with session_scope() as s:
        article = _article(s, title="المغرب يفكك خلية", summary="نص أول.")
        got, missed = (reader(s, f"{n}@example.com", status=SubscriberStatus.active, alerts=True)
                       for n in ("got", "missed"))
        alert = Edition(kind=EditionKind.alert, status=EditionStatus.done, title=article.title,
                        params={"headline": article.title, "url": article.url, "summary": ""})
        s.add(alert)
        s.flush()
        s.add(EditionArticle(edition_id=alert.id, article_id=article.id, version=1))
        s.add(Delivery(edition_id=alert.id, subscriber_id=got.id, status=DeliveryStatus.sent, sent_at=utcnow()))
        s.add(Delivery(edition_id=alert.id, subscriber_id=missed.id, status=DeliveryStatus.failed))
        # The site rewrites the story (a major update without a correction note: the
        # automatic policy, CORRECTIONS=notes, leaves it to the editors).
        s.add(ArticleVersion(article_id=article.id, version=2, kind=VersionKind.major, content_hash="g" * 64,
                             title="المغرب يفكك خلية من أربعة عناصر", change_note="title changed"))
        article.version, article.title = 2, "المغرب يفكك خلية من أربعة عناصر"
        article_id, alert_id, got_id = article.id, alert.id, got.id
    client = log_in(desk, "editor")
    page = client.get("/editor").text
    assert "تحديثات جوهرية لأخبار أُرسل عنها تنبيه" in page
    assert f'action="/editor/corrections/{article_id}"' in page and "أرسل التصحيح إلى مشترك واحد" in page
    assert "تغيّر عنوان الخبر" in page
    assert [e.kind for e in editions()] == [EditionKind.alert]  # counting it wrote nothing
    resp = client.post(f"/editor/corrections/{article_id}", data={"csrf_token": csrf_of(client), "version": "2"},
                       follow_redirects=False)
    assert resp.status_code == 303, resp.text
    correction = editions()[-1]
    assert correction.kind is EditionKind.correction and correction.params["edition_ids"] == [alert_id]
    assert correction.idempotency_key == f"correction:{article_id}:2"  # the automatic policy's own key
    with session_scope() as s:
        assert plan(s, correction.id) == 1
        assert s.scalars(sa.select(Delivery.subscriber_id).where(Delivery.edition_id == correction.id)).all() == [
            got_id]
        assert s.scalar(sa.select(AuditLog).where(AuditLog.action == "correction.send")).actor.startswith("editor:")
    page = client.get("/editor").text
    assert f'action="/editor/corrections/{article_id}"' not in page  # sent: no longer offered
    twice = client.post(f"/editor/corrections/{article_id}", data={"csrf_token": csrf_of(client), "version": "2"})
    assert twice.status_code == 409 and len(editions()) == 2


# ------------------------------------------------------------------ 4. tomorrow's digest


def test_the_digest_page_shows_each_variant_its_articles_and_what_the_budget_cut(desk):
    huge = "تفاصيل الخبر " * 900  # ~11 KB of text a story: forty of them do not fit in 95 KB
    with session_scope() as s:
        world = s.scalar(sa.select(Section.id).where(Section.slug == "world"))
        for i in range(16):
            _article(s, title=f"خبر رقم {i}", summary=huge, url=f"https://news.example/n/{i}",
                     section="world" if i % 2 else "sport")
        reader(s, "all@example.com", status=SubscriberStatus.active, frequency=Frequency.daily)
        reader(s, "world@example.com", status=SubscriberStatus.active, frequency=Frequency.daily, sections=[world])
        reader(s, "weekly@example.com", status=SubscriberStatus.active, frequency=Frequency.weekly)
    client = log_in(desk, "editor")
    page = client.get("/editor/digest?frequency=daily")
    assert page.status_code == 200, page.text
    text = page.text
    assert "16 خبراً في نافذتها" in text and "سيصل إلى مشتركَين" in text
    assert "كل الأقسام" in text and "عربي دولي" in text and 'id="variants"' in text
    assert 'id="cut"' in text and "ما حذفه حدّ الحجم" in text and "srcdoc=" in text
    cut = re.search(r'<ul id="cut" class="cut">(.*?)</ul>', text, re.S)
    assert cut is not None and "خبر رقم" in cut.group(1)  # every section's stories cannot all fit
    kept = re.search(r'<ol id="kept">(.*?)</ol>', text, re.S).group(1)
    assert not set(re.findall(r"خبر رقم \d+", kept)) & set(re.findall(r"خبر رقم \d+", cut.group(1)))
    key = json.dumps([world])
    one = client.get("/editor/digest", params={"frequency": "daily", "variant": key}).text
    shown = re.search(r'<h2 id="shown">(.*?)</h2>', one, re.S).group(1)
    assert "عربي دولي" in shown and "مشترك واحد" in shown
    assert editions() == []  # previewing writes nothing


# ------------------------------------------------------------------ 2. roles: admins' pages


def test_an_editor_is_refused_every_admin_page(desk):
    client = log_in(desk, "editor")
    for path in ("/editor/editors", "/editor/sections", "/editor/feeds", "/editor/suppressions", "/editor/settings",
                 "/editor/audit"):
        resp = client.get(path)
        assert resp.status_code == 403, path
    assert client.post("/editor/sections", data={"csrf_token": csrf_of(client), "name": "ملفات"}).status_code == 403
    with session_scope() as s:
        assert s.scalar(sa.select(Section).where(Section.name == "ملفات")) is None
    assert "/editor/sections" not in client.get("/editor").text  # not even linked


def test_an_admin_adds_an_editor_revokes_and_rotates_and_the_audit_says_from_where(desk):
    admin = log_in(desk, "admin")
    page = admin.post("/editor/editors", data={"csrf_token": csrf_of(admin), "name": "ريم", "role": "editor"})
    assert page.status_code == 200, page.text
    token = re.search(r'<code dir="ltr" id="token">([^<]+)</code>', page.text).group(1)
    assert "يظهر مرة واحدة فقط" in page.text
    assert token not in admin.get("/editor/editors").text  # shown once
    desk["reem"] = ("ريم", token)
    reem = log_in(desk, "reem")
    assert reem.get("/editor").status_code == 200
    with session_scope() as s:
        reem_id = s.scalar(sa.select(Editor.id).where(Editor.name == "ريم"))
    resp = admin.post(f"/editor/editors/{reem_id}/revoke", data={"csrf_token": csrf_of(admin)})
    assert resp.status_code == 200 and "أُوقف حساب ريم" in resp.text
    after = reem.get("/editor/digest")
    assert after.status_code == 401 and 'action="/editor/login"' in after.text  # her next request
    assert TestClient(desk["app"]).get("/api/editions/1", headers={"Authorization": f"Bearer {token}"}).status_code \
        == 401
    rotated = admin.post(f"/editor/editors/{reem_id}/rotate", data={"csrf_token": csrf_of(admin)})
    new_token = re.search(r'id="token">([^<]+)<', rotated.text).group(1)
    assert new_token != token and "أُعيد تفعيل حسابه" in rotated.text
    desk["reem"] = ("ريم", new_token)
    assert log_in(desk, "reem").get("/editor").status_code == 200
    with session_scope() as s:
        admin_id = s.scalar(sa.select(Editor.id).where(Editor.name == "منى"))
    self_revoke = admin.post(f"/editor/editors/{admin_id}/revoke", data={"csrf_token": csrf_of(admin)})
    assert self_revoke.status_code == 409
    audit = admin.get("/editor/audit").text
    for action in ("editor_created", "editor_revoked", "editor_token_rotated", "editor.login"):
        assert action in audit
    assert "web testclient" in audit and "منى" in audit  # who, from where
    with session_scope() as s:
        row = s.scalar(sa.select(AuditLog).where(AuditLog.action == "editor_revoked"))
        assert row.actor == f"editor:{admin_id}" and row.origin == "web testclient"


def test_an_admin_runs_sections_and_feeds_from_the_page(desk, feed_server):
    admin = log_in(desk, "admin")
    resp = admin.post("/editor/sections", data={"csrf_token": csrf_of(admin), "name": "اقتصاد", "slug": "economy"})
    assert resp.status_code == 200 and "أُضيف قسم اقتصاد" in resp.text
    dup = admin.post("/editor/sections", data={"csrf_token": csrf_of(admin), "name": "اقتصاد"})
    assert dup.status_code == 422
    with session_scope() as s:
        economy = s.scalar(sa.select(Section).where(Section.slug == "economy"))
        sport = s.scalar(sa.select(Section).where(Section.slug == "sport"))
    assert economy.position == 3
    admin.post(f"/editor/sections/{economy.id}", data={"csrf_token": csrf_of(admin), "action": "up"})
    admin.post(f"/editor/sections/{sport.id}", data={"csrf_token": csrf_of(admin), "action": "hide"})
    renamed = admin.post(f"/editor/sections/{economy.id}", data={"csrf_token": csrf_of(admin), "action": "rename",
                                                                 "name": "اقتصاد وأعمال", "slug": "economy"})
    assert renamed.status_code == 200 and "اقتصاد وأعمال" in renamed.text
    with session_scope() as s:
        assert [x.slug for x in s.scalars(sa.select(Section).order_by(Section.position))] == ["world", "economy",
                                                                                                "sport"]
        assert s.get(Section, sport.id).hidden
    # A hidden section is no longer offered on the signup form.
    signup = TestClient(desk["app"]).get("/").text
    assert "اقتصاد وأعمال" in signup and "رياضة" not in signup
    url = feed_server.serve("/rss.xml", "<rss version='2.0'><channel><title>t</title></channel></rss>")
    added = admin.post("/editor/feeds", data={"csrf_token": csrf_of(admin), "url": url, "section": "economy"})
    assert added.status_code == 200, added.text
    with session_scope() as s:
        feed = s.scalars(sa.select(Feed)).one()
    assert feed.section_id == economy.id and "لم يُقرأ بعد" in admin.get("/editor/feeds").text
    admin.post(f"/editor/feeds/{feed.id}/pause", data={"csrf_token": csrf_of(admin)})
    assert "متوقف مؤقتاً" in admin.get("/editor/feeds").text
    admin.post(f"/editor/feeds/{feed.id}/resume", data={"csrf_token": csrf_of(admin)})
    gone = admin.post(f"/editor/feeds/{feed.id}/remove", data={"csrf_token": csrf_of(admin)})
    assert gone.status_code == 200 and "لا مصادر بعد" in gone.text
    with session_scope() as s:
        actions = s.scalars(sa.select(AuditLog.action).order_by(AuditLog.id)).all()
    assert [a for a in actions if a.startswith(("section.", "feed."))] == [
        "section.add", "section.order", "section.hide", "section.rename", "feed.add", "feed.pause", "feed.resume",
        "feed.remove"]


def test_an_admin_lifts_a_suppression_with_a_reason_and_reads_the_settings(desk, monkeypatch):
    with session_scope() as s:
        row = Suppression(email="bounced@example.com", reason="hard_bounce", detail="550 5.1.1")
        s.add(row)
        s.flush()
        row_id = row.id
    admin = log_in(desk, "admin")
    page = admin.get("/editor/suppressions").text
    assert "bounced@example.com" in page and "ارتداد دائم" in page
    no_reason = admin.post(f"/editor/suppressions/{row_id}/lift", data={"csrf_token": csrf_of(admin), "reason": " "})
    assert no_reason.status_code == 422
    lifted = admin.post(f"/editor/suppressions/{row_id}/lift",
                        data={"csrf_token": csrf_of(admin), "reason": "the relay's outage, not the address"})
    assert lifted.status_code == 200 and "bounced@example.com" not in lifted.text
    with session_scope() as s:
        assert s.get(Suppression, row_id) is None
        entry = s.scalar(sa.select(AuditLog).where(AuditLog.action == "suppression.lift"))
        assert entry.details["reason"] == "the relay's outage, not the address" and entry.details["was"] == "hard_bounce"
        assert "bounced" not in json.dumps(entry.details)  # the log names no address
    settings = admin.get("/editor/settings").text
    assert "SECRET_KEY" in settings and "test-secret-key" not in settings and "(set; not shown)" in settings
    assert "EDITOR_TOKEN_DAYS" in settings


def test_an_expired_token_opens_nothing(desk):
    with session_scope() as s:
        s.execute(sa.update(Editor).where(Editor.name == "سلمى").values(token_expires_at=utcnow() - dt.timedelta(1)))
    client = TestClient(desk["app"])
    assert client.get("/api/editions/1", headers={"Authorization": f"Bearer {desk['editor'][1]}"}).status_code == 401
    form = client.get("/editor").text
    resp = client.post("/editor/login", data={"csrf_token": CSRF.search(form).group(1), "name": "سلمى",
                                              "token": desk["editor"][1]}, follow_redirects=False)
    assert resp.status_code == 401
