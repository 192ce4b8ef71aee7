"""The reader's own clock (issue 22, item 2): digest hours, weekdays and quiet hours in
the reader's time zone, DST included, with digests still made once per slot (a UTC hour).

Beat's tick (`usecases.digests.send_due`) is driven with explicit `now` values against
the real PostgreSQL, every hour of simulated time; planning writes the real ledger.  The
site's TIMEZONE is the default Asia/Amman, which has kept UTC+3 all year since 2022 (no
DST: checked below with zoneinfo); Europe/Berlin moves its clocks on 2026-03-29 (01:00
UTC, +1 → +2) and 2026-10-25 (01:00 UTC, +2 → +1).  Quiet hours are checked through the
real batch (a real SMTP sink) on the real clock, with zones chosen around it.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from service import dispatch
from service.config import reset_settings
from service.db import session_scope
from service.delivery.planner import plan
from service.editions import schedule
from service.editions.catchup import create_catchup
from service.models import (
    Article,
    ArticleVersion,
    Delivery,
    Edition,
    EditionKind,
    Frequency,
    Subscriber,
    Subscription,
    VersionKind,
    utcnow,
)
from service.newsletters import catalogue
from service.subscribers import clocks, quiet
from service.usecases.digests import send_due
from tests.support.delivery import ledger, renderer
from tests.support.readers import reader as make_reader

UTC = dt.UTC


@pytest.fixture
def amman(pg_env, monkeypatch):
    for name in ("TIMEZONE", "DIGEST_DAILY_AT", "DIGEST_HOURS", "DIGEST_WEEKLY_DAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DIGEST_MAX_LATE_HOURS", "4")
    monkeypatch.setenv("CLICK_TRACKING", "false")
    reset_settings()
    yield
    reset_settings()


def reader(session, email: str, *, zone: str | None = None, hour: int | None = None, weekday: int | None = None,
           frequency: str = "daily", **kw) -> int:
    return make_reader(session, email, frequency=frequency, alerts=True, digest_hour=hour, digest_weekday=weekday,
                       time_zone=zone, **kw).id


def news_every_hour(session, start: dt.datetime, hours: int, tag: str) -> None:
    for n in range(hours):
        at = start + dt.timedelta(hours=n)
        a = Article(guid=f"urn:tz:{tag}:{n}", url=f"https://news.example/{tag}/{n}", title=f"خبر {n}",
                    summary="ملخص", content_hash=f"{tag}{n:060d}"[:64], first_seen_at=at, last_major_at=at, version=1)
        session.add(a)
        session.flush()
        session.add(ArticleVersion(article_id=a.id, version=1, kind=VersionKind.new, content_hash="0" * 64,
                                   title=a.title, created_at=at))


def tick_hourly(start: dt.datetime, end: dt.datetime, hours: range | set = range(24)) -> dict[int, dt.datetime]:
    """Beat's tick at every UTC hour from start to end (of `hours`: the others would make
    nothing for this test's readers, and a tick costs a few queries): {edition id: the tick
    that made it}."""
    made: dict[int, dt.datetime] = {}
    now = start
    while now < end:
        if now.hour in hours:
            for edition_id in send_due(now, dispatcher=dispatch.Recorder()):
                made[edition_id] = now
        now += dt.timedelta(hours=1)
    return made


def who_gets(made: dict[int, dt.datetime]) -> dict[str, list[tuple[str, dt.datetime]]]:
    """Each reader's digests: [(edition key, when it was made)], in order."""
    out: dict[str, list[tuple[str, dt.datetime]]] = {}
    with session_scope() as s:
        for edition_id, at in sorted(made.items(), key=lambda x: x[1]):
            edition = s.get(Edition, edition_id)
            if edition.kind is not EditionKind.digest:
                continue
            plan(s, edition_id, renderer=renderer())
            for email in s.scalars(sa.select(Subscriber.email).join(Delivery, Delivery.subscriber_id == Subscriber.id)
                                   .where(Delivery.edition_id == edition_id)):
                out.setdefault(email, []).append((edition.idempotency_key, at))
    return out


def digest(key: str) -> Edition:
    with session_scope() as s:
        return s.scalars(sa.select(Edition).where(Edition.idempotency_key == key)).one()


def test_amman_has_kept_one_offset_since_2022():
    amman = zoneinfo.ZoneInfo("Asia/Amman")
    offsets = {dt.datetime(2026, month, 15, 12, tzinfo=UTC).astimezone(amman).utcoffset() for month in range(1, 13)}
    assert offsets == {dt.timedelta(hours=3)}


def test_a_berlin_readers_0700_digest_across_both_dst_changes(amman):
    spring = (dt.datetime(2026, 3, 28, 0, tzinfo=UTC), dt.datetime(2026, 3, 30, 0, tzinfo=UTC))
    autumn = (dt.datetime(2026, 10, 24, 0, tzinfo=UTC), dt.datetime(2026, 10, 26, 0, tzinfo=UTC))
    with session_scope() as s:
        reader(s, "berlin@example.com", zone="Europe/Berlin", hour=7)
        reader(s, "amman@example.com")  # never chose a zone nor an hour: 07:00 on the site's clock
        reader(s, "doha@example.com", zone="Asia/Qatar", hour=7)  # UTC+3 too: the same slot as Amman
        reader(s, "kolkata@example.com", zone="Asia/Kolkata", hour=7)  # UTC+5:30
        for start, end in (spring, autumn):
            news_every_hour(s, start - dt.timedelta(days=2), int((end - start).total_seconds() // 3600) + 48,
                            start.strftime("%m"))
    # Every tick from 00:00 to 07:00 UTC: none of these readers is due later in the day.
    made = {**tick_hourly(*spring, hours=range(8)), **tick_hourly(*autumn, hours=range(8))}
    got = who_gets(made)

    berlin = [at for _, at in got["berlin@example.com"]]
    assert berlin == [
        dt.datetime(2026, 3, 28, 6, tzinfo=UTC),  # winter: 07:00 in Berlin is 06:00 UTC
        dt.datetime(2026, 3, 29, 5, tzinfo=UTC),  # summer (from 01:00 UTC that day): 05:00 UTC
        dt.datetime(2026, 10, 24, 5, tzinfo=UTC),
        dt.datetime(2026, 10, 25, 6, tzinfo=UTC),  # winter again (from 01:00 UTC that day)
    ]
    berlin_tz = zoneinfo.ZoneInfo("Europe/Berlin")
    assert {at.astimezone(berlin_tz).strftime("%H:%M") for at in berlin} == {"07:00"}
    # Amman's (and Doha's) 07:00 is 04:00 UTC all year, whatever Europe does.
    for who in ("amman@example.com", "doha@example.com"):
        assert {at.time() for _, at in got[who]} == {dt.time(4, 0)} and len(got[who]) == 4
    assert [k for k, _ in got["amman@example.com"]] == [k for k, _ in got["doha@example.com"]]
    # Kolkata's 07:00 is 01:30 UTC: its slot is the UTC hour that holds it (06:30 their time).
    assert {at.time() for _, at in got["kolkata@example.com"]} == {dt.time(1, 0)}
    assert len(got["kolkata@example.com"]) == 4
    # One edition per slot: readers of different zones due at the same instant share it.
    assert got["amman@example.com"][0][0] == "digest:daily:u04:2026-03-28"

    # The windows: when the clock change moved the Berlin reader an hour later in UTC,
    # their next digest starts where their last ended (no hour of articles in neither);
    # moved earlier, it overlaps by that hour (an article maybe twice, never none).
    keys = [k for k, _ in got["berlin@example.com"]]
    assert digest(keys[3]).window_start == digest(keys[2]).window_end  # 25 Oct: 05:00 → 06:00 UTC
    assert digest(keys[1]).window_start == digest(keys[0]).window_end - dt.timedelta(hours=1)  # 29 Mar


def test_a_weekly_readers_day_crossing_midnight_utc(amman):
    start, end = dt.datetime(2026, 3, 28, 12, tzinfo=UTC), dt.datetime(2026, 3, 30, 0, tzinfo=UTC)
    with session_scope() as s:
        # Monday 07:00 in Tokyo (UTC+9) is Sunday 22:00 UTC; Saturday 21:00 in New York
        # (UTC-4 in summer) is Sunday 01:00 UTC: their day is theirs, not UTC's.
        reader(s, "tokyo@example.com", zone="Asia/Tokyo", hour=7, weekday=0, frequency="weekly")
        reader(s, "new-york@example.com", zone="America/New_York", hour=21, weekday=5, frequency="weekly")
        reader(s, "tokyo-sunday@example.com", zone="Asia/Tokyo", hour=7, weekday=6, frequency="weekly")
        news_every_hour(s, start - dt.timedelta(days=8), 16 * 24, "wk")
    got = who_gets(tick_hourly(start, end, hours={0, 1, 2, 20, 21, 22, 23}))
    assert got["tokyo@example.com"] == [("digest:weekly:d6u22:2026-03-29", dt.datetime(2026, 3, 29, 22, tzinfo=UTC))]
    assert got["new-york@example.com"] == [("digest:weekly:d6u01:2026-03-29", dt.datetime(2026, 3, 29, 1, tzinfo=UTC))]
    # Sunday 07:00 in Tokyo is Saturday 22:00 UTC: another slot, the day before.
    assert got["tokyo-sunday@example.com"] == [
        ("digest:weekly:d5u22:2026-03-28", dt.datetime(2026, 3, 28, 22, tzinfo=UTC))]


def test_the_slots_hold_every_zone_once_a_day(amman):
    """Every zone's every offered hour lands in exactly one slot a day (the fast path of
    `schedule.hits` against trying every hour), across the days the clocks change."""
    days = [dt.date(2026, 3, 29), dt.date(2026, 10, 25), dt.date(2026, 4, 5), dt.date(2026, 12, 7)]

    @settings(max_examples=25, deadline=None)
    @given(day=st.sampled_from(days), zone=st.sampled_from(sorted(clocks.known_zones())))
    def check(day, zone):
        tz = zoneinfo.ZoneInfo(zone)
        for hour in (6, 7, 8, 12, 18, 21):
            slot = schedule.slot_of(Frequency.daily, day, hour, tz=tz)
            assert (hour, day, zone) in schedule.hits(slot.at), (zone, day, hour)
            due = schedule.due_at(day, hour, tz=tz)
            assert slot.at <= due < slot.at + dt.timedelta(hours=1)

    check()


# ------------------------------------------------------------------ quiet hours


def quiet_readers(now: dt.datetime) -> set[str]:
    with session_scope() as s:
        alerts = catalogue.by_slug(s, catalogue.ALERTS)
        return set(s.scalars(sa.select(Subscriber.email).join(Subscription, Subscription.subscriber_id == Subscriber.id)
                             .where(Subscription.newsletter_id == alerts.id, quiet.quiet_at(now))))


def test_quiet_hours_are_on_the_readers_clock_to_the_minute(amman):
    with session_scope() as s:
        for zone in ("Europe/Berlin", "Asia/Kolkata", None):
            reader(s, f"{zone or 'site'}@example.com".replace("/", "-").lower(), zone=zone, quiet_start=22,
                   quiet_end=7)
    berlin, kolkata, site = "europe-berlin@example.com", "asia-kolkata@example.com", "site@example.com"
    at = lambda *a: dt.datetime(*a, tzinfo=UTC)  # noqa: E731
    assert quiet_readers(at(2026, 1, 15, 3, 59)) == {berlin, site}  # 06:59 in Amman, 09:29 in Kolkata
    assert quiet_readers(at(2026, 1, 15, 4, 0)) == {berlin}  # 07:00 in Amman, 09:30 in Kolkata, 05:00 in Berlin
    assert quiet_readers(at(2026, 1, 15, 1, 29)) == {berlin, kolkata, site}  # 06:59 in Kolkata
    assert quiet_readers(at(2026, 1, 15, 1, 30)) == {berlin, site}  # 07:00 in Kolkata
    assert berlin in quiet_readers(at(2026, 1, 15, 5, 59))  # winter: 06:59 in Berlin
    assert berlin not in quiet_readers(at(2026, 1, 15, 6, 0))
    assert berlin in quiet_readers(at(2026, 7, 15, 4, 59))  # summer: 06:59 in Berlin
    assert berlin not in quiet_readers(at(2026, 7, 15, 5, 0))
    assert quiet_readers(at(2026, 7, 15, 16, 29)) == set()  # 21:59 in Kolkata, 19:29 in Amman
    assert quiet_readers(at(2026, 7, 15, 16, 30)) == {kolkata}  # 22:00 in Kolkata
    assert quiet_readers(at(2026, 7, 15, 19, 0)) == {kolkata, site}  # 22:00 in Amman
    assert quiet_readers(at(2026, 7, 15, 19, 59)) == {site, kolkata}  # 01:29 in Kolkata, 21:59 in Berlin
    assert quiet_readers(at(2026, 7, 15, 20, 0)) == {berlin, kolkata, site}  # 22:00 in Berlin


def test_an_alert_is_held_for_the_reader_whose_night_it_is(amman, smtp_sink):
    # Tokyo (UTC+9) and São Paulo (UTC-3): twelve hours apart, neither keeps DST.
    now = utcnow()
    tokyo_hour = now.astimezone(zoneinfo.ZoneInfo("Asia/Tokyo")).hour
    sp_hour = now.astimezone(zoneinfo.ZoneInfo("America/Sao_Paulo")).hour
    window = dict(quiet_start=tokyo_hour, quiet_end=(tokyo_hour + 2) % 24)
    with session_scope() as s:
        reader(s, "tokyo@example.com", zone="Asia/Tokyo", **window)
        reader(s, "sao-paulo@example.com", zone="America/Sao_Paulo", **window)  # same hours: their day
        reader(s, "sao-paulo-night@example.com", zone="America/Sao_Paulo", quiet_start=sp_hour,
               quiet_end=(sp_hour + 2) % 24)
    from tests.test_quiet_hours import alert

    edition_id = alert("عاجل: خبر للعالم", "https://news.example/world")
    assert ledger(edition_id) == {"tokyo@example.com": "held", "sao-paulo@example.com": "sent",
                                  "sao-paulo-night@example.com": "held"}
    assert smtp_sink.recipients() == ["sao-paulo@example.com"]
    with session_scope() as s:  # still night in Tokyo and in São Paulo's other reader's
        assert create_catchup(s, now) == (None, False)
    with session_scope() as s:  # two hours on, both nights are over: one catch-up
        edition, created = create_catchup(s, now + dt.timedelta(hours=2, minutes=1))
        assert created and edition.params["alerts"] == [edition_id]


def test_the_editors_preview_lists_each_zones_slot_on_the_newsrooms_clock(amman, monkeypatch):
    from service.usecases import digest_preview

    now = dt.datetime(2026, 12, 7, 2, 0, tzinfo=UTC)  # 05:00 in Amman, 03:00 in Berlin
    monkeypatch.setattr(digest_preview, "utcnow", lambda: now)
    monkeypatch.setattr("service.editions.upcoming.utcnow", lambda: now)
    with session_scope() as s:
        reader(s, "amman@example.com")
        berlin = reader(s, "berlin@example.com", zone="Europe/Berlin", hour=7)
    result = digest_preview.preview("daily", now=now)
    # Amman's 07:00 (04:00 UTC), then Berlin's 07:00: 06:00 UTC, 09:00 on the newsroom's clock.
    assert [(line.clock, line.readers, line.code) for line in result.slots] == [("07:00", 1, "h07"), ("09:00", 1, "h09")]
    assert result.slot.clock == "07:00" and result.send_at == dt.datetime(2026, 12, 7, 4, 0, tzinfo=UTC)
    theirs = digest_preview.preview(subscriber_id=berlin, now=now)
    assert theirs.slot.clock == "09:00" and theirs.send_at == dt.datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    picked = digest_preview.preview("daily", hour="9", now=now)  # the page's selector sends h09
    assert picked.slot.readers == 1 and picked.slot.code == "h09" and picked.picked
    with pytest.raises(digest_preview.PreviewRefused):
        digest_preview.preview("daily", hour="13", now=now)  # nobody's slot, not an offered hour
