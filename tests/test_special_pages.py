"""The special edition page without a browser (tests/test_special_editions_browser.py
walks it in Chromium): each button's effect, the CSRF refusal, a bad time said in
Arabic and nothing made, the alert page's send_at, and Hypothesis over every field of
the compose form — never a 5xx, and nothing is made unless the form says send."""

from __future__ import annotations

import datetime as dt
import re

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.articles.sections import ensure_sections
from service.config import get_settings
from service.db import session_scope
from service.models import Edition, EditionStatus, utcnow
from tests.support.readers import reader
from tests.test_special_editions import _article
from tests.test_web_desk import ALERT, csrf_of, desk, log_in  # noqa: F401 — desk is the fixture

__all__ = ["desk"]


def _setup() -> list[int]:
    with session_scope() as s:
        ensure_sections(s)
        ids = [_article(s, "فرز الأصوات في الرباط"), _article(s, "نسبة المشاركة في الرباط")]
        reader(s, "r@example.com")
    return ids


def _count() -> int:
    with session_scope() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(Edition)) or 0


def _chosen(html: str) -> list[str]:
    return re.findall(r'<input type="hidden" name="article" value="(\d+)">', html)


def test_the_buttons_add_move_remove_preview_and_schedule(desk):
    a, b = _setup()
    client = log_in(desk, "editor")
    token = csrf_of(client, "/editor/special")
    base = {"csrf_token": token, "title": "ليلة الانتخابات", "intro": "مقدمة.", "q": "الرباط"}
    page = client.post("/editor/special", data={**base, "action": "search"})
    assert page.status_code == 200 and f'value="add:{a}"' in page.text and f'value="add:{b}"' in page.text
    page = client.post("/editor/special", data={**base, "article": [str(a)], "action": f"add:{b}"})
    assert _chosen(page.text) == [str(a), str(b)]
    page = client.post("/editor/special", data={**base, "article": [str(a), str(b)], "action": f"up:{b}"})
    assert _chosen(page.text) == [str(b), str(a)]
    page = client.post("/editor/special", data={**base, "article": [str(b), str(a)], "action": f"remove:{b}"})
    assert _chosen(page.text) == [str(a)]
    page = client.post("/editor/special", data={**base, "article": [str(a)], "action": "preview"})
    assert page.status_code == 200 and "سيصل إلى مشترك واحد" in page.text and _count() == 0
    bad = client.post("/editor/special", data={**base, "article": [str(a)], "action": "send",
                                               "send_at": "2020-01-01T07:00"})
    assert bad.status_code == 422 and "هذا الوقت مضى" in bad.text and _count() == 0
    refused = client.post("/editor/special", data={**base, "csrf_token": "x", "article": [str(a)], "action": "send"})
    assert refused.status_code == 400 and _count() == 0
    when = (utcnow() + dt.timedelta(days=1)).astimezone(get_settings().tz).strftime("%Y-%m-%dT%H:%M")
    made = client.post("/editor/special", data={**base, "article": [str(a)], "action": "send", "send_at": when,
                                                "idempotency_key": "k"}, follow_redirects=False)
    assert made.status_code == 303 and "scheduled=" in made.headers["location"]
    again = client.post("/editor/special", data={**base, "article": [str(a)], "action": "send", "send_at": when,
                                                 "idempotency_key": "k"}, follow_redirects=False)
    assert again.headers["location"] == made.headers["location"] and _count() == 1  # a double click: one edition
    eid = int(made.headers["location"].rsplit("=", 1)[1])
    listed = client.get("/editor/special").text
    assert f"موعد جديد للنشرة رقم {eid}" in listed
    assert "مجدولة:" in client.get("/editor/editions").text
    moved = client.post(f"/editor/editions/{eid}/reschedule", data={"csrf_token": token, "send_at": "garbage"})
    assert moved.status_code == 422 and "اكتب التاريخ والوقت" in moved.text
    gone = client.post(f"/editor/editions/{eid}/cancel", data={"csrf_token": token}, follow_redirects=False)
    assert gone.status_code == 303
    late = client.post(f"/editor/editions/{eid}/reschedule", data={"csrf_token": token, "now": "yes"})
    assert late.status_code == 409
    with session_scope() as s:
        assert s.get(Edition, eid).status is EditionStatus.cancelled


def test_the_alert_page_schedules_with_send_at(desk):
    client = log_in(desk, "editor")
    token = csrf_of(client)
    when = (utcnow() + dt.timedelta(hours=3)).astimezone(get_settings().tz).strftime("%Y-%m-%dT%H:%M")
    shown = client.post("/editor/preview", data={"csrf_token": token, **ALERT, "send_at": when})
    assert shown.status_code == 200 and "جدول الإرسال في" in shown.text
    bad = client.post("/editor/send", data={"csrf_token": token, **ALERT, "send_at": "2020-01-01T01:00"})
    assert bad.status_code == 422 and "هذا الوقت مضى" in bad.text and _count() == 0
    sent = client.post("/editor/send", data={"csrf_token": token, **ALERT, "send_at": when}, follow_redirects=False)
    assert sent.status_code == 303 and "scheduled=" in sent.headers["location"]
    with session_scope() as s:
        edition = s.scalars(sa.select(Edition)).one()
        assert edition.status is EditionStatus.draft and edition.send_at is not None


_CLIENTS: dict = {}
_field = st.one_of(st.text(max_size=80), st.sampled_from(["1", "0", "-1", "99999999999", "add:1", "up:x", ""]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(title=_field, intro=_field, article=st.lists(_field, max_size=4), section=st.lists(_field, max_size=3),
       q=_field, in_section=_field, days=_field, send_at=_field,
       action=st.sampled_from(["search", "preview", "add:1", "up:2", "remove:1", "down:1", "bogus", ""]))
def test_hypothesis_over_the_compose_form_never_a_5xx(desk, title, intro, article, section, q, in_section, days,
                                                     send_at, action):
    if id(desk["app"]) not in _CLIENTS:  # one login per test run (the fixture is shared by the examples)
        _setup()
        _CLIENTS.clear()
        _CLIENTS[id(desk["app"])] = log_in(desk, "editor")
    client = _CLIENTS[id(desk["app"])]
    data = {"csrf_token": csrf_of(client, "/editor/special"), "title": title, "intro": intro, "article": article,
            "section": section, "q": q, "in_section": in_section, "days": days, "send_at": send_at, "action": action}
    resp = client.post("/editor/special", data=data)
    assert resp.status_code < 500, resp.text[:500]
    assert _count() == 0  # nothing is made unless the form says send


def test_a_search_with_a_nul_or_a_control_is_no_500(desk):
    _setup()
    client = log_in(desk, "editor")
    for q in ("\x00", "الرباط\x00", "\x1b[31m"):
        resp = client.post("/editor/special", data={"csrf_token": csrf_of(client, "/editor/special"), "q": q,
                                                    "action": "search"})
        assert resp.status_code == 200
