"""Review fixes in service/articles: odd JSON Feed values, parser crashes, long joined
URLs and lead-image rules, served over real HTTP and polled into PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from service.articles import ingest
from service.articles.feeds import add_feed
from service.articles.ingest import poll_feed
from service.models import Article, Feed

NOW = dt.datetime(2025, 11, 23, 12, 0, tzinfo=dt.UTC)
JSON_FEED = "application/feed+json"


def _json_feed(*items: dict) -> bytes:
    return json.dumps(
        {"version": "https://jsonfeed.org/version/1.1", "title": "أخبار", "items": list(items)}, ensure_ascii=False
    ).encode()


def _item(n: int, **extra) -> dict:
    return {
        "id": f"j-{n}",
        "url": f"https://news.example/ar/{n}",
        "title": f"خبر رقم {n}",
        "content_html": f"<p>نص الخبر رقم {n}.</p>",
        "date_published": "2025-11-22T09:00:00+03:00",
        **extra,
    }


def _guids(session) -> set[str]:
    return set(session.scalars(sa.select(Article.guid)))


# ------------------------------------------------------------------ 1. odd JSON values, parser crashes


@pytest.mark.parametrize("odd", [{"authors": 5}, {"tags": 7}, {"authors": 5, "tags": 7}, {"authors": "x", "tags": "abc"}])
def test_json_feed_odd_authors_or_tags_do_not_lose_the_feed(db_session, feed_server, odd):
    body = _json_feed(_item(1), _item(2, **odd), _item(3, tags=["محليات"], authors=[{"name": "سارة"}]))
    feed = add_feed(db_session, feed_server.serve("/odd.json", body, content_type=JSON_FEED))
    report = poll_feed(db_session, feed.id, now=NOW)
    assert report.error is None and report.new == 3, report.summary()
    assert _guids(db_session) == {"j-1", "j-2", "j-3"}
    odd_article = db_session.scalar(sa.select(Article).where(Article.guid == "j-2"))
    assert odd_article.author is None  # the odd value is ignored, not turned into text
    good = db_session.scalar(sa.select(Article).where(Article.guid == "j-3"))
    assert good.author == "سارة"
    db_session.refresh(feed)
    assert feed.last_error is None and feed.consecutive_failures == 0


def test_a_parser_crash_is_recorded_on_the_feed(db_session, feed_server, monkeypatch):
    def broken_parser(*args, **kwargs):
        raise TypeError("'int' object is not iterable")

    monkeypatch.setattr(ingest, "parse_feed", broken_parser)
    feed = add_feed(db_session, feed_server.serve("/crash.json", _json_feed(_item(1)), content_type=JSON_FEED))
    with capture_logs() as logs:
        report = poll_feed(db_session, feed.id, now=NOW)  # must not raise
    assert report.error.startswith("could not parse the feed: TypeError at test_articles_review_fixes.py:")
    assert _guids(db_session) == set()
    failures = [entry for entry in logs if entry["event"] == "feed_poll_failed"]
    assert len(failures) == 1 and failures[0]["feed_id"] == feed.id
    assert all("exc_info" not in entry for entry in logs)
    db_session.refresh(feed)
    assert feed.last_error == report.error
    assert feed.consecutive_failures == 1
    assert feed.next_poll_at == NOW + dt.timedelta(minutes=1)
    assert db_session.get(Feed, feed.id).last_success_at is None


# ------------------------------------------------------------------ 2. URL lengths


def _rss(*items: str) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>أخبار</title>'
        "<link>https://news.example/</link><description>موجز</description>" + "".join(items) + "</channel></rss>"
    )


def _rss_item(guid: str, link: str, title: str = "خبر") -> str:
    return (
        f'<item><title>{title}</title><link>{link}</link><guid isPermaLink="false">{guid}</guid>'
        "<pubDate>Sat, 22 Nov 2025 09:00:00 +0300</pubDate><description>نص الخبر.</description></item>"
    )


def test_a_relative_link_too_long_once_joined_skips_only_that_item(db_session, feed_server):
    long_path = "/ar/" + "a" * 1986  # 1990 characters: under the limit as written, over it once joined
    url = feed_server.serve(
        "/long.xml",
        _rss(
            _rss_item("ok-1", "https://news.example/ar/1"),
            _rss_item("long-1", long_path),
            _rss_item("ok-2", "/ar/2"),
        ),
    )
    assert len(url.rsplit("/", 1)[0] + long_path) > 2000
    feed = add_feed(db_session, url)
    with capture_logs() as logs:
        report = poll_feed(db_session, feed.id, now=NOW)
    assert report.error is None and report.new == 2, report.summary()
    assert _guids(db_session) == {"ok-1", "ok-2"}
    assert all(len(u) <= 2000 for u in db_session.scalars(sa.select(Article.url)))
    problems = [e["problem"] for e in logs if e["event"] == "feed_item_problem"]
    assert problems == ["item 2 (long-1): link over 2000 characters once resolved; skipped"]
    db_session.refresh(feed)
    assert feed.last_error is None


def test_absolute_http_url_checks_the_length_after_joining():
    from service.articles.urls import absolute_http_url

    base = "https://news.example/feed.xml"
    assert absolute_http_url("/" + "a" * 1980, base=base) is None
    assert absolute_http_url("/" + "a" * 1960, base=base) == "https://news.example/" + "a" * 1960


def test_a_304_caps_its_validators_like_a_200(feed_server):
    from service.articles.fetch import fetch_feed
    from service.config import get_settings

    etag = '"' + "e" * 600 + '"'
    url = feed_server.serve("/etag.xml", _rss(_rss_item("e-1", "/ar/1")), headers={"ETag": etag})
    result = fetch_feed(url, get_settings(), etag=etag, last_modified="x" * 150)
    assert result.not_modified
    assert result.etag is None and result.last_modified is None


# ------------------------------------------------------------------ 3. lead images


def _lead(media: str, body: str = "<p>نص الخبر.</p>") -> tuple[str | None, str | None]:
    from service.articles.parse import parse_feed

    xml = (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/">'
        "<channel><title>أخبار</title><link>https://news.example/</link><description>موجز</description>"
        "<item><title>خبر</title><link>https://news.example/ar/1</link><guid>i-1</guid>"
        f"<pubDate>Sat, 22 Nov 2025 09:00:00 +0300</pubDate><description><![CDATA[{body}]]></description>{media}"
        "</item></channel></rss>"
    )
    parsed = parse_feed(xml.encode(), "application/rss+xml", "https://news.example/rss.xml", dt.UTC, NOW)
    (item,) = parsed.items
    return item.lead_image_url, item.lead_image_caption


@pytest.mark.parametrize(
    "media",
    [
        '<media:content url="http://img.example/a.jpg" medium="image"><media:description>تعليق</media:description></media:content>',
        '<media:content url="https://img.example/a.jpg" medium="image" width="1" height="1"/>',
        '<media:content url="https://stats.example/pixel.gif" medium="image"/>',
        '<media:thumbnail url="http://img.example/t.jpg"/>',
        '<media:thumbnail url="https://img.example/t.jpg" width="1" height="1"/>',
        '<enclosure url="http://img.example/e.jpg" type="image/jpeg" length="1"/>',
        '<enclosure url="https://www.google-analytics.com/collect.gif" type="image/gif" length="1"/>',
    ],
)
def test_an_http_or_tracker_feed_image_is_no_lead_image(media):
    assert _lead(media) == (None, None)


def test_a_tracker_media_image_gives_way_to_the_next_good_one():
    media = (
        '<media:content url="https://img.example/1x1.gif" medium="image"/>'
        '<media:thumbnail url="https://img.example/t.jpg"/>'
    )
    assert _lead(media)[0] == "https://img.example/t.jpg"


def test_an_https_feed_image_is_still_the_lead_image():
    media = '<media:content url="/img/a.jpg" medium="image"><media:description>تعليق</media:description></media:content>'
    assert _lead(media) == ("https://news.example/img/a.jpg", "تعليق")


def test_a_refused_feed_image_lets_the_body_supply_an_https_one():
    body = '<figure><img src="https://img.example/b.jpg" alt="صورة"></figure><p>نص الخبر.</p>'
    assert _lead('<media:thumbnail url="http://img.example/t.jpg"/>', body)[0] == "https://img.example/b.jpg"


def test_an_http_leading_body_image_is_no_lead_image_and_stays_in_the_body():
    from service.articles.sanitise import sanitise_body

    clean = sanitise_body('<p><img src="http://img.example/b.jpg"></p><p>نص.</p>', "https://news.example/ar/1", want_lead_image=True)
    assert clean.lead_image_url is None and "http://img.example/b.jpg" in clean.html


def test_json_feed_image_obeys_the_same_rules(db_session, feed_server):
    body = _json_feed(
        _item(1, image="http://img.example/1.jpg"),
        _item(2, image="https://img.example/track/2.gif"),
        _item(3, image="https://img.example/3.jpg"),
    )
    feed = add_feed(db_session, feed_server.serve("/img.json", body, content_type=JSON_FEED))
    report = poll_feed(db_session, feed.id, now=NOW)
    assert report.error is None and report.new == 3, report.summary()
    images = dict(db_session.execute(sa.select(Article.guid, Article.lead_image_url)).all())
    assert images == {"j-1": None, "j-2": None, "j-3": "https://img.example/3.jpg"}
