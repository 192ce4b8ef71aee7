"""Subscriber CSV import/export against PostgreSQL (rolled back per test)."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select, text

from service.models import Section, Subscriber, SubscriberStatus, Suppression
from service.subscribers.csvio import CsvError, export_csv, import_csv


@pytest.fixture(autouse=True)
def _empty_tables(db_session):
    """Start from empty tables whatever earlier committing tests left (rolled back after)."""
    from service.models import Base

    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    db_session.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


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
    assert active.sections == [sections["world"], sections["sport"]]
    assert active.frequency.value == "weekly" and active.alerts is False
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
        Subscriber(email="left@example.com", status=SubscriberStatus.unsubscribed, token_version=2),
        Suppression(email="bounced@example.com", reason="hard_bounce"),
    ])
    db_session.flush()
    report = _import(db_session, "email,status\nleft@example.com,active\nbounced@example.com,active\n")
    assert report.created == 0 and report.skipped == 2
    subs = _all(db_session)
    assert subs["left@example.com"].status is SubscriberStatus.unsubscribed
    assert "bounced@example.com" not in subs


def test_import_updates_existing_and_activates_pending(db_session, sections):
    db_session.add_all([
        Subscriber(email="a@example.com", status=SubscriberStatus.active, frequency="daily"),
        Subscriber(email="p@example.com", status=SubscriberStatus.pending),
    ])
    db_session.flush()
    report = _import(db_session, "email,frequency,status\na@example.com,weekly,pending\np@example.com,daily,active\n")
    assert report.updated == 2 and report.confirmations == 0
    subs = _all(db_session)
    assert subs["a@example.com"].status is SubscriberStatus.active  # never demoted
    assert subs["a@example.com"].frequency.value == "weekly"
    assert subs["p@example.com"].status is SubscriberStatus.active


def test_export_then_import_round_trips(db_session, sections):
    db_session.add_all([
        Subscriber(email="a@example.com", status=SubscriberStatus.active, frequency="weekly", alerts=False,
                   sections=[sections["sport"], sections["world"]], consent_source="=HYPERLINK(1)",
                   time_zone="Europe/Berlin"),
        Subscriber(email="gone@example.com", status=SubscriberStatus.unsubscribed),
    ])
    db_session.flush()
    out = io.StringIO()
    assert export_csv(db_session, out) == 1
    text = out.getvalue()
    assert text.splitlines()[0] == "email,sections,frequency,alerts,status,consent_source,consented_at,time_zone"
    assert "a@example.com,sport|world,weekly,no,active,'=HYPERLINK(1)," in text
    assert text.splitlines()[1].endswith(",Europe/Berlin")
    assert "gone@example.com" not in text
    db_session.query(Subscriber).delete()
    report = import_csv(db_session, io.StringIO(text))
    assert report.created == 1 and report.skipped == 0
    back = _all(db_session)["a@example.com"]
    assert back.sections == [sections["sport"], sections["world"]] and back.alerts is False
    assert back.time_zone == "Europe/Berlin"  # the reader's clock goes with them


def test_the_time_zone_column(db_session, sections):
    """A reader's clock by CSV (issue 22): a known IANA name is stored, an unknown one is
    the row's error (by line), an empty cell is the site's for a new reader and leaves an
    existing reader's own zone as it is; a file without the column changes no zone."""
    db_session.add(Subscriber(email="here@example.com", status=SubscriberStatus.active, sections=[],
                              time_zone="Asia/Tokyo"))
    db_session.flush()
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
    assert subs["here@example.com"].frequency.value == "weekly"
    assert subs["berlin@example.com"].time_zone == "Europe/Berlin"
    assert subs["plain@example.com"].time_zone is None  # the site's TIMEZONE
    assert "nowhere@example.com" not in subs
    assert subs["here@example.com"].time_zone == "Asia/Tokyo"  # an empty cell keeps theirs
    report = import_csv(db_session, io.StringIO("email,frequency,alerts,status,time_zone\r\n"
                                                "here@example.com,weekly,yes,active,America/Sao_Paulo\r\n"))
    db_session.expire_all()  # the import wrote with SQL: read the rows again
    assert report.updated == 1 and _all(db_session)["here@example.com"].time_zone == "America/Sao_Paulo"
