"""A reader's whole journey in real headless Chromium against a real server:
sign up → the confirmation mail reaches the SMTP server through a Celery worker →
confirm with the button → change preferences → unsubscribe with the button."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select

from service.db import session_scope
from service.models import Newsletter, NewsletterKind, Section, Subscriber, SubscriberStatus
from service.newsletters import membership
from service.subscribers.tokens import link
from tests.support.readers import reader

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def _link(message, path: str) -> str:
    text = message.get_body(preferencelist=("plain",)).get_content()
    found = re.search(rf"https?://\S+/{path}/[A-Za-z0-9_.\-]+", text)
    assert found, f"no /{path}/ link in:\n{text}"
    return found.group(0)


def _subscriber() -> Subscriber:
    with session_scope() as s:
        return s.scalars(select(Subscriber)).one()


def _on(subscriber_id: int) -> dict[str, list]:
    """slug → sections, of the newsletters the reader is on, in the site's order."""
    with session_scope() as s:
        return {x.newsletter.slug: list(x.sections) for x in membership.of(s, subscriber_id)}


@pytest.mark.browser
def test_reader_signs_up_confirms_changes_preferences_and_leaves(live_server, page, smtp_sink, celery_worker_factory):
    with session_scope() as s:
        s.add(Newsletter(slug="friday", name="نشرة الجمعة", description="قراءات طويلة كل جمعة",
                         kind=NewsletterKind.digest, frequency="weekly", position=5))
    with celery_worker_factory(queues=("default",), concurrency=1):
        page.goto(live_server + "/")
        assert page.locator("html").get_attribute("dir") == "rtl"
        page.get_by_label("البريد الإلكتروني", exact=True).fill("Reader@Example.com")
        page.get_by_label("رياضة").check()
        # The form offers every newsletter with what it is; the daily digest and alerts
        # are ticked as the one subscription was before.  This reader wants two others.
        assert page.get_by_text("قراءات طويلة كل جمعة").is_visible()
        page.get_by_label("النشرة اليومية").uncheck()
        page.get_by_label("عاجل").uncheck()
        page.get_by_label("النشرة الأسبوعية").check()
        page.get_by_label("نشرة الجمعة").check()
        page.get_by_label("أوافق على", exact=False).check()
        page.get_by_role("button", name="اشترك").click()
        page.get_by_role("heading", name="تحقّق من بريدك الإلكتروني").wait_for()
        sub = _subscriber()
        assert sub.status is SubscriberStatus.pending

        [confirm_mail] = smtp_sink.wait_for(1, timeout=30)
        assert confirm_mail.rcpt_tos == ["reader@example.com"]
        page.goto(_link(confirm_mail.message, "confirm"))
        page.get_by_role("heading", name="خطوة أخيرة لتأكيد اشتراكك").wait_for()
        assert page.locator("html").get_attribute("dir") == "rtl"
        assert page.get_by_role("listitem").all_text_contents() == ["النشرة الأسبوعية", "نشرة الجمعة"]
        assert _subscriber().status is SubscriberStatus.pending  # opening the link changed nothing
        page.get_by_role("button", name="تأكيد الاشتراك").click()
        page.get_by_role("heading", name="تم تأكيد اشتراكك").wait_for()
        assert _subscriber().status is SubscriberStatus.active
        with session_scope() as s:
            ids = {x.slug: x.id for x in s.scalars(select(Section))}
            nl = {n.slug: n.id for n in s.scalars(select(Newsletter))}
        assert _on(sub.id) == {"weekly": [ids["sport"]], "friday": [ids["sport"]]}  # exactly those two
        welcome = smtp_sink.wait_for(2, timeout=30)[1]
        assert welcome.rcpt_tos == ["reader@example.com"] and "/preferences/" in _link(welcome.message, "preferences")
        text = welcome.message.get_body(preferencelist=("plain",)).get_content()
        assert "النشرة الأسبوعية: " in text and "نشرة الجمعة: " in text

        page.get_by_role("link", name="اختر نشراتك وأقسامها ومواعيدها").click()
        page.get_by_role("heading", name="تفضيلات النشرة").wait_for()
        weekly = page.locator("#newsletter-weekly")
        weekly.get_by_label("عربي دولي", exact=True).check()
        weekly.get_by_label("ترتيب قسم عربي دولي في النشرة الأسبوعية").fill("1")
        weekly.get_by_label("ترتيب قسم رياضة في النشرة الأسبوعية").fill("2")
        page.get_by_role("button", name="احفظ التفضيلات").click()
        page.get_by_text("حُفظت تفضيلاتك.").wait_for()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web-preferences.png"), full_page=True)
        assert _on(sub.id) == {"weekly": [ids["world"], ids["sport"]], "friday": [ids["sport"]]}
        page.get_by_role("button", name="اشترك في «عاجل»").click()
        page.get_by_text("حُفظت تفضيلاتك.").wait_for()
        assert list(_on(sub.id)) == ["weekly", "alerts", "friday"]

        # The link a Friday mail carries: «this newsletter» or «all».
        leave = link("unsubscribe", sub.id, sub.token_version)
        page.goto(f"{leave}?n={nl['friday']}")
        page.get_by_role("heading", name="إلغاء الاشتراك").wait_for()
        assert list(_on(sub.id)) == ["weekly", "alerts", "friday"]  # the GET changed nothing
        page.get_by_role("button", name="ألغِ اشتراكي في «نشرة الجمعة» فقط").click()
        page.get_by_role("heading", name="أُلغي اشتراكك في «نشرة الجمعة»").wait_for()
        assert list(_on(sub.id)) == ["weekly", "alerts"] and _subscriber().status is SubscriberStatus.active

        page.goto(f"{leave}?n={nl['weekly']}")
        page.get_by_role("button", name="إلغاء الاشتراك من كل النشرات").click()
        page.get_by_role("heading", name="أُلغي اشتراكك").wait_for()
        assert _subscriber().status is SubscriberStatus.unsubscribed and _on(sub.id) == {}


def test_confirming_sends_the_welcome_mail(live_server, smtp_sink, celery_worker_factory):
    import httpx

    with session_scope() as s:
        sport = s.scalars(select(Section).where(Section.slug == "sport")).one()
        sub = reader(s, "welcome@example.com", status=SubscriberStatus.pending, sections=[sport.id])
        confirm = link("confirm", sub.id, sub.token_version)
    with celery_worker_factory(queues=("default",), concurrency=1):
        page = httpx.get(confirm)
        assert page.status_code == 200
        csrf_token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        assert httpx.post(confirm, data={"csrf_token": csrf_token}).status_code == 200
        [welcome] = smtp_sink.wait_for(1, timeout=20)
    assert welcome.rcpt_tos == ["welcome@example.com"]
    assert "/preferences/" in welcome.message.get_body(preferencelist=("plain",)).get_content()
