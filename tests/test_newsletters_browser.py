"""Several newsletters, end to end in headless Chromium (issue 17): an admin adds two on the
admins' page — a weekly sports digest with its own From name and List-Id, and a second
alerts newsletter — then an editor composes a special edition for the sports digest on
the special edition page (its readers counted), sends it, and a real Celery worker mails
it through the SMTP sink: only that newsletter's readers get it, with its List-Id, its
From name and a one-click link that names it.  Then a reader leaves that newsletter from
the link in their mail, in a browser of their own, and the editor's next alert still
reaches them while the next special edition of the sports digest does not."""

from __future__ import annotations

import re
import time

import pytest
import sqlalchemy as sa

from service.articles.sections import ensure_sections
from service.db import session_scope
from service.models import Edition, EditionStatus, Section, Subscriber
from service.newsletters import catalogue, membership
from service.staff.editors import create_editor
from tests.support.browser import log_in_editor
from tests.support.readers import reader
from tests.test_special_editions import _article
from tests.test_web_accessibility import Audit, _context, axe_source  # noqa: F401 — axe_source is the fixture

__all__ = ["axe_source"]  # the fixture, shared with tests/test_web_accessibility.py

TITLE = "المنتخب يفوز في طنجة"


@pytest.mark.browser
def test_an_admin_adds_newsletters_and_an_editor_sends_a_special_edition_to_one(
        live_server, browser, smtp_sink, celery_worker_factory):
    with session_scope() as s:
        ensure_sections(s)
        _, token = create_editor(s, "منى", "admin")
        _article(s, TITLE, slug="sport")
        for i in range(3):
            reader(s, f"fan{i}@example.com")  # daily + alerts; they join the sports digest below
        reader(s, "daily-only@example.com")
    ctx = browser.new_context()
    page = ctx.new_page()
    page.on("dialog", lambda d: d.accept())
    try:
        log_in_editor(page, live_server, "منى", token)
        page.get_by_role("link", name="النشرات").click()
        page.get_by_role("heading", name="النشرات", exact=True).first.wait_for()
        add = page.locator("#newsletter-add")
        add.get_by_label("النوع").select_option("digest")
        add.get_by_label("الاسم", exact=True).fill("رياضة الأسبوع")
        add.get_by_label("المعرّف", exact=False).fill("sports-weekly")
        add.get_by_label("الوتيرة").select_option("weekly")
        add.get_by_label("الساعة").select_option("18")
        add.get_by_label("اليوم (للأسبوعي)").select_option("4")
        add.get_by_label("رياضة", exact=True).check()
        add.get_by_label("اسم المرسل (اختياري)").fill("نشرة الرياضة")
        add.get_by_label("List-Id", exact=False).fill("sports.news.example")
        add.get_by_role("button", name="أضف النشرة").click()
        page.get_by_text("أُضيفت نشرة رياضة الأسبوع (sports-weekly).").wait_for()

        add = page.locator("#newsletter-add")
        add.get_by_label("النوع").select_option("alerts")
        add.get_by_label("الاسم", exact=True).fill("عاجل الرياضة")
        add.get_by_label("المعرّف", exact=False).fill("sports-alerts")
        add.get_by_role("button", name="أضف النشرة").click()
        page.get_by_text("أُضيفت نشرة عاجل الرياضة (sports-alerts).").wait_for()
        listed = page.locator("#newsletter-list tbody tr").all_inner_texts()
        assert [row.split("\t")[0].split("\n")[0] for row in listed][-2:] == ["رياضة الأسبوع", "عاجل الرياضة"]

        with session_scope() as s:
            sports = catalogue.by_slug(s, "sports-weekly")
            sports_section = s.scalar(sa.select(Section.id).where(Section.slug == "sport"))
            assert (sports.frequency.value, sports.default_hour, sports.default_weekday, sports.sections,
                    sports.from_name, sports.list_id) == ("weekly", 18, 4, [sports_section], "نشرة الرياضة",
                                                          "sports.news.example")
            sports_id = sports.id
            # Readers join on the signup and preferences forms (not this test's part).
            for sub in s.scalars(sa.select(Subscriber).where(Subscriber.email.like("fan%"))):
                membership.join(s, sub.id, sports)
        page.reload()
        assert page.locator("#newsletter-sports-weekly .readers").inner_text() == "3"

        # Two alerts newsletters now: the alert form asks which.
        page.goto(f"{live_server}/editor")
        options = page.locator("#alert-form select#newsletter option").all_inner_texts()
        assert len(options) == 2 and any("عاجل الرياضة" in o for o in options)

        page.get_by_role("link", name="عدد خاص").click()
        page.get_by_label("العنوان", exact=True).fill("ليلة الكأس")
        page.get_by_label("كلمات من العنوان").fill("المنتخب")
        page.get_by_label("كلمات من العنوان").press("Enter")
        page.get_by_role("button", name=f"أضف «{TITLE}»").click()
        choice = page.get_by_label("النشرة", exact=True)
        assert any("رياضة الأسبوع" in o for o in choice.locator("option").all_inner_texts())
        assert not any("عاجل" in o for o in choice.locator("option").all_inner_texts())  # digests only
        choice.select_option("sports-weekly")
        page.get_by_role("button", name="معاينة").click()
        assert "سيصل إلى 3 مشتركين" in page.locator("#audience").inner_text()
        assert "رياضة الأسبوع" in page.locator("#audience").inner_text()
        with celery_worker_factory(queues=("digests", "default"), concurrency=2):
            send = page.locator("#send")
            send.scroll_into_view_if_needed()
            send.click()
            page.get_by_text("بدأ إرسال النشرة رقم").wait_for()
            mails = smtp_sink.wait_for(3, timeout=30)
            deadline = time.monotonic() + 20
            with session_scope() as s:
                eid = s.scalar(sa.select(sa.func.max(Edition.id)))
            while time.monotonic() < deadline:
                with session_scope() as s:
                    if s.get(Edition, eid).status is EditionStatus.done:
                        break
                time.sleep(0.2)
            time.sleep(0.5)
        assert sorted(r for m in smtp_sink.messages for r in m.rcpt_tos) == [f"fan{i}@example.com" for i in range(3)]
        with session_scope() as s:
            edition = s.get(Edition, eid)
            assert edition.newsletter_id == sports_id
        for mail in mails:
            assert mail.message["List-Id"] == "<sports.news.example>"
            assert mail.message["From"].addresses[0].display_name == "نشرة الرياضة"
            assert f"?e={eid}&n={sports_id}>" in mail.message["List-Unsubscribe"]
            assert TITLE in mail.message.get_body(("plain",)).get_content()

        # The reader's side: fan0 leaves the sports digest from its mail's one-click link,
        # in a browser of their own, and keeps getting the daily digest and the alerts.
        left = next(m for m in mails if m.rcpt_tos == ["fan0@example.com"])
        url = left.message["List-Unsubscribe"].split(",")[0].strip().strip("<>")
        reader_ctx = browser.new_context()
        try:
            reader_page = reader_ctx.new_page()
            reader_page.goto(url)
            reader_page.get_by_role("button", name="ألغِ اشتراكي في «رياضة الأسبوع» فقط").click()
            reader_page.get_by_text("رياضة الأسبوع").first.wait_for()
        finally:
            reader_ctx.close()
        with session_scope() as s:
            fan0 = s.scalar(sa.select(Subscriber).where(Subscriber.email == "fan0@example.com"))
            assert [x.newsletter.slug for x in membership.of(s, fan0.id)] == ["daily", "alerts"]

        # The editor goes on: an alert from the desk, then the next sports special edition.
        smtp_sink.messages.clear()
        with celery_worker_factory(queues=("alerts", "digests", "default"), concurrency=2):
            page.goto(f"{live_server}/editor")
            page.locator("select#newsletter").select_option("alerts")
            page.get_by_label("العنوان").fill("عاجل: الحكومة تعلن خطة جديدة")
            page.get_by_label("الرابط", exact=True).fill("https://news.example/plan")
            page.get_by_role("button", name="معاينة").click()
            page.locator("#audience").wait_for()
            send = page.locator("#send")
            send.scroll_into_view_if_needed()
            send.click()
            page.wait_for_url(re.compile(r"/editor\?sent=\d+"))
            smtp_sink.wait_for(4, timeout=30)  # every reader of `alerts`: the three fans and daily-only
            alert_to = sorted(r for m in smtp_sink.messages for r in m.rcpt_tos)
            smtp_sink.messages.clear()
            page.goto(f"{live_server}/editor/special")
            page.get_by_label("العنوان", exact=True).fill("ليلة الكأس الثانية")
            page.get_by_label("كلمات من العنوان").fill("المنتخب")
            page.get_by_label("كلمات من العنوان").press("Enter")
            page.get_by_role("button", name=f"أضف «{TITLE}»").click()
            page.get_by_label("النشرة", exact=True).select_option("sports-weekly")
            page.get_by_role("button", name="معاينة").click()
            page.locator("#audience").wait_for()
            send = page.locator("#send")
            send.scroll_into_view_if_needed()
            send.click()
            page.get_by_text("بدأ إرسال النشرة رقم").wait_for()
            smtp_sink.wait_for(2, timeout=30)
            time.sleep(1.0)  # anything more (fan0's copy) would have come by now
        assert alert_to == ["daily-only@example.com", "fan0@example.com", "fan1@example.com", "fan2@example.com"]
        assert sorted(r for m in smtp_sink.messages for r in m.rcpt_tos) == ["fan1@example.com", "fan2@example.com"]
    finally:
        ctx.close()


@pytest.mark.browser
def test_the_newsletters_page_passes_axe_and_reflows(live_server, browser, axe_source):
    with session_scope() as s:
        ensure_sections(s)
        _, token = create_editor(s, "منى", "admin")
        reader(s, "reader@example.com")
    audit = Audit(axe_source)
    context = _context(browser)
    page = context.new_page()
    try:
        log_in_editor(page, live_server, "منى", token)
        page.goto(f"{live_server}/editor/newsletters")
        page.locator("#newsletter-daily summary").click()  # one edit form open
        audit.page(page, "newsletters")
        add = page.locator("#newsletter-add")
        add.get_by_label("الاسم", exact=True).fill("النشرة اليومية")  # taken
        add.get_by_label("المعرّف", exact=False).fill("daily-2")
        add.get_by_role("button", name="أضف النشرة").click()
        page.get_by_text("لم تُضف النشرة").wait_for()
        audit.page(page, "newsletters, error")
        page.goto(f"{live_server}/editor/sections")
        page.locator("#newsletters").wait_for()
        audit.page(page, "sections with newsletters")
    finally:
        context.close()
    print(audit.report())
    assert not audit.problems, "\n".join(audit.problems)
