"""A special edition put together on the editors' page in headless Chromium, against the
real app, PostgreSQL, Redis, a real Celery worker and an SMTP sink: search by headline
words, add, reorder with the buttons (no script needed), write the introduction, preview
with the audience count, send a test copy, schedule it for 07:00 tomorrow, move it to
08:00, then send it now — readers get the introduction and the stories in the editor's
order; another scheduled edition is cancelled from the page and nothing of it goes."""

from __future__ import annotations

import datetime as dt
import re
import time

import pytest
import sqlalchemy as sa

from service.articles.sections import ensure_sections
from service.config import get_settings
from service.db import session_scope
from service.dispatch import Recorder
from service.models import Edition, EditionKind, EditionStatus, utcnow
from service.staff.editors import create_editor
from service.usecases import special_editions
from tests.support.browser import log_in_editor
from tests.support.readers import reader
from tests.test_special_editions import _article
from tests.test_web_accessibility import Audit, _context, axe_source  # noqa: F401 — axe_source is the fixture

__all__ = ["axe_source"]  # the fixture, shared with tests/test_web_accessibility.py
TITLES = ("فرز الأصوات يبدأ في الرباط", "نسبة المشاركة في الرباط 50 بالمئة", "المنتخب يفوز في طنجة")


@pytest.mark.browser
def test_an_editor_composes_schedules_moves_sends_and_cancels_a_special_edition(
        live_server, browser, smtp_sink, celery_worker_factory):
    with session_scope() as s:
        ensure_sections(s)
        _, token = create_editor(s, "ريم", "editor")
        ids = [_article(s, t, slug="sports" if "المنتخب" in t else "arab-world") for t in TITLES]
        for i in range(3):
            reader(s, f"reader{i}@example.com")
        reader(s, "alerts-only@example.com", frequency="none")
    other = special_editions.compose(special_editions.Composition(title="عدد آخر", article_ids=(ids[2],)),
                                     editor_id=None, send_at=utcnow() + dt.timedelta(days=2), dispatcher=Recorder())
    dialogs: list[str] = []
    ctx = browser.new_context()
    page = ctx.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    try:
        log_in_editor(page, live_server, "ريم", token)
        page.get_by_role("link", name="عدد خاص").click()
        page.get_by_role("heading", name="عدد خاص", exact=True).wait_for()
        page.get_by_label("العنوان", exact=True).fill("ليلة الانتخابات")
        page.get_by_label("المقدمة").fill("ليلة انتخابية طويلة.\n\nنتابع النتائج ساعة بساعة.")
        page.get_by_label("كلمات من العنوان").fill("الرباط")
        page.get_by_label("كلمات من العنوان").press("Enter")  # Enter searches (the form's first button)
        results = page.locator("#results li")
        results.first.wait_for()
        assert results.count() == 2 and "المنتخب" not in page.locator("#results").inner_text()
        page.get_by_role("button", name=f"أضف «{TITLES[0]}»").click()
        page.get_by_role("button", name=f"أضف «{TITLES[1]}»").click()
        page.get_by_label("كلمات من العنوان").fill("المنتخب")
        page.get_by_role("button", name="ابحث", exact=True).click()
        page.get_by_role("button", name=f"أضف «{TITLES[2]}»").click()
        page.get_by_role("button", name=f"انقل «{TITLES[2]}» إلى أعلى").click()
        page.get_by_role("button", name=f"انقل «{TITLES[2]}» إلى أعلى").click()
        chosen = page.locator("#chosen li strong").all_inner_texts()
        assert chosen == [TITLES[2], TITLES[0], TITLES[1]]
        assert page.get_by_label("العنوان", exact=True).input_value() == "ليلة الانتخابات"  # kept across every button

        page.get_by_role("button", name="معاينة").click()
        assert "سيصل إلى 3 مشتركين" in page.locator("#audience").inner_text()
        page.get_by_label("أرسل نسخة إلى").fill("desk@example.com")
        page.get_by_role("button", name="أرسل نسخة تجريبية").click()
        page.get_by_text("أُرسلت نسخة تجريبية إلى العنوان المحدد.").wait_for()
        [copy] = smtp_sink.wait_for(1, timeout=20)
        assert copy.rcpt_tos == ["desk@example.com"] and copy.message["Subject"].startswith("[تجربة]")

        # Scheduled for 07:00 tomorrow on the site's clock.
        tomorrow = (utcnow().astimezone(get_settings().tz) + dt.timedelta(days=1)).date()
        page.get_by_label("أرسل في").fill(f"{tomorrow.isoformat()}T07:00")
        page.get_by_role("button", name="معاينة").click()
        send = page.locator("#send")
        assert f"جدول الإرسال في {tomorrow.isoformat()} 07:00" in send.inner_text()
        send.scroll_into_view_if_needed()
        send.click()
        page.wait_for_url(re.compile(r"/editor/special\?scheduled=\d+"))
        assert "أأجدول العدد" in dialogs[-1]
        eid = int(page.url.rsplit("=", 1)[1])
        with session_scope() as s:
            edition = s.get(Edition, eid)
            assert edition.kind is EditionKind.special and edition.status is EditionStatus.draft
            assert [ea.article_id for ea in edition.articles] == [ids[2], ids[0], ids[1]]
            local = edition.send_at.astimezone(get_settings().tz)
            assert (local.date(), local.hour, local.minute) == (tomorrow, 7, 0)
        assert len(smtp_sink.messages) == 1  # nothing left but the test copy

        # Moved to 08:00.
        page.get_by_label(f"موعد جديد للنشرة رقم {eid}").fill(f"{tomorrow.isoformat()}T08:00")
        page.locator("#waiting tr", has_text="ليلة الانتخابات").get_by_role("button", name="انقل").click()
        page.wait_for_url(re.compile(rf"moved={eid}"))
        assert f"{tomorrow.isoformat()} 08:00" in page.locator("#waiting tr", has_text="ليلة الانتخابات").inner_text()

        # The other one is cancelled from the page: it leaves the list and never goes.
        page.get_by_role("button", name=f"ألغِ النشرة رقم {other}").click()
        page.wait_for_url(re.compile(rf"cancelled={other}"))
        with session_scope() as s:
            assert s.get(Edition, other).status is EditionStatus.cancelled

        # Then sent now: a worker takes it; the readers get it in the editor's order.
        with celery_worker_factory(queues=("digests", "default"), concurrency=2):
            page.goto(f"{live_server}/editor/special")
            page.get_by_role("button", name=f"أرسل النشرة رقم {eid} الآن").click()
            page.wait_for_url(re.compile(rf"sent={eid}"))
            mails = [m for m in smtp_sink.wait_for(4, timeout=30) if m.rcpt_tos != ["desk@example.com"]]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with session_scope() as s:
                    if s.get(Edition, eid).status is EditionStatus.done:
                        break
                time.sleep(0.2)
            time.sleep(0.5)
        assert sorted(r for m in mails for r in m.rcpt_tos) == [f"reader{i}@example.com" for i in range(3)]
        assert all(m.rcpt_tos != ["alerts-only@example.com"] for m in smtp_sink.messages)
        text = mails[0].message.get_body(("plain",)).get_content()
        places = [text.index(x) for x in ("ليلة انتخابية طويلة", "نتابع النتائج", TITLES[2], TITLES[0], TITLES[1])]
        assert places == sorted(places)
        with session_scope() as s:
            assert s.scalar(sa.select(sa.func.count()).select_from(Edition)
                            .where(Edition.status == EditionStatus.cancelled)) == 1
    finally:
        ctx.close()


@pytest.mark.browser
def test_the_special_edition_page_passes_axe_and_reflows(live_server, browser, axe_source):
    with session_scope() as s:
        ensure_sections(s)
        _, token = create_editor(s, "ريم", "editor")
        ids = [_article(s, t) for t in TITLES[:2]]
        reader(s, "reader@example.com")
    special_editions.compose(special_editions.Composition(title="عدد مجدول", article_ids=(ids[0],)),
                             editor_id=None, send_at=utcnow() + dt.timedelta(days=2), dispatcher=Recorder())
    audit = Audit(axe_source)
    context = _context(browser)
    page = context.new_page()
    try:
        log_in_editor(page, live_server, "ريم", token)
        page.goto(f"{live_server}/editor/special")
        audit.page(page, "special")
        page.get_by_label("العنوان", exact=True).fill("ليلة الانتخابات")
        page.get_by_label("المقدمة").fill("مقدمة قصيرة.")
        page.get_by_label("كلمات من العنوان").fill("الرباط")
        page.get_by_role("button", name="ابحث", exact=True).click()
        page.get_by_role("button", name=f"أضف «{TITLES[0]}»").click()
        page.get_by_role("button", name=f"أضف «{TITLES[1]}»").click()
        page.get_by_role("button", name="معاينة").click()
        page.locator("#audience").wait_for()
        audit.page(page, "special, preview")
        page.get_by_label("أرسل في").fill("2020-01-01T07:00")
        page.get_by_role("button", name="معاينة").click()
        page.get_by_text("هذا الوقت مضى").wait_for()
        audit.page(page, "special, error")
    finally:
        context.close()
    print(audit.report())
    assert not audit.problems, "\n".join(audit.problems)
