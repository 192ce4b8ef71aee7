"""What the site publishes reaches the mail: the demo feeds ingested over real HTTP into
PostgreSQL, then editions rendered by the same code the planner calls.

The seed article (service/demo, from /work/shared/fixtures) is in section عربي دولي,
published 2021-11-24 17:33 and updated 2023-06-18 12:17, with a lead-image caption and
two «اقرأ أيضاً» links in its body.
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
from service.editions.alerts import create_alert
from service.editions.digests import create_digest
from service.editions.variants import render_variant_for
from service.models import Article
from tests.support.email_checks import check_email

DEMO = Path(__file__).resolve().parent.parent / "service" / "demo"
FEED = (DEMO / "sample_feed.xml").read_text(encoding="utf-8")
SEED_GUID = "news.example:article:41873"
CAPTION = "وزير دفاع الاحتلال بيني غانتس"
PUBLISHED = "24 تشرين الثاني/نوفمبر 2021، 17:33"
UPDATED = "18 حزيران/يونيو 2023، 12:17"
READ_ALSO = [
    ('ملكة جمال اليونان تنسحب من مسابقة "ملكة جمال الكون" دعما لفلسطين',
     "https://news.example/ar/variety/2021/11/22/miss-greece-withdraws-miss-universe"),
    ("كيف تحول المغرب إلى عملاق في مجال الطاقة الشمسية؟",
     "https://news.example/ar/economy/2021/11/20/morocco-solar-energy-giant"),
]
T0 = dt.datetime(2025, 11, 23, 10, 30, tzinfo=dt.UTC)


@pytest.fixture
def ingested(db_session, feed_server):
    for table in ("deliveries", "edition_articles", "edition_variants", "editions", "audit_log",
                  "article_versions", "articles", "categories", "feeds", "subscribers"):
        db_session.execute(sa.text(f"DELETE FROM {table}"))
    ensure_sections(db_session)
    feed = add_feed(db_session, feed_server.serve("/feed.xml", FEED))
    report = poll_feed(db_session, feed.id, now=T0, force=True)
    assert report.error is None, report.summary()
    return db_session


def _visible(html: str) -> str:
    """The body a reader sees (the hidden preheader left out)."""
    return html[html.index("</div>", html.index('class="preheader"')) :]


def test_an_alert_of_the_seed_article_carries_its_caption_times_and_read_also_links(ingested):
    seed = ingested.scalar(sa.select(Article).where(Article.guid == SEED_GUID))
    edition = create_alert(ingested, editor_id=None, article_url=seed.url)
    rendered = render_variant_for(ingested, edition, "all")
    doc = lxml.html.document_fromstring(rendered.html)
    assert doc.xpath("//p[contains(@class, 'caption')]")[0].text_content() == CAPTION
    meta = doc.xpath("//p[@class='meta']")[0].text_content()
    assert meta == f"نشر: {PUBLISHED} · آخر تحديث: {UPDATED} (توقيت الأردن)"
    assert [(a.text_content(), a.get("href")) for a in doc.xpath("//p[@class='read-also']/a")] == READ_ALSO
    assert meta in rendered.text and all(url in rendered.text for _, url in READ_ALSO)
    assert check_email(rendered.html, rendered.text) == []


def test_the_demo_digest_marks_the_seed_article_with_its_update_time(ingested):
    edition, _ = create_digest(ingested, "daily", now=T0 + dt.timedelta(minutes=5), scheduled=False)
    rendered = render_variant_for(ingested, edition, "all")
    visible = _visible(rendered.html)
    seed_block = visible[visible.index("المغرب والاحتلال يوقعان") :]
    seed_block = seed_block[: seed_block.index("</td></tr>")]
    assert f"{PUBLISHED} · " in seed_block and f"آخر تحديث: {UPDATED}</span>" in seed_block
    assert f"{PUBLISHED} · آخر تحديث: {UPDATED}" in rendered.text
    assert check_email(rendered.html, rendered.text) == []


def test_the_demo_digest_keeps_the_leads_section_and_labels_the_lead(ingested):
    """The demo's lead is its only محليات story: the section used to vanish."""
    edition, _ = create_digest(ingested, "daily", now=T0 + dt.timedelta(minutes=5), scheduled=False)
    rendered = render_variant_for(ingested, edition, "all")
    doc = lxml.html.document_fromstring(rendered.html)
    lead_title = doc.xpath("//h1[@class='lead-title']")[0].text_content()
    kicker = doc.xpath("//p[@class='kicker']")[0].text_content()
    lead = ingested.scalar(sa.select(Article).where(Article.title == lead_title))
    assert kicker == lead.section.name == "محليات"
    headings = [h.text_content() for h in doc.xpath("//h2[@class='section-title']")]
    assert "محليات" in headings
    assert headings == sorted(headings, key=[s for s in ("محليات", "عربي دولي", "اقتصاد", "رياضة", "تكنولوجيا",
                                                     "ثقافة وفنون", "صحة", "آراء ومقالات", "منوعات")].index)
