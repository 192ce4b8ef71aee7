"""Lead images: media:content and media:thumbnail, enclosures, the body's first figure and
a JSON Feed's image, each obeying the same rules (https only, no tracking pixels)."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from service.articles.feeds import add_feed
from service.articles.ingest import poll_feed
from service.models import Article
from tests.support.feeds import JSON_FEED, json_feed, json_item

NOW = dt.datetime(2025, 11, 23, 12, 0, tzinfo=dt.UTC)


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
    body = json_feed(
        json_item(1, image="http://img.example/1.jpg"),
        json_item(2, image="https://img.example/track/2.gif"),
        json_item(3, image="https://img.example/3.jpg"),
    )
    feed = add_feed(db_session, feed_server.serve("/img.json", body, content_type=JSON_FEED))
    report = poll_feed(db_session, feed.id, now=NOW)
    assert report.error is None and report.new == 3, report.summary()
    images = dict(db_session.execute(sa.select(Article.guid, Article.lead_image_url)).all())
    assert images == {"j-1": None, "j-2": None, "j-3": "https://img.example/3.jpg"}
