"""The public archive under several newsletters (brief G): each entry names its
newsletter, `/archive?newsletter=<slug>` lists only that newsletter's editions (with
pagination that keeps the filter, and its own Atom feed), a navigation links the visible
newsletters, and a hidden one's past editions stay listed and reachable by slug.  An
unknown or malformed slug is a 404 that writes nothing.  Real PostgreSQL through the HTTP
app; the filtered feed read back by feedparser and ElementTree; axe in Chromium.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET

import feedparser
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from service.config import reset_settings
from service.db import get_engine, session_scope
from service.editions import archive, web_copy
from service.editions.alerts import create_alert
from service.editions.digests import create_digest
from service.editions.special import create_special
from service.models import (
    Edition,
    Frequency,
    Newsletter,
    NewsletterKind,
    Section,
    utcnow,
)
from tests import test_archive
from tests.test_archive import ARTIFACTS, NOW, _sent
from tests.test_hardening_fuzz import FUZZ
from tests.test_web_accessibility import Audit, _context, axe_source  # noqa: F401 — axe_source is the fixture
from tests.test_web_copy import add_article

__all__ = ["axe_source"]  # the fixture, shared with tests/test_web_accessibility.py

ATOM = "{http://www.w3.org/2005/Atom}"
SPORTS, SPORTS_ALERTS, RAMADAN = "رياضة الأسبوع", "عاجل الرياضة", "نشرة رمضان"


# The archive tests' own fixtures: the HTTP app on PostgreSQL, the archive switched on.
client = test_archive.client
public_archive = test_archive.public_archive


def _newsletter(s, slug: str, name: str, kind: NewsletterKind, position: int) -> Newsletter:
    n = Newsletter(slug=slug, name=name, description="", kind=kind, sections=[], position=position,
                   frequency=Frequency.weekly if kind is NewsletterKind.digest else None)
    s.add(n)
    s.flush()
    return n


def make_archive() -> dict[str, int]:
    """Editions of five newsletters that went out, oldest first: the daily digest, an
    alert of `alerts`, three special editions of the sports digest, an alert of a second
    alerts newsletter, and one of a newsletter retired (hidden) since."""
    with session_scope() as s:
        world = s.scalar(sa.select(Section).where(Section.slug == "world"))
        if world is None:
            world = Section(slug="world", name="عربي دولي", position=1)
            s.add(world)
            s.flush()
        arts = [add_article(s, n, world, seen=utcnow() - dt.timedelta(hours=1 + n)) for n in range(3)]
        _newsletter(s, "sports", SPORTS, NewsletterKind.digest, 3)
        _newsletter(s, "sports-alerts", SPORTS_ALERTS, NewsletterKind.alerts, 4)
        ramadan = _newsletter(s, "ramadan", RAMADAN, NewsletterKind.digest, 5)
        at = iter(NOW - dt.timedelta(hours=h) for h in range(48, 0, -6))
        ids = {}
        digest, _ = create_digest(s, "daily", scheduled=False)
        ids["daily"] = _sent(s, digest, next(at), store=False)
        ids["alert"] = _sent(s, create_alert(s, editor_id=None, headline="زلزال في العقبة",
                                             url="https://news.example/q1"), next(at))
        for n in range(3):
            special = create_special(s, title=f"ليلة الكأس {n}", article_ids=[arts[n].id], intro="",
                                     editor_id=None, newsletter="sports")
            ids[f"sports{n}"] = _sent(s, special, next(at))
        ids["sports_alert"] = _sent(s, create_alert(s, editor_id=None, headline="هدف في الدقيقة الأخيرة",
                                                    url="https://news.example/q2", newsletter="sports-alerts"),
                                    next(at))
        special = create_special(s, title="إمساكية الشهر", article_ids=[arts[0].id], intro="", editor_id=None,
                                 newsletter="ramadan")
        ids["ramadan"] = _sent(s, special, next(at))
        ramadan.hidden = True  # retired after it went out
        ids["draft"] = create_special(s, title="مسودة الرياضة", article_ids=[arts[1].id], intro="",
                                      editor_id=None, newsletter="sports").id
    return ids


def _listed(html: str) -> list[int]:
    return [int(m) for m in re.findall(r'<li id="edition-(\d+)"', html)]


def _entry(html: str, edition_id: int) -> str:
    return re.search(rf'<li id="edition-{edition_id}">(.*?)</li>', html, re.S).group(1)


def _nav(html: str) -> list[tuple[str, str]]:
    nav = re.search(r'<nav class="newsletters" aria-label="نشرات الأرشيف">(.*?)</nav>', html, re.S).group(1)
    return re.findall(r'<a href="([^"]+)"[^>]*>([^<]+)</a>', nav)


def _written() -> tuple:
    """What a request could have changed: every newsletter and edition row as it is."""
    with session_scope() as s:
        return (s.execute(sa.select(Newsletter.__table__)).all(),
                s.execute(sa.select(Edition.id, Edition.status, Edition.newsletter_id)).all())


def test_every_entry_names_its_newsletter_and_the_navigation_links_the_visible_ones(client, public_archive):
    ids = make_archive()
    page = client.get("/archive")
    assert page.status_code == 200
    order = ["ramadan", "sports_alert", "sports2", "sports1", "sports0", "alert", "daily"]
    assert _listed(page.text) == [ids[k] for k in order]  # the hidden newsletter's edition too
    named = {k: re.findall(r'<span class="newsletter">([^<]+)</span>', _entry(page.text, ids[k])) for k in order}
    assert named == {"ramadan": [RAMADAN], "sports_alert": [SPORTS_ALERTS], "sports2": [SPORTS],
                     "sports1": [SPORTS], "sports0": [SPORTS], "alert": [], "daily": ["النشرة اليومية"]}
    # The `alerts` newsletter is «عاجل»: its alerts keep that one label, not said twice.
    assert re.findall(r'class="kind kind-alert">([^<]+)<', _entry(page.text, ids["alert"])) == ["عاجل"]
    assert re.findall(r'class="kind kind-alert">([^<]+)<', _entry(page.text, ids["sports_alert"])) == ["عاجل"]
    assert _nav(page.text) == [
        ("/archive", "كل النشرات"), ("/archive?newsletter=daily", "النشرة اليومية"),
        ("/archive?newsletter=weekly", "النشرة الأسبوعية"), ("/archive?newsletter=alerts", "عاجل"),
        ("/archive?newsletter=sports", SPORTS), ("/archive?newsletter=sports-alerts", SPORTS_ALERTS)]
    assert '<a href="/archive" aria-current="page">' in page.text
    assert 'href="https://news.example/archive/feed.atom"' in page.text


def test_one_newsletters_archive_lists_only_its_editions(client, public_archive):
    ids = make_archive()
    page = client.get("/archive", params={"newsletter": "sports"})
    assert page.status_code == 200 and page.headers["cache-control"] == "public, max-age=300"
    assert f"<title>أرشيف {SPORTS}" in page.text and f"<h1>أرشيف {SPORTS}</h1>" in page.text
    assert _listed(page.text) == [ids["sports2"], ids["sports1"], ids["sports0"]]  # no draft, no other
    assert '<span class="newsletter">' not in page.text  # the heading says whose they are
    assert f'<a href="/archive?newsletter=sports" aria-current="page">{SPORTS}</a>' in page.text
    assert '<a href="/archive">كل النشرات</a>' in page.text
    feed = "https://news.example/archive/feed.atom?newsletter=sports"
    assert f'<link rel="alternate" type="application/atom+xml" title="أرشيف {SPORTS} — ' in page.text
    assert page.text.count(f'href="{feed}"') == 2  # the head's link and the page's own
    for eid in _listed(page.text):
        assert client.get(web_copy.path_for(eid, "all")).status_code == 200

    alerts = client.get("/archive?newsletter=alerts")
    assert _listed(alerts.text) == [ids["alert"]] and "<h1>أرشيف عاجل</h1>" in alerts.text
    weekly = client.get("/archive?newsletter=weekly")  # nothing went out yet: a page that says so
    assert weekly.status_code == 200 and _listed(weekly.text) == []
    assert "لم نرسل من هذه النشرة شيئاً بعد." in weekly.text


def test_a_hidden_newsletters_archive_is_reachable_by_its_slug(client, public_archive):
    ids = make_archive()
    page = client.get("/archive?newsletter=ramadan")
    assert page.status_code == 200 and _listed(page.text) == [ids["ramadan"]]
    assert f"<h1>أرشيف {RAMADAN}</h1>" in page.text
    assert all("ramadan" not in href for href, _ in _nav(page.text))
    feed = feedparser.parse(client.get("/archive/feed.atom?newsletter=ramadan").content)
    assert [e.title for e in feed.entries] == ["إمساكية الشهر"]


def test_pages_of_one_newsletter_keep_the_filter(client, public_archive, monkeypatch):
    monkeypatch.setattr(archive, "PER_PAGE", 2)
    ids = make_archive()
    first = client.get("/archive?newsletter=sports")
    assert _listed(first.text) == [ids["sports2"], ids["sports1"]]
    assert 'rel="next" href="?newsletter=sports&amp;page=2"' in first.text and "صفحة 1 من 2" in first.text
    second = client.get("/archive?newsletter=sports&page=2")
    assert second.status_code == 200 and _listed(second.text) == [ids["sports0"]]
    assert 'rel="prev" href="?newsletter=sports&amp;page=1"' in second.text and 'rel="next"' not in second.text
    assert f"<title>أرشيف {SPORTS} — صفحة 2 —" in second.text
    assert client.get("/archive?newsletter=sports&page=3").status_code == 404
    # The whole archive pages on its own, without a filter in its links.
    whole = client.get("/archive?page=2")
    assert 'rel="prev" href="?page=1"' in whole.text and 'rel="next" href="?page=3"' in whole.text
    assert "صفحة 2 من 4" in whole.text
    assert client.get("/archive", params={"newsletter": "sports", "page": "x"}).status_code == 400


def test_one_newsletters_feed_has_its_own_title_self_link_and_entries(client, public_archive):
    ids = make_archive()
    answer = client.get("/archive/feed.atom?newsletter=sports")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/atom+xml")
    feed = feedparser.parse(answer.content)
    assert not feed.bozo, feed.bozo_exception
    assert feed.feed.title.endswith(f"أرشيف {SPORTS}") and feed.feed.id == "https://news.example/archive?newsletter=sports"
    assert [e.link for e in feed.entries] == [
        f"https://news.example{web_copy.path_for(ids[k], 'all')}" for k in ("sports2", "sports1", "sports0")]
    # An entry keeps its id from the whole archive's feed, and says its kind and newsletter.
    assert feed.entries[0].id == f"https://news.example/archive#edition-{ids['sports2']}"
    assert [(t.term, t.label) for t in feed.entries[0].tags][1:] == [("sports", SPORTS)]
    assert feed.entries[0].tags[0].term == "عدد خاص"

    root = ET.fromstring(answer.content)
    links = {link.get("rel"): link.get("href") for link in root.findall(f"{ATOM}link")}
    assert links == {"self": "https://news.example/archive/feed.atom?newsletter=sports",
                     "alternate": "https://news.example/archive?newsletter=sports"}
    assert root.findtext(f"{ATOM}updated") == feed.entries[0].updated

    whole = feedparser.parse(client.get("/archive/feed.atom").content)
    assert len(whole.entries) == 7 and whole.feed.title.endswith("أرشيف النشرة")
    by_id = {e.id: e for e in whole.entries}
    alert = by_id[f"https://news.example/archive#edition-{ids['alert']}"]
    assert [(t.term, t.get("label")) for t in alert.tags] == [("عاجل", None), ("alerts", "عاجل")]


def test_one_page_is_two_statements_at_most_however_many_it_lists(client, public_archive):
    make_archive()
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    engine = get_engine()
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        for path, expected in (("/archive", 2), ("/archive?newsletter=sports", 2),
                               ("/archive/feed.atom?newsletter=sports", 2), ("/archive/feed.atom", 1)):
            statements.clear()
            assert client.get(path).status_code == 200
            # The newsletters (navigation and slug; the whole feed needs neither) and the
            # page's entries with their count in one statement that joins their newsletter:
            # no query per entry, no second one to count.
            assert len(statements) == expected, (path, statements)
            assert "newsletters" in statements[-1] and "count(*) OVER ()" in statements[-1]
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


BAD_SLUGS = ["", "nope", "Sports", "sports\x00", "s" * 5000, "رياضة", "sports ", "../daily", "daily%00",
             "-daily", "x" * 65]


def test_an_unknown_or_malformed_newsletter_is_a_404_that_writes_nothing(client, public_archive):
    make_archive()
    before = _written()
    for slug in BAD_SLUGS:
        for path in ("/archive", "/archive/feed.atom"):
            answer = client.get(path, params={"newsletter": slug})
            assert answer.status_code == 404, (path, slug)
            assert answer.headers["x-robots-tag"] == "noindex" and "text/html" in answer.headers["content-type"]
            assert "لا توجد في الأرشيف نشرة بهذا المعرّف." in answer.text
    for path in ("/archive", "/archive/feed.atom"):
        # Two values name no one archive, even two good ones.
        assert client.get(path, params=[("newsletter", "daily"), ("newsletter", "sports")]).status_code == 404
        assert client.get(path, params=[("newsletter", "sports"), ("newsletter", "sports")]).status_code == 404
    assert _written() == before


def test_with_the_archive_off_a_newsletters_archive_is_the_same_404(client, monkeypatch):
    monkeypatch.delenv("ARCHIVE_PUBLIC", raising=False)
    reset_settings()
    make_archive()
    for path, params in (("/archive", {"newsletter": "sports"}), ("/archive", {"newsletter": "nope"}),
                         ("/archive/feed.atom", {"newsletter": "sports"}), ("/archive/feed.atom", {"newsletter": "\x00"}),
                         ("/archive", [("newsletter", "a"), ("newsletter", "b")]),
                         ("/archive", {"newsletter": "sports", "page": "x"})):
        answer = client.get(path, params=params)
        assert answer.status_code == 404 and "أرشيف النشرة غير منشور." in answer.text, path
        assert "ليلة الكأس" not in answer.text


@FUZZ
@given(values=st.lists(st.one_of(st.text(max_size=80), st.sampled_from(["sports", "daily", "ramadan", "\x00",
                                                                       "s" * 300, "رياضة"])),
                       min_size=1, max_size=3),
       feed=st.booleans())
def test_any_newsletter_value_is_answered_without_a_5xx(client, public_archive, values, feed):
    path = "/archive/feed.atom" if feed else "/archive"
    before = _written()
    answer = client.get(path, params=[("newsletter", v) for v in values])
    assert _written() == before
    assert answer.status_code in (200, 404), (values, answer.status_code)
    known = {"daily", "weekly", "alerts"}  # the database the fixture left: the first three only
    assert (answer.status_code == 200) == (len(values) == 1 and values[0] in known), values


@pytest.mark.browser
def test_the_archive_with_its_navigation_passes_axe(public_archive, live_server, browser, axe_source):
    make_archive()
    audit = Audit(axe_source)
    context = _context(browser)
    page = context.new_page()
    try:
        page.goto(live_server + "/archive")
        nav = page.get_by_role("navigation", name="نشرات الأرشيف")
        assert nav.get_by_role("link").count() == 6
        audit.page(page, "archive with its newsletters")
        ARTIFACTS.mkdir(exist_ok=True)
        page.set_viewport_size({"width": 320, "height": 640})
        page.screenshot(path=str(ARTIFACTS / "archive-newsletters-320.png"), full_page=True)
        page.set_viewport_size({"width": 1000, "height": 800})
        nav.get_by_role("link", name=SPORTS).click()
        page.get_by_role("heading", name=f"أرشيف {SPORTS}").wait_for()
        assert page.locator("ol.archive li").count() == 3
        assert page.get_by_role("navigation", name="نشرات الأرشيف").get_by_role("link", name=SPORTS) \
            .get_attribute("aria-current") == "page"
        audit.page(page, "one newsletter's archive")
    finally:
        context.close()
    print(audit.report())
    assert not audit.problems, "\n".join(audit.problems)
