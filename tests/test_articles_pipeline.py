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


# ------------------------------------------------------------------ updates and writes

T0 = dt.datetime(2025, 11, 23, 10, 0, tzinfo=dt.UTC)


class _Writes:
    """Counts INSERT/UPDATE/DELETE statements per table on an engine, while active."""

    def __init__(self, engine):
        self.engine = engine
        self.statements: list[str] = []

    def _record(self, conn, cursor, statement, parameters, context, executemany):
        verb = statement.lstrip().split(None, 1)[0].upper()
        if verb in ("INSERT", "UPDATE", "DELETE"):
            self.statements.append(statement)

    def __enter__(self):
        sa.event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc):
        sa.event.remove(self.engine, "before_cursor_execute", self._record)

    def on(self, table: str) -> int:
        return sum(1 for s in self.statements if f" {table} " in s or f' "{table}" ' in s or f" {table}(" in s)


def test_unchanged_feed_costs_one_304_and_no_article_writes(db_session, pg_engine, feed_server):
    ensure_sections(db_session)
    feed = add_feed(db_session, _serve_demo(feed_server))
    poll_feed(db_session, feed.id, now=T0)
    assert feed.etag == '"sample_feed.xml"'
    with _Writes(pg_engine) as writes:
        report = poll_feed(db_session, feed.id, now=T0 + dt.timedelta(minutes=1))
    assert report.not_modified and report.error is None
    assert feed_server.requests[-1][1]["If-None-Match"] == '"sample_feed.xml"'
    assert writes.on("articles") == writes.on("article_versions") == writes.on("categories") == 0
    # A full re-read (no validators) of identical content writes no article row either.
    with _Writes(pg_engine) as writes:
        report = poll_feed(db_session, feed.id, now=T0 + dt.timedelta(minutes=2), force=True)
    assert "If-None-Match" not in feed_server.requests[-1][1]
    assert (report.new, report.major, report.minor, report.unchanged) == (0, 0, 0, 9)
    assert writes.on("articles") == writes.on("article_versions") == writes.on("categories") == 0
    assert [s.split()[0] for s in writes.statements] == ["UPDATE"]  # the feed's health row only


def test_updated_feed_makes_one_major_and_one_minor_version(db_session, feed_server):
    from service.articles.queries import articles_for_window, major_updates_since

    ensure_sections(db_session)
    feed = add_feed(db_session, _serve_demo(feed_server))
    poll_feed(db_session, feed.id, now=T0)
    _serve_demo(feed_server, "sample_feed_updated.xml")  # same URL, new ETag
    t1 = T0 + dt.timedelta(hours=1)
    report = poll_feed(db_session, feed.id, now=t1)
    assert (report.new, report.major, report.minor, report.unchanged) == (0, 1, 1, 7), report.summary()

    sport = db_session.scalar(sa.select(Article).where(Article.guid == "news.example:article:52003"))
    assert sport.title == "النشامى يتأهلون إلى نصف النهائي ويواجهون المغرب الأربعاء"
    assert sport.version == 2 and sport.last_major_at == t1 and sport.first_seen_at == T0
    assert sport.source_updated_at == dt.datetime(2025, 11, 23, 10, 5, tzinfo=AMMAN)
    major = sport.versions[-1]
    assert major.kind.value == "major" and major.version == 2
    assert major.change_note.startswith("title changed; correction/update note added (تحديث:)")
    assert sport.versions[0].title == "النشامى يتأهلون إلى نصف النهائي بعد فوز مثير بركلات الترجيح"

    economy = db_session.scalar(sa.select(Article).where(Article.guid == "news.example:article:52002"))
    assert economy.version == 2 and economy.last_major_at == T0  # a wording fix is not news
    assert economy.versions[-1].kind.value == "minor"
    assert economy.versions[-1].change_note.startswith("body changed 1% (threshold 20%)")

    assert [v.article_id for v in major_updates_since(db_session, T0 + dt.timedelta(minutes=1))] == [sport.id]
    assert major_updates_since(db_session, t1 + dt.timedelta(seconds=1)) == []
    # The next digest's window holds the updated article only; the first window all nine.
    assert [a.id for a in articles_for_window(db_session, t1, t1 + dt.timedelta(hours=1))] == [sport.id]
    assert len(articles_for_window(db_session, T0, T0 + dt.timedelta(minutes=1))) == 9


def test_polling_the_update_twice_writes_nothing_the_second_time(db_session, pg_engine, feed_server):
    feed = add_feed(db_session, _serve_demo(feed_server))
    poll_feed(db_session, feed.id, now=T0)
    _serve_demo(feed_server, "sample_feed_updated.xml")
    poll_feed(db_session, feed.id, now=T0 + dt.timedelta(hours=1))
    with _Writes(pg_engine) as writes:
        report = poll_feed(db_session, feed.id, now=T0 + dt.timedelta(hours=2), force=True)
    assert (report.major, report.minor, report.unchanged) == (0, 0, 9)
    assert writes.on("articles") == writes.on("article_versions") == 0


def test_metadata_change_updates_in_place_without_a_version(db_session, feed_server):
    feed = add_feed(db_session, _serve_demo(feed_server))
    poll_feed(db_session, feed.id, now=T0)
    body = (DEMO / "sample_feed.xml").read_text(encoding="utf-8").replace(
        "<media:description>وزير دفاع الاحتلال بيني غانتس</media:description>",
        "<media:description>بيني غانتس في الرباط</media:description>",
    )
    feed_server.serve("/feed.xml", body, headers={"ETag": '"v3"'})
    report = poll_feed(db_session, feed.id, now=T0 + dt.timedelta(hours=1))
    assert (report.metadata, report.unchanged, report.major, report.minor) == (1, 8, 0, 0)
    art = db_session.scalar(sa.select(Article).where(Article.guid == FIXTURE_GUID))
    assert art.lead_image_caption == "بيني غانتس في الرباط" and art.version == 1


def test_sections_and_categories(db_session, feed_server):
    ensure_sections(db_session)
    feed = add_feed(db_session, _serve_demo(feed_server), section_slug="local")
    poll_feed(db_session, feed.id, now=T0)
    rows = dict(
        db_session.execute(
            sa.select(Article.guid, Section.slug).outerjoin(Section, Section.id == Article.section_id)
        ).all()
    )
    assert rows["news.example:article:52005"] == "arab-world"  # "عربي ودولي" through an alias
    assert rows["news.example:article:52003"] == "sports"
    # "بيئة" is not a section: recorded unmapped, the article takes the feed's section.
    assert db_session.scalar(sa.select(Category.section_id).where(Category.name == "بيئة")) is None
    assert rows["news.example:article:52007"] == "local"
