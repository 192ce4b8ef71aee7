"""The reader's hour (issue 13, item 1): each reader's digest leaves at their own local
hour, across a DST change and a worker outage, once; a pause holds everything and ends
by itself.

Time is driven by passing `now` into beat's tick (`usecases.digests.send_due`), every
TICK of simulated time, against the real PostgreSQL; planning writes the real ledger.
Asia/Beirut keeps DST: on 2026-03-29 its clock jumps from 00:00 to 01:00, and on
2026-10-25 it falls back from 00:00 to 23:00 (the evening of the 24th happens twice).
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from service import dispatch
from service.config import get_settings, reset_settings
from service.db import session_scope
from service.delivery.planner import plan
from service.editions import schedule
from service.models import (
    Article,
    ArticleVersion,
    Delivery,
    Edition,
    EditionKind,
    Subscriber,
    VersionKind,
    utcnow,
)
from service.subscribers import choices
from service.subscribers.errors import InvalidInput
from service.usecases.digests import send_due, start_digest
from tests.support.delivery import renderer
from tests.support.readers import reader as make_reader

UTC = dt.UTC
TICK = dt.timedelta(minutes=15)


@pytest.fixture
def beirut(pg_env, monkeypatch):
    monkeypatch.setenv("TIMEZONE", "Asia/Beirut")
    monkeypatch.setenv("DIGEST_DAILY_AT", "06:00")
    monkeypatch.setenv("DIGEST_HOURS", "0,6,20,23")
    monkeypatch.setenv("DIGEST_WEEKLY_DAY", "5")
    monkeypatch.setenv("DIGEST_MAX_LATE_HOURS", "4")
    monkeypatch.setenv("DIGEST_CHECK_SECONDS", "900")
    reset_settings()
    yield
    reset_settings()


def reader(session, email: str, *, hour: int | None = None, weekday: int | None = None,
           frequency: str = "daily", paused_until: dt.datetime | None = None) -> int:
    return make_reader(session, email, frequency=frequency, alerts=False, digest_hour=hour, digest_weekday=weekday,
                       paused_until=paused_until).id


def news_every_hour(session, start: dt.datetime, hours: int) -> None:
    """One new article per hour, as ingestion would have stamped it."""
    for n in range(hours):
        at = start + dt.timedelta(hours=n)
        a = Article(guid=f"urn:t:{n}", url=f"https://news.example/a/{n}", title=f"خبر {n}", summary="ملخص",
                    content_hash=f"{n:064d}", first_seen_at=at, last_major_at=at, version=1)
        session.add(a)
        session.flush()
        session.add(ArticleVersion(article_id=a.id, version=1, kind=VersionKind.new, content_hash="0" * 64,
                                   title=a.title, created_at=at))


def run_ticks(start: dt.datetime, end: dt.datetime, *, skip: tuple[tuple[dt.datetime, dt.datetime], ...] = ()):
    """Beat's tick every TICK from start to end, except while workers are down (`skip`);
    returns {edition id: the tick that made it}."""
    made: dict[int, dt.datetime] = {}
    recorder = dispatch.Recorder()
    now = start
    while now < end:
        if not any(a <= now < b for a, b in skip):
            for edition_id in send_due(now, dispatcher=recorder):
                assert edition_id not in made
                made[edition_id] = now
        now += TICK
    planned = [c[1] for c in recorder.calls if c[0] == "plan_edition"]
    assert sorted(planned) == sorted(made)  # each made edition asked for its planning once
    return made


def digests() -> dict[str, Edition]:
    with session_scope() as s:
        return {e.idempotency_key: e for e in s.scalars(sa.select(Edition).where(Edition.kind == EditionKind.digest))}


def readers_of(edition_id: int) -> set[str]:
    with session_scope() as s:
        plan(s, edition_id, renderer=renderer())
        return set(s.scalars(sa.select(Subscriber.email).join(Delivery, Delivery.subscriber_id == Subscriber.id)
                             .where(Delivery.edition_id == edition_id)))


def test_each_readers_digest_leaves_at_their_local_hour_across_the_spring_dst_change(beirut):
    start = dt.datetime(2026, 3, 27, 3, 0, tzinfo=UTC)  # 05:00 on the 27th in Beirut, no slot due yet
    end = dt.datetime(2026, 3, 31, 3, 0, tzinfo=UTC)
    with session_scope() as s:
        reader(s, "dawn@example.com")  # never chose: the default hour, 06:00
        reader(s, "evening@example.com", hour=20)
        reader(s, "midnight@example.com", hour=0)
        reader(s, "saturday@example.com", frequency="weekly")  # the default day, Saturday, at 06:00
        reader(s, "sunday-night@example.com", frequency="weekly", weekday=6, hour=20)
        news_every_hour(s, start - dt.timedelta(days=8), 8 * 24 + 5 * 24)

    made = run_ticks(start, end)
    found = digests()
    when = {key: made[e.id] for key, e in found.items()}

    # Slots are keyed by their UTC hour and date (issue 22): the 06:00 readers leave at
    # 04:00 UTC on winter time, 03:00 UTC from the 29th; each made by the first tick at
    # or after its hour, never before it.
    dawn = {key: at for key, at in when.items() if key.startswith("digest:daily:u04:")
            or key.startswith("digest:daily:u03:")}
    assert dawn == {
        "digest:daily:u04:2026-03-27": dt.datetime(2026, 3, 27, 4, 0, tzinfo=UTC),
        "digest:daily:u04:2026-03-28": dt.datetime(2026, 3, 28, 4, 0, tzinfo=UTC),
        "digest:daily:u03:2026-03-29": dt.datetime(2026, 3, 29, 3, 0, tzinfo=UTC),
        "digest:daily:u03:2026-03-30": dt.datetime(2026, 3, 30, 3, 0, tzinfo=UTC),
    }
    evening = ["digest:daily:u18:2026-03-27", "digest:daily:u18:2026-03-28",
               "digest:daily:u17:2026-03-29", "digest:daily:u17:2026-03-30"]
    # 00:00 on the 29th never happened: it went when the clock jumped to 01:00 (22:00 UTC).
    midnight = ["digest:daily:u22:2026-03-27", "digest:daily:u22:2026-03-28",
                "digest:daily:u21:2026-03-29", "digest:daily:u21:2026-03-30"]
    weekly = ["digest:weekly:d5u04:2026-03-28", "digest:weekly:d6u17:2026-03-29"]
    assert sorted(found) == sorted([*dawn, *evening, *midnight, *weekly])
    tz = get_settings().tz
    for key in evening:
        assert (when[key].astimezone(tz).hour, when[key].minute) == (20, 0), key
    assert [when[k].astimezone(tz).strftime("%d %H:%M") for k in midnight] == [
        "28 00:00", "29 01:00", "30 00:00", "31 00:00"]
    assert len(found) == 4 * 3 + 2  # one edition per slot and date, whatever the number of ticks

    # Each slot's edition reaches its own readers, and no one else.
    assert readers_of(found["digest:daily:u03:2026-03-29"].id) == {"dawn@example.com"}
    assert readers_of(found["digest:daily:u17:2026-03-29"].id) == {"evening@example.com"}
    assert readers_of(found["digest:weekly:d6u17:2026-03-29"].id) == {"sunday-night@example.com"}
    assert readers_of(found["digest:weekly:d5u04:2026-03-28"].id) == {"saturday@example.com"}
    # The windows chain: a day each, none in both; where the clock change moved the
    # evening readers an hour earlier in UTC, their next window overlaps (never a gap).
    h20 = [found[k] for k in evening]
    for before, after in zip(h20, h20[1:], strict=False):
        assert after.window_start <= before.window_end
        assert after.window_start >= before.window_end - dt.timedelta(hours=1)
    assert h20[3].window_start == h20[2].window_end  # same UTC hour, chained exactly


def test_the_evening_that_happens_twice_sends_the_2300_digest_once(beirut):
    start = dt.datetime(2026, 10, 24, 15, 0, tzinfo=UTC)
    with session_scope() as s:
        reader(s, "late@example.com", hour=23)
        news_every_hour(s, start - dt.timedelta(days=2), 3 * 24)
    made = run_ticks(start, start + dt.timedelta(hours=12))
    found = {k: e for k, e in digests().items() if readers_of(e.id) == {"late@example.com"}}
    assert list(found) == ["digest:daily:u20:2026-10-24"]
    # At the first 23:00 (summer time, 20:00 UTC), not at the second one an hour later.
    assert made[found["digest:daily:u20:2026-10-24"].id] == dt.datetime(2026, 10, 24, 20, 0, tzinfo=UTC)


def test_a_digest_due_while_workers_were_down_goes_once_when_they_return(beirut):
    start = dt.datetime(2026, 4, 1, 0, 0, tzinfo=UTC)
    with session_scope() as s:
        reader(s, "dawn@example.com")
        reader(s, "evening@example.com", hour=20)
        reader(s, "late@example.com", hour=23)
        news_every_hour(s, start - dt.timedelta(days=3), 6 * 24)
    # April 2: workers down 02:30–06:00 UTC (over the 06:00 local digest, 03:00 UTC: back
    # 3 h later, inside DIGEST_MAX_LATE_HOURS) and 16:50–21:30 UTC (over 20:00 local,
    # 17:00 UTC, 4.5 h: too late to send; and over 23:00 local, 20:00 UTC: 1.5 h late).
    down = ((dt.datetime(2026, 4, 2, 2, 30, tzinfo=UTC), dt.datetime(2026, 4, 2, 6, 0, tzinfo=UTC)),
            (dt.datetime(2026, 4, 2, 16, 50, tzinfo=UTC), dt.datetime(2026, 4, 2, 21, 30, tzinfo=UTC)))
    made = run_ticks(start, dt.datetime(2026, 4, 4, 0, 0, tzinfo=UTC), skip=down)
    found = digests()
    when = {k: made[e.id] for k, e in found.items()}
    # Beirut is UTC+3 in April: 06:00 is u03, 20:00 is u17, 23:00 is u20.
    assert when["digest:daily:u03:2026-04-02"] == dt.datetime(2026, 4, 2, 6, 0, tzinfo=UTC)  # the first tick back
    assert when["digest:daily:u20:2026-04-02"] == dt.datetime(2026, 4, 2, 21, 30, tzinfo=UTC)
    assert "digest:daily:u17:2026-04-02" not in found  # past the bound: not sent hours late
    # The next evening's digest starts where the last one sent ended: nothing is lost.
    assert found["digest:daily:u17:2026-04-03"].window_start == found["digest:daily:u17:2026-04-01"].window_end
    # Ticks that run again at the same moment (two beats, a redelivered task) make nothing.
    assert send_due(dt.datetime(2026, 4, 2, 21, 30, tzinfo=UTC), dispatcher=dispatch.Recorder()) == []
    assert len(digests()) == len(found)
    late = made[found["digest:daily:u03:2026-04-02"].id] - schedule.due_at(dt.date(2026, 4, 2), 6)
    assert late == dt.timedelta(hours=3)


def test_a_pause_leaves_the_reader_out_and_ends_by_itself(beirut):
    now = utcnow()
    with session_scope() as s:
        reader(s, "away@example.com", paused_until=now + dt.timedelta(weeks=2))
        reader(s, "back@example.com", paused_until=now - dt.timedelta(minutes=1))  # their pause just ended
        reader(s, "here@example.com")
        news_every_hour(s, now - dt.timedelta(hours=30), 30)
    edition_id = start_digest("daily", scheduled=False, dispatcher=dispatch.Recorder())
    assert readers_of(edition_id) == {"back@example.com", "here@example.com"}


def test_choices_take_only_the_offered_hours_days_and_pauses(beirut):
    assert choices.digest_hour("20") == 20 and choices.digest_hour("") is None and choices.digest_hour(6) == 6
    assert choices.digest_hour(" 20 ") == 20
    for bad in ("7", "24", "-1", "٢٠", True, 20.0, [20], "020"):
        with pytest.raises(InvalidInput):
            choices.digest_hour(bad)
    assert choices.digest_weekday("6") == 6
    with pytest.raises(InvalidInput):
        choices.digest_weekday("7")
    now = utcnow()
    assert choices.pause("2", None, now) == now + dt.timedelta(weeks=2)
    assert choices.pause("resume", now + dt.timedelta(days=3), now) is None
    assert choices.pause("", now + dt.timedelta(days=3), now) == now + dt.timedelta(days=3)
    assert choices.pause("", now - dt.timedelta(days=3), now) is None  # an ended pause is gone
    with pytest.raises(InvalidInput):
        choices.pause("3", None, now)
    assert choices.quiet_hours("22", "7", "drop") == (22, 7, "drop")
    assert choices.quiet_hours("", "", "") == (None, None, "hold")
    for start, end in (("22", ""), ("5", "5"), ("25", "1")):
        with pytest.raises(InvalidInput):
            choices.quiet_hours(start, end, "hold")
