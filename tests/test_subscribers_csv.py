"""Subscriber CSV import/export against PostgreSQL (rolled back per test)."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select, text

from service.models import (
    Newsletter,
    NewsletterKind,
    Section,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Suppression,
)
from service.newsletters import catalogue
from service.subscribers.csvio import CsvError, export_csv, import_csv
from tests.support.readers import reader


@pytest.fixture(autouse=True)
def _empty_tables(db_session):
    """Start from empty tables whatever earlier committing tests left (rolled back after)."""
    from service.models import Base

    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    db_session.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    catalogue.seed_first(db_session)  # daily, weekly and alerts, as migration 0008 made them


@pytest.fixture
def sections(db_session):
    rows = [Section(slug="world", name="عربي دولي", position=1), Section(slug="sport", name="رياضة", position=2)]
    db_session.add_all(rows)
    db_session.flush()
    return {s.slug: s.id for s in rows}


def _import(db_session, text: str, encoding="utf-8"):
    return import_csv(db_session, io.BytesIO(text.encode(encoding)))


def _all(db_session):
    return {s.email: s for s in db_session.scalars(select(Subscriber))}


def _on(db_session, email: str) -> dict[str, list[int]]:
    """The reader's newsletters (slug → their sections there), as the database holds them."""
    db_session.expire_all()  # the import writes with SQL
    return dict(db_session.execute(
        select(Newsletter.slug, Subscription.sections).join(Subscription, Subscription.newsletter_id == Newsletter.id)
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id).where(Subscriber.email == email)).all())


def test_import_good_rows_and_report_bad_ones_by_line(db_session, sections):
    csv_text = (
        "email,sections,frequency,alerts,status,consent_source,consented_at\r\n"
        "Active@Example.com,عربي دولي|sport,weekly,no,active,print-form,2021-11-24T10:00:00+02:00\r\n"
        "pending@example.com,,daily,yes,pending,,\r\n"
        "bad-address,,daily,yes,active,,\r\n"
        "x@example.com,culture,daily,yes,active,,\r\n"
        "y@example.com,,hourly,yes,active,,\r\n"
        "z@example.com,,daily,maybe,active,,\r\n"
        "w@example.com,,daily,yes,unsubscribed,,\r\n"
        "v@example.com,,daily,yes,active,,yesterday\r\n"
        "ACTIVE@example.com,,daily,yes,active,,\r\n"
    )
    report = _import(db_session, "\ufeff" + csv_text)  # with a spreadsheet's BOM
    assert report.created == 2 and report.confirmations == 1
    assert [line for line, _ in report.problems] == [4, 5, 6, 7, 8, 9, 10]
    assert "same address as line 2" in report.problems[-1][1]
    assert "culture" in report.problems[1][1]
    subs = _all(db_session)
    assert set(subs) == {"active@example.com", "pending@example.com"}
    active = subs["active@example.com"]
    assert active.status is SubscriberStatus.active and active.confirmed_at is not None
    assert _on(db_session, "active@example.com") == {"weekly": [sections["world"], sections["sport"]]}
    assert _on(db_session, "pending@example.com") == {"daily": [], "alerts": []}
    assert active.consent_source == "print-form" and active.consented_at.hour == 8  # stored in UTC
    assert subs["pending@example.com"].status is SubscriberStatus.pending
    assert "line 4:" in report.summary()


@pytest.mark.parametrize("header", ["email,colour\r\n", "name,frequency\r\n", "email,email\r\n", ""])
def test_bad_header_refuses_the_whole_file(db_session, sections, header):
    with pytest.raises(CsvError):
        _import(db_session, header + "a@example.com,x\r\n")
    assert db_session.scalar(select(func.count()).select_from(Subscriber)) == 0


def test_non_utf8_file_is_refused_with_a_clear_error(db_session, sections):
    with pytest.raises(CsvError, match="UTF-8"):
        _import(db_session, "email,sections\r\na@example.com,رياضة\r\n", encoding="cp1256")


def test_import_never_readds_unsubscribed_or_suppressed(db_session, sections):
    db_session.add_all([
        Suppression(email="bounced@example.com", reason="hard_bounce"),
    ])
    reader(db_session, "left@example.com", status=SubscriberStatus.unsubscribed, token_version=2, newsletters=[])
    db_session.flush()
    report = _import(db_session, "email,status\nleft@example.com,active\nbounced@example.com,active\n")
    assert report.created == 0 and report.skipped == 2
    subs = _all(db_session)
    assert subs["left@example.com"].status is SubscriberStatus.unsubscribed
    assert "bounced@example.com" not in subs


def test_import_updates_existing_and_activates_pending(db_session, sections):
    reader(db_session, "a@example.com", frequency="daily")
    reader(db_session, "p@example.com", status=SubscriberStatus.pending)
    report = _import(db_session, "email,frequency,status\na@example.com,weekly,pending\np@example.com,daily,active\n")
    assert report.updated == 2 and report.confirmations == 0
    subs = _all(db_session)
    assert subs["a@example.com"].status is SubscriberStatus.active  # never demoted
    assert _on(db_session, "a@example.com") == {"weekly": [], "alerts": []}  # the row's: weekly, alerts (empty: yes)
    assert subs["p@example.com"].status is SubscriberStatus.active


def test_export_then_import_round_trips(db_session, sections):
    reader(db_session, "a@example.com", frequency="weekly", alerts=False,
           sections=[sections["sport"], sections["world"]], consent_source="=HYPERLINK(1)", time_zone="Europe/Berlin")
    reader(db_session, "gone@example.com", status=SubscriberStatus.unsubscribed)
    out = io.StringIO()
    assert export_csv(db_session, out) == 1
    text = out.getvalue()
    assert text.splitlines()[0] == ("email,sections,frequency,alerts,status,consent_source,consented_at,time_zone,"
                                    "newsletters")
    assert "a@example.com,sport|world,weekly,no,active,'=HYPERLINK(1)," in text
    assert text.splitlines()[1].endswith(",Europe/Berlin,weekly")
    assert "gone@example.com" not in text
    db_session.query(Subscriber).delete()
    report = import_csv(db_session, io.StringIO(text))
    assert report.created == 1 and report.skipped == 0
    back = _all(db_session)["a@example.com"]
    assert _on(db_session, "a@example.com") == {"weekly": [sections["sport"], sections["world"]]}
    assert back.time_zone == "Europe/Berlin"  # the reader's clock goes with them


def test_the_time_zone_column(db_session, sections):
    """A reader's clock by CSV (issue 22): a known IANA name is stored, an unknown one is
    the row's error (by line), an empty cell is the site's for a new reader and leaves an
    existing reader's own zone as it is; a file without the column changes no zone."""
    reader(db_session, "here@example.com", time_zone="Asia/Tokyo")
    text = ("email,frequency,alerts,status,time_zone\r\n"
            "berlin@example.com,daily,yes,active,Europe/Berlin\r\n"
            "nowhere@example.com,daily,yes,active,Europe/Atlantis\r\n"
            "plain@example.com,daily,yes,active,\r\n"
            "here@example.com,weekly,yes,active,\r\n")
    report = import_csv(db_session, io.StringIO(text))
    assert (report.created, report.updated, report.skipped) == (2, 1, 1)
    assert report.problems[0][0] == 3 and "time zone" in report.problems[0][1]
    db_session.expire_all()  # the import wrote with SQL: read the rows again
    subs = _all(db_session)
    assert set(_on(db_session, "here@example.com")) == {"weekly", "alerts"}
    assert subs["berlin@example.com"].time_zone == "Europe/Berlin"
    assert subs["plain@example.com"].time_zone is None  # the site's TIMEZONE
    assert "nowhere@example.com" not in subs
    assert subs["here@example.com"].time_zone == "Asia/Tokyo"  # an empty cell keeps theirs
    report = import_csv(db_session, io.StringIO("email,frequency,alerts,status,time_zone\r\n"
                                                "here@example.com,weekly,yes,active,America/Sao_Paulo\r\n"))
    db_session.expire_all()  # the import wrote with SQL: read the rows again
    assert report.updated == 1 and _all(db_session)["here@example.com"].time_zone == "America/Sao_Paulo"


# ------------------------------------------------------------------ several newsletters (issue 17)


@pytest.fixture
def friday(db_session, sections):
    """A newsletter the site added (a Friday sports round-up, drawing on sport only) and one
    it retired."""
    made = [Newsletter(slug="sport-friday", name="رياضة الجمعة", kind=NewsletterKind.digest, frequency="weekly",
                       sections=[sections["sport"]], position=5),
            Newsletter(slug="old-one", name="نشرة قديمة", kind=NewsletterKind.digest, frequency="daily",
                       sections=[], hidden=True, offered=False, position=6)]
    db_session.add_all(made)
    db_session.flush()
    return made[0]


def test_the_newsletters_column_puts_readers_on_the_newsletters_it_names(db_session, sections, friday):
    report = _import(db_session, "email,sections,newsletters,status\r\n"
                                 "a@example.com,world|sport,daily|SPORT-FRIDAY|alerts,active\r\n"
                                 "b@example.com,,sport-friday,active\r\n"
                                 "c@example.com,,daily|daly,active\r\n"
                                 "d@example.com,,old-one,active\r\n"
                                 "e@example.com,world,,active\r\n")
    assert (report.created, report.skipped) == (3, 2)
    assert [line for line, _ in report.problems] == [4, 5]
    assert "no newsletter 'daly'" in report.problems[0][1] and "retired" in report.problems[1][1]
    assert "the newsletters are: daily, weekly, alerts, sport-friday" in report.summary()
    # Sections go to the digests; on the Friday one only those it draws from.
    assert _on(db_session, "a@example.com") == {"daily": [sections["world"], sections["sport"]],
                                                "sport-friday": [sections["sport"]], "alerts": []}
    assert _on(db_session, "b@example.com") == {"sport-friday": []}
    assert _on(db_session, "e@example.com") == {"daily": [sections["world"]], "alerts": []}  # the words of before
    assert not {"c@example.com", "d@example.com"} & set(_all(db_session))


def test_a_reimport_changes_only_the_newsletters_its_row_speaks_of(db_session, sections, friday):
    """A reader already here: the row's newsletters replace those it may name (the first
    three for frequency/alerts, every visible one for a newsletters cell); the rest — and
    the choices of those kept — stay as they are."""
    reader(db_session, "a@example.com", newsletters=["daily", "alerts", "sport-friday", "old-one"], digest_hour=18,
           quiet_start=22, quiet_end=6)
    report = _import(db_session, "email,sections,frequency,alerts\r\na@example.com,world,daily,no\r\n")
    assert report.updated == 1
    assert _on(db_session, "a@example.com") == {"daily": [sections["world"]], "sport-friday": [], "old-one": []}
    daily = db_session.scalar(select(Subscription).join(Subscriber).where(
        Subscriber.email == "a@example.com", Subscription.newsletter_id == catalogue.by_slug(db_session, "daily").id))
    assert daily.digest_hour == 18  # kept: the file says nothing of it
    report = _import(db_session, "email,newsletters\r\na@example.com,weekly|alerts\r\n")
    assert report.updated == 1
    assert _on(db_session, "a@example.com") == {"weekly": [], "alerts": [], "old-one": []}  # a retired one stays
    assert _import(db_session, "email,newsletters\r\na@example.com,alerts|weekly\r\n").unchanged == 1


def test_the_export_lists_the_newsletters_and_round_trips(db_session, sections, friday):
    reader(db_session, "a@example.com", newsletters=["daily", "alerts", "sport-friday", "old-one"],
           sections=[sections["sport"]])
    reader(db_session, "b@example.com", newsletters=["sport-friday"])
    reader(db_session, "c@example.com", frequency="weekly", alerts=False, sections=[sections["world"]])
    before = {email: _on(db_session, email) for email in ("a@example.com", "b@example.com", "c@example.com")}
    out = io.StringIO()
    assert export_csv(db_session, out) == 3
    lines = out.getvalue().splitlines()
    # An older consumer still reads frequency, alerts and sections; the retired one is not listed.
    assert lines[1].startswith("a@example.com,sport,daily,yes,active,") and lines[1].endswith(",daily|alerts|sport-friday")
    assert lines[2].startswith("b@example.com,,none,no,active,") and lines[2].endswith(",sport-friday")
    assert lines[3].startswith("c@example.com,world,weekly,no,active,") and lines[3].endswith(",weekly")
    # Over the same readers: nothing changes.
    assert _import(db_session, out.getvalue()).unchanged == 3
    assert {email: _on(db_session, email) for email in before} == before
    # Into an empty list: the same subscriptions (but the retired newsletter's).
    db_session.query(Subscriber).delete()
    report = _import(db_session, out.getvalue())
    assert report.created == 3 and report.skipped == 0
    before["a@example.com"].pop("old-one")
    assert {email: _on(db_session, email) for email in before} == before


def test_forgetting_a_reader_takes_their_subscriptions(db_session, friday):
    from service.subscribers import privacy

    sub = reader(db_session, "a@example.com", newsletters=["daily", "sport-friday"])
    privacy.forget(db_session, sub, actor="cli")
    assert db_session.scalar(select(func.count()).select_from(Subscription)) == 0  # ON DELETE CASCADE
