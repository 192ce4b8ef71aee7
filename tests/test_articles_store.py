"""Feeds, their health, sections, queries, and two pollers at once — on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.articles.feeds import FeedConfigError, add_feed, backoff
from service.articles.ingest import due_feed_ids, poll_feed
from service.articles.parse import parse_feed
from service.articles.queries import article_by_url, major_updates_since_edition
from service.articles.sections import DEFAULT_SECTIONS, ensure_sections
from service.articles.store import store_items
from service.models import Article, AuditLog, Edition, EditionArticle, EditionKind, Feed, Section

DEMO = Path(__file__).resolve().parent.parent / "service" / "demo"
T0 = dt.datetime(2025, 11, 23, 10, 0, tzinfo=dt.UTC)


def _count(session, model) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(model))


# ------------------------------------------------------------------ sections and feeds


def test_sections_are_seeded_once_with_stable_slugs(db_session):
    ensure_sections(db_session)
    ensure_sections(db_session)
    slugs = dict(db_session.execute(sa.select(Section.slug, Section.name)).all())
    for slug, name in [("local", "محليات"), ("arab-world", "عربي دولي"), ("economy", "اقتصاد"),
                       ("sports", "رياضة"), ("technology", "تكنولوجيا")]:  # fmt: skip
        assert slugs[slug] == name
    assert _count(db_session, Section) == len({d.slug for d in DEFAULT_SECTIONS} | set(slugs))


def test_add_feed_is_idempotent_and_takes_a_section_by_slug_or_name(db_session):
    ensure_sections(db_session)
    first = add_feed(db_session, "https://news.example/rss/sports.xml", "sports")
    again = add_feed(db_session, "  https://news.example/rss/sports.xml ")
    assert again.id == first.id
    assert db_session.get(Section, again.section_id).slug == "sports"
    by_name = add_feed(db_session, "https://news.example/rss/economy.xml", "اقتصاد")
    assert db_session.get(Section, by_name.section_id).slug == "economy"
    assert _count(db_session, Feed) == 2
    assert db_session.scalar(sa.select(sa.func.count()).select_from(AuditLog).where(AuditLog.action == "feed.add")) >= 2


@pytest.mark.parametrize(
    "url, section, message",
    [
        ("ftp://news.example/feed.xml", None, "not an absolute http(s) URL: 'ftp://news.example/feed.xml'"),
        ("news.example/feed.xml", None, "not an absolute http(s) URL: 'news.example/feed.xml'"),
        ("", None, "a feed URL is required"),
        ("https://news.example/feed.xml", "weather", "unknown section 'weather' (known: local, arab-world"),
    ],
)
def test_add_feed_refuses_bad_input_and_changes_nothing(db_session, url, section, message):
    ensure_sections(db_session)
    with pytest.raises(FeedConfigError) as err:
        add_feed(db_session, url, section)
    assert str(err.value).startswith(message)
    assert isinstance(err.value, ValueError)
    assert _count(db_session, Feed) == 0


# ------------------------------------------------------------------ health and schedule


def test_a_failing_feed_backs_off_exponentially_and_recovers(db_session, feed_server):
    url = feed_server.serve("/flaky.xml", (DEMO / "sample_feed.xml").read_bytes(), headers={"ETag": '"e1"'})
    feed = add_feed(db_session, url)
    assert poll_feed(db_session, feed.id, now=T0).error is None
    assert feed.etag == '"e1"' and feed.next_poll_at == T0 + dt.timedelta(seconds=50)
    feed_server.serve("/flaky.xml", b"", status=500)
    now = T0
    for failures, minutes in [(1, 1), (2, 2), (3, 4), (4, 8)]:
        now = feed.next_poll_at
        report = poll_feed(db_session, feed.id, now=now)
        assert report.error == "HTTP 500 Internal Server Error"
        assert feed.consecutive_failures == failures
        assert feed.next_poll_at == now + dt.timedelta(minutes=minutes)
        assert feed.last_success_at == T0 and feed.etag == '"e1"'  # validators survive failures
    assert backoff(20) == dt.timedelta(hours=1)  # capped
    feed_server.serve("/flaky.xml", (DEMO / "sample_feed.xml").read_bytes(), headers={"ETag": '"e1"'})
    later = feed.next_poll_at
    report = poll_feed(db_session, feed.id, now=later)
    assert report.not_modified
    assert feed.consecutive_failures == 0 and feed.last_error is None and feed.last_success_at == later


def test_due_feeds(db_session):
    never = add_feed(db_session, "https://a.example/feed")
    due = add_feed(db_session, "https://b.example/feed")
    later = add_feed(db_session, "https://c.example/feed")
    off = add_feed(db_session, "https://d.example/feed")
    due.next_poll_at = T0 - dt.timedelta(seconds=1)
    later.next_poll_at = T0 + dt.timedelta(seconds=30)
    off.active = False
    db_session.flush()
    assert due_feed_ids(db_session, T0) == [never.id, due.id]


def test_a_missing_feed_is_reported_not_raised(db_session):
    assert poll_feed(db_session, 999_999).error == "no feed with id 999999"


# ------------------------------------------------------------------ queries


def test_which_articles_of_an_edition_had_a_major_update_since(db_session, feed_server):
    url = feed_server.serve("/f.xml", (DEMO / "sample_feed.xml").read_bytes(), headers={"ETag": '"1"'})
    feed = add_feed(db_session, url)
    poll_feed(db_session, feed.id, now=T0)
    articles = db_session.scalars(sa.select(Article).order_by(Article.id)).all()
    edition = Edition(kind=EditionKind.digest)
    db_session.add(edition)
    db_session.flush()
    for position, art in enumerate(articles):
        db_session.add(EditionArticle(edition_id=edition.id, article_id=art.id, version=art.version, position=position))
    db_session.flush()
    assert major_updates_since_edition(db_session, edition.id) == []
    feed_server.serve("/f.xml", (DEMO / "sample_feed_updated.xml").read_bytes(), headers={"ETag": '"2"'})
    poll_feed(db_session, feed.id, now=T0 + dt.timedelta(hours=1))
    updates = major_updates_since_edition(db_session, edition.id)
    assert [(v.article.guid, v.version, v.kind.value) for v in updates] == [("news.example:article:52003", 2, "major")]


def test_article_by_url_finds_shared_and_canonical_forms(db_session, feed_server):
    url = feed_server.serve("/f.xml", (DEMO / "sample_feed.xml").read_bytes())
    poll_feed(db_session, add_feed(db_session, url).id, now=T0)
    link = "https://news.example/ar/sports/2025/11/22/nashama-semi-final"
    assert article_by_url(db_session, link).guid == "news.example:article:52003"
    assert article_by_url(db_session, "https://NEWS.example/ar/sports/2025/11/22/nashama-semi-final?utm_source=x#c").guid == (
        "news.example:article:52003"
    )
    assert article_by_url(db_session, "https://news.example/ar/none") is None
    assert article_by_url(db_session, "javascript:alert(1)") is None


# ------------------------------------------------------------------ two pollers at once


def test_a_feed_being_polled_is_skipped_by_a_second_poller(pg_env, feed_server):
    from service.db import session_scope

    url = feed_server.serve("/f.xml", (DEMO / "sample_feed.xml").read_bytes())
    with session_scope() as s:
        feed_id = add_feed(s, url).id
    with session_scope() as holder:
        holder.execute(sa.select(Feed).where(Feed.id == feed_id).with_for_update())
        with session_scope() as other:
            report = poll_feed(other, feed_id)
        assert report.skipped and report.error is None
        assert report.summary() == f"feed {feed_id}: skipped (being polled by another worker)"
    assert feed_server.requests == []


def test_the_same_new_article_in_two_feeds_at_once_is_one_article(pg_env):
    """Feed A's transaction inserts the articles; feed B's insert waits on the unique
    guid, then finds A's rows and treats them as existing: no error, no duplicate."""
    from service.config import get_settings
    from service.db import session_scope

    body = (DEMO / "sample_feed.xml").read_bytes()
    items = parse_feed(body, "", "https://news.example/feed", get_settings().tz, T0).items
    with session_scope() as s:
        ensure_sections(s)
        a_id = add_feed(s, "https://news.example/a.xml").id
        b_id = add_feed(s, "https://news.example/b.xml").id
    result = {}

    def store_b():
        with session_scope() as s:
            result["b"] = store_items(s, s.get(Feed, b_id), items, T0)

    with session_scope() as s:
        result["a"] = store_items(s, s.get(Feed, a_id), items, T0)
        worker = threading.Thread(target=store_b)
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive(), "B should be waiting on A's uncommitted guids"
    worker.join(timeout=10)
    assert result["a"].new == 9
    assert (result["b"].new, result["b"].unchanged) == (0, 9)
    with session_scope() as s:
        assert _count(s, Article) == 9
        assert set(s.scalars(sa.select(Article.feed_id))) == {a_id}


def test_an_article_in_two_feeds_is_owned_by_the_first_until_it_is_deactivated(db_session, feed_server):
    site = (DEMO / "sample_feed.xml").read_text(encoding="utf-8")
    # The sports feed words the same article differently and tags its links.
    sports = site.replace("بعد فوز مثير بركلات الترجيح", "بعد فوز مثير").replace(
        "nashama-semi-final</link>", "nashama-semi-final?utm_source=sports-feed</link>"
    )
    a = add_feed(db_session, feed_server.serve("/all.xml", site, headers={"ETag": '"a"'}))
    b = add_feed(db_session, feed_server.serve("/sports.xml", sports, headers={"ETag": '"b"'}))
    guid = "news.example:article:52003"
    assert poll_feed(db_session, a.id, now=T0).new == 9
    for minute in (1, 2, 3):  # polled over and over, the two feeds do not take turns
        report = poll_feed(db_session, b.id, now=T0 + dt.timedelta(minutes=minute), force=True)
        assert (report.new, report.major, report.minor, report.metadata, report.unchanged) == (0, 0, 0, 0, 9)
        assert poll_feed(db_session, a.id, now=T0 + dt.timedelta(minutes=minute), force=True).unchanged == 9
    art = db_session.scalar(sa.select(Article).where(Article.guid == guid))
    assert (art.feed_id, art.version) == (a.id, 1)
    a.active = False
    db_session.flush()
    report = poll_feed(db_session, b.id, now=T0 + dt.timedelta(hours=1), force=True)
    assert (report.major, report.metadata) == (1, 8)  # the other eight change owner only
    db_session.refresh(art)
    assert (art.feed_id, art.version, art.title) == (b.id, 2, "النشامى يتأهلون إلى نصف النهائي بعد فوز مثير")
    assert art.url == "https://news.example/ar/sports/2025/11/22/nashama-semi-final"  # same page: kept
