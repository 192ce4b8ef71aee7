"""Special editions (issue 17 item 4): an editor's chosen stories in order with an
introduction, previewed (nothing kept), counted, scheduled on the site's clock across a
DST change (TIMEZONE=Europe/Berlin), cancelled, scheduled again, and sent by beat's tick
through a real Celery worker to the SMTP sink — the introduction first, the stories in
the editor's order, in the ledger like any edition."""

from __future__ import annotations

import datetime as dt
import email.policy
import time
from email import message_from_bytes

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.articles.sections import ensure_sections
from service.config import reset_settings
from service.db import session_scope
from service.delivery.planner import plan
from service.dispatch import Recorder
from service.editions.special import SpecialError
from service.models import (
    Article,
    ArticleVersion,
    AuditLog,
    Delivery,
    Edition,
    EditionKind,
    EditionStatus,
    Section,
    Subscriber,
    VersionKind,
    utcnow,
)
from service.newsletters import catalogue, membership
from service.usecases import editions, scheduled, special_editions
from service.usecases.special_editions import Composition
from tests.support.delivery import add_subscribers

INTRO = "ليلة انتخابية طويلة في المغرب.\n\nنتابع هنا النتائج الأولى ساعة بساعة."


def _article(s, title: str, slug: str = "arab-world", hours_ago: float = 2) -> int:
    seen = utcnow() - dt.timedelta(hours=hours_ago)
    section_id = s.scalar(sa.select(Section.id).where(Section.slug == slug))
    url = f"https://news.example/{slug}/{abs(hash(title))}"
    article = Article(guid=url, url=url, title=title, summary=f"موجز: {title}", body_html=f"<p>{title}</p>",
                      section_id=section_id, published_at=seen, first_seen_at=seen, last_major_at=seen,
                      version=1, content_hash="h" * 64)
    s.add(article)
    s.flush()
    s.add(ArticleVersion(article_id=article.id, version=1, kind=VersionKind.new, content_hash="h" * 64,
                         title=title, summary="", created_at=seen))
    s.flush()
    return article.id


def _section(slug: str) -> int:
    with session_scope() as s:
        return s.scalar(sa.select(Section.id).where(Section.slug == slug))


@pytest.fixture
def newsroom(pg_env):
    """Three stories (two sections) and readers of the `daily` digest (a special edition's
    newsletter unless the editor names another): 3 of every section, 2 of sports only;
    and 1 weekly reader (another newsletter's), 1 with no digest (alerts only), 1 unconfirmed."""
    with session_scope() as s:
        ensure_sections(s)
        ids = [_article(s, "فرز الأصوات يبدأ في الرباط"), _article(s, "نسبة المشاركة 50 بالمئة"),
               _article(s, "المنتخب يفوز في الرباط", slug="sports")]
        sports = s.scalar(sa.select(Section.id).where(Section.slug == "sports"))
        add_subscribers(s, 3, prefix="daily")
        add_subscribers(s, 2, prefix="sport", sections=[sports])
        add_subscribers(s, 1, prefix="weekly", frequency="weekly")
        add_subscribers(s, 1, prefix="alertsonly", frequency="none")
        add_subscribers(s, 1, prefix="pending", status="pending")
    return ids


def _editions() -> int:
    with session_scope() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(Edition)) or 0


def test_search_finds_headline_words_by_section_and_age(newsroom):
    found = special_editions.search("الرباط")
    assert {c.title for c in found} == {"فرز الأصوات يبدأ في الرباط", "المنتخب يفوز في الرباط"}
    assert [c.title for c in special_editions.search("الرباط", section_id=_section("sports"))] == [
        "المنتخب يفوز في الرباط"]
    assert special_editions.search("%") == [] and special_editions.search("_") == []  # LIKE's wildcards are words
    with session_scope() as s:
        _article(s, "فرز قديم في الرباط", hours_ago=24 * 5)
    assert "فرز قديم في الرباط" not in {c.title for c in special_editions.search("فرز", days=3)}
    assert "فرز قديم في الرباط" in {c.title for c in special_editions.search("فرز", days=7)}


def test_preview_shows_intro_then_stories_in_the_editors_order_counts_and_keeps_nothing(newsroom):
    a, b, c = newsroom
    comp = Composition(title="ليلة الانتخابات", intro=INTRO, article_ids=(c, a, b))
    shown = special_editions.preview(comp)
    assert shown.subject.strip("\u200f").startswith("ليلة الانتخابات")
    assert shown.audience == 5 and shown.reach == "سيصل إلى 5 مشتركين" and shown.variants == ("all",)
    text = shown.text
    places = [text.index(x) for x in ("ليلة انتخابية طويلة", "نتابع هنا النتائج", "المنتخب يفوز",
                                      "فرز الأصوات", "نسبة المشاركة")]
    assert places == sorted(places)
    assert "<p class=\"summary\"" in shown.html or "ليلة انتخابية طويلة" in shown.html
    assert _editions() == 0  # a preview leaves nothing behind
    # Only the sports section: its two readers and the readers of every section.
    narrowed = special_editions.preview(Composition(title="رياضة", article_ids=(c,), section_ids=(_section("sports"),)))
    assert narrowed.audience == 5
    only_world = special_editions.preview(Composition(title="عالم", article_ids=(a,), section_ids=(_section("arab-world"),)))
    assert only_world.audience == 3


@pytest.mark.parametrize("comp,why", [
    (Composition(title="", article_ids=(1,)), "عنوان"),
    (Composition(title="ع", article_ids=()), "خبراً واحداً"),
    (Composition(title="ع", article_ids=(2**40,)), "غير صالح"),
    (Composition(title="ع", article_ids=(999_999,)), "لا يوجد خبر"),
    (Composition(title="ع\x00", article_ids=(1,)), "محرف تحكّم"),
    (Composition(title="ع", intro="x" * 5000, article_ids=(1,)), "المقدمة أطول"),
    (Composition(title="ع", article_ids=(1,), section_ids=(999_999,)), "لا يوجد قسم"),
])
def test_bad_compositions_are_refused_with_the_reason_and_nothing_is_made(newsroom, comp, why):
    comp = Composition(comp.title, comp.intro, tuple(newsroom[0] if i == 1 else i for i in comp.article_ids),
                       comp.section_ids)
    with pytest.raises(SpecialError, match=why):
        special_editions.compose(comp, editor_id=None, dispatcher=Recorder())
    assert _editions() == 0


def test_scheduled_across_dst_cancelled_rescheduled_then_sent_by_beat_through_a_worker(
        newsroom, monkeypatch, redis_url, smtp_sink, celery_worker_factory):
    monkeypatch.setenv("TIMEZONE", "Europe/Berlin")
    reset_settings()
    a, b, c = newsroom
    comp = Composition(title="ليلة الانتخابات", intro=INTRO, article_ids=(b, c, a))
    # Saturday noon, the day before Berlin's clocks go forward (2027-03-28 02:00 → 03:00).
    saturday = dt.datetime(2027, 3, 27, 12, 0, tzinfo=dt.UTC)
    at = scheduled.parse_send_at("2027-03-28 07:00", now=saturday)
    assert at == dt.datetime(2027, 3, 28, 5, 0, tzinfo=dt.UTC)  # 07:00 CEST (UTC+2), not 24 h of CET later
    assert scheduled.local_text(at) == "2027-03-28 07:00 (Europe/Berlin)"
    with pytest.raises(scheduled.ScheduleError, match="does not exist"):
        scheduled.parse_send_at("2027-03-28 02:30", now=saturday)  # the hour the clocks skip
    with pytest.raises(scheduled.ScheduleError, match="past"):
        scheduled.parse_send_at("2027-03-27 12:00", now=saturday)
    with pytest.raises(scheduled.ScheduleError, match="30 days"):
        scheduled.parse_send_at("2027-05-01 07:00", now=saturday)

    rec = Recorder()
    eid = special_editions.compose(comp, editor_id=None, send_at=at, dispatcher=rec)
    assert rec.calls == []  # nothing is planned before its time
    assert editions.progress(eid)["send_at"] == "2027-03-28T05:00:00+00:00"
    assert scheduled.start_due(now=at - dt.timedelta(seconds=1), dispatcher=rec) == []
    # Nobody plans it early, not even a stray message or the sweeper.
    with session_scope() as s:
        assert plan(s, eid) == 0 and s.get(Edition, eid).status is EditionStatus.draft

    # Cancelled before its time: beat's tick after it finds nothing, nothing goes.
    editions.steer(eid, "cancel", "editor:1", role="editor")
    assert scheduled.start_due(now=at + dt.timedelta(seconds=30), dispatcher=rec) == []
    with pytest.raises(scheduled.NotScheduled):
        scheduled.reschedule(eid, "2027-03-28 08:00", actor="editor:1", role="editor", now=saturday)

    # Again, then moved by an hour (08:00 local), then beat at 06:00:30 UTC starts it.
    eid = special_editions.compose(comp, editor_id=None, send_at=at, dispatcher=rec)
    moved = scheduled.reschedule(eid, "2027-03-28 08:00", actor="editor:1", role="editor", now=saturday,
                                 dispatcher=rec)
    assert moved == dt.datetime(2027, 3, 28, 6, 0, tzinfo=dt.UTC)
    assert scheduled.start_due(now=at + dt.timedelta(seconds=30), dispatcher=rec) == []  # 07:00 is no longer it
    with session_scope() as s:
        assert s.scalar(sa.select(AuditLog.details).where(AuditLog.action == "edition.reschedule"))["after"] \
            .startswith("2027-03-28T06:00")
    with celery_worker_factory(queues=("digests", "default"), concurrency=2):
        assert scheduled.start_due(now=moved + dt.timedelta(seconds=30)) == [eid]  # the real dispatcher
        messages = smtp_sink.wait_for(5, timeout=30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and editions.progress(eid)["status"] != "done":
            time.sleep(0.2)
    assert sorted(r for m in messages for r in m.rcpt_tos) == sorted(
        [f"daily{i}@example.com" for i in range(3)] + [f"sport{i}@example.com" for i in range(2)])
    msg = message_from_bytes(messages[0].data, policy=email.policy.default)
    # Its newsletter's own list (the `daily` digest's).
    assert "ليلة الانتخابات" in msg["Subject"] and msg["List-Id"].endswith("<daily.nashra.example>")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = msg.get_body(("plain",)).get_content()
    places = [text.index(x) for x in ("ليلة انتخابية طويلة", "نسبة المشاركة", "المنتخب يفوز", "فرز الأصوات")]
    assert places == sorted(places)
    with session_scope() as s:
        edition = s.get(Edition, eid)
        assert edition.kind is EditionKind.special and edition.status is EditionStatus.done
        assert edition.recipients == 5
        assert s.scalar(sa.select(sa.func.count()).select_from(Delivery).where(Delivery.edition_id == eid)) == 5
    assert editions.progress(eid)["send_at"] is None  # it left


def test_a_double_click_is_one_special_edition(newsroom):
    comp = Composition(title="عدد خاص", article_ids=tuple(newsroom))
    rec = Recorder()
    first = special_editions.compose(comp, editor_id=None, idempotency_key="k1", dispatcher=rec)
    again = special_editions.compose(comp, editor_id=None, idempotency_key="k1", dispatcher=rec)
    assert first == again and _editions() == 1


def test_the_cli_composes_previews_schedules_moves_and_cancels(newsroom, tmp_path, redis_url, smtp_sink):
    from tests.test_cli import nashra

    a, b, c = newsroom
    intro = tmp_path / "intro.txt"
    intro.write_text(INTRO, encoding="utf-8")
    with session_scope() as s:
        url_c = s.get(Article, c).url
    at = (utcnow() + dt.timedelta(days=1)).astimezone(dt.UTC)
    local = scheduled.local_text(at).split(" (")[0]
    look = nashra("edition", "compose", "--title", "ليلة الانتخابات", "--article", str(b), "--article", url_c,
                  "--intro-file", str(intro), "--sections", "sports,arab-world", "--preview", str(tmp_path / "p"),
                  "--test-to", "desk@example.com")
    assert look.returncode == 0, look.stderr
    [copy] = smtp_sink.wait_for(1, timeout=20)
    assert copy.rcpt_tos == ["desk@example.com"] and copy.message["Subject"].startswith("[تجربة]")
    assert "سيصل إلى 5 مشتركين" in look.stdout and _editions() == 0  # a look only: nothing made without --yes
    html = (tmp_path / "p" / "special-all.html").read_text(encoding="utf-8")
    assert html.index("ليلة انتخابية طويلة") < html.index("نسبة المشاركة") < html.index("المنتخب يفوز")
    made = nashra("edition", "compose", "--title", "ليلة الانتخابات", "--article", str(b), "--article", url_c,
                  "--send-at", local, "--yes")
    assert made.returncode == 0, made.stderr
    assert "scheduled for" in made.stdout
    with session_scope() as s:
        edition = s.scalars(sa.select(Edition)).one()
        assert edition.kind is EditionKind.special and edition.status is EditionStatus.draft
        assert abs((edition.send_at - at).total_seconds()) < 60
        assert [ea.article_id for ea in edition.articles] == [b, c]
    assert f"scheduled {local}" in nashra("status", str(edition.id)).stdout
    bad = nashra("edition", "compose", "--title", "x", "--article", "https://nowhere.example/x", "--yes")
    assert bad.returncode == 2 and "no ingested article" in bad.stderr
    late = nashra("edition", "reschedule", str(edition.id), "--send-at", "2020-01-01 07:00")
    assert late.returncode == 2 and "past" in late.stderr
    assert nashra("edition", "cancel", str(edition.id)).returncode == 0
    gone = nashra("edition", "reschedule", str(edition.id), "--now")
    assert gone.returncode == 2 and "not scheduled" in gone.stderr
    alert = nashra("alert", "send", "--headline", "خبر", "--link", "https://news.example/a", "--send-at", local,
                   "--yes")
    assert alert.returncode == 0 and "alert scheduled for" in alert.stdout, alert.stderr


@pytest.mark.parametrize("hijri", [False, True])
def test_the_special_mail_passes_the_rtl_rules_with_forty_stories_under_gmails_clip(hijri):
    import dataclasses

    from service.rendering import contexts
    from service.rendering.personalise import personalise
    from service.rendering.render import render_variant
    from tests.support import email_samples as samples
    from tests.support.email_checks import check_email

    site = dataclasses.replace(samples.SITE, hijri_dates=hijri, arabic_digits=hijri)
    stories = samples.articles(40)
    ctx = contexts.special_context(site, title="ليلة الانتخابات 2026", intro=[
        "ليلة انتخابية طويلة في المغرب.", "BBC وAFP تنقلان النتائج الأولى بعد 10 مساءً.",
    ], articles=stories, edition_date=samples.EDITION_AT)
    variant = render_variant("special", ctx)
    assert check_email(variant.html, variant.text) == []
    html, text = personalise(variant, unsubscribe_url="https://news.example/unsubscribe/abc.def",
                             preferences_url="https://news.example/preferences/abc.def")
    assert check_email(html, text) == []
    assert len(variant.html.encode()) < 100 * 1024
    order = [text.index(a.url) for a in stories[:5]]
    assert order == sorted(order) and text.index("ليلة انتخابية") < order[0]


def test_a_reader_who_left_the_newsletter_after_planning_is_skipped(newsroom, smtp_sink):
    from tests.support.delivery import ledger, run_all_batches

    eid = special_editions.compose(Composition(title="عدد خاص", article_ids=(newsroom[0],)), editor_id=None,
                                   dispatcher=Recorder())
    with session_scope() as s:
        assert plan(s, eid) == 5
        leaver = s.scalar(sa.select(Subscriber.id).where(Subscriber.email == "daily0@example.com"))
        assert membership.leave(s, leaver, catalogue.by_slug(s, "daily").id) == 1  # still on `alerts`
    run_all_batches(eid)
    states = ledger(eid)
    assert states["daily0@example.com"] == "skipped" and list(states.values()).count("sent") == 4
    assert "daily0@example.com" not in smtp_sink.recipients()


def test_the_audience_on_sqlite_too(sqlite_env):
    with session_scope() as s:
        ensure_sections(s)
        sports = s.scalar(sa.select(Section.id).where(Section.slug == "sports"))
        world = s.scalar(sa.select(Section.id).where(Section.slug == "arab-world"))
        a = _article(s, "المنتخب يفوز", slug="sports")
        add_subscribers(s, 2, prefix="all")
        add_subscribers(s, 1, prefix="sport", sections=[sports])
        add_subscribers(s, 1, prefix="world", sections=[world])
        add_subscribers(s, 1, prefix="none", frequency="none")
    assert special_editions.preview(Composition(title="ع", article_ids=(a,))).audience == 4
    assert special_editions.preview(Composition(title="ع", article_ids=(a,), section_ids=(sports,))).audience == 3


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(title=st.text(max_size=250), intro=st.text(max_size=300),
       extra=st.lists(st.integers(min_value=-5, max_value=2**33), max_size=3))
def test_hypothesis_over_compose_a_clear_refusal_or_an_edition(newsroom, title, intro, extra):
    comp = Composition(title=title, intro=intro, article_ids=(newsroom[0], *extra))
    try:
        eid = special_editions.compose(comp, editor_id=None, dispatcher=Recorder())
    except SpecialError as exc:
        assert str(exc)
        return
    with session_scope() as s:
        edition = s.get(Edition, eid)
        assert edition.title and "\x00" not in edition.title + "".join(edition.params["intro"])


def test_the_autumn_hour_that_happens_twice_is_its_first_pass():
    import zoneinfo

    from service.editions import scheduled as domain

    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    assert domain.parse("2027-10-31 02:30", berlin) == dt.datetime(2027, 10, 31, 0, 30, tzinfo=dt.UTC)  # CEST
    assert domain.parse("2027-10-31 03:30", berlin) == dt.datetime(2027, 10, 31, 2, 30, tzinfo=dt.UTC)  # CET
    assert domain.parse("2027-10-31T02:30+01:00", berlin) == dt.datetime(2027, 10, 31, 1, 30, tzinfo=dt.UTC)
