"""A digest does not repeat in full what a reader already got as a breaking alert.

Through the real planner and the real renderer on PostgreSQL, with the demo feed
ingested over HTTP: an editor alerts one article, the alert goes out to the readers with
alerts on, then the daily digest is planned.  Readers with alerts on get that story in
a short «فاتك؟» block (headline and link); readers without alerts get it in full.  The
variant key gains one bit, so each distinct copy is still rendered once.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import lxml.html
import pytest
import sqlalchemy as sa

from service.articles.feeds import add_feed
from service.articles.ingest import poll_feed
from service.articles.sections import ensure_sections
from service.config import reset_settings
from service.delivery import planner
from service.delivery.planner import plan
from service.editions.alerts import create_alert
from service.editions.digests import alerted_article_ids, create_digest
from service.editions.variants import ALERTED_PREFIX, render_variant_for
from service.models import (
    Article,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionArticle,
    EditionKind,
    EditionStatus,
    EditionVariant,
    Section,
    Subscriber,
    Subscription,
    utcnow,
)
from service.rendering import contexts
from tests.support.delivery import add_subscribers
from tests.support.email_checks import check_email

FEED = (Path(__file__).resolve().parent.parent / "service" / "demo" / "sample_feed.xml").read_text(encoding="utf-8")
ALERTED_GUID = "news.example:article:52001"  # أمانة عمّان … النقل العام (محليات), the demo digest's lead
T0 = dt.datetime(2025, 11, 23, 10, 30, tzinfo=dt.UTC)


@pytest.fixture
def day(db_session, feed_server):
    """The demo feed ingested; four readers; one article alerted and mailed."""
    s = db_session
    for table in ("deliveries", "edition_articles", "edition_variants", "editions", "audit_log",
                  "article_versions", "articles", "categories", "feeds", "subscribers"):
        s.execute(sa.text(f"DELETE FROM {table}"))
    ensure_sections(s)
    feed = add_feed(s, feed_server.serve("/feed.xml", FEED))
    assert poll_feed(s, feed.id, now=T0, force=True).error is None
    local, economy = (s.scalar(sa.select(Section.id).where(Section.slug == slug)) for slug in ("local", "economy"))
    add_subscribers(s, 1, prefix="alerts")  # every section, alerts on
    add_subscribers(s, 1, prefix="quiet", alerts=False)  # every section, alerts off
    add_subscribers(s, 1, prefix="alertslocal", sections=[local, economy])
    add_subscribers(s, 1, prefix="quietlocal", sections=[local, economy], alerts=False)
    s.flush()
    story = s.scalar(sa.select(Article).where(Article.guid == ALERTED_GUID))
    alert = create_alert(s, editor_id=None, article_url=story.url)
    assert plan(s, alert.id) == 2  # the readers with alerts on
    # What the delivery workers leave behind: the alert reached them.
    s.execute(sa.update(Delivery).where(Delivery.edition_id == alert.id)
              .values(status=DeliveryStatus.sent, sent_at=utcnow(), updated_at=utcnow()))
    s.flush()
    return s, story, alert


def _reader_variants(s, edition_id: int) -> dict[str, str]:
    rows = s.execute(sa.select(Subscriber.email, Delivery.variant).join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                     .where(Delivery.edition_id == edition_id))
    return {email.split("0@")[0]: variant for email, variant in rows}


def _copies(s, edition_id: int) -> dict[str, EditionVariant]:
    return {v.variant: v for v in s.scalars(sa.select(EditionVariant).where(EditionVariant.edition_id == edition_id))}


def _visible(html: str) -> str:
    return html[html.index("</div>", html.index('class="preheader"')) :]


def test_readers_with_alerts_get_the_story_in_the_short_block_the_others_in_full(day, monkeypatch):
    s, story, _ = day
    # The stored copies' links as the site wrote them: links through /r/ are tests/test_clicks.py's.
    monkeypatch.setenv("CLICK_TRACKING", "false")
    reset_settings()
    renders: list[str] = []

    def counting(session, edition, variant):
        renders.append(variant)
        return render_variant_for(session, edition, variant)

    digest, _ = create_digest(s, "daily", now=T0 + dt.timedelta(minutes=5), scheduled=False)
    assert alerted_article_ids(s, digest) == {story.id}
    assert plan(s, digest.id, renderer=counting) == 4

    variants = _reader_variants(s, digest.id)
    local_key = variants["quietlocal"]
    assert variants == {"alerts": ALERTED_PREFIX + "all", "quiet": "all",
                        "alertslocal": ALERTED_PREFIX + local_key, "quietlocal": local_key}
    copies = _copies(s, digest.id)
    assert sorted(renders) == sorted(copies) and len(renders) == 4  # once per variant, not per reader

    for key in ("all", local_key):  # no alerts: the story in full, as the lead it is
        html = _visible(copies[key].html)
        doc = lxml.html.document_fromstring(html)
        assert doc.xpath("//h1[@class='lead-title']")[0].text_content() == story.title
        assert story.summary[:40] in html and "فاتك؟" not in html and "فاتك؟" not in copies[key].text
        assert copies[key].subject.startswith(story.title[:40])

    for key in (ALERTED_PREFIX + "all", ALERTED_PREFIX + local_key):  # alerts on: headline and link, once
        copy = copies[key]
        html = _visible(copy.html)
        doc = lxml.html.document_fromstring(html)
        missed = [(a.text_content(), a.get("href")) for a in doc.xpath("//p[@class='missed']/a")]
        assert missed == [(story.title, story.url)]
        assert html.count(story.title) == 1 and story.summary[:40] not in html  # not again in full
        assert doc.xpath("//h1[@class='lead-title']")[0].text_content() != story.title
        assert not copy.subject.startswith(story.title[:20]) and story.title not in copy.html[: copy.html.index("</div>")]
        # محليات held only that story: it says where it went instead of vanishing.
        assert contexts.MISSED_ARE_BELOW in html
        text = copy.text
        assert "== فاتك؟ ==" in text and text.count(story.title) == 1 and story.url in text
        assert check_email(copy.html, copy.text) == []


def test_without_an_alert_that_went_out_there_is_no_extra_variant(day):
    s, story, alert = day
    s.execute(sa.update(Delivery).where(Delivery.edition_id == alert.id).values(status=DeliveryStatus.failed))
    digest, _ = create_digest(s, "daily", now=T0 + dt.timedelta(minutes=5), scheduled=False)
    assert alerted_article_ids(s, digest) == set()
    plan(s, digest.id)
    assert not any(v.startswith(ALERTED_PREFIX) for v in _reader_variants(s, digest.id).values())
    assert len(_copies(s, digest.id)) == 2  # every section, and the local+economy readers


def test_a_cancelled_alert_or_a_major_update_since_makes_it_news_again(day):
    s, story, alert = day
    digest, _ = create_digest(s, "daily", now=T0 + dt.timedelta(minutes=5), scheduled=False)
    assert alerted_article_ids(s, digest) == {story.id}
    carried = s.scalar(sa.select(EditionArticle).where(EditionArticle.edition_id == digest.id,
                                                        EditionArticle.article_id == story.id))
    carried.version = 2  # the digest carries a newer version than the alert did
    s.flush()
    assert alerted_article_ids(s, digest) == set()
    carried.version = 1
    s.get(Edition, alert.id).status = EditionStatus.cancelled
    s.flush()
    assert alerted_article_ids(s, digest) == set()


def test_a_typed_alert_with_the_articles_link_counts_too(day):
    s, story, alert = day
    s.execute(sa.delete(EditionArticle).where(EditionArticle.edition_id == alert.id))  # as if typed
    s.flush()
    digest, _ = create_digest(s, "daily", now=T0 + dt.timedelta(minutes=5), scheduled=False)
    assert s.get(Edition, alert.id).params["url"] == story.url
    assert alerted_article_ids(s, digest) == {story.id}


def test_a_correction_still_finds_the_readers_of_an_alerted_variant(day):
    """The correction planner reads the variant key: the prefix must not hide a reader."""
    s, story, _ = day
    digest, _ = create_digest(s, "daily", now=T0 + dt.timedelta(minutes=5), scheduled=False)
    plan(s, digest.id)
    s.execute(sa.update(Delivery).where(Delivery.edition_id == digest.id)
              .values(status=DeliveryStatus.sent, sent_at=utcnow()))
    sport = s.scalar(sa.select(Article).join(Section).where(Section.slug == "sports"))
    for article, readers in ((story, {"alerts", "quiet", "alertslocal", "quietlocal"}), (sport, {"alerts", "quiet"})):
        correction = Edition(kind=EditionKind.correction, status=EditionStatus.draft, title="c",
                             params={"edition_ids": [digest.id], "note": "تصحيح"})
        s.add(correction)
        s.flush()
        s.add(EditionArticle(edition_id=correction.id, article_id=article.id, version=2))
        s.flush()
        s.refresh(correction)
        plan(s, correction.id, renderer=lambda *_: None)
        assert set(_reader_variants(s, correction.id)) == readers


def test_the_key_stays_within_the_column(day):
    s, _, _ = day
    long_sections = list(range(1, 80))  # a JSON list far longer than VARIANT_MAX
    reader_id = s.scalar(sa.select(Subscriber.id).where(Subscriber.email == "alerts0@example.com"))
    s.execute(sa.update(Subscription).where(Subscription.subscriber_id == reader_id)
              .values(sections=long_sections))
    digest, _ = create_digest(s, "daily", now=T0 + dt.timedelta(minutes=5), scheduled=False)
    plan(s, digest.id, renderer=lambda *_: None)
    variants = _reader_variants(s, digest.id)
    assert variants["alerts"] == ALERTED_PREFIX + "all" and all(len(v) <= planner.VARIANT_MAX for v in variants.values())
