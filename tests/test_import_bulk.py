"""`nashra subscribers import` at the speed of the database (issue 19, item 6): chunks that
commit, a resumed import that doubles no one, listmonk and Mailchimp exports read as they
are, memory bounded by the chunk and not by the file, hostile files refused clearly, and
the fast path for plain addresses held to the validator's answers (Hypothesis).

Against PostgreSQL (the COPY path) and, where it matters, SQLite (the embedded default).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import subprocess
import sys
import textwrap

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from service import dispatch
from service.cli import importing as import_cli
from service.db import session_scope
from service.models import (
    AuditLog,
    Consent,
    Section,
    Subscriber,
    SubscriberStatus,
    SuppressedHash,
    Suppression,
)
from service.newsletters import membership
from service.subscribers import clocks, csvio, hashes
from service.subscribers.csvio import CsvError, import_csv
from service.subscribers.errors import InvalidInput
from service.subscribers.validation import normalise_email
from service.usecases.subscribers import import_file
from tests.support.readers import reader

HEADER = "email,sections,frequency,alerts,status,consent_source,consented_at\n"


@pytest.fixture
def recorder(monkeypatch) -> dispatch.Recorder:
    """Confirmations asked for go here (after each commit), not to a broker."""
    rec = dispatch.Recorder()
    monkeypatch.setattr(dispatch, "_installed", rec)
    return rec


def _rows(n: int, *, pending_every: int | None = 4, start: int = 0) -> str:
    return "".join(f"r{i}@example.com,,weekly,yes,{'pending' if pending_every and i % pending_every == 0 else 'active'},,\n"
                   for i in range(start, start + n))


def _emails() -> list[str]:
    with session_scope() as s:
        return list(s.scalars(sa.select(Subscriber.email).order_by(Subscriber.id)))


def _count(model) -> int:
    with session_scope() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(model))


def _slugs(session, sub: Subscriber) -> list[str]:
    """The reader's newsletters, in the site's order."""
    return [n.newsletter.slug for n in membership.of(session, sub.id)]


def _confirmed_ids(rec: dispatch.Recorder) -> list[int]:
    return [c[2] for c in rec.calls if c[:2] == ("send_transactional", "confirm")]


# ------------------------------------------------------------------ chunks and resuming


@pytest.mark.parametrize("env", ["pg_env", "sqlite_env"])
def test_chunks_commit_and_the_report_counts_them(env, request, tmp_path, recorder):
    request.getfixturevalue(env)
    src = tmp_path / "in.csv"
    src.write_text(HEADER + _rows(23), encoding="utf-8")
    seen = []
    report = import_file(str(src), chunk=5, progress=lambda r, done, total: seen.append((r.created, done, total)))
    assert (report.created, report.already, report.skipped, report.chunks, report.rows) == (23, 0, 0, 5, 23)
    assert [c for c, _, _ in seen] == [5, 10, 15, 20, 23] and seen[-1][1] == seen[-1][2] == src.stat().st_size
    assert len(_emails()) == 23 and _count(Consent) == 23
    # Each pending reader's confirmation is asked for once, after their chunk committed.
    with session_scope() as s:
        pending = set(s.scalars(sa.select(Subscriber.id).where(Subscriber.status == SubscriberStatus.pending)))
    assert sorted(_confirmed_ids(recorder)) == sorted(pending) and len(pending) == 6
    with session_scope() as s:
        [audit] = s.scalars(sa.select(AuditLog).where(AuditLog.action == "subscribers_import"))
        assert audit.details["created"] == 23


@pytest.mark.parametrize("env", ["pg_env", "sqlite_env"])
def test_an_interrupted_import_resumes_without_doubling_anyone(env, request, tmp_path, recorder, monkeypatch):
    request.getfixturevalue(env)
    src = tmp_path / "in.csv"
    src.write_text(HEADER + _rows(23), encoding="utf-8")
    applied = csvio.CsvImport._update
    calls = {"n": 0}

    def dies_in_the_third_chunk(self, session, updates, activations):
        calls["n"] += 1
        if calls["n"] == 3:  # after the chunk's readers were inserted, before its commit
            raise ConnectionError("the database went away")
        return applied(self, session, updates, activations)

    monkeypatch.setattr(csvio.CsvImport, "_update", dies_in_the_third_chunk)
    with pytest.raises(ConnectionError):
        import_file(str(src), chunk=5)
    # Two whole chunks are in; nothing of the third (its INSERT was rolled back).
    assert _emails() == [f"r{i}@example.com" for i in range(10)]
    assert _count(Consent) == 10
    first_confirmations = _confirmed_ids(recorder)
    assert len(first_confirmations) == 3  # r0, r4, r8: only for committed rows
    monkeypatch.setattr(csvio.CsvImport, "_update", applied)
    report = import_file(str(src), chunk=5)
    assert (report.created, report.already, report.unchanged, report.skipped) == (13, 10, 10, 0)
    assert "13 created, 10 already here" in report.summary()
    assert _emails() == [f"r{i}@example.com" for i in range(23)]  # everyone once
    assert _count(Consent) == 23
    confirmations = _confirmed_ids(recorder)
    assert len(confirmations) == len(set(confirmations)) == 6  # no one asked twice
    # A third run finds everyone.
    again = import_file(str(src), chunk=5)
    assert (again.created, again.already) == (0, 23) and len(_confirmed_ids(recorder)) == 6


def test_ctrl_c_keeps_the_chunks_written_and_says_how_to_go_on(pg_env, tmp_path, recorder, monkeypatch, capsys):
    src = tmp_path / "in.csv"
    src.write_text(HEADER + _rows(23), encoding="utf-8")
    parse = csvio.CsvImport._parse

    def interrupted_at_line_14(self, line, rec):
        if line == 14:
            raise KeyboardInterrupt
        return parse(self, line, rec)

    monkeypatch.setattr(csvio.CsvImport, "_parse", interrupted_at_line_14)
    monkeypatch.setattr(import_cli.subscribers, "import_file", functools.partial(import_file, chunk=5))
    assert import_cli.run(str(src)) == 130
    err = capsys.readouterr().err
    assert "interrupted: the chunks written are kept (10 created, 0 already here, 0 skipped)" in err
    assert len(_emails()) == 10
    monkeypatch.setattr(csvio.CsvImport, "_parse", parse)
    assert import_cli.run(str(src)) == 0
    assert len(_emails()) == 23 and len(_confirmed_ids(recorder)) == 6


def test_a_file_that_breaks_mid_way_keeps_its_whole_chunks_and_says_so(pg_env, tmp_path, recorder):
    good = (HEADER + _rows(600)).encode()  # 20 KB: the decoder reads ahead by 8 KB blocks
    src = tmp_path / "in.csv"
    # Then a row that is not UTF-8 (a spreadsheet's cp1256 row pasted in), and more.
    src.write_bytes(good + "bad@example.com,رياضة,daily,yes,active,,\n".encode("cp1256")
                    + _rows(300, start=1000).encode())
    with pytest.raises(CsvError, match="UTF-8") as caught:
        import_file(str(src), chunk=100)
    kept = caught.value.report.created
    assert kept >= 300 and kept % 100 == 0  # whole chunks: never part of one
    assert len(_emails()) == kept
    with session_scope() as s:
        [audit] = s.scalars(sa.select(AuditLog).where(AuditLog.action == "subscribers_import"))
        assert audit.details["interrupted"] is True
    src.write_bytes(good + b"bad@example.com,,daily,yes,active,,\n" + _rows(300, start=1000).encode())
    report = import_file(str(src), chunk=100)
    assert (report.created, report.already) == (901 - kept, kept)
    assert len(_emails()) == 901 == len(set(_emails()))


def test_the_cli_says_what_was_kept_when_a_file_breaks_mid_way(pg_env, tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes((HEADER + _rows(6000, pending_every=None)).encode() + b"x@example.com,\xff\xfe,,,,,\n")
    proc = subprocess.run([sys.executable, "-m", "service", "subscribers", "import", str(src)],
                          env=os.environ.copy(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "UTF-8" in proc.stderr and "5000 created" in proc.stderr and "run the same import again" in proc.stderr
    again = tmp_path / "fixed.csv"
    again.write_bytes((HEADER + _rows(6000, pending_every=None)).encode())
    proc = subprocess.run([sys.executable, "-m", "service", "subscribers", "import", str(again)],
                          env=os.environ.copy(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "1000 created, 5000 already here" in proc.stdout and "rows/s" in proc.stdout
    assert len(_emails()) == 6000


@pytest.mark.parametrize("tty", [True, False])
def test_the_cli_shows_progress_and_a_summary(pg_env, tmp_path, recorder, capsys, monkeypatch, tty):
    src = tmp_path / "in.csv"
    src.write_text(HEADER + _rows(12) + "bad,,,,,,\n", encoding="utf-8")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: tty)
    monkeypatch.setattr(import_cli, "PROGRESS_EVERY", 5)
    assert import_cli.run(str(src)) == 1  # a row was skipped
    out, err = capsys.readouterr()
    summary = "12 created, 0 already here (0 updated, 0 unchanged), 1 skipped, 3 confirmation(s) queued\n"
    assert "\nline 14: email" in out and "13 rows in" in out and "rows/s" in out
    if tty:  # the bar, drawn and then cleared, before the summary
        assert "importing" in out and "\x1b[" in out and summary in out
    else:
        assert summary in out and "importing" not in out
        assert err.splitlines() == ["13 rows: 12 created, 0 already here, 1 skipped (100 % of the file)"]


def test_duplicates_are_reported_within_and_across_chunks(pg_env, tmp_path, recorder):
    src = tmp_path / "in.csv"
    src.write_text(HEADER + _rows(7) + "R1@example.com,,daily,yes,active,,\n" + "r6@example.com,,daily,no,active,,\n",
                   encoding="utf-8")
    report = import_file(str(src), chunk=5)
    assert report.created == 7 and [line for line, _ in report.problems] == [9, 10]
    assert "same address as" in report.problems[0][1] and "same address as line 8" in report.problems[1][1]


def test_pending_readers_already_there_are_not_asked_again_and_pending_become_active(pg_env, tmp_path, recorder):
    with session_scope() as s:
        reader(s, "p@example.com", status=SubscriberStatus.pending)
        reader(s, "a@example.com", frequency="daily")
    src = tmp_path / "in.csv"
    src.write_text(HEADER + "p@example.com,,weekly,no,active,desk,2024-05-01T10:00:00Z\n"
                            "a@example.com,,weekly,yes,pending,,\n", encoding="utf-8")
    report = import_file(str(src), chunk=1)
    assert (report.created, report.updated, report.confirmations) == (0, 2, 0)
    with session_scope() as s:
        p = s.scalar(sa.select(Subscriber).where(Subscriber.email == "p@example.com"))
        a = s.scalar(sa.select(Subscriber).where(Subscriber.email == "a@example.com"))
        assert p.status is SubscriberStatus.active and p.confirmed_at is not None and p.consent_source == "desk"
        assert p.consented_at.year == 2024 and _slugs(s, p) == ["weekly"]  # alerts: no
        assert a.status is SubscriberStatus.active and _slugs(s, a) == ["weekly", "alerts"]  # never demoted
    assert recorder.calls == []


# ------------------------------------------------------------------ listmonk and Mailchimp

LISTMONK = textwrap.dedent("""\
    uuid,email,name,attributes,status,created_at,updated_at
    6f3c0e1a-0000-4000-8000-000000000001,Sami@Example.com,سامي,"{""city"": ""عمّان"", ""id"": 99999999999}",enabled,2021-06-08 10:20:11.123456+00,2021-06-09 10:20:11+00
    6f3c0e1a-0000-4000-8000-000000000002,blocked@example.com,X,{},blocklisted,2021-06-08 10:20:11+00,2021-06-08 10:20:11+00
    6f3c0e1a-0000-4000-8000-000000000003,off@example.com,Y,{},disabled,2021-06-08 10:20:11+00,2021-06-08 10:20:11+00
    """)


def test_a_listmonk_export_reads_as_it_is(pg_env, tmp_path, recorder):
    src = tmp_path / "listmonk.csv"
    src.write_text(LISTMONK, encoding="utf-8")
    report = import_file(str(src))
    assert report.source == "listmonk" and report.created == 1 and report.skipped == 0
    assert report.ignored_columns == ["uuid", "name", "attributes", "updated_at"]
    text = report.summary()
    assert "a listmonk export: column(s) ignored" in text and "'attributes'" in text
    assert "1 row(s): blocklisted in listmonk: not imported; on the suppression list" in text
    assert "1 row(s): disabled in listmonk: not imported" in text
    with session_scope() as s:
        sami = s.scalar(sa.select(Subscriber).where(Subscriber.email == "sami@example.com"))
        assert sami.status is SubscriberStatus.active and sami.consent_source == "listmonk"
        assert sami.consented_at.isoformat().startswith("2021-06-08T10:20:11")
        [record] = s.scalars(sa.select(Consent).where(Consent.subscriber_id == sami.id))
        assert (record.event, record.source) == ("import", "listmonk")
        assert [(x.email, x.reason) for x in s.scalars(sa.select(Suppression))] == [("blocked@example.com", "manual")]
        assert s.scalar(sa.select(Subscriber).where(Subscriber.email == "off@example.com")) is None
    assert recorder.calls == []  # their consent was taken in listmonk: no confirmation mail


@pytest.mark.parametrize("env", ["pg_env", "sqlite_env"])
def test_a_listmonk_list_export_keeps_the_subscription_status(env, request, tmp_path, recorder):
    request.getfixturevalue(env)
    src = tmp_path / "listmonk.csv"
    src.write_text("id,uuid,email,name,status,subscription_status,subscription_created_at\n"
                   f"{2**40},u1,new@example.com,N,enabled,unconfirmed,2024-01-01 00:00:00+00\n"
                   f"{2**63},u2,gone@example.com,G,enabled,unsubscribed,2024-01-01 00:00:00+00\n"
                   "3,u3,blocked@example.com,B,blocklisted,confirmed,2024-01-01 00:00:00+00\n", encoding="utf-8")
    report = import_file(str(src))
    assert (report.created, report.confirmations, report.skipped) == (1, 1, 0)
    with session_scope() as s:
        assert s.scalar(sa.select(Subscriber.status).where(Subscriber.email == "new@example.com")) == "pending"
        assert s.scalar(sa.select(SuppressedHash.reason)) == "unsubscribed"
        assert s.scalar(sa.select(Suppression.email)) == "blocked@example.com"
    assert len(_confirmed_ids(recorder)) == 1


MAILCHIMP_HEAD = ('"Email Address","First Name","Last Name",Address,"Phone Number",MEMBER_RATING,OPTIN_TIME,OPTIN_IP,'
                  'CONFIRM_TIME,CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION,LAST_CHANGED,LEID,EUID,'
                  'NOTES,TAGS')


@pytest.mark.parametrize("env", ["pg_env", "sqlite_env"])
def test_mailchimp_exports_read_as_they_are(env, request, tmp_path, recorder):
    request.getfixturevalue(env)
    subscribed = tmp_path / "subscribed_members_export_1a2b3c.csv"
    subscribed.write_text(
        MAILCHIMP_HEAD + "\n"
        'Lina@Example.com,لينا,,,,2,"2020-02-03 04:05:06",203.0.113.9,"2020-02-03 05:06:07",198.51.100.77,,,,,,JO,,'
        '"2020-02-03 05:06:07",123456789012,a1b2c3,"",""\n'
        'left@example.com,L,,,,2,"2020-02-03 04:05:06",,,,,,,,,,,,99999999999999,x,,\n', encoding="utf-8")
    report = import_file(str(subscribed))
    assert report.source == "mailchimp" and report.created == 2 and report.skipped == 0
    assert "'First Name'" in report.summary() and "'LEID'" in report.summary() and "'OPTIN_TIME'" not in report.summary()
    with session_scope() as s:
        lina = s.scalar(sa.select(Subscriber).where(Subscriber.email == "lina@example.com"))
        assert lina.status is SubscriberStatus.active and lina.consent_source == "mailchimp"
        assert lina.consented_at.isoformat() == "2020-02-03T05:06:07+00:00"  # the confirmation, in UTC
        [record] = s.scalars(sa.select(Consent).where(Consent.subscriber_id == lina.id))
        assert record.ip == "198.51.100.0/24"  # CONSENT_IP=network, as for our own forms
    assert recorder.calls == []

    unsubscribed = tmp_path / "unsubscribed_members_export_1a2b3c.csv"
    unsubscribed.write_text(
        MAILCHIMP_HEAD + ",UNSUB_TIME,UNSUB_CAMPAIGN_TITLE,UNSUB_CAMPAIGN_ID,UNSUB_REASON,UNSUB_REASON_OTHER\n"
        'left@example.com,L,,,,2,,,,,,,,,,,,,1,x,,,"2021-01-01 00:00:00",c,1,r,\n'
        'old@example.com,O,,,,2,,,,,,,,,,,,,2,y,,,"2021-01-01 00:00:00",c,1,r,\n', encoding="utf-8")
    report = import_file(str(unsubscribed))
    assert report.created == 0 and [line for line, _ in report.problems] == [2]  # a reader here: a person decides
    assert "unsubscribed in mailchimp, but a reader here" in report.problems[0][1]
    assert "1 row(s): unsubscribed in mailchimp: not imported" in report.summary()
    with session_scope() as s:
        assert list(s.scalars(sa.select(SuppressedHash.hash))) == [hashes.address_hash("old@example.com")]
    # An old list with the unsubscribed address does not bring them back.
    later = tmp_path / "later.csv"
    later.write_text("email,status\nold@example.com,active\n", encoding="utf-8")
    assert "unsubscribed; an import does not add them back" in import_file(str(later)).problems[0][1]

    cleaned = tmp_path / "cleaned_members_export_1a2b3c.csv"
    cleaned.write_text(MAILCHIMP_HEAD + ",CLEAN_TIME,CLEAN_CAMPAIGN_TITLE,CLEAN_CAMPAIGN_ID\n"
                       'bounced@example.com,B,,,,1,,,,,,,,,,,,,3,z,,,"2021-01-01 00:00:00",c,1\n', encoding="utf-8")
    report = import_file(str(cleaned))
    assert "1 row(s): cleaned in mailchimp: not imported; on the suppression list" in report.summary()
    with session_scope() as s:
        assert s.execute(sa.select(Suppression.email, Suppression.reason)).all() == [("bounced@example.com",
                                                                                       "hard_bounce")]
    # Again: nothing more, nothing doubled.
    again = import_file(str(cleaned))
    assert "already known here as such" in again.summary() and _count(Suppression) == 1


def test_a_foreign_status_that_means_nothing_is_a_row_error(db_session):
    report = import_csv(db_session, io.StringIO("email,name,status\na@example.com,A,vip\n"))
    assert report.source == "listmonk" and report.skipped == 1 and "'vip'" in report.problems[0][1]
    # The contract's own columns keep their strict meaning.
    report = import_csv(db_session, io.StringIO("email,status\na@example.com,subscribed\n"))
    assert report.skipped == 1 and "active or pending" in report.problems[0][1]


# ------------------------------------------------------------------ memory


def test_memory_is_bounded_by_the_chunk_not_the_file(pg_env, tmp_path):
    """200,000 readers: the import's peak RSS grows by less than a file's worth (the rows
    of the whole file in Python would be ~200 MB; one chunk is a few)."""
    src = tmp_path / "big.csv"
    with src.open("w", encoding="utf-8") as fh:
        fh.write("email,frequency,status,consented_at\n")
        fh.writelines(f"reader.{i}@mail{i % 97}.example.com,weekly,active,2024-01-01T00:00:00Z\n"
                      for i in range(200_000))
    script = textwrap.dedent(f"""
        import json, resource
        from service import dispatch
        from service.usecases.subscribers import import_file
        dispatch.install(dispatch.Recorder())
        import_file({str(tmp_path / 'warm.csv')!r})  # every module loaded, the pool open
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        report = import_file({str(src)!r})
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"created": report.created, "growth_kb": after - before}}))
    """)
    (tmp_path / "warm.csv").write_text("email,status\nwarm@example.com,active\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", script], env=os.environ.copy(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["created"] == 200_000
    assert result["growth_kb"] < 40 * 1024, result


# ------------------------------------------------------------------ hostile input


def test_hostile_rows_are_refused_one_by_one(db_session):
    huge_id = str(2**80)
    text = (
        "id,email,name,attributes,status,created_at\n"
        f"{huge_id},ok@example.com,n,{{}},enabled,2024-01-01 00:00:00+00\n"
        "1,nul\x00@example.com,n,{},enabled,\n"
        "2,nul-name@example.com,a\x00b,{},enabled,\n"
        f"3,{'a' * 10_000}@example.com,n,{{}},enabled,\n"
        "4,future@example.com,n,{},enabled,2999-01-01 00:00:00+00\n"
        "5,notatime@example.com,n,{},enabled,yesterday\n"
        + "6,wide@example.com," + ",".join(["x"] * 10_000) + "\n"
    )
    report = import_csv(db_session, io.StringIO(text))
    assert report.created == 2  # ok@ and nul-name@ (the name is not kept)
    assert [line for line, _ in report.problems] == [3, 5, 6, 7, 8]
    assert "email" in report.problems[0][1] and "more fields" in report.problems[-1][1]
    emails = set(db_session.scalars(sa.select(Subscriber.email)))
    assert emails == {"ok@example.com", "nul-name@example.com"}


def test_consent_source_with_controls_is_refused(db_session):
    report = import_csv(db_session, io.StringIO(HEADER + "a@example.com,,,,active,desk\x00,\n"
                                                         "b@example.com,,,,active,de\x1bsk,\n"
                                                         "c@example.com,,,,active,tab\there,\n"))
    assert [line for line, _ in report.problems] == [2, 3] and report.created == 1


def test_a_field_over_the_csv_limit_refuses_the_rest_of_the_file_clearly(pg_env, tmp_path, recorder):
    src = tmp_path / "in.csv"
    src.write_text(HEADER + _rows(7) + "big@example.com," + "x" * 200_000 + ",,,,,\n" + _rows(3, start=50),
                   encoding="utf-8")
    with pytest.raises(CsvError, match="line 9") as caught:
        import_file(str(src), chunk=5)
    assert "field larger than field limit" in str(caught.value)
    assert len(_emails()) == 5  # the first chunk; none of the second, which held the huge field


@pytest.mark.parametrize("payload", [b"\xff\xfe" + "email\n".encode("utf-16-le"), b"\x00\x00\x00", b"\n\n\n",
                                     b"email\xff\n", b'"email\n'])
def test_a_hostile_header_refuses_the_file_before_anything_is_written(db_session, payload):
    with pytest.raises(CsvError):
        import_csv(db_session, io.BytesIO(payload + b"a@example.com\n"))
    assert db_session.scalar(sa.select(sa.func.count()).select_from(Subscriber)) == 0


# ------------------------------------------------------------------ Hypothesis

atext = st.sampled_from("abcxyzABCXYZ0189_+-.'!#$%&*/=?^`{|}~@\"() ,;:<>[]\\\x00\t\u0660é\u200f")
local = st.text(atext, min_size=0, max_size=70)
label = st.text(st.sampled_from("abcxyzABC0189-_.é"), min_size=0, max_size=65)
domains = st.lists(label, min_size=1, max_size=4).map(".".join)
tlds = st.sampled_from(["com", "org", "c", "co", "test", "local", "localhost", "arpa", "onion", "invalid", "example",
                        "xn--p1ai", "123", "a1", "museum", "COM", ""])
addresses = st.one_of(
    st.builds(lambda lp, d, t: f"{lp}@{d}.{t}", local, domains, tlds),
    st.builds(lambda lp, d: f"{lp}@{d}", local, domains),
    st.text(max_size=40),
)


@given(addresses)
@example("a--b@ab--cd.com")
@example("a@xn--abc.com")
@example("-a-@-b.com")
@example("a@b-.com")
@example(f"{'a' * 64}@example.com")
@example(f"{'a' * 65}@example.com")
@example(f"a@{'b' * 63}.com")
@example(f"a@{'b' * 64}.com")
@example(f"{'a' * 60}@{'b' * 63}.{'c' * 63}.{'d' * 62}.com")
@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "400")), deadline=None)
def test_the_fast_path_for_plain_addresses_gives_the_validators_answer(raw):
    try:
        expected = normalise_email(raw.strip())
    except InvalidInput:
        expected = None
    try:
        got = csvio._normalise(raw.strip())
    except InvalidInput:
        got = None
    assert got == expected


cell = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", "active", "pending", "ACTIVE", "daily", "weekly", "none", "yes", "no", "world", "sport|world",
                     "2024-01-01T00:00:00Z", "2999-01-01", "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59",
                     "'=1+2", "\x00", "\ud800", "a" * 300]),
)
row = st.fixed_dictionaries({
    "email": st.one_of(st.builds("r{}@example.com".format, st.integers(0, 30)), st.text(max_size=20)),
    "sections": cell, "frequency": cell, "alerts": cell, "status": cell, "consent_source": cell,
    "consented_at": cell, "time_zone": st.one_of(cell, st.sampled_from(["Europe/Berlin", "Asia/Kolkata", "Mars/Base"])),
    "newsletters": st.one_of(cell, st.sampled_from(["daily", "weekly|alerts", "alerts|nope", " DAILY | weekly ", "|||",
                                                    "a" * 70, "|".join(["daily"] * 101)])),
})


@given(st.lists(row, max_size=12), st.integers(1, 5))
@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_any_row_fields_give_a_report_never_a_crash(db_session, rows, chunk):
    """Whatever the cells, rows are imported or reported by line: never an exception,
    never a reader who is not in the report, never one stored as the file did not say."""
    if not db_session.scalar(sa.select(Section.id).where(Section.slug == "world")):
        db_session.add_all([Section(slug="world", name="عربي دولي", position=1),
                            Section(slug="sport", name="رياضة", position=2)])
        db_session.flush()
    buf = io.StringIO()
    out = csv.writer(buf)
    out.writerow(list(csvio.COLUMNS))
    for r in rows:
        out.writerow([r[c].replace("\ud800", "\ufffd") for c in csvio.COLUMNS])
    savepoint = db_session.begin_nested()
    try:
        report = import_csv(db_session, io.BytesIO(buf.getvalue().encode("utf-8")), chunk=chunk)
        stored = {s.email: s for s in db_session.scalars(sa.select(Subscriber))}
        assert report.created == len(stored)
        assert report.created + report.skipped <= len(rows)
        for sub in stored.values():
            assert sub.status in (SubscriberStatus.active, SubscriberStatus.pending)
            assert sub.email == sub.email.strip().lower() and "\x00" not in (sub.consent_source or "")
            assert sub.time_zone is None or sub.time_zone in clocks.known_zones()  # only a name zoneinfo knows
            assert {n.newsletter.slug for n in membership.of(db_session, sub.id)} <= {"daily", "weekly", "alerts"}
        assert all(line >= 2 for line, _ in report.problems)
    finally:
        savepoint.rollback()


def test_times_outside_what_the_database_stores_are_row_errors(db_session):
    report = import_csv(db_session, io.StringIO(HEADER + "a@example.com,,,,active,,0001-01-01T00:00:00+23:59\n"
                                                         "b@example.com,,,,active,,9999-12-31T23:59:59-23:59\n"
                                                         "c@example.com,,,,active,,2020-01-01T00:00:00+23:59\n"))
    assert [line for line, _ in report.problems] == [2, 3] and report.created == 1
    assert "consented_at" in report.problems[0][1]


# ------------------------------------------------------------------ several newsletters (issue 17)


@pytest.mark.parametrize("env", ["pg_env", "sqlite_env"])
def test_the_newsletters_column_in_chunks_on_both_databases(env, request, tmp_path, recorder):
    """The bulk path writes the subscriptions with the readers (PostgreSQL: in the same
    statement), an import of the same file again finds them unchanged, and a changed
    file moves readers between newsletters."""
    from service.models import Newsletter, NewsletterKind
    from service.newsletters import catalogue

    request.getfixturevalue(env)
    with session_scope() as s:
        catalogue.seed_first(s)
        s.add(Newsletter(slug="long-reads", name="قراءات طويلة", kind=NewsletterKind.digest, frequency="weekly",
                         sections=[], position=5))
    src = tmp_path / "in.csv"
    src.write_text("email,newsletters,frequency\n" + "".join(
        f"r{i}@example.com,{('long-reads|alerts', 'daily', '')[i % 3]},weekly\n" for i in range(12))
        + "bad@example.com,long-read,\n", encoding="utf-8")
    report = import_file(str(src), chunk=5)
    assert (report.created, report.skipped) == (12, 1) and report.problems[0][0] == 14
    assert "'long-read'" in report.summary() and "long-reads" in report.summary()

    def on() -> dict[str, list[str]]:
        with session_scope() as s:
            return {sub.email: _slugs(s, sub) for sub in s.scalars(sa.select(Subscriber))}

    assert on()["r0@example.com"] == ["alerts", "long-reads"] and on()["r1@example.com"] == ["daily"]
    assert on()["r2@example.com"] == ["weekly", "alerts"]  # an empty cell: frequency and alerts say
    again = import_file(str(src), chunk=5)
    assert (again.created, again.unchanged, again.updated) == (0, 12, 0)
    src.write_text("email,newsletters\nr0@example.com,daily\nr1@example.com,daily|long-reads\n", encoding="utf-8")
    moved = import_file(str(src))
    assert moved.updated == 2
    assert on()["r0@example.com"] == ["daily"] and on()["r1@example.com"] == ["daily", "long-reads"]
