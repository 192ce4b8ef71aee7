"""The newsroom's desk walked in headless Chromium against the real app, a real Celery
worker, PostgreSQL, Redis and an SMTP server (issue 11): an admin adds a section and an
editor; the editor logs in, previews an alert with its audience count, sends a test,
sends it (the confirmation repeats the count), watches it go, pauses, resumes; the
editor is refused the admins' pages (403); the admin revokes them and their next
request is a 401 with the login form."""

from __future__ import annotations

import re
import time

import pytest
import sqlalchemy as sa

from service.config import reset_settings
from service.db import session_scope
from service.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    Section,
    SubscriberStatus,
)
from service.staff.editors import create_editor
from tests.support.browser import log_in_editor
from tests.support.readers import reader

READERS = 40
HEADLINE = "زلزال بقوة 5 درجات يضرب شمال المغرب"


def _status(edition_id: int) -> EditionStatus:
    with session_scope() as s:
        return s.get(Edition, edition_id).status


def _sent(edition_id: int) -> int:
    with session_scope() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(Delivery).where(
            Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.sent)) or 0


@pytest.mark.browser
def test_the_desk_walked_by_an_admin_and_an_editor(live_server, browser, smtp_sink, celery_worker_factory,
                                                    monkeypatch):
    monkeypatch.setenv("SMTP_CONNECTIONS", "1")  # one session, so that the send takes long enough to pause
    reset_settings()
    smtp_sink.delay = 0.25
    with session_scope() as s:
        _, admin_token = create_editor(s, "منى", "admin")
        for i in range(READERS):
            reader(s, f"reader{i}@example.com", status=SubscriberStatus.active, alerts=True)
        reader(s, "quiet@example.com", status=SubscriberStatus.active, alerts=False)
    dialogs: list[str] = []

    def accept(dialog):
        dialogs.append(dialog.message)
        dialog.accept()

    admin_ctx, editor_ctx = browser.new_context(), browser.new_context()
    admin, editor = admin_ctx.new_page(), editor_ctx.new_page()
    for p in (admin, editor):
        p.on("dialog", accept)
    try:
        # The admin adds a section and an editor.
        log_in_editor(admin, live_server, "منى", admin_token)
        admin.get_by_role("link", name="الأقسام").click()
        # The sections form's own fields (the page lists the newsletters' forms too).
        admin.locator("#section-name").fill("اقتصاد")
        admin.locator("#section-slug").fill("economy")
        admin.get_by_role("button", name="أضف القسم").click()
        admin.get_by_text("أُضيف قسم اقتصاد (economy).").wait_for()
        with session_scope() as s:
            assert s.scalar(sa.select(Section.name).where(Section.slug == "economy")) == "اقتصاد"
        admin.get_by_role("link", name="المحررون").click()
        admin.get_by_label("الاسم").fill("ريم")
        admin.get_by_role("button", name="أضف المحرر").click()
        token = admin.locator("#token").inner_text().strip()
        assert token.startswith("nse_")

        # The editor logs in, previews, sends a test, sends.
        log_in_editor(editor, live_server, "ريم", token)
        assert editor.get_by_role("link", name="المحررون").count() == 0  # an editor is not shown the admins' pages
        editor.get_by_label("العنوان").fill(HEADLINE)
        editor.get_by_label("الرابط", exact=True).fill("https://news.example/world/quake")
        editor.get_by_label("الموجز").fill("لا أنباء عن إصابات حتى الآن.")
        editor.get_by_role("button", name="معاينة").click()
        audience = editor.locator("#audience")
        audience.wait_for()
        assert "سيصل إلى 40 مشتركاً" in audience.inner_text()
        editor.get_by_label("أرسل نسخة إلى").fill("desk@example.com")
        editor.get_by_role("button", name="أرسل نسخة تجريبية").click()
        editor.get_by_text("أُرسلت نسخة تجريبية إلى العنوان المحدد.").wait_for()
        [test_copy] = smtp_sink.wait_for(1, timeout=20)
        assert test_copy.rcpt_tos == ["desk@example.com"] and test_copy.message["Subject"].startswith("[تجربة]")
        editor.get_by_role("button", name="معاينة").click()
        send = editor.locator("#send")
        assert send.inner_text().strip() == "أرسل إلى 40 مشتركاً"
        with celery_worker_factory(queues=("alerts",), concurrency=2):
            send.scroll_into_view_if_needed()  # the preview's iframe is still laying out below it
            send.click()
            editor.wait_for_url(re.compile(r"/editor\?sent=\d+"))
            assert dialogs[-1] == "سيصل إلى 40 مشتركاً. أأرسل التنبيه الآن؟"  # the confirmation repeats it
            edition_id = int(editor.url.rsplit("=", 1)[1])

            # It goes out: the table moves by itself.
            row = editor.locator("#editions tr", has_text=HEADLINE)
            row.filter(has_text=re.compile(r"أُرسلت [1-9]\d* من 40")).wait_for(timeout=30_000)
            assert "قيد الإرسال" in row.inner_text()

            # Pause: nothing more leaves; resume: the rest, once each.
            editor.get_by_role("button", name=f"أوقف النشرة رقم {edition_id} مؤقتاً").click()
            editor.get_by_text(f"أُوقفت النشرة رقم {edition_id} مؤقتاً").wait_for()
            assert _status(edition_id) is EditionStatus.paused
            time.sleep(1.5)  # the messages already on the wire land
            held = _sent(edition_id)
            time.sleep(1.5)
            assert _sent(edition_id) == held < READERS, "mail kept going out while paused"
            assert "متوقفة مؤقتاً" in editor.locator("#editions tr", has_text=HEADLINE).inner_text()
            editor.get_by_role("button", name=f"استأنف النشرة رقم {edition_id}").click()
            editor.get_by_text(f"استُؤنف إرسال النشرة رقم {edition_id}").wait_for()
            done = editor.locator("#editions tr", has_text=HEADLINE)
            done.filter(has_text="أُرسلت 40 من 40").wait_for(timeout=60_000)
            done.filter(has_text="اكتملت").wait_for(timeout=20_000)
        alerts = [m for m in smtp_sink.messages if m.rcpt_tos != ["desk@example.com"]]
        assert sorted(r for m in alerts for r in m.rcpt_tos) == sorted(f"reader{i}@example.com"
                                                                       for i in range(READERS))

        # The editor is refused the admins' pages.
        for path in ("/editor/editors", "/editor/sections", "/editor/audit"):
            assert editor.goto(f"{live_server}{path}").status == 403, path

        # The admin revokes the editor: their next request is a 401 (the login form).
        admin.get_by_role("link", name="المحررون").click()
        admin.get_by_role("button", name="أوقف حساب ريم").click()
        admin.get_by_text("أُوقف حساب ريم").wait_for()
        refused = editor.goto(f"{live_server}/editor")
        assert refused.status == 401
        editor.locator("input[name=token]").wait_for()
        admin.get_by_role("link", name="السجل").click()
        audit = admin.locator("#audit").inner_text()
        for action in ("section.add", "editor_created", "alert.test", "alert.create", "edition.pause",
                       "edition.resume", "editor_revoked"):
            assert action in audit, action
        assert "web 127.0.0.1" in audit
    finally:
        admin_ctx.close()
        editor_ctx.close()
