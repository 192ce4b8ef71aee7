"""Planning: the audience frozen by one INSERT … SELECT, once, on PostgreSQL and SQLite."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from service.delivery.planner import PlanError, plan
from service.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionArticle,
    EditionStatus,
    EditionVariant,
    Subscriber,
    Subscription,
)
from tests.support.delivery import add_subscribers, add_suppression, make_edition, renderer


def _rows(session, edition_id):
    return session.execute(
        sa.select(Subscriber.email, Delivery.variant, Delivery.status)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.edition_id == edition_id)
        .order_by(Subscriber.email)
    ).all()


def _audience_case(session):
    add_subscribers(session, 3, prefix="daily")
    add_subscribers(session, 2, prefix="weekly", frequency="weekly")
    add_subscribers(session, 2, prefix="pending", status="pending")
    add_subscribers(session, 1, prefix="gone", status="unsubscribed")
    add_subscribers(session, 2, prefix="noalerts", alerts=False)
    add_subscribers(session, 2, prefix="sports", sections=[3, 1])
    add_suppression(session, "daily0@example.com")
    session.flush()


def test_digest_audience_is_active_matching_frequency_minus_suppressed(db_session):
    _audience_case(db_session)
    eid = make_edition(db_session, "digest", "daily")
    r = renderer()
    assert plan(db_session, eid, renderer=r) == 6
    emails = [e for e, _, _ in _rows(db_session, eid)]
    assert emails == sorted(
        ["daily1@example.com", "daily2@example.com", "noalerts0@example.com", "noalerts1@example.com",
         "sports0@example.com", "sports1@example.com"]
    )
    variants = {e: v for e, v, _ in _rows(db_session, eid)}
    assert variants["daily1@example.com"] == "all"
    assert variants["sports0@example.com"].replace(" ", "") == "[3,1]"  # the reader's order, as stored
    # rendered once per variant, not per reader
    assert sorted(r.calls) == sorted({"all", variants["sports0@example.com"]})
    edition = db_session.get(Edition, eid)
    assert edition.status == EditionStatus.planned and edition.recipients == 6
    assert db_session.scalar(sa.select(sa.func.count()).select_from(EditionVariant).where(EditionVariant.edition_id == eid)) == 2


def test_alert_audience_is_active_readers_with_alerts_on(db_session):
    _audience_case(db_session)
    eid = make_edition(db_session, "alert", None, headline="عاجل", url="https://news.example/a")
    assert plan(db_session, eid, renderer=renderer()) == 6  # daily1-2, weekly0-1, sports0-1
    rows = _rows(db_session, eid)
    assert all(v == "all" for _, v, _ in rows)
    assert "noalerts0@example.com" not in [e for e, _, _ in rows]
    assert "weekly0@example.com" in [e for e, _, _ in rows]


def test_planning_twice_inserts_nothing_and_renders_nothing(db_session):
    add_subscribers(db_session, 10)
    eid = make_edition(db_session)
    r = renderer()
    assert plan(db_session, eid, renderer=r) == 10
    add_subscribers(db_session, 1, start=100)  # arrives after the audience was frozen…
    db_session.flush()
    assert plan(db_session, eid, renderer=r) == 11  # …a re-plan of a planned edition adds them
    assert r.calls == ["all"]
    assert db_session.scalar(sa.select(sa.func.count()).select_from(Delivery).where(Delivery.edition_id == eid)) == 11
    # Once sending has started the audience is frozen for good.
    db_session.get(Edition, eid).status = EditionStatus.sending
    add_subscribers(db_session, 1, start=200)
    db_session.flush()
    assert plan(db_session, eid, renderer=r) == 11


def test_variant_with_nothing_to_send_is_skipped(db_session):
    add_subscribers(db_session, 2, prefix="all")
    add_subscribers(db_session, 2, prefix="culture", sections=[9])
    db_session.flush()
    eid = make_edition(db_session)
    culture_variant = db_session.scalar(
        sa.select(sa.cast(Subscription.sections, sa.Text)).join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(Subscriber.email == "culture0@example.com")
        .where(Subscription.newsletter_id == db_session.get(Edition, eid).newsletter_id)
    )
    plan(db_session, eid, renderer=renderer(empty=frozenset({culture_variant})))
    status = {e: s for e, _, s in _rows(db_session, eid)}
    assert status["culture0@example.com"] == DeliveryStatus.skipped
    assert status["all0@example.com"] == DeliveryStatus.queued


def test_correction_goes_to_readers_who_were_sent_the_article(db_session):
    from service.models import Article

    add_subscribers(db_session, 4)
    db_session.flush()
    article = Article(guid="g1", url="https://news.example/1", title="خبر", content_hash="x")
    db_session.add(article)
    db_session.flush()
    first = make_edition(db_session)
    db_session.add(EditionArticle(edition_id=first, article_id=article.id, version=1))
    plan(db_session, first, renderer=renderer())
    # readers 0 and 1 were sent it, reader 2's message is unknown (maybe delivered), reader 3 failed
    ids = {e: i for i, e in db_session.execute(sa.select(Subscriber.id, Subscriber.email))}
    for email, status in [("reader0", "sent"), ("reader1", "sent"), ("reader2", "unknown"), ("reader3", "failed")]:
        db_session.execute(
            sa.update(Delivery)
            .where(Delivery.edition_id == first, Delivery.subscriber_id == ids[f"{email}@example.com"])
            .values(status=status)
        )
    correction = make_edition(db_session, "correction", None, note="تصحيح")
    db_session.add(EditionArticle(edition_id=correction, article_id=article.id, version=2))
    db_session.flush()
    assert plan(db_session, correction, renderer=renderer()) == 3
    assert [e for e, _, _ in _rows(db_session, correction)] == [
        "reader0@example.com", "reader1@example.com", "reader2@example.com"]


def test_bad_input_changes_nothing(db_session):
    add_subscribers(db_session, 3)
    with pytest.raises(PlanError, match="no edition"):
        plan(db_session, 999_999, renderer=renderer())
    eid = make_edition(db_session, "digest", None)  # a digest without a frequency
    with pytest.raises(PlanError, match="frequency"):
        plan(db_session, eid, renderer=renderer())
    assert db_session.scalar(sa.select(sa.func.count()).select_from(Delivery)) == 0
    assert db_session.get(Edition, eid).status == EditionStatus.draft
    bad = make_edition(db_session, "correction", None, edition_ids=["1; DROP TABLE x"])
    with pytest.raises(PlanError, match="edition_ids"):
        plan(db_session, bad, renderer=renderer())


def test_plan_runs_on_sqlite(sqlite_env):
    from service.db import session_scope

    with session_scope() as s:
        add_subscribers(s, 5)
        add_subscribers(s, 2, prefix="sec", sections=[2])
        add_suppression(s, "reader4@example.com")
        eid = make_edition(s)
        assert plan(s, eid, renderer=renderer()) == 6
    with session_scope() as s:
        assert plan(s, eid, renderer=renderer()) == 6
        assert {v for (v,) in s.execute(sa.select(Delivery.variant).where(Delivery.edition_id == eid))} == {"all", "[2]"}


def _correction_case(s):
    """Three readers of one digest: every section, the article's section, another section."""
    from service.models import Article, Section

    sport = Section(slug="sport", name="رياضة")
    economy = Section(slug="economy", name="اقتصاد")
    s.add_all([sport, economy])
    s.flush()
    add_subscribers(s, 1, prefix="all")
    add_subscribers(s, 1, prefix="sport", sections=[sport.id, economy.id])
    add_subscribers(s, 1, prefix="economy", sections=[economy.id])
    s.flush()
    article = Article(guid="g-sport", url="https://news.example/s", title="مباراة", content_hash="x", section_id=sport.id)
    s.add(article)
    s.flush()
    digest = make_edition(s)
    s.add(EditionArticle(edition_id=digest, article_id=article.id, version=1))
    plan(s, digest, renderer=renderer())
    s.execute(sa.update(Delivery).where(Delivery.edition_id == digest).values(status="sent"))
    correction = make_edition(s, "correction", None, edition_ids=[digest])
    s.add(EditionArticle(edition_id=correction, article_id=article.id, version=2))
    s.flush()
    return correction


def test_a_correction_skips_readers_whose_variant_left_the_article_out(db_session):
    correction = _correction_case(db_session)
    assert plan(db_session, correction, renderer=renderer()) == 2
    assert [e for e, _, _ in _rows(db_session, correction)] == ["all0@example.com", "sport0@example.com"]


def test_the_correction_rule_holds_on_sqlite(sqlite_env):
    from service.db import session_scope

    with session_scope() as s:
        correction = _correction_case(s)
        assert plan(s, correction, renderer=renderer()) == 2
        assert [e for e, _, _ in _rows(s, correction)] == ["all0@example.com", "sport0@example.com"]
