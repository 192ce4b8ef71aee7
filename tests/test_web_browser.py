"""A reader's whole journey in real headless Chromium against a real server:
sign up → the confirmation mail reaches the SMTP server through a Celery worker →
confirm with the button → change preferences → unsubscribe with the button."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select

from service.db import session_scope
from service.models import Section, Subscriber, SubscriberStatus

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def _link(message, path: str) -> str:
    text = message.get_body(preferencelist=("plain",)).get_content()
    found = re.search(rf"https?://\S+/{path}/[A-Za-z0-9_.\-]+", text)
    assert found, f"no /{path}/ link in:\n{text}"
    return found.group(0)


def _subscriber() -> Subscriber:
    with session_scope() as s:
        return s.scalars(select(Subscriber)).one()


@pytest.mark.browser
def test_reader_signs_up_confirms_changes_preferences_and_leaves(live_server, page, smtp_sink, celery_worker_factory):
    with celery_worker_factory(queues=("default",), concurrency=1):
        page.goto(live_server + "/")
        assert page.locator("html").get_attribute("dir") == "rtl"
        page.get_by_label("البريد الإلكتروني", exact=True).fill("Reader@Example.com")
        page.get_by_label("رياضة").check()
        page.get_by_label("أسبوعية").check()
        page.get_by_label("أوافق على", exact=False).check()
        page.get_by_role("button", name="اشترك").click()
        page.get_by_role("heading", name="تحقّق من بريدك الإلكتروني").wait_for()
        assert _subscriber().status is SubscriberStatus.pending

        [confirm_mail] = smtp_sink.wait_for(1, timeout=30)
        assert confirm_mail.rcpt_tos == ["reader@example.com"]
        page.goto(_link(confirm_mail.message, "confirm"))
        page.get_by_role("heading", name="خطوة أخيرة لتأكيد اشتراكك").wait_for()
        assert page.locator("html").get_attribute("dir") == "rtl"
        assert _subscriber().status is SubscriberStatus.pending  # opening the link changed nothing
        page.get_by_role("button", name="تأكيد الاشتراك").click()
        page.get_by_role("heading", name="تم تأكيد اشتراكك").wait_for()
        assert _subscriber().status is SubscriberStatus.active
        welcome = smtp_sink.wait_for(2, timeout=30)[1]
        assert welcome.rcpt_tos == ["reader@example.com"] and "/preferences/" in _link(welcome.message, "preferences")

        page.get_by_role("link", name="اختر الأقسام ووتيرة الرسائل").click()
        page.get_by_role("heading", name="تفضيلات النشرة").wait_for()
        page.get_by_label("عربي دولي", exact=True).check()
        page.get_by_label("ترتيب قسم عربي دولي").fill("1")
        page.get_by_label("ترتيب قسم رياضة").fill("2")
        page.get_by_label("يومية").check()
        page.get_by_label("لا", exact=True).check()
        page.get_by_role("button", name="احفظ التفضيلات").click()
        page.get_by_text("حُفظت تفضيلاتك.").wait_for()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web-preferences.png"), full_page=True)
        sub = _subscriber()
        with session_scope() as s:
            ids = {x.slug: x.id for x in s.scalars(select(Section))}
        assert sub.sections == [ids["world"], ids["sport"]]
        assert sub.frequency.value == "daily" and sub.alerts is False

        page.get_by_role("link", name="إلغاء الاشتراك في كل الرسائل").click()
        page.get_by_role("heading", name="إلغاء الاشتراك").wait_for()
        assert _subscriber().status is SubscriberStatus.active  # the GET changed nothing
        page.get_by_role("button", name="ألغِ اشتراكي").click()
        page.get_by_role("heading", name="أُلغي اشتراكك").wait_for()
        assert _subscriber().status is SubscriberStatus.unsubscribed


def test_confirming_sends_the_welcome_mail(live_server, smtp_sink, celery_worker_factory):
    import httpx

    from service.subscribers.tokens import link

    with session_scope() as s:
        sport = s.scalars(select(Section).where(Section.slug == "sport")).one()
        sub = Subscriber(email="welcome@example.com", status=SubscriberStatus.pending, sections=[sport.id])
        s.add(sub)
        s.flush()
        confirm = link("confirm", sub.id, sub.token_version)
    with celery_worker_factory(queues=("default",), concurrency=1):
        page = httpx.get(confirm)
        assert page.status_code == 200
        csrf_token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        assert httpx.post(confirm, data={"csrf_token": csrf_token}).status_code == 200
        [welcome] = smtp_sink.wait_for(1, timeout=20)
    assert welcome.rcpt_tos == ["welcome@example.com"]
    assert "/preferences/" in welcome.message.get_body(preferencelist=("plain",)).get_content()
