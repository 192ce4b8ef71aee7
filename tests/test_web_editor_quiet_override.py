"""The editor's page offers what the API and the CLI already do: an alert may override
readers' quiet hours.  Walked in headless Chromium against the real app, a real Celery
worker on the alerts queue, PostgreSQL, Redis and an SMTP server: ticked, the alert
reaches a reader who is in their quiet hours now (and the audit log says who decided);
left unticked, that reader's copy is held for the end of their night while everyone
awake gets it."""

from __future__ import annotations

import re
import time

import pytest
import sqlalchemy as sa

from service.config import get_settings
from service.db import session_scope
from service.models import AuditLog, Edition, EditionStatus, SubscriberStatus, utcnow
from service.staff.editors import create_editor
from tests.support.browser import log_in_editor
from tests.support.delivery import ledger
from tests.support.readers import reader

URGENT = "إعلان حالة الطوارئ في العاصمة"
ROUTINE = "افتتاح معرض الكتاب الدولي"


def _quiet_now() -> tuple[int, int]:
    """Two quiet hours that hold the current local hour (the test ends long before them)."""
    hour = utcnow().astimezone(get_settings().tz).hour
    return hour, (hour + 2) % 24


def _wait_done(edition_id: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as s:
            if s.get(Edition, edition_id).status is EditionStatus.done:
                return
        time.sleep(0.1)
    raise AssertionError(f"edition {edition_id} did not finish: {ledger(edition_id)}")


def _compose_and_send(page, headline: str, url: str, *, override: bool, dialogs: list[str]) -> int:
    page.get_by_label("العنوان").fill(headline)
    page.get_by_label("الرابط", exact=True).fill(url)
    page.get_by_label("الموجز").fill("سطران عن الخبر.")
    box = page.get_by_label("تجاوز ساعات الهدوء", exact=False)
    assert not box.is_checked()  # a fresh form never overrides by default
    if override:
        box.check()
    page.get_by_role("button", name="معاينة").click()
    page.locator("#audience").wait_for()
    # The choice survives the preview, which says so; the send button carries it.
    assert page.get_by_label("تجاوز ساعات الهدوء", exact=False).is_checked() is override
    assert page.locator("#override-note").count() == (1 if override else 0)
    send = page.locator("#send")
    send.scroll_into_view_if_needed()
    send.click()
    page.wait_for_url(re.compile(r"/editor\?sent=\d+"))
    if override:
        assert dialogs[-1] == "سيصل إلى مشتركَين، ومنهم من هم في ساعات هدوئهم. أأرسل التنبيه الآن؟"
    else:
        assert dialogs[-1] == "سيصل إلى مشتركَين. أأرسل التنبيه الآن؟"
    return int(page.url.rsplit("=", 1)[1])


@pytest.mark.browser
def test_the_override_checkbox_wakes_a_quiet_reader_and_unticked_holds_them(
    live_server, browser, smtp_sink, celery_worker_factory
):
    start, end = _quiet_now()
    with session_scope() as s:
        editor, token = create_editor(s, "ريم", "editor")
        editor_id = editor.id
        reader(s, "sleeper@example.com", status=SubscriberStatus.active, alerts=True, sections=[],
               quiet_start=start, quiet_end=end, quiet_mode="hold")
        reader(s, "awake@example.com", status=SubscriberStatus.active, alerts=True, sections=[])
    dialogs: list[str] = []

    def accept(dialog):
        dialogs.append(dialog.message)
        dialog.accept()

    context = browser.new_context()
    page = context.new_page()
    page.on("dialog", accept)
    try:
        log_in_editor(page, live_server, "ريم", token)
        with celery_worker_factory(queues=("alerts",), concurrency=2):
            urgent = _compose_and_send(
                page, URGENT, "https://news.example/emergency", override=True, dialogs=dialogs
            )
            _wait_done(urgent)
            routine = _compose_and_send(
                page, ROUTINE, "https://news.example/book-fair", override=False, dialogs=dialogs
            )
            _wait_done(routine)
    finally:
        context.close()

    # Ticked: the reader in their quiet hours got it now, with everyone else.
    assert ledger(urgent) == {"sleeper@example.com": "sent", "awake@example.com": "sent"}
    # Unticked: their copy waits for the end of their night; the reader who is awake has it.
    assert ledger(routine) == {"sleeper@example.com": "held", "awake@example.com": "sent"}
    sleeper_subjects = [
        m.message["Subject"] for m in smtp_sink.messages if m.rcpt_tos == ["sleeper@example.com"]
    ]
    assert len(sleeper_subjects) == 1 and URGENT in sleeper_subjects[0]
    awake_subjects = [
        m.message["Subject"] for m in smtp_sink.messages if m.rcpt_tos == ["awake@example.com"]
    ]
    assert len(awake_subjects) == 2
    with session_scope() as s:
        assert s.get(Edition, urgent).params.get("override_quiet_hours") is True
        assert not s.get(Edition, routine).params.get("override_quiet_hours")
        [entry] = s.scalars(
            sa.select(AuditLog).where(AuditLog.action == "alert.override_quiet_hours")
        )
        assert (entry.actor, entry.target) == (f"editor:{editor_id}", f"edition:{urgent}")
