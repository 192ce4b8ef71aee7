"""Corrections: a major update reaches exactly the readers who got an older version.

The selection rules run on a rolled-back PostgreSQL session with articles ingested from
the demo feeds over real HTTP; the whole path (feed → digest → update → correction →
SMTP) runs through a real Celery worker on Redis against the real SMTP sink.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from service.articles.feeds import add_feed
from service.articles.ingest import poll_feed
from service.articles.sections import ensure_sections
from service.config import ConfigError, get_settings, load_settings, reset_settings
from service.editions.corrections import NOTE_SIGNAL, create_corrections, key_for
from service.jobs import names
from service.models import (
    Article,
    ArticleVersion,
    AuditLog,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionArticle,
    EditionKind,
    EditionStatus,
    Feed,
    Frequency,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from service.newsletters import catalogue, membership
from tests.support.readers import reader

DEMO = Path(__file__).resolve().parent.parent / "service" / "demo"
ORIGINAL = (DEMO / "sample_feed.xml").read_text(encoding="utf-8")
UPDATED = (DEMO / "sample_feed_updated.xml").read_text(encoding="utf-8")
SPORT_GUID = "news.example:article:52003"  # major: new headline and an "تحديث:" note
ECONOMY_GUID = "news.example:article:52002"  # minor: one word added
SPORT_OLD_TITLE = "النشامى يتأهلون إلى نصف النهائي بعد فوز مثير بركلات الترجيح"
SPORT_NEW_TITLE = "النشامى يتأهلون إلى نصف النهائي ويواجهون المغرب الأربعاء"
ECONOMY_TITLE = "البنك المركزي يثبت أسعار الفائدة للمرة الثالثة على التوالي"
SPORT_NOTE = "أسفرت قرعة نصف النهائي عن مواجهة المنتخب المغربي"
# A headline change with no note from the site: major, but not a "correction" by default.
TITLE_ONLY = ORIGINAL.replace(
    "<title>الأمم المتحدة تحذر من موجة جفاف تهدد المحاصيل في شمال أفريقيا</title>",
    "<title>الأمم المتحدة: الجفاف يهدد نصف محاصيل شمال أفريقيا هذا العام</title>",
)
DROUGHT_GUID = "news.example:article:52005"
# A second noted update on top of UPDATED: a correction paragraph.
CORRECTED_AGAIN = UPDATED.replace(
    "<p>واحتشد آلاف المشجعين",
    "<p><strong>تصحيح:</strong> جرت المباراة على ستاد عمّان الدولي وليس ستاد الملك عبدالله.</p>\n<p>واحتشد آلاف المشجعين",
)

T0 = dt.datetime(2025, 11, 23, 8, 0, tzinfo=dt.UTC)
# The site's correction as the issue saw it mailed: the same note in the summary and as
# the body's first paragraph, under a headline the site prefixed with "تحديث:".
VISIT_NOTE = "تم تعديل تاريخ الزيارة."
NOTED_THREE_TIMES = UPDATED.replace(
    "<title>النشامى يتأهلون إلى نصف النهائي ويواجهون المغرب الأربعاء</title>",
    "<title>تحديث: النشامى يتأهلون إلى نصف النهائي ويواجهون المغرب الأربعاء</title>",
).replace(
    "<description>تأهل المنتخب الوطني لكرة القدم إلى الدور نصف النهائي بعد فوزه بركلات الترجيح.</description>",
    f"<description>تصحيح: {VISIT_NOTE} تأهل المنتخب الوطني لكرة القدم إلى الدور نصف النهائي بعد فوزه بركلات الترجيح.</description>",
).replace(
    "<p>تأهل المنتخب الوطني لكرة القدم إلى الدور نصف النهائي من البطولة العربية",
    f"<p><strong>تصحيح:</strong> {VISIT_NOTE}</p>\n<p>تأهل المنتخب الوطني لكرة القدم إلى الدور نصف النهائي من البطولة العربية",
)


# ------------------------------------------------------------------ helpers (one session)


@pytest.fixture(autouse=True)
def _empty_tables(request):
    """`db_session` tests start without articles or editions whatever ran before
    (deleted inside the test's transaction, so rolled back with it)."""
    if "db_session" not in request.fixturenames:
        return
    session = request.getfixturevalue("db_session")
    for table in ("deliveries", "edition_articles", "edition_variants", "editions", "audit_log",
                  "article_versions", "articles", "categories", "feeds", "subscribers"):
        session.execute(sa.text(f"DELETE FROM {table}"))


def _poll(session, feed_server, body: str, now: dt.datetime) -> None:
    url = feed_server.serve("/feed.xml", body)
    feed = add_feed(session, url)
    report = poll_feed(session, feed.id, now=now, force=True)
    assert report.error is None, report.summary()


def _article(session, guid: str) -> Article:
    return session.scalar(sa.select(Article).where(Article.guid == guid))


def _readers(session, n: int) -> list[Subscriber]:
    return [reader(session, f"r{i}@example.com", status=SubscriberStatus.active, frequency=Frequency.daily,
                   sections=[]) for i in range(n)]


def _mailed(session, kind: EditionKind, articles: list[Article], readers, *, at: dt.datetime,
            row_status=DeliveryStatus.sent, status=EditionStatus.done) -> Edition:
    """An edition that carried `articles` at their current version, with ledger rows
    as the delivery workers leave them (sent_at on sent rows)."""
    edition = Edition(kind=kind, status=status, created_at=at - dt.timedelta(minutes=5),
                      frequency=Frequency.daily if kind == EditionKind.digest else None,
                      params={} if kind == EditionKind.digest else {"headline": "h", "url": "https://news.example/x"})
    session.add(edition)
    session.flush()
    for pos, a in enumerate(articles):
        session.add(EditionArticle(edition_id=edition.id, article_id=a.id, version=a.version, position=pos))
    for r in readers:
        session.add(Delivery(edition_id=edition.id, subscriber_id=r.id, status=row_status, updated_at=at,
                             sent_at=at if row_status == DeliveryStatus.sent else None))
    session.flush()
    return edition


def _corrections(session) -> list[Edition]:
    return list(session.scalars(sa.select(Edition).where(Edition.kind == EditionKind.correction).order_by(Edition.id)))


# ------------------------------------------------------------------ selection rules


def test_noted_update_makes_one_correction_for_the_readers_of_the_older_version(db_session, feed_server):
    ensure_sections(db_session)
    _poll(db_session, feed_server, ORIGINAL, T0)
    sport, economy = _article(db_session, SPORT_GUID), _article(db_session, ECONOMY_GUID)
    digest = _mailed(db_session, EditionKind.digest, [sport, economy], _readers(db_session, 2), at=T0 + dt.timedelta(minutes=10))
    _poll(db_session, feed_server, UPDATED, T0 + dt.timedelta(hours=1))
    assert NOTE_SIGNAL in db_session.scalar(
        sa.select(ArticleVersion.change_note).where(ArticleVersion.article_id == sport.id, ArticleVersion.version == 2)
    )  # the classifier's wording is what the `notes` policy reads

    made = create_corrections(db_session, now=T0 + dt.timedelta(hours=1, minutes=1))

    assert len(made) == 1  # the economy article's one-word fix is minor: no correction
    c = made[0]
    assert (c.kind, c.status, c.idempotency_key) == (EditionKind.correction, EditionStatus.draft, key_for(sport.id, 2))
    assert c.params["edition_ids"] == [digest.id] and c.params["version"] == 2
    assert c.params["note"].startswith("تحديث: " + SPORT_NOTE)  # the site's own words, not ours
    assert [(ea.article_id, ea.version) for ea in c.articles] == [(sport.id, 2)]
    assert db_session.scalar(sa.select(AuditLog.action).where(AuditLog.target == f"edition:{c.id}")) == "correction.create"
    # Beat, a retried task, a second worker: nothing new.
    assert create_corrections(db_session, now=T0 + dt.timedelta(hours=1, minutes=2)) == []
    assert len(_corrections(db_session)) == 1


def test_the_correction_says_once_what_changed(db_session, feed_server):
    """Note box, summary and first paragraph all held the note; «تحديث» was stacked in the
    subject, band, headline and badge; the whole body came along.  Now: once each."""
    from service.editions.variants import render_variant_for
    from tests.support.email_checks import check_email

    ensure_sections(db_session)
    _poll(db_session, feed_server, ORIGINAL, T0)
    sport = _article(db_session, SPORT_GUID)
    _mailed(db_session, EditionKind.digest, [sport], _readers(db_session, 1), at=T0 + dt.timedelta(minutes=10))
    _poll(db_session, feed_server, NOTED_THREE_TIMES, T0 + dt.timedelta(hours=1))
    (c,) = create_corrections(db_session, now=T0 + dt.timedelta(hours=1, minutes=1))
    assert VISIT_NOTE in c.params["note"] and SPORT_NOTE in c.params["note"]

    rendered = render_variant_for(db_session, c, "all")
    html, text = rendered.html, rendered.text
    visible = html[html.index("</div>", html.index('class="preheader"')) :]  # the body, not the inbox snippet
    assert visible.count(VISIT_NOTE) == 1 and text.count(VISIT_NOTE) == 1
    assert visible.count(SPORT_NOTE) == 1 and text.count(SPORT_NOTE) == 1
    assert rendered.subject == "تصحيح: " + SPORT_NEW_TITLE  # the word once, the site's prefix gone
    assert visible.count("تصحيح") == 1 and "محدَّث" not in visible and "تحديث مهم" not in visible
    assert visible.count("تحديث") == 1  # «آخر تحديث:», the site's own label for its time
    assert f">{SPORT_NEW_TITLE}</a></h1>" in visible
    # The corrected lead (the summary less the note), the lead image and one link; not the body.
    assert "تأهل المنتخب الوطني لكرة القدم إلى الدور نصف النهائي بعد فوزه بركلات الترجيح." in visible
    assert 'class="alert-img"' in visible and "لاعبو المنتخب يحتفلون بالتأهل" in visible
    assert "واحتشد آلاف المشجعين" not in html and visible.count('class="btn"') == 1
    assert "تأهل المنتخب الوطني لكرة القدم إلى الدور نصف النهائي بعد فوزه" in text and sport.url in text
    assert "آخر تحديث: 23 تشرين الثاني/نوفمبر 2025، 10:05" in visible
    assert check_email(html, text) == []


def test_the_planner_mails_the_correction_to_exactly_those_readers(db_session, feed_server):
    from service.delivery.planner import plan

    ensure_sections(db_session)
    _poll(db_session, feed_server, ORIGINAL, T0)
    sport = _article(db_session, SPORT_GUID)
    a, b, late = _readers(db_session, 3)
    _mailed(db_session, EditionKind.digest, [sport], [a, b], at=T0 + dt.timedelta(minutes=10))
    _poll(db_session, feed_server, UPDATED, T0 + dt.timedelta(hours=1))
    (c,) = create_corrections(db_session, now=T0 + dt.timedelta(hours=2))

    assert plan(db_session, c.id) == 2
    got = set(db_session.scalars(sa.select(Delivery.subscriber_id).where(Delivery.edition_id == c.id)))
    assert got == {a.id, b.id}  # `late` subscribed after the digest: never got the old version


def test_a_reader_whose_digest_left_the_article_out_gets_no_correction(db_session, feed_server):
    from service.delivery.planner import plan

    ensure_sections(db_session)
    _poll(db_session, feed_server, ORIGINAL, T0)
    sport, economy = _article(db_session, SPORT_GUID), _article(db_session, ECONOMY_GUID)
    everything, economy_only = _readers(db_session, 2)
    membership.join(db_session, economy_only.id, catalogue.digest_for(db_session, "daily"),
                    sections=[economy.section_id])
    digest = _mailed(db_session, EditionKind.digest, [sport, economy], [everything], at=T0 + dt.timedelta(minutes=10))
    # Their digest was the economy-only variant: the sport article was not in it.
    db_session.add(Delivery(edition_id=digest.id, subscriber_id=economy_only.id, status=DeliveryStatus.sent,
                            variant=f"[{economy.section_id}]", sent_at=T0 + dt.timedelta(minutes=10),
                            updated_at=T0 + dt.timedelta(minutes=10)))
    db_session.flush()
    _poll(db_session, feed_server, UPDATED, T0 + dt.timedelta(hours=1))
    (c,) = create_corrections(db_session, now=T0 + dt.timedelta(hours=2))
    plan(db_session, c.id)
    got = set(db_session.scalars(sa.select(Delivery.subscriber_id).where(Delivery.edition_id == c.id)))
    assert got == {everything.id}


def test_a_headline_change_alone_is_a_correction_only_under_the_major_policy(db_session, feed_server, monkeypatch):
    ensure_sections(db_session)
    _poll(db_session, feed_server, ORIGINAL, T0)
    drought = _article(db_session, DROUGHT_GUID)
    _mailed(db_session, EditionKind.alert, [drought], _readers(db_session, 1), at=T0 + dt.timedelta(minutes=3))
    _poll(db_session, feed_server, TITLE_ONLY, T0 + dt.timedelta(hours=1))
    assert drought.version == 2
    later = T0 + dt.timedelta(hours=1, minutes=1)

    assert create_corrections(db_session, now=later) == []  # default: notes only

    monkeypatch.setenv("CORRECTIONS", "major")
    reset_settings()
    (c,) = create_corrections(db_session, now=later)
    assert c.idempotency_key == key_for(drought.id, 2)
    assert c.params["note"] == "تغيّر عنوان الخبر، وكان: «الأمم المتحدة تحذر من موجة جفاف تهدد المحاصيل في شمال أفريقيا»."


def test_several_major_versions_make_one_correction_for_the_newest(db_session, feed_server):
    ensure_sections(db_session)
    _poll(db_session, feed_server, ORIGINAL, T0)
    sport = _article(db_session, SPORT_GUID)
    digest = _mailed(db_session, EditionKind.digest, [sport], _readers(db_session, 2), at=T0 + dt.timedelta(minutes=10))
    _poll(db_session, feed_server, UPDATED, T0 + dt.timedelta(hours=1))
    _poll(db_session, feed_server, CORRECTED_AGAIN, T0 + dt.timedelta(hours=2))
    assert sport.version == 3

    made = create_corrections(db_session, now=T0 + dt.timedelta(hours=2, minutes=1))

    assert [c.idempotency_key for c in made] == [key_for(sport.id, 3)]
    assert made[0].params["edition_ids"] == [digest.id]
    note = made[0].params["note"]
    assert SPORT_NOTE in note and "تصحيح: جرت المباراة" in note  # both, as the reader got neither


def test_only_editions_that_mailed_an_older_version_recently_count(db_session, feed_server):
    ensure_sections(db_session)
    _poll(db_session, feed_server, ORIGINAL, T0)
    sport = _article(db_session, SPORT_GUID)
    r = _readers(db_session, 1)
    now = T0 + dt.timedelta(hours=2)
    _mailed(db_session, EditionKind.digest, [sport], r, at=now - dt.timedelta(days=8))  # too long ago (7 days)
    _mailed(db_session, EditionKind.digest, [sport], r, at=T0 + dt.timedelta(minutes=5),
            row_status=DeliveryStatus.failed)  # never reached anyone
    _mailed(db_session, EditionKind.digest, [sport], r, at=T0 + dt.timedelta(minutes=5),
            row_status=DeliveryStatus.queued, status=EditionStatus.planned)  # not sent yet
    _poll(db_session, feed_server, UPDATED, T0 + dt.timedelta(hours=1))
    _mailed(db_session, EditionKind.digest, [sport], r, at=T0 + dt.timedelta(minutes=70))  # carried the new version

    assert create_corrections(db_session, now=now) == []

    # An alert whose only answer was lost (status unknown) may have reached its reader.
    alert = _mailed(db_session, EditionKind.alert, [sport], r, at=T0 + dt.timedelta(minutes=20),
                    row_status=DeliveryStatus.unknown)
    db_session.execute(sa.update(EditionArticle).where(EditionArticle.edition_id == alert.id).values(version=1))
    (c,) = create_corrections(db_session, now=now)
    assert c.params["edition_ids"] == [alert.id]


def test_a_cancelled_earlier_edition_is_skipped_with_one_log_line(db_session, feed_server):
    ensure_sections(db_session)
    _poll(db_session, feed_server, ORIGINAL, T0)
    sport = _article(db_session, SPORT_GUID)
    cancelled = _mailed(db_session, EditionKind.alert, [sport], _readers(db_session, 2),
                        at=T0 + dt.timedelta(minutes=2), status=EditionStatus.cancelled)
    _poll(db_session, feed_server, UPDATED, T0 + dt.timedelta(hours=1))

    with capture_logs() as logs:
        assert create_corrections(db_session, now=T0 + dt.timedelta(hours=1, minutes=1)) == []

    skipped = [e for e in logs if e["event"] == "correction.skipped"]
    assert len(skipped) == 1
    assert skipped[0]["reason"] == "earlier_edition_cancelled"
    assert (skipped[0]["article_id"], skipped[0]["edition_ids"]) == (sport.id, [cancelled.id])
    assert "@" not in repr(logs)  # ids only, never an address
    assert _corrections(db_session) == []


def test_odd_articles_are_skipped_and_the_rest_still_get_their_correction(db_session, feed_server):
    ensure_sections(db_session)
    _poll(db_session, feed_server, ORIGINAL, T0)
    sport, drought = _article(db_session, SPORT_GUID), _article(db_session, DROUGHT_GUID)
    _mailed(db_session, EditionKind.digest, [sport, drought], _readers(db_session, 1), at=T0 + dt.timedelta(minutes=5))
    both = UPDATED.replace("<title>الأمم المتحدة تحذر من موجة جفاف", "<title>تحديث: الأمم المتحدة تحذر من موجة جفاف")
    _poll(db_session, feed_server, both, T0 + dt.timedelta(hours=1))
    assert (sport.version, drought.version) == (2, 2)
    drought.url = "javascript:alert(1)"  # a row the mail could not link to
    db_session.flush()

    with capture_logs() as logs:
        made = create_corrections(db_session, now=T0 + dt.timedelta(hours=1, minutes=1))

    assert [c.params["article_id"] for c in made] == [sport.id]
    skipped = [e for e in logs if e["event"] == "correction.skipped"]
    assert [(e["reason"], e["article_id"]) for e in skipped] == [("article_unusable", drought.id)]
    # An article deleted outright takes its history with it: nothing to correct, no error.
    db_session.delete(sport)
    db_session.flush()
    assert create_corrections(db_session, now=T0 + dt.timedelta(hours=1, minutes=2)) == []


def test_corrections_off_creates_nothing(db_session, feed_server, monkeypatch):
    monkeypatch.setenv("CORRECTIONS", "off")
    reset_settings()
    ensure_sections(db_session)
    _poll(db_session, feed_server, ORIGINAL, T0)
    _mailed(db_session, EditionKind.digest, [_article(db_session, SPORT_GUID)], _readers(db_session, 1),
            at=T0 + dt.timedelta(minutes=5))
    _poll(db_session, feed_server, UPDATED, T0 + dt.timedelta(hours=1))
    assert create_corrections(db_session, now=T0 + dt.timedelta(hours=1, minutes=1)) == []
    assert _corrections(db_session) == []


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("CORRECTIONS", "sometimes", "CORRECTIONS: Input should be 'off', 'notes' or 'major'"),
        ("CORRECTIONS_MAX_AGE_DAYS", "0", "CORRECTIONS_MAX_AGE_DAYS: must be between 1 and 90 days"),
        ("CORRECTIONS_MAX_AGE_DAYS", "a week", "CORRECTIONS_MAX_AGE_DAYS:"),
    ],
)
def test_bad_correction_settings_stop_start_up_naming_the_variable(monkeypatch, env, value, message):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert message in str(err.value)


def test_policy_names_are_case_insensitive(monkeypatch):
    monkeypatch.setenv("CORRECTIONS", " Major ")
    assert load_settings().corrections == "major"
    monkeypatch.delenv("CORRECTIONS")
    assert load_settings().corrections == "notes"


def test_two_workers_racing_create_one_edition(pg_env, feed_server):
    """The second insert waits on the first's unique key, then finds it taken: it
    returns nothing and its own transaction still commits."""
    from service.db import session_scope

    with session_scope() as s:
        ensure_sections(s)
        _poll(s, feed_server, ORIGINAL, T0)
        _mailed(s, EditionKind.digest, [_article(s, SPORT_GUID)], _readers(s, 1), at=T0 + dt.timedelta(minutes=5))
        _poll(s, feed_server, UPDATED, T0 + dt.timedelta(hours=1))
    now = T0 + dt.timedelta(hours=1, minutes=1)
    first_flushed, results = threading.Event(), {}

    def first():
        with session_scope() as s:
            results["first"] = [e.id for e in create_corrections(s, now=now)]
            first_flushed.set()
            time.sleep(0.5)  # hold the uncommitted row while the second one inserts

    t = threading.Thread(target=first)
    t.start()
    assert first_flushed.wait(10)
    with session_scope() as s:
        # The key is not yet visible (uncommitted): this one inserts, blocks, then loses.
        results["second"] = [e.id for e in create_corrections(s, now=now)]
    t.join(10)
    assert len(results["first"]) == 1 and results["second"] == []
    with session_scope() as s:
        assert len(_corrections(s)) == 1


def test_the_ingest_task_enqueues_the_check_only_after_a_major_update(redis_url, monkeypatch):
    import json

    import redis

    from service.articles.ingest import PollReport
    from service.jobs.app import configure
    from service.usecases.ingest import corrections_if_major as enqueue_corrections_if_major

    configure()  # this process's producer talks to the test Redis, under the test prefix
    queue = get_settings().redis_key_prefix + "digests"
    client = redis.Redis.from_url(redis_url)
    try:
        assert enqueue_corrections_if_major([PollReport(feed_id=1, new=3, minor=2), PollReport(feed_id=2)]) is False
        assert client.llen(queue) == 0  # new articles and wording fixes: no check at all
        assert enqueue_corrections_if_major([PollReport(feed_id=1, minor=1), PollReport(feed_id=2, major=1)]) is True
        (raw,) = client.lrange(queue, 0, -1)
        assert json.loads(raw)["headers"]["task"] == names.MAKE_CORRECTIONS
        monkeypatch.setenv("CORRECTIONS", "off")
        reset_settings()
        assert enqueue_corrections_if_major([PollReport(feed_id=2, major=4)]) is False
        assert client.llen(queue) == 1
    finally:
        client.delete(queue)
        client.close()
        configure()


# ------------------------------------------------------------------ end to end


def _wait(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _scalar(stmt):
    from service.db import session_scope

    with session_scope() as s:
        return s.scalar(stmt)


def _add_reader(email: str) -> int:
    from service.db import session_scope

    with session_scope() as s:
        sub = reader(s, email, status=SubscriberStatus.active, frequency=Frequency.daily, alerts=True,
                     sections=[], consented_at=utcnow())
        return sub.id


def _make_feed_due() -> None:
    from service.db import session_scope

    with session_scope() as s:
        s.execute(sa.update(Feed).values(next_poll_at=None))


def _digest_to_a_and_b(feed_server, smtp_sink, monkeypatch):
    """Readers A and B get today's digest (carrying the original sport article)."""
    from service.jobs.app import app
    from service.usecases.digests import start_digest

    monkeypatch.setenv("FEED_URLS", feed_server.serve("/feed.xml", ORIGINAL))
    reset_settings()
    _add_reader("a@example.com")
    _add_reader("b@example.com")
    app.send_task(names.POLL_FEEDS)
    _wait(lambda: _scalar(sa.select(sa.func.count()).select_from(Article)) == 9, 30, "the feed to be ingested")
    digest_id = start_digest("daily", scheduled=False)
    assert sorted(r for m in smtp_sink.wait_for(2, 30) for r in m.rcpt_tos) == ["a@example.com", "b@example.com"]
    _wait(lambda: _scalar(sa.select(Edition.status).where(Edition.id == digest_id)) == EditionStatus.done, 30, "digest done")
    return digest_id


def _ingest_update(feed_server) -> None:
    from service.jobs.app import app

    feed_server.serve("/feed.xml", UPDATED)
    _make_feed_due()
    app.send_task(names.POLL_FEEDS)
    _wait(
        lambda: _scalar(sa.select(Article.version).where(Article.guid == SPORT_GUID)) == 2,
        30,
        "the update to be ingested",
    )


def _run_task_and_wait(name: str) -> dict:
    """Send a task to the worker; return its `corrections.checked` log line."""
    from service.jobs.app import app

    with capture_logs() as logs:
        app.send_task(name)
        return _wait(lambda: next((e for e in list(logs) if e["event"] == "corrections.checked"), None), 30, name)


@pytest.mark.slow
def test_readers_who_got_the_digest_get_one_correction(pg_env, redis_url, smtp_sink, feed_server,
                                                        celery_worker_factory, monkeypatch):
    with celery_worker_factory():
        digest_id = _digest_to_a_and_b(feed_server, smtp_sink, monkeypatch)
        _add_reader("c@example.com")  # subscribes after the digest went out
        smtp_sink.clear()

        _ingest_update(feed_server)  # poll_due sees the major update and enqueues the corrections task
        messages = smtp_sink.wait_for(2, 30)
        correction_id = _wait(
            lambda: _scalar(sa.select(Edition.id).where(Edition.kind == EditionKind.correction,
                                                        Edition.status == EditionStatus.done)),
            30,
            "the correction to be sent",
        )
        # Again: ingest (feed unchanged) and the corrections task itself, through the worker.
        _make_feed_due()
        checked = _run_task_and_wait(names.MAKE_CORRECTIONS)
        assert checked["created"] == 0 and checked["skipped"] == {"exists": 1}
        from service.jobs.app import app

        polled_before = _scalar(sa.select(Feed.last_polled_at))
        app.send_task(names.POLL_FEEDS)
        _wait(lambda: _scalar(sa.select(Feed.last_polled_at)) != polled_before, 30, "the second poll")
        time.sleep(1.0)  # room for any wrongly planned edition to reach the sink

    assert sorted(r for m in smtp_sink.messages for r in m.rcpt_tos) == ["a@example.com", "b@example.com"]
    assert smtp_sink.copies().most_common(1)[0][1] == 1  # one each, however often it ran
    assert _scalar(sa.select(sa.func.count()).select_from(Edition).where(Edition.kind == EditionKind.correction)) == 1
    params = _scalar(sa.select(Edition.params).where(Edition.id == correction_id))
    assert params["edition_ids"] == [digest_id]

    msg = messages[0].message
    assert SPORT_NEW_TITLE in msg["Subject"] and "تحديث" in msg["Subject"]
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    assert '<html lang="ar" dir="rtl"' in html and 'dir="rtl"' in html.split("<body", 1)[1][:400]
    assert SPORT_NEW_TITLE in html and SPORT_NOTE in html
    assert SPORT_NEW_TITLE in text and SPORT_NOTE in text
    assert ECONOMY_TITLE not in html  # the minor change is nobody's news
    assert "/unsubscribe/" in html and "/unsubscribe/" in msg["List-Unsubscribe"]
    assert "__NASHRA_" not in html + text


@pytest.mark.slow
def test_with_corrections_off_an_update_sends_nothing(pg_env, redis_url, smtp_sink, feed_server,
                                                      celery_worker_factory, monkeypatch):
    monkeypatch.setenv("CORRECTIONS", "off")
    reset_settings()
    assert get_settings().corrections == "off"
    with celery_worker_factory():
        _digest_to_a_and_b(feed_server, smtp_sink, monkeypatch)
        smtp_sink.clear()
        _ingest_update(feed_server)
        checked = _run_task_and_wait(names.MAKE_CORRECTIONS)  # even when asked directly
        assert checked["policy"] == "off" and checked["created"] == 0
        time.sleep(1.0)
    assert smtp_sink.messages == []
    assert _scalar(sa.select(sa.func.count()).select_from(Edition).where(Edition.kind == EditionKind.correction)) == 0
