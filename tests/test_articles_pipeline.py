"""The articles pipeline end to end on PostgreSQL: the demo feed over real HTTP."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from service.articles.feeds import add_feed
from service.articles.ingest import poll_feed
from service.articles.sections import ensure_sections
from service.models import Article, ArticleVersion, Category, Section

DEMO = Path(__file__).resolve().parent.parent / "service" / "demo"
AMMAN = ZoneInfo("Asia/Amman")
FIXTURE_GUID = "news.example:article:41873"


def _serve_demo(feed_server, name="sample_feed.xml", path="/feed.xml"):
    return feed_server.serve(path, (DEMO / name).read_bytes(), headers={"ETag": f'"{name}"'})


def test_fixture_article_ingests_with_section_times_caption_and_links(db_session, feed_server):
    ensure_sections(db_session)
    feed = add_feed(db_session, _serve_demo(feed_server))
    report = poll_feed(db_session, feed.id)
    assert report.error is None, report.summary()
    assert report.new == 9 and report.major == report.minor == 0
    art = db_session.scalar(sa.select(Article).where(Article.guid == FIXTURE_GUID))
    assert art.section.slug == "arab-world" and art.section.name == "عربي دولي"
    assert art.published_at == dt.datetime(2021, 11, 24, 17, 33, tzinfo=AMMAN)
    assert art.source_updated_at == dt.datetime(2023, 6, 18, 12, 17, tzinfo=AMMAN)
    assert art.lead_image_caption == "وزير دفاع الاحتلال بيني غانتس"
    assert art.lead_image_url.startswith("https://")
    titles = [link["title"] for link in art.read_also]
    assert titles == [
        'ملكة جمال اليونان تنسحب من مسابقة "ملكة جمال الكون" دعما لفلسطين',
        "كيف تحول المغرب إلى عملاق في مجال الطاقة الشمسية؟",
    ]
    assert all(link["url"].startswith("https://news.example/") for link in art.read_also)
    assert len(art.related) == 2
    # They became links, not paragraphs.
    assert "اقرأ أيضاً" not in art.body_html and "أخبار ذات صلة" not in art.body_html
    assert "ملكة جمال اليونان" not in art.body_html
    assert art.body_html.startswith("<p>وقع المغرب والاحتلال")
    assert art.version == 1
    versions = db_session.scalars(sa.select(ArticleVersion).where(ArticleVersion.article_id == art.id)).all()
    assert [v.kind.value for v in versions] == ["new"]


def test_ingest_all_polls_feed_urls_each_in_its_own_transaction(pg_env, feed_server, monkeypatch):
    from service.articles.ingest import ingest_all
    from service.config import reset_settings
    from service.db import session_scope

    good = _serve_demo(feed_server)
    bad = feed_server.serve("/broken.xml", "<rss><channel><item>", content_type="application/xml")
    monkeypatch.setenv("FEED_URLS", f"{bad},{good}")
    reset_settings()
    reports = ingest_all()
    by_url = {r.url: r for r in reports}
    assert by_url[bad].error and "not well-formed" in by_url[bad].error
    assert by_url[good].error is None and by_url[good].new == 9
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Article)) == 9
        assert s.scalar(sa.select(sa.func.count()).select_from(Section)) >= 5
        assert s.scalar(sa.select(Category.section_id).where(Category.name == "بيئة")) is None
    # Nothing is due a second later: the good feed polled fine, the bad one backs off.
    assert ingest_all() == []
