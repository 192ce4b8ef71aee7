"""The send path with several newsletters (issue 17): each edition goes to its own
newsletter's readers, and a reader who leaves one newsletter after an edition of it was
planned is passed by for that edition only — their other newsletters' mail still comes.

Real PostgreSQL, real SMTP sink, the batch as the workers run it (send_batch)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.config import get_settings, reset_settings
from service.db import session_scope
from service.delivery import fanout
from service.delivery.batch import send_batch
from service.delivery.planner import PlanError, plan
from service.dispatch import Recorder
from service.editions.alerts import AlertError, create_alert
from service.editions.catchup import create_catchup
from service.models import (
    Delivery,
    Edition,
    EditionKind,
    EditionStatus,
    Frequency,
    Newsletter,
    NewsletterKind,
    SubscriberStatus,
    utcnow,
)
from service.newsletters import catalogue, membership
from service.usecases import alerts
from tests.support.delivery import ARABIC_TITLE, ledger, renderer, run_all_batches
from tests.support.readers import reader
from tests.test_web_desk import ALERT, desk  # noqa: F401 — the fixture

__all__ = ["desk"]


def _newsletter(s, slug: str, kind: NewsletterKind, position: int, **kw) -> Newsletter:
    """A newsletter an editor added beside the site's first three."""
    newsletter = Newsletter(slug=slug, name=f"نشرة {slug}", kind=kind, sections=[], offered=True, hidden=False,
                            position=position, frequency=Frequency.daily if kind is NewsletterKind.digest else None,
                            **kw)
    s.add(newsletter)
    s.flush()
    return newsletter


def _edition(s, newsletter: Newsletter | None, kind: EditionKind = EditionKind.digest) -> int:
    """A draft edition of `newsletter`, planned with the test renderer."""
    params = {"headline": "خبر", "url": "https://news.example/x"} if kind is EditionKind.alert else {}
    edition = Edition(kind=kind, status=EditionStatus.draft, title=ARABIC_TITLE, params=params,
                      frequency=Frequency.daily if kind is EditionKind.digest else None,
                      newsletter_id=newsletter.id if newsletter else None)
    s.add(edition)
    s.flush()
    plan(s, edition.id, renderer=renderer())
    return edition.id


def _sent_to(sink) -> list[tuple[str, str]]:
    """(recipient, List-Id) of every message the sink accepted."""
    return sorted((m.rcpt_tos[0], str(m.message["List-Id"])) for m in sink.messages)


def test_a_reader_who_leaves_one_newsletter_before_the_batch_still_gets_the_other(pg_env, smtp_sink):
    with session_scope() as s:
        daily = catalogue.by_slug(s, "daily")
        sports = _newsletter(s, "sports", NewsletterKind.digest, 3)
        leaver = reader(s, "leaver@example.com", newsletters=["daily", "sports"]).id
        reader(s, "stayer@example.com", newsletters=["daily", "sports"])
        reader(s, "dailyonly@example.com", newsletters=["daily"])
        daily_id, sports_id = _edition(s, daily), _edition(s, sports)
        assert s.get(Edition, sports_id).recipients == 2  # only the sports readers were planned
    with session_scope() as s:
        # One click on the sports mail's «leave this newsletter», after planning.
        assert membership.leave(s, leaver, sports.id) == 1
    run_all_batches(sports_id)
    run_all_batches(daily_id)

    assert ledger(sports_id) == {"leaver@example.com": "skipped", "stayer@example.com": "sent"}
    assert ledger(daily_id) == {"leaver@example.com": "sent", "stayer@example.com": "sent",
                                "dailyonly@example.com": "sent"}
    assert _sent_to(smtp_sink) == [
        ("dailyonly@example.com", "<daily.nashra.example>"),
        ("leaver@example.com", "<daily.nashra.example>"),
        ("stayer@example.com", "<daily.nashra.example>"),
        ("stayer@example.com", "<sports.nashra.example>"),
    ]
    with session_scope() as s:
        reply = s.scalar(sa.select(Delivery.smtp_reply).where(Delivery.edition_id == sports_id,
                                                              Delivery.subscriber_id == leaver))
        assert "since planning" in reply
        assert s.get(Edition, sports_id).status is EditionStatus.done


def test_leaving_alerts_skips_the_planned_alert_and_the_digest_still_arrives(pg_env, smtp_sink):
    with session_scope() as s:
        leaver = reader(s, "leaver@example.com", frequency="daily", alerts=True).id
        reader(s, "other@example.com", frequency="daily", alerts=True)
        alert_id = _edition(s, catalogue.default_alerts(s), EditionKind.alert)
        digest_id = _edition(s, catalogue.by_slug(s, "daily"))
    with session_scope() as s:
        membership.leave(s, leaver, catalogue.default_alerts(s).id)
    run_all_batches(alert_id)
    run_all_batches(digest_id)
    assert ledger(alert_id) == {"leaver@example.com": "skipped", "other@example.com": "sent"}
    assert ledger(digest_id) == {"leaver@example.com": "sent", "other@example.com": "sent"}
    assert sorted(smtp_sink.recipients()) == ["leaver@example.com", "other@example.com", "other@example.com"]


def test_an_alert_reaches_only_its_newsletter_and_the_cap_counts_per_newsletter(pg_env, smtp_sink):
    with session_scope() as s:
        flash = _newsletter(s, "flash", NewsletterKind.alerts, 3)
        main = catalogue.default_alerts(s)
        both = reader(s, "both@example.com", newsletters=["alerts", "flash"], alert_cap=1).id
        reader(s, "main@example.com", newsletters=["alerts"])
        reader(s, "flash@example.com", newsletters=["flash"])
        to_flash = _edition(s, flash, EditionKind.alert)
        to_main = _edition(s, main, EditionKind.alert)
    run_all_batches(to_flash)
    run_all_batches(to_main)
    assert ledger(to_flash) == {"both@example.com": "sent", "flash@example.com": "sent"}
    # One alert a day on each: the flash alert did not use up the main newsletter's cap.
    assert ledger(to_main) == {"both@example.com": "sent", "main@example.com": "sent"}
    with session_scope() as s:
        counted = {m.newsletter_id: m.alerts_today for m in membership.of(s, both)}
        assert counted == {main.id: 1, flash.id: 1}
        again = _edition(s, main, EditionKind.alert)
    run_all_batches(again)
    assert ledger(again) == {"both@example.com": "skipped", "main@example.com": "sent"}  # that cap is reached


def test_a_digest_alert_or_special_edition_without_a_newsletter_is_refused(db_session):
    reader(db_session, "r@example.com")
    for kind in (EditionKind.digest, EditionKind.alert, EditionKind.special):
        edition = Edition(kind=kind, status=EditionStatus.draft, title="ع", params={},
                          frequency=Frequency.daily if kind is EditionKind.digest else None)
        db_session.add(edition)
        db_session.flush()
        with pytest.raises(PlanError, match="newsletter"):
            plan(db_session, edition.id, renderer=renderer())
        assert db_session.scalar(sa.select(sa.func.count()).select_from(Delivery)) == 0


def test_create_alert_names_its_alerts_newsletter_and_refuses_any_other(db_session):
    flash = _newsletter(db_session, "flash", NewsletterKind.alerts, 3)
    _newsletter(db_session, "retired", NewsletterKind.alerts, 4).hidden = True
    default = create_alert(db_session, editor_id=None, headline="خبر", url="https://news.example/a")
    assert default.newsletter_id == catalogue.default_alerts(db_session).id
    own = create_alert(db_session, editor_id=None, headline="خبر", url="https://news.example/a", newsletter="flash")
    # The same story to another alerts newsletter is that newsletter's alert, not a double click.
    assert own.id != default.id and own.newsletter_id == flash.id
    before = db_session.scalar(sa.select(sa.func.count()).select_from(Edition))
    for slug, why in (("nope", "no newsletter"), ("retired", "hidden"), ("daily", "digest"),
                      ("../x", "no newsletter")):
        with pytest.raises(AlertError, match=why):
            create_alert(db_session, editor_id=None, headline="خبر", url="https://news.example/b", newsletter=slug)
    assert db_session.scalar(sa.select(sa.func.count()).select_from(Edition)) == before


def _post(desk, body: dict):
    token = desk["editor"][1]
    return TestClient(desk["app"]).post("/api/alerts", json=body, headers={"Authorization": f"Bearer {token}"})


def test_the_api_sends_to_a_named_alerts_newsletter_counts_its_readers_and_refuses_bad_names(desk):
    with session_scope() as s:
        _newsletter(s, "flash", NewsletterKind.alerts, 3)
        _newsletter(s, "retired", NewsletterKind.alerts, 4).hidden = True
        for i in range(3):
            reader(s, f"main{i}@example.com", newsletters=["alerts"])
        reader(s, "flash@example.com", newsletters=["flash"])
        reader(s, "pending@example.com", newsletters=["flash"], status=SubscriberStatus.pending)
    # The dry run counts the named newsletter's readers with the planner's rule.
    assert _post(desk, {**ALERT, "dry_run": True}).json()["audience"] == 3
    assert _post(desk, {**ALERT, "dry_run": True, "newsletter": "flash"}).json()["audience"] == 1
    for slug in ("nope", "retired", "daily", "", "x" * 300):
        resp = _post(desk, {**ALERT, "newsletter": slug})
        assert resp.status_code == 422 and "newsletter" in resp.json()["error"], (slug, resp.text)
        assert _post(desk, {**ALERT, "newsletter": slug, "dry_run": True}).status_code == 422
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Edition)) == 0  # nothing made
    sent = _post(desk, {**ALERT, "newsletter": "flash"})
    assert sent.status_code == 202, sent.text
    with session_scope() as s:
        edition = s.get(Edition, sent.json()["edition_id"])
        assert edition.newsletter_id == catalogue.by_slug(s, "flash").id


def test_the_use_case_plans_after_commit_for_the_named_newsletter(pg_env, smtp_sink):
    with session_scope() as s:
        _newsletter(s, "flash", NewsletterKind.alerts, 3)
        reader(s, "flash@example.com", newsletters=["flash"])
        reader(s, "main@example.com", newsletters=["alerts"])
    recorder = Recorder()
    eid = alerts.send_alert(editor_id=None, headline="خبر", url="https://news.example/f", newsletter="flash",
                            dispatcher=recorder)
    with session_scope() as s:
        plan(s, eid)
        ranges = fanout.batch_ranges(s, eid, 50)
    for first, last in ranges:
        send_batch(eid, first, last)
    assert ledger(eid) == {"flash@example.com": "sent"} and smtp_sink.recipients() == ["flash@example.com"]


def _hold_now(s, subscriber_id: int, newsletter: Newsletter, awake: bool) -> None:
    """Set the reader's quiet hours on one alerts newsletter: holding this hour, or not."""
    hour = utcnow().astimezone(get_settings().tz).hour
    start = (hour + 2) % 24 if awake else hour
    sub = membership.find(s, subscriber_id, newsletter.id)
    sub.quiet_start, sub.quiet_end, sub.quiet_mode = start, (start + 2) % 24, "hold"


def test_quiet_hours_and_the_catch_up_are_per_alerts_newsletter(pg_env, smtp_sink, monkeypatch):
    monkeypatch.setenv("CLICK_TRACKING", "false")
    reset_settings()
    with session_scope() as s:
        flash = _newsletter(s, "flash", NewsletterKind.alerts, 3)
        main = catalogue.default_alerts(s)
        sleeper = reader(s, "sleeper@example.com", newsletters=["alerts", "flash"]).id
        _hold_now(s, sleeper, main, awake=False)
        _hold_now(s, sleeper, flash, awake=False)
    ids = {}
    for slug in ("alerts", "flash"):
        eid = alerts.send_alert(editor_id=None, headline=f"خبر {slug}", url=f"https://news.example/{slug}",
                                newsletter=slug, dispatcher=Recorder())
        with session_scope() as s:
            plan(s, eid)
        run_all_batches(eid)
        ids[slug] = eid
    assert [ledger(ids[k])["sleeper@example.com"] for k in ("alerts", "flash")] == ["held", "held"]
    # Morning on `alerts` only: its held alert goes in the catch-up, flash's stays held.
    with session_scope() as s:
        _hold_now(s, sleeper, main, awake=True)
    with session_scope() as s:
        edition, created = create_catchup(s)
        assert created and edition.params["alerts"] == [ids["alerts"]] and edition.newsletter_id is None
        catchup_id = edition.id
    with session_scope() as s:
        plan(s, catchup_id)
    run_all_batches(catchup_id)
    assert ledger(catchup_id) == {"sleeper@example.com": "sent"}
    assert ledger(ids["alerts"])["sleeper@example.com"] == "bundled"
    assert ledger(ids["flash"])["sleeper@example.com"] == "held"
    assert smtp_sink.recipients() == ["sleeper@example.com"]
