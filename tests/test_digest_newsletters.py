"""Several digest newsletters (issue 17): a third digest — a Friday sports round-up at
07:00, drawing on the sports section only — makes its own editions at its own slot, next
to the daily digest's, and a reader on both gets both.

Beat's tick (`usecases.digests.send_due`) is driven with explicit `now` values against
the real PostgreSQL; planning writes the real ledger.  The site's clock is Asia/Amman
(UTC+3 all year): the daily digest leaves at 06:00 (03:00 UTC), the sports one on
Fridays at 07:00 (04:00 UTC) — an hour DIGEST_HOURS does not list, offered for it
because it is its default.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from service import dispatch
from service.config import reset_settings
from service.db import session_scope
from service.editions import schedule, upcoming
from service.editions.digests import DigestError, create_digest
from service.editions.variants import render_variant_for
from service.models import (
    Article,
    ArticleVersion,
    Edition,
    EditionArticle,
    Frequency,
    Newsletter,
    NewsletterKind,
    Section,
    VersionKind,
)
from service.subscribers import hours
from service.usecases.digests import send_due
from tests.support.readers import reader
from tests.test_reader_schedule import digests, readers_of

UTC = dt.UTC
TICK = dt.timedelta(minutes=15)
FRIDAY = dt.date(2026, 4, 3)


@pytest.fixture
def sports_env(pg_env, monkeypatch):
    monkeypatch.setenv("TIMEZONE", "Asia/Amman")
    monkeypatch.setenv("DIGEST_DAILY_AT", "06:00")
    monkeypatch.setenv("DIGEST_HOURS", "6,18")
    monkeypatch.setenv("DIGEST_WEEKLY_DAY", "5")
    monkeypatch.setenv("DIGEST_MAX_LATE_HOURS", "4")
    reset_settings()
    yield
    reset_settings()


def newsroom() -> dict[str, int]:
    """Sports and economy stories every two hours over the week before Friday; the
    sports newsletter; four readers."""
    with session_scope() as s:
        sports = Section(slug="sports", name="رياضة", position=1)
        economy = Section(slug="economy", name="اقتصاد", position=2)
        s.add_all([sports, economy])
        s.flush()
        s.add(Newsletter(slug="sports", name="رياضة الجمعة", description="", kind=NewsletterKind.digest,
                         frequency=Frequency.weekly, default_hour=7, default_weekday=4, sections=[sports.id],
                         offered=True, hidden=False, position=3))
        s.flush()
        start = dt.datetime.combine(FRIDAY - dt.timedelta(days=6), dt.time(0), tzinfo=UTC)
        for n in range(7 * 12):
            section = sports if n % 2 else economy
            at = start + dt.timedelta(hours=2 * n)
            a = Article(guid=f"urn:nl:{n}", url=f"https://news.example/nl/{n}", title=f"{section.name} {n}",
                        summary="ملخص", content_hash=f"{n:064d}", first_seen_at=at, last_major_at=at, version=1,
                        section_id=section.id)
            s.add(a)
            s.flush()
            s.add(ArticleVersion(article_id=a.id, version=1, kind=VersionKind.new, content_hash=f"{n:064d}",
                                 title=a.title, created_at=at))
        reader(s, "daily@example.com", frequency="daily", alerts=False)
        reader(s, "sports@example.com", newsletters=["sports"])
        reader(s, "both@example.com", newsletters=["daily", "sports"])
        late = reader(s, "sports-evening@example.com", newsletters=["sports"])
        s.execute(sa.text("UPDATE subscriptions SET digest_hour = 18 WHERE subscriber_id = :id"), {"id": late.id})
        return {"sports": sports.id, "economy": economy.id}


def tick(start: dt.datetime, end: dt.datetime) -> dict[int, dt.datetime]:
    made, now = {}, start
    while now < end:
        for edition_id in send_due(now, dispatcher=dispatch.Recorder()):
            made[edition_id] = now
        now += TICK
    return made


def sections_of(edition_id: int) -> set[int]:
    with session_scope() as s:
        return set(s.scalars(sa.select(Article.section_id).join(EditionArticle, EditionArticle.article_id == Article.id)
                             .where(EditionArticle.edition_id == edition_id)))


def test_a_third_digest_makes_its_own_edition_at_its_slot_with_its_sections_only(sports_env):
    ids = newsroom()
    made = tick(dt.datetime.combine(FRIDAY, dt.time(2, 0), tzinfo=UTC),
                dt.datetime.combine(FRIDAY, dt.time(16, 0), tzinfo=UTC))
    found = digests()
    when = {key: made[e.id] for key, e in found.items()}
    # The daily digest keeps its key; the sports one is named by its slug, on Friday (d4)
    # at 04:00 UTC (07:00 in Amman) and, for the reader who chose 18:00, at 15:00 UTC.
    # The site's weekly digest has no readers: no edition.
    assert when == {
        "digest:daily:u03:2026-04-03": dt.datetime(2026, 4, 3, 3, 0, tzinfo=UTC),
        "digest:sports:d4u04:2026-04-03": dt.datetime(2026, 4, 3, 4, 0, tzinfo=UTC),
        "digest:sports:d4u15:2026-04-03": dt.datetime(2026, 4, 3, 15, 0, tzinfo=UTC),
    }
    daily, sports = found["digest:daily:u03:2026-04-03"], found["digest:sports:d4u04:2026-04-03"]
    with session_scope() as s:
        newsletter = s.scalar(sa.select(Newsletter).where(Newsletter.slug == "sports"))
        assert (sports.newsletter_id, sports.title, sports.frequency) == (newsletter.id, "رياضة الجمعة",
                                                                         Frequency.weekly)
        assert daily.newsletter_id != newsletter.id and daily.title == "النشرة اليومية"
    assert sections_of(sports.id) == {ids["sports"]}  # only the newsletter's section
    assert sections_of(daily.id) == {ids["sports"], ids["economy"]}  # the daily draws on every section
    assert sports.window_end - sports.window_start == dt.timedelta(days=7)
    with session_scope() as s:  # its mail speaks of it by name, not as «the weekly digest»
        mail = render_variant_for(s, s.get(Edition, sports.id), "all")
        assert mail.subject.endswith("| النشرة رياضة الجمعة") and "الأسبوعية" not in mail.text
        assert render_variant_for(s, s.get(Edition, daily.id), "all").subject.endswith("| النشرة اليومية")

    # Each edition reaches its own newsletter's readers of that slot; the reader on both gets both.
    assert readers_of(daily.id) == {"daily@example.com", "both@example.com"}
    assert readers_of(sports.id) == {"sports@example.com", "both@example.com"}
    assert readers_of(found["digest:sports:d4u15:2026-04-03"].id) == {"sports-evening@example.com"}

    # The week after, the sports window starts where this one ended (chained per newsletter).
    tick(dt.datetime(2026, 4, 10, 3, 45, tzinfo=UTC), dt.datetime(2026, 4, 10, 4, 15, tzinfo=UTC))
    assert digests()["digest:sports:d4u04:2026-04-10"].window_start == sports.window_end


def test_the_default_hour_is_offered_and_a_hidden_newsletter_makes_nothing(sports_env):
    newsroom()
    with session_scope() as s:
        newsletter = s.scalar(sa.select(Newsletter).where(Newsletter.slug == "sports"))
        assert 7 in hours.offered_hours(newsletter=newsletter) and 7 not in hours.offered_hours()
        friday_7 = dt.datetime(2026, 4, 3, 4, 0, tzinfo=UTC)
        slots = upcoming.upcoming_slots(s, newsletter, now=friday_7 - dt.timedelta(hours=2))
        assert [(u.slot.key, u.readers) for u in slots] == [("digest:sports:d4u04:2026-04-03", 2),
                                                            ("digest:sports:d4u15:2026-04-03", 1)]
        newsletter.hidden = True
    assert "sports" not in {ref.slug for ref in schedule_refs()}
    tick(dt.datetime(2026, 4, 3, 3, 45, tzinfo=UTC), dt.datetime(2026, 4, 3, 4, 15, tzinfo=UTC))
    assert not [key for key in digests() if key.startswith("digest:sports:")]
    with session_scope() as s, pytest.raises(DigestError, match="hidden"):
        create_digest(s, "sports", now=friday_7)


def schedule_refs():
    with session_scope() as s:
        return schedule.digest_refs(s)
