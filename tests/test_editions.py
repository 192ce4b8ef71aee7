"""Editions: what a digest carries and how an editor's alert becomes exactly one edition."""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

import pytest
import structlog
from sqlalchemy import func, select

from service.config import get_settings
from service.editions import variants
from service.editions.alerts import AlertError, create_alert
from service.editions.digests import create_digest
from service.editions.variants import render_variant_for
from service.models import (
    Article,
    ArticleVersion,
    Edition,
    EditionArticle,
    EditionKind,
    Frequency,
    Section,
    VersionKind,
    utcnow,
)
from service.rendering import contexts
from service.rendering.render import render_variant
from service.rendering.viewmodels import UNSUBSCRIBE_URL


def _article(session, n, *, first_seen, last_major=None, version=1, section=None):
    a = Article(
        guid=f"urn:test:{n}",
        url=f"https://news.example/a/{n}",
        title=f"خبر رقم {n}",
        summary="ملخص",
        content_hash=f"{n:064d}",
        first_seen_at=first_seen,
        last_major_at=last_major or first_seen,
        version=version,
        section_id=section.id if section else None,
    )
    session.add(a)
    session.flush()
    # The history ingestion would have written: new, then (optionally) a major update.
    session.add(ArticleVersion(article_id=a.id, version=1, kind=VersionKind.new, content_hash="0" * 64,
                               title=a.title, created_at=first_seen))
    if version > 1:
        session.add(ArticleVersion(article_id=a.id, version=version, kind=VersionKind.major, content_hash="1" * 64,
                                   title=a.title, created_at=last_major))
    session.flush()
    return a


def test_digest_carries_the_window_and_marks_updates(db_session):
    now = utcnow()
    sec = Section(slug="arab-world-t", name="عربي دولي تجربة", position=1)
    db_session.add(sec)
    db_session.flush()
    fresh = _article(db_session, 1, first_seen=now - dt.timedelta(hours=2), section=sec)
    old_updated = _article(
        db_session, 2, first_seen=now - dt.timedelta(days=3), last_major=now - dt.timedelta(hours=1), version=3, section=sec
    )
    _article(db_session, 3, first_seen=now - dt.timedelta(days=2), section=sec)  # outside the window

    edition, created = create_digest(db_session, "daily", now=now)
    assert created and edition.kind == EditionKind.digest
    carried = {ea.article_id: ea.updated for ea in edition.articles}
    assert carried == {fresh.id: False, old_updated.id: True}

    # The same scheduled slot again (beat firing twice) is the same edition.
    again, created_again = create_digest(db_session, "daily", now=now + dt.timedelta(minutes=5))
    assert again.id == edition.id and not created_again
    # --now makes a new one.
    extra, created_extra = create_digest(db_session, "daily", now=now, scheduled=False)
    assert created_extra and extra.id != edition.id


def test_empty_window_makes_no_edition(db_session):
    edition, created = create_digest(db_session, "weekly", now=utcnow() + dt.timedelta(days=365))
    assert edition is None and not created
    assert db_session.scalar(select(func.count()).select_from(Edition)) == 0


def test_alert_with_idempotency_key_is_created_once(db_session):
    a = create_alert(db_session, editor_id=None, headline="عاجل: زلزال", url="https://news.example/q", idempotency_key="k1")
    b = create_alert(db_session, editor_id=None, headline="عاجل: زلزال", url="https://news.example/q", idempotency_key="k1")
    assert a.id == b.id
    assert db_session.scalar(select(func.count()).select_from(Edition)) == 1


def test_same_story_twice_within_minutes_is_one_alert(db_session):
    a = create_alert(db_session, editor_id=None, headline="عاجل", url="https://news.example/z")
    b = create_alert(db_session, editor_id=None, headline="عاجل مكرر", url="https://news.example/z")
    assert a.id == b.id


def test_alert_from_an_ingested_article(db_session):
    art = _article(db_session, 7, first_seen=utcnow())
    ed = create_alert(db_session, editor_id=None, article_url=art.url)
    assert ed.params["headline"] == art.title and [x.article_id for x in ed.articles] == [art.id]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"headline": "", "url": "https://x.example/"}, "headline"),
        ({"headline": "خبر", "url": "javascript:alert(1)"}, "url"),
        ({"headline": "خبر", "url": "https://x.example/\r\nBcc: a@b"}, "url"),
        ({"headline": "خ" * 500, "url": "https://x.example/"}, "headline"),
        ({"article_url": "https://news.example/not-ingested"}, "no ingested article"),
        ({"article_url": "https://news.example/a", "headline": "x", "url": "https://x.example/"}, "either"),
    ],
)
def test_bad_alert_input_is_refused_and_changes_nothing(db_session, kwargs, message):
    with pytest.raises(AlertError, match=message):
        create_alert(db_session, editor_id=None, **kwargs)
    assert db_session.scalar(select(func.count()).select_from(Edition)) == 0


def test_headline_loses_bidi_overrides_and_newlines(db_session):
    ed = create_alert(db_session, editor_id=None, headline="عاجل\u202e\r\nخبر", url="https://x.example/")
    assert ed.params["headline"] == "عاجل خبر"


def test_a_200_character_idempotency_key_is_refused_clearly_or_stored(db_session):
    key = "k" * 194  # "alert:" + 194 = the column's 200
    a = create_alert(db_session, editor_id=None, headline="عاجل", url="https://news.example/k", idempotency_key=key)
    assert a.idempotency_key == "alert:" + key
    with pytest.raises(AlertError, match="idempotency_key"):
        create_alert(db_session, editor_id=None, headline="عاجل", url="https://news.example/k2",
                     idempotency_key="k" * 195)


def test_the_same_key_from_two_requests_at_once_is_one_alert(pg_env):
    import threading

    from service.db import session_scope

    barrier = threading.Barrier(2)
    ids, errors = [], []

    def request():
        try:
            with session_scope() as s:
                barrier.wait(timeout=10)
                ids.append(create_alert(s, editor_id=None, headline="عاجل", url="https://news.example/r",
                                        idempotency_key="retry-1").id)
        except Exception as exc:  # noqa: BLE001 — reported by the assertion
            errors.append(exc)

    threads = [threading.Thread(target=request) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(set(ids)) == 1
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Edition)) == 1


def test_consecutive_scheduled_digests_neither_drop_nor_repeat_an_article(db_session):
    from service.editions.digests import ingest_lag

    lag = ingest_lag()
    day1 = utcnow().replace(microsecond=0) - dt.timedelta(days=3)
    a = _article(db_session, 11, first_seen=day1 - lag - dt.timedelta(hours=1))
    # An article whose poll began just before digest 1 but committed after it was made:
    # stamped inside digest 1's period, visible only later.  It must go out once, next day.
    late = day1 - dt.timedelta(seconds=2)
    first, _ = create_digest(db_session, "daily", now=day1)
    b = _article(db_session, 12, first_seen=late)
    # Beat fires two seconds late on day 2.
    c = _article(db_session, 13, first_seen=day1 + dt.timedelta(days=1) - lag + dt.timedelta(seconds=1))
    second, _ = create_digest(db_session, "daily", now=day1 + dt.timedelta(days=1, seconds=2))
    third, _ = create_digest(db_session, "daily", now=day1 + dt.timedelta(days=2))  # on time again
    assert [x.article_id for x in first.articles] == [a.id]
    assert sorted(x.article_id for x in second.articles) == sorted([b.id, c.id])
    assert third is None  # nothing new since the second: no empty digest, no repeat
    assert second.window_start == first.window_end


def test_a_busy_day_keeps_every_section_in_the_digest(db_session):
    now = utcnow()
    sections = [Section(slug=f"s{i}", name=f"قسم {i}", position=i) for i in range(6)]
    db_session.add_all(sections)
    db_session.flush()
    for i, sec in enumerate(sections):
        for j in range(20):  # 120 articles: far more than one digest carries
            _article(db_session, 1000 + i * 100 + j, first_seen=now - dt.timedelta(minutes=5 + j), section=sec)
    edition, _ = create_digest(db_session, "daily", now=now)
    carried = [ea.article for ea in edition.articles]
    assert len(carried) == 40
    assert {a.section_id for a in carried} == {s.id for s in sections}  # the last sections too


def _long_article(session, n, section, now):
    slug = quote(f"الحكومة-تعلن-عن-خطة-جديدة-لدعم-الاقتصاد-الوطني-والقطاعات-المتضررة-{n}")
    a = Article(
        guid=f"urn:review:{n}",
        url=f"https://news.example/ar/{section.slug}/2024/06/01/{slug}",
        title=f"خبر رقم {n}: " + "الحكومة تعلن عن خطة جديدة لدعم الاقتصاد الوطني والقطاعات المتضررة " * 2,
        summary="ملخص طويل يشرح تفاصيل الخبر وخلفياته وما يعنيه للقراء في المنطقة. " * 6,
        content_hash=f"{n:064d}",
        first_seen_at=now,
        last_major_at=now,
        version=1,
        section_id=section.id,
    )
    session.add(a)
    session.flush()
    session.add(ArticleVersion(article_id=a.id, version=1, kind=VersionKind.new, content_hash="0" * 64,
                               title=a.title, created_at=now))
    return a


def test_an_oversized_digest_is_trimmed_under_the_budget(db_session):
    now = utcnow()
    first = Section(slug="review-first", name="محليات", position=1)
    second = Section(slug="review-second", name="اقتصاد", position=2)
    db_session.add_all([first, second])
    db_session.flush()
    articles = [_long_article(db_session, n, first if n < 20 else second, now) for n in range(60)]
    edition = Edition(kind=EditionKind.digest, frequency=Frequency.daily, window_start=now, window_end=now)
    db_session.add(edition)
    db_session.flush()
    for pos, a in enumerate(articles):
        db_session.add(EditionArticle(edition_id=edition.id, article_id=a.id, version=1, position=pos))
    db_session.flush()
    db_session.refresh(edition)

    # Untrimmed, this digest would be clipped by Gmail.
    untrimmed = variants._digest_sections(db_session, edition, "all")  # noqa: SLF001
    ctx = contexts.digest_context(contexts.site_view(get_settings()), untrimmed, edition_date=now,
                                  frequency="daily", lead=untrimmed[0].articles[0])
    assert len(render_variant("digest", ctx).html.encode("utf-8")) > 100 * 1024

    with structlog.testing.capture_logs() as logs:
        rendered = render_variant_for(db_session, edition, "all")
    html = rendered.html
    assert len(html.encode("utf-8")) <= 95_000
    assert UNSUBSCRIBE_URL in html  # the footer's unsubscribe link survives
    assert articles[0].title.strip()[:40] in html  # the first section's first article stays
    trims = [e for e in logs if e["event"] == "digest_trimmed_for_size"]
    assert len(trims) == 1
    assert trims[0]["edition_id"] == edition.id and trims[0]["dropped"] > 0
    assert "@" not in str(trims[0])


def test_alerting_an_article_with_a_long_title_and_summary_shortens_them(db_session):
    art = _article(db_session, 8, first_seen=utcnow())
    art.title = "عنوان طويل " * 30  # 330 characters
    art.summary = "ملخص طويل جداً " * 40  # 600 characters, as ingestion allows
    db_session.flush()
    ed = create_alert(db_session, editor_id=None, article_url=art.url)
    assert 0 < len(ed.params["headline"]) <= 200 and 0 < len(ed.params["summary"]) <= 400
    assert ed.params["headline"].startswith("عنوان طويل")
