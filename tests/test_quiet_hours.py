"""Quiet hours and the daily cap (issue 13, item 2): held where the batch re-checks its
readers, released as one short «بينما كنت نائماً» mail when the window ends, or dropped;
an editor's override wakes everyone (and is audited); a cap stops the alerts of the day.

Real PostgreSQL, a real SMTP peer, the real batch.  The batch decides with the clock of
the moment, so the readers' windows are set around the current local hour (a window of
two hours that starts at it: the test is over long before it ends); the end of a night
is a reader whose window no longer holds the current hour.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from service import dispatch
from service.config import get_settings, reset_settings
from service.db import session_scope
from service.delivery import fanout
from service.delivery.batch import send_batch
from service.delivery.control import cancel
from service.delivery.planner import plan
from service.editions.catchup import create_catchup
from service.models import (
    AuditLog,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    Subscriber,
    SubscriberStatus,
    Subscription,
    utcnow,
)
from service.newsletters import catalogue, membership
from service.subscribers import quiet
from service.usecases import editions
from service.usecases.alerts import send_alert
from tests.support.delivery import ledger
from tests.support.readers import reader


@pytest.fixture
def env(pg_env, smtp_sink, monkeypatch):
    # The mails' links as the site wrote them: links through /r/ are tests/test_clicks.py's.
    monkeypatch.setenv("CLICK_TRACKING", "false")
    reset_settings()
    return smtp_sink


def local_hour() -> int:
    return utcnow().astimezone(get_settings().tz).hour


def now_window() -> tuple[int, int]:
    """Two quiet hours that hold the current local hour."""
    h = local_hour()
    return h, (h + 2) % 24


def later_window() -> tuple[int, int]:
    """Quiet hours that do not hold it (the night is over)."""
    h = local_hour()
    return (h + 2) % 24, (h + 4) % 24


def add_reader(s, email: str, **kw) -> int:
    """A reader of the daily digest and `alerts`, with their alert choices (quiet hours, cap)."""
    return reader(s, email, status=SubscriberStatus.active, alerts=True, sections=[], **kw).id


def on_alerts(s, subscriber_id: int) -> Subscription:
    """The reader's subscription to `alerts`: where their quiet hours and cap are."""
    return membership.find(s, subscriber_id, catalogue.default_alerts(s).id)


def alert(headline: str, url: str, **kw) -> int:
    """An editor's alert, planned and sent through every batch in this process."""
    recorder = dispatch.Recorder()
    edition_id = send_alert(editor_id=None, headline=headline, url=url, summary="سطران عن الخبر.", dispatcher=recorder,
                            **kw)
    deliver(edition_id)
    return edition_id


def deliver(edition_id: int) -> None:
    with session_scope() as s:
        plan(s, edition_id)
        ranges = fanout.batch_ranges(s, edition_id, 50)
    for first, last in ranges:
        send_batch(edition_id, first, last)


def test_the_window_rule_spans_midnight():
    assert quiet.in_window(22, 7, 23) and quiet.in_window(22, 7, 3) and quiet.in_window(22, 7, 22)
    assert not quiet.in_window(22, 7, 7) and not quiet.in_window(22, 7, 12)
    assert quiet.in_window(1, 5, 4) and not quiet.in_window(1, 5, 5)
    assert not quiet.in_window(None, None, 3) and not quiet.in_window(4, 4, 4)
    now = dt.datetime(2026, 3, 1, 1, 30, tzinfo=dt.UTC)
    local = now.astimezone(get_settings().tz)  # 04:30 in Amman
    common = dict(now=now, local=local, paused_until=None, quiet_start=22, quiet_end=7, alert_cap=None,
                  alerts_day=None, alerts_today=0)
    assert quiet.decide("alert", quiet_mode="hold", **common) is quiet.HELD
    assert quiet.decide("alert", quiet_mode="drop", **common) is quiet.DROPPED
    assert quiet.decide("alert", quiet_mode="hold", override_quiet=True, **common) is None
    assert quiet.decide("digest", quiet_mode="hold", **common) is None  # quiet hours are for alerts
    capped = {**common, "quiet_start": None, "alert_cap": 2, "alerts_day": local.date(), "alerts_today": 2}
    assert quiet.decide("alert", quiet_mode="hold", **capped) is quiet.CAPPED
    assert quiet.decide("alert", quiet_mode="hold", **{**capped, "alerts_day": local.date() - dt.timedelta(days=1)}) \
        is None  # yesterday's count is not today's
    paused = {**common, "paused_until": now + dt.timedelta(days=1)}
    assert quiet.decide("digest", quiet_mode="hold", **paused) is quiet.PAUSED


def test_quiet_hours_hold_alerts_and_release_them_in_one_mail_when_they_end(env):
    start, end = now_window()
    with session_scope() as s:
        holder = add_reader(s, "sleeper@example.com", quiet_start=start, quiet_end=end, quiet_mode="hold")
        add_reader(s, "dropper@example.com", quiet_start=start, quiet_end=end, quiet_mode="drop")
        add_reader(s, "awake@example.com")
    first = alert("عاجل: زلزال بقوة 5 درجات يضرب شمال المغرب", "https://news.example/quake")
    second = alert("انقطاع الكهرباء عن العاصمة", "https://news.example/power")
    assert sorted(env.recipients()) == ["awake@example.com", "awake@example.com"]
    for edition_id in (first, second):
        assert ledger(edition_id) == {"sleeper@example.com": "held", "dropper@example.com": "skipped",
                                      "awake@example.com": "sent"}
        with session_scope() as s:
            assert s.get(Edition, edition_id).status.value == "done"  # held rows do not keep an alert open

    # Still night: nothing to release yet.
    with session_scope() as s:
        assert create_catchup(s) == (None, False)

    # The night ends for the sleeper (their window no longer holds this hour).
    with session_scope() as s:
        sub = on_alerts(s, holder)
        sub.quiet_start, sub.quiet_end = later_window()
    with session_scope() as s:
        edition, created = create_catchup(s)
        assert created and edition.kind is EditionKind.catchup
        catchup_id = edition.id
        assert edition.params["alerts"] == [first, second]
    deliver(catchup_id)
    assert ledger(catchup_id) == {"sleeper@example.com": "sent"}
    mails = [m for m in env.messages if m.rcpt_tos == ["sleeper@example.com"]]
    assert len(mails) == 1  # one short mail for the whole night
    msg = mails[0].message
    assert "بينما كنت نائماً" in msg["Subject"] and "خبران عاجلان" in msg["Subject"]
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    for headline, url in (("زلزال بقوة 5 درجات", "https://news.example/quake"),
                          ("انقطاع الكهرباء عن العاصمة", "https://news.example/power")):
        assert headline in html and url in html and url in text
    assert "عاجل: زلزال" not in html  # «عاجل» is the mail's own word, not repeated per item
    assert msg["List-Unsubscribe"] and msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # Each held alert reached the sleeper once: the held rows are bundled into the catch-up.
    for edition_id in (first, second):
        assert ledger(edition_id)["sleeper@example.com"] == "bundled"
    # The same hour's tick again (beat twice, a redelivered task): the same edition, nothing new.
    with session_scope() as s:
        again, created = create_catchup(s)
        assert (again.id, created) == (catchup_id, False)
    assert len([m for m in env.messages if m.rcpt_tos == ["sleeper@example.com"]]) == 1
    # Editors watch and steer a catch-up as they do an alert.
    assert editions.progress(catchup_id)["sent"] == 1
    with pytest.raises(editions.ControlRefused):
        editions.steer(catchup_id, "cancel", "editor:1", role="editor")  # done: nothing left to stop


def test_an_override_wakes_the_quiet_readers_and_is_audited(env):
    start, end = now_window()
    with session_scope() as s:
        add_reader(s, "sleeper@example.com", quiet_start=start, quiet_end=end)
    edition_id = alert("عاجل: إعلان حالة الطوارئ", "https://news.example/emergency", override_quiet_hours=True)
    assert env.recipients() == ["sleeper@example.com"]
    with session_scope() as s:
        assert s.get(Edition, edition_id).params["override_quiet_hours"] is True
        entry = s.scalars(sa.select(AuditLog).where(AuditLog.action == "alert.override_quiet_hours")).one()
        assert (entry.actor, entry.target) == ("cli", f"edition:{edition_id}")


def test_a_cancelled_alert_never_reaches_the_catch_up(env):
    start, end = now_window()
    with session_scope() as s:
        holder = add_reader(s, "sleeper@example.com", quiet_start=start, quiet_end=end)
    mistake = alert("خبر نُشر خطأً", "https://news.example/mistake")
    with session_scope() as s:
        cancel(s, mistake, "editor:1")  # done for everyone awake, still held for the sleeper
    assert ledger(mistake) == {"sleeper@example.com": "cancelled"}
    with session_scope() as s:
        on_alerts(s, holder).quiet_start, on_alerts(s, holder).quiet_end = later_window()
    with session_scope() as s:
        assert create_catchup(s) == (None, False)
    assert env.messages == []


def test_the_daily_cap_stops_alerts_once_reached_and_a_pause_stops_all(env):
    with session_scope() as s:
        capped = add_reader(s, "twice@example.com", alert_cap=2)
        add_reader(s, "always@example.com")
        paused = add_reader(s, "away@example.com")
    ids = [alert(f"خبر عاجل رقم {n}", f"https://news.example/{n}") for n in range(2)]
    # A pause that starts after planning is seen where the batch re-checks its readers.
    recorder = dispatch.Recorder()
    third = send_alert(editor_id=None, headline="خبر عاجل ثالث", url="https://news.example/3", dispatcher=recorder)
    with session_scope() as s:
        plan(s, third)
        s.get(Subscriber, paused).paused_until = utcnow() + dt.timedelta(weeks=1)
    with session_scope() as s:
        ranges = fanout.batch_ranges(s, third, 50)
    for first, last in ranges:
        send_batch(third, first, last)
    assert [ledger(i)["twice@example.com"] for i in ids] == ["sent", "sent"]
    assert ledger(third) == {"twice@example.com": "skipped", "always@example.com": "sent", "away@example.com": "skipped"}
    with session_scope() as s:
        sub = on_alerts(s, capped)
        assert (sub.alerts_today, sub.alerts_day) == (2, utcnow().astimezone(get_settings().tz).date())
        replies = dict(s.execute(sa.select(Delivery.subscriber_id, Delivery.smtp_reply)
                                 .where(Delivery.edition_id == third, Delivery.status == DeliveryStatus.skipped)).all())
    assert "cap" in replies[capped] and "paused" in replies[paused]
    assert sorted(env.recipients()).count("twice@example.com") == 2


def test_the_catch_up_works_on_the_embedded_sqlite_too(sqlite_env, smtp_sink):
    start, end = now_window()
    with session_scope() as s:
        holder = add_reader(s, "sleeper@example.com", quiet_start=start, quiet_end=end, digest_hour=6)
        add_reader(s, "awake@example.com")
    first = alert("خبر أول", "https://news.example/1")
    second = alert("خبر ثانٍ", "https://news.example/2")
    with session_scope() as s:
        on_alerts(s, holder).quiet_start, on_alerts(s, holder).quiet_end = later_window()
    with session_scope() as s:
        edition, created = create_catchup(s)
        catchup_id = edition.id
    deliver(catchup_id)
    assert ledger(catchup_id) == {"sleeper@example.com": "sent"}
    assert [ledger(i)["sleeper@example.com"] for i in (first, second)] == ["bundled", "bundled"]
    assert sorted(r for m in smtp_sink.messages for r in m.rcpt_tos) == [
        "awake@example.com", "awake@example.com", "sleeper@example.com"]
