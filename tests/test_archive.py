"""The public archive (issue 18 item 2): ARCHIVE_PUBLIC lists the digests and alerts that
went out, newest first, each linking to its web copy, with an Atom feed of the same.
Off by default (404).  The page and the feed are opened in headless Chromium on a phone's
320 px, and the feed is read back by feedparser.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import feedparser
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from service.config import reset_settings
from service.db import session_scope
from service.editions import archive, web_copy
from service.editions.alerts import create_alert
from service.editions.digests import create_digest
from service.editions.special import create_special
from service.editions.variants import render_variant_for
from service.models import Edition, EditionKind, EditionStatus, EditionVariant, Section, utcnow
from service.rendering.atom import AtomEntry, atom_feed
from service.web.app import create_app
from tests.test_hardening_fuzz import FUZZ
from tests.test_web_copy import add_article

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
NOW = dt.datetime(2026, 3, 28, 9, 0, tzinfo=dt.UTC)
HOSTILE = 'عاجل: <script>alert("x")</script> & "اقتباس" \x0b ]]>'


def _sent(session, edition: Edition, at: dt.datetime, status: EditionStatus = EditionStatus.done,
          store: bool = True) -> int:
    session.flush()
    if store:
        rendered = render_variant_for(session, edition, "all")
        session.add(EditionVariant(edition_id=edition.id, variant="all", subject=rendered.subject,
                                   html=rendered.html, text=rendered.text))
    edition.status, edition.started_at = status, at
    session.flush()
    return edition.id


def make_archive() -> dict[str, int]:
    """Two alerts and a digest that went out, and what must not be listed."""
    with session_scope() as s:
        world = s.scalar(sa.select(Section).where(Section.slug == "world"))  # live_server makes it
        if world is None:
            world = Section(slug="world", name="عربي دولي", position=1)
            s.add(world)
            s.flush()
        arts = [add_article(s, n, world, seen=utcnow() - dt.timedelta(hours=1 + n)) for n in range(3)]
        ids = {}
        ids["old_alert"] = _sent(s, create_alert(s, editor_id=None, headline="زلزال في العقبة",
                                                 url="https://news.example/q1"), NOW - dt.timedelta(days=2))
        digest, _ = create_digest(s, "daily", scheduled=False)
        # Nobody chose every section: its "all" copy is rendered when first opened.
        ids["digest"] = _sent(s, digest, NOW - dt.timedelta(days=1), store=False)
        special = create_special(s, title="عام في الأخبار", article_ids=[a.id for a in arts[:2]],
                                 intro="مختارات المحررين.", editor_id=None)
        ids["special"] = _sent(s, special, NOW - dt.timedelta(hours=12))
        ids["new_alert"] = _sent(s, create_alert(s, editor_id=None, headline=HOSTILE, url="https://news.example/q2"),
                                 NOW - dt.timedelta(hours=1), status=EditionStatus.sending)
        ids["cancelled"] = _sent(s, create_alert(s, editor_id=None, headline="خبر أُلغي",
                                                 url="https://news.example/q3"), NOW, status=EditionStatus.cancelled)
        ids["draft"] = create_alert(s, editor_id=None, headline="مسودة", url="https://news.example/q4").id
        correction = Edition(kind=EditionKind.correction, status=EditionStatus.draft, title="تصحيح")
        s.add(correction)
        ids["correction"] = _sent(s, correction, NOW, store=False)
    return ids


def _unmarked(text: str) -> str:
    return text.replace("\u200e", "").replace("\u200f", "")


@pytest.fixture
def public_archive(monkeypatch):
    monkeypatch.setenv("ARCHIVE_PUBLIC", "true")
    reset_settings()


@pytest.fixture
def client(pg_env, redis_url, monkeypatch):
    monkeypatch.setenv("PUBLIC_URL", "https://news.example")
    reset_settings()
    return TestClient(create_app(), raise_server_exceptions=False, base_url="https://news.example")


def test_the_archive_is_off_by_default(client, monkeypatch):
    monkeypatch.delenv("ARCHIVE_PUBLIC", raising=False)
    reset_settings()
    ids = make_archive()
    for path in ("/archive", "/archive?page=2", "/archive?page=x", "/archive/feed.atom"):
        answer = client.get(path)
        assert answer.status_code == 404, path
        assert "new_alert" not in answer.text and "زلزال" not in answer.text
    # The copies themselves still open for whoever has a mail's link, kept out of search engines.
    copy = client.get(web_copy.path_for(ids["old_alert"], "all"))
    assert copy.status_code == 200 and copy.headers["x-robots-tag"] == "noindex"


def test_the_public_archive_lists_what_went_out_newest_first(client, public_archive):
    ids = make_archive()
    page = client.get("/archive")
    assert page.status_code == 200 and 'dir="rtl"' in page.text
    assert 'name="robots"' not in page.text and "x-robots-tag" not in page.headers
    assert '<link rel="alternate" type="application/atom+xml"' in page.text
    listed = [ids[k] for k in ("new_alert", "special", "digest", "old_alert")]
    positions = [page.text.index(f'id="edition-{eid}"') for eid in listed]
    assert positions == sorted(positions)
    for key in ("cancelled", "draft", "correction"):
        assert f'id="edition-{ids[key]}"' not in page.text, key
    # The headline's markup is text (with the subject's bidi marks around its Latin runs).
    assert "<script" not in page.text and "&lt;script&gt;" in _unmarked(page.text)
    assert "27 آذار/مارس 2026" in page.text and "26 آذار/مارس 2026" in page.text  # days, as the site writes them
    for eid in listed:
        assert f'href="https://news.example{web_copy.path_for(eid, "all")}"' in page.text
        copy = client.get(web_copy.path_for(eid, "all"))
        assert copy.status_code == 200 and "x-robots-tag" not in copy.headers


def test_pages_of_the_archive_and_bad_page_numbers(client, public_archive, monkeypatch):
    monkeypatch.setattr(archive, "PER_PAGE", 2)
    ids = make_archive()
    first, second = client.get("/archive"), client.get("/archive?page=2")
    assert first.status_code == second.status_code == 200
    assert f'id="edition-{ids["new_alert"]}"' in first.text and 'rel="next" href="?page=2"' in first.text
    assert f'id="edition-{ids["old_alert"]}"' in second.text and 'rel="prev" href="?page=1"' in second.text
    assert client.get("/archive?page=3").status_code == 404
    for bad in ("0", "-1", "x", "1e3", "", "9" * 40, "١"):
        assert client.get("/archive", params={"page": bad}).status_code == 400, bad


def test_the_feed_is_atom_that_feedparser_reads(client, public_archive):
    ids = make_archive()
    answer = client.get("/archive/feed.atom")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/atom+xml")
    feed = feedparser.parse(answer.content)
    assert not feed.bozo, feed.bozo_exception
    assert feed.version == "atom10" and feed.feed.language == "ar"
    assert [e.link for e in feed.entries] == [
        f"https://news.example{web_copy.path_for(ids[k], 'all')}"
        for k in ("new_alert", "special", "digest", "old_alert")]
    # The headline's markup arrives as text (escaped, never parsed).
    assert _unmarked(feed.entries[0].title) == " ".join(HOSTILE.split())  # the subject is one line
    assert feed.entries[0].published_parsed[:4] == (2026, 3, 28, 8)
    assert [e.tags[0].term for e in feed.entries] == ["عاجل", "عدد خاص", "نشرة", "عاجل"]
    assert feed.entries[1].title == "عام في الأخبار"  # the entry's label says «عدد خاص»


@pytest.mark.browser
def test_archive_page_feed_and_a_copy_in_chromium_on_a_phone(public_archive, live_server, browser):
    make_archive()
    context = browser.new_context(viewport={"width": 320, "height": 640})
    page = context.new_page()
    try:
        answer = page.goto(live_server + "/archive")
        assert answer.status == 200
        assert page.locator("html").get_attribute("dir") == "rtl"
        page.get_by_role("heading", name="أرشيف النشرة").wait_for()

        def no_sideways_scroll() -> bool:
            return page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")

        assert no_sideways_scroll()
        assert page.locator("ol.archive li").count() == 4
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "archive-320.png"), full_page=True)
        page.get_by_role("link", name="زلزال في العقبة").click()
        page.wait_for_load_state("load")
        assert "/e/" in page.url and page.locator("html").get_attribute("dir") == "rtl"
        assert page.get_by_text("زلزال في العقبة").first.is_visible()
        assert page.get_by_role("link", name="اشترك في النشرة").is_visible()
        assert no_sideways_scroll()
        assert page.locator("meta[name=robots]").count() == 0  # archived: engines may index it

        feed = page.goto(live_server + "/archive/feed.atom")
        assert feed.status == 200 and feed.headers["content-type"].startswith("application/atom+xml")
        parsed = feedparser.parse(feed.body())
        assert not parsed.bozo and len(parsed.entries) == 4
        page.goto(parsed.entries[2].link)  # the digest's copy, rendered on first view
        assert page.locator("html").get_attribute("dir") == "rtl" and no_sideways_scroll()
        assert page.get_by_text("خبر رقم 0 عن الأمن").first.is_visible()
    finally:
        context.close()


def test_a_title_xml_cannot_hold_still_makes_a_feed():
    entry = AtomEntry(id="https://news.example/archive#edition-1", title="خبر\x01 <b> & ]]> \ufffe\ud800.",
                      url="https://news.example/e/1/x", updated=NOW)
    feed = feedparser.parse(atom_feed(feed_id="https://news.example/archive", title="نشرة", entries=[entry],
                                      self_url="https://news.example/archive/feed.atom",
                                      page_url="https://news.example/archive", updated=NOW))
    assert not feed.bozo and feed.entries[0].title == "خبر <b> & ]]> ."


@FUZZ
@given(page=st.text(max_size=30))
def test_any_page_number_is_answered_without_a_5xx(client, public_archive, page):
    answer = client.get("/archive", params={"page": page})
    assert answer.status_code in (200, 400, 404), (page, answer.status_code)
    assert (answer.status_code == 200) == (page == "1")  # an empty archive has its page 1 only
