"""The report per edition (issue 18 item 4): a digest sent through the batch path, its
links followed, a bounce, a soft bounce, a complaint and an unsubscribe on record; then
the numbers, `nashra report EDITION [--csv]` and the editor's page with its chart in
headless Chromium."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys

import httpx
import pytest
import sqlalchemy as sa

from service.db import session_scope
from service.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    FeedbackEvent,
    utcnow,
)
from service.staff.editors import create_editor
from service.usecases import edition_report
from tests.support.browser import log_in_editor
from tests.support.delivery import run_all_batches
from tests.test_clicks import BROWSER, STORIES, make_digest, ref_path, story_link


def _nashra(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service", *args], env=os.environ.copy(), capture_output=True,
                          text=True, timeout=120)


def _feedback(eid: int, nth: int, kind: str) -> None:
    """A report that came back about the nth reader's copy (as service/inbound writes it)."""
    with session_scope() as s:
        row = s.scalars(sa.select(Delivery).where(Delivery.edition_id == eid).order_by(Delivery.id)
                        .offset(nth).limit(1)).one()
        s.add(FeedbackEvent(source="smtp", kind=kind, subscriber_id=row.subscriber_id, edition_id=eid,
                            delivery_id=row.id, received_at=utcnow()))
        if kind == "hard":
            row.status = DeliveryStatus.failed


def _day(smtp_sink, follow) -> int:
    """A 6-reader digest: 3 readers follow story 1 (one of them twice), 1 follows story 2,
    a scanner fetches a link; a hard bounce, a soft bounce, a complaint, an unsubscribe."""
    eid, _ = make_digest(6)
    run_all_batches(eid)
    mails = {m.rcpt_tos[0]: m for m in smtp_sink.wait_for(6)}
    for who in ("reader0@example.com", "reader1@example.com", "reader2@example.com", "reader0@example.com"):
        assert follow(ref_path(story_link(mails[who], STORIES[0][0])), BROWSER) == STORIES[0][0]
    follow(ref_path(story_link(mails["reader3@example.com"], STORIES[1][0])), BROWSER)
    follow(ref_path(story_link(mails["reader4@example.com"], STORIES[1][0])), {"User-Agent": "Mimecast-URL-Protect"})
    _feedback(eid, 5, "hard")
    _feedback(eid, 4, "soft")
    _feedback(eid, 3, "complaint")
    with session_scope() as s:
        s.get(Edition, eid).unsubscribes = 1
    return eid


def test_the_numbers_and_the_command(pg_env, redis_url, smtp_sink):
    from fastapi.testclient import TestClient

    from service.web.app import create_app

    with TestClient(create_app(), follow_redirects=False) as web:
        eid = _day(smtp_sink, lambda path, headers: web.get(path, headers=headers).headers["location"])
    r = edition_report.report(eid)
    assert (r.recipients, r.sent, r.bounced_hard, r.bounced_soft, r.delivered) == (6, 6, 1, 1, 4)
    assert (r.complaints, r.unsubscribes) == (1, 1)
    assert (r.clicks, r.unique_clicks, r.ignored) == (5, 4, 1)
    assert r.ctr == pytest.approx(4 / 4) and r.ctr_text == "100.0%"
    first, second = r.stories[:2]
    assert (first.label, first.clicks, first.unique) == (STORIES[0][1], 4, 3)
    assert (second.label, second.clicks, second.unique) == (STORIES[1][1], 1, 1)
    assert [(s.clicks, s.unique) for s in r.sections] == [(4, 3), (1, 1)]
    assert r.hours[0] == 5 and sum(r.hours) == 5  # all within the first hour of the send

    out = _nashra("report", str(eid))
    assert out.returncode == 0, out.stderr
    assert "delivered" in out.stdout and " 4" in out.stdout and "unique ~4" in out.stdout
    assert f"edition {eid} (digest, " in out.stdout and "[daily]" in out.stdout  # the newsletter it went out for
    assert STORIES[0][1] in out.stdout
    rows = list(csv.reader(io.StringIO(_nashra("report", str(eid), "--csv").stdout)))
    assert rows[0] == ["metric", "name", "clicks", "unique"] and rows[1] == ["newsletter", "daily", "", ""]
    assert ["delivered", "", "4", ""] in rows and ["clicks", "edition", "5", "4"] in rows
    assert ["story", STORIES[0][1], "4", "3"] in rows and ["hour", "+0", "5", ""] in rows
    missing = _nashra("report", "99999")
    assert missing.returncode == 2 and "no edition 99999" in missing.stderr


@pytest.mark.browser
def test_the_report_page_with_its_chart(live_server, browser, smtp_sink):
    with httpx.Client(base_url=live_server, follow_redirects=False) as client:
        eid = _day(smtp_sink, lambda path, headers: client.get(path, headers=headers).headers["location"])
    with session_scope() as s:
        _, token = create_editor(s, "سلمى", "editor")
    page = browser.new_page()
    try:
        log_in_editor(page, live_server, "سلمى", token)
        page.get_by_role("link", name=f"تقرير النشرة رقم {eid}").click()
        page.get_by_role("heading", name=f"تقرير نشرة رقم {eid}: نشرة الصباح").wait_for()
        assert page.locator("#delivered").inner_text() == "4"
        assert page.locator("#clicks").inner_text() == "5" and page.locator("#unique").inner_text() == "4"
        assert page.locator("#ctr").inner_text() == "100.0%"
        assert page.locator("#complaints").inner_text() == "1" and page.locator("#unsubscribes").inner_text() == "1"
        story = page.locator("#stories tbody tr").first
        assert STORIES[0][1] in story.inner_text() and "4" in story.inner_text()
        assert page.locator("#sections tbody tr").count() == 2
        # The chart: 24 bars drawn by the page, the first hour's as tall as the chart.
        chart = page.locator("#hours-chart svg")
        assert chart.get_attribute("role") == "img"
        bars = page.locator("#hours-chart rect.bar")
        assert bars.count() == 24
        assert bars.first.get_attribute("data-clicks") == "5" and int(bars.first.get_attribute("height")) == 160
        assert all(int(bars.nth(i).get_attribute("height")) == 0 for i in range(1, 24))
        box = bars.first.bounding_box()
        assert box is not None and box["height"] > 50  # drawn, and visible
        assert page.evaluate("document.scripts.length") == page.evaluate(
            "[...document.scripts].filter(s => s.src.startsWith(location.origin)).length")  # no external script
        page.set_viewport_size({"width": 360, "height": 740})  # a phone: the chart shrinks, the page does not scroll sideways
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    finally:
        page.close()


def test_a_digests_copies_by_readers_sections(pg_env, redis_url, smtp_sink):
    from fastapi.testclient import TestClient

    from service.articles.sections import ensure_sections
    from service.models import Section
    from service.web.app import create_app
    from tests.support.delivery import add_subscribers

    with session_scope() as s:
        ensure_sections(s)
        first, second = s.execute(sa.select(Section.id, Section.name).order_by(Section.position).limit(2)).all()
        add_subscribers(s, 2, start=100, sections=[first[0]])  # only the first story's section
        add_subscribers(s, 1, start=200, sections=[second[0]])
    eid, _ = make_digest(0)
    run_all_batches(eid)
    mails = {m.rcpt_tos[0]: m for m in smtp_sink.wait_for(3)}
    with TestClient(create_app(), follow_redirects=False) as web:
        for who in ("reader100@example.com", "reader101@example.com"):
            web.get(ref_path(story_link(mails[who], STORIES[0][0])), headers=BROWSER)
        web.get(ref_path(story_link(mails["reader200@example.com"], STORIES[1][0])), headers=BROWSER)
    r = edition_report.report(eid)
    assert [(v.label, v.clicks) for v in r.variants] == [(first[1], 2), (second[1], 1)]
    assert ["variant", first[1], "2", ""] in list(csv.reader(io.StringIO(edition_report.to_csv(r))))
