"""The `nashra` command as operators script it: real processes against PostgreSQL and Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from service.db import session_scope
from service.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    EditionStatus,
    Editor,
    Feed,
    Subscriber,
)
from tests.support.readers import reader

SAMPLE_FEED = Path(__file__).resolve().parent.parent / "service" / "demo" / "sample_feed.xml"


def nashra(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=os.environ.copy(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_db_upgrade_is_idempotent(pg_env):
    for _ in range(2):
        proc = nashra("db", "upgrade")
        assert proc.returncode == 0, proc.stderr
        assert "latest schema" in proc.stdout


def test_feeds_add_and_ingest_report_what_was_found(pg_env, feed_server):
    url = feed_server.serve("/rss.xml", SAMPLE_FEED.read_bytes(), headers={"ETag": '"v1"'})
    proc = nashra("feeds", "add", url, "--section", "arab-world")
    assert proc.returncode == 0, proc.stderr
    first = nashra("ingest")
    assert first.returncode == 0, first.stderr
    assert "new" in first.stdout
    again = nashra("ingest")  # unchanged: one 304
    assert again.returncode == 0
    assert feed_server.requests[-1][1].get("If-None-Match") == '"v1"'


def test_feeds_add_refuses_a_bad_url_without_a_traceback(pg_env):
    proc = nashra("feeds", "add", "ftp://example.com/feed")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "error:" in proc.stderr
    with session_scope() as s:
        assert s.scalars(select(Feed)).all() == []


def test_ingest_without_feeds_says_how_to_add_one(pg_env):
    proc = nashra("ingest")
    assert proc.returncode == 1
    assert "nashra feeds add" in proc.stdout


def test_editors_add_prints_the_token_once_and_stores_only_its_hash(pg_env):
    proc = nashra("editors", "add", "مها", "--role", "admin")
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip().splitlines()[-1]
    assert len(token) >= 20
    with session_scope() as s:
        editor = s.scalars(select(Editor)).one()
        assert editor.role.value == "admin" and token not in editor.token_hash


def test_alert_send_queues_an_alert_edition(pg_env, redis_url):
    proc = nashra("alert", "send", "--headline", "عاجل: اختبار", "--link", "https://news.example/x", "--yes")
    assert proc.returncode == 0, proc.stderr
    with session_scope() as s:
        ed = s.scalars(select(Edition)).one()
        assert ed.kind == EditionKind.alert and ed.params["headline"] == "عاجل: اختبار"


def test_alert_send_asks_first_and_a_no_sends_nothing(pg_env, redis_url):
    proc = nashra("alert", "send", "--headline", "عاجل", "--link", "https://news.example/x", stdin="n\n")
    assert proc.returncode == 1 and "not sent" in proc.stdout
    with session_scope() as s:
        assert s.scalars(select(Edition)).all() == []


def test_alert_send_refuses_bad_input(pg_env, redis_url):
    assert nashra("alert", "send", "--headline", "عاجل", "--yes").returncode == 2
    bad = nashra("alert", "send", "--headline", "عاجل", "--link", "javascript:alert(1)", "--yes")
    assert bad.returncode == 2 and "link" in bad.stderr
    with session_scope() as s:
        assert s.scalars(select(Edition)).all() == []


def test_digest_send_with_nothing_to_send_says_so(pg_env, redis_url):
    proc = nashra("digest", "send", "--frequency", "weekly")
    assert proc.returncode == 0, proc.stderr
    assert "nothing sent" in proc.stdout


def test_digest_send_and_preview_name_a_newsletter_and_refuse_what_is_no_digest(pg_env, redis_url, tmp_path):
    assert "nothing sent" in nashra("digest", "send", "--newsletter", "weekly").stdout
    for bad in ("no-such-letter", "alerts", "Bad Slug!"):
        for args in (("send",), ("preview", "--out", str(tmp_path))):
            proc = nashra("digest", *args, "--newsletter", bad)
            assert proc.returncode == 2 and "Traceback" not in proc.stderr, (args, bad, proc.stderr)
    preview = nashra("digest", "preview", "--newsletter", "weekly", "--out", str(tmp_path))
    assert preview.returncode == 0 and preview.stdout.startswith("the weekly digest"), preview.stderr
    with session_scope() as s:
        assert s.scalars(select(Edition)).all() == []


def test_status_shows_progress_from_the_ledger(pg_env):
    with session_scope() as s:
        ed = Edition(kind=EditionKind.alert, status=EditionStatus.sending, title="عاجل", params={})
        s.add(ed)
        s.flush()
        statuses = [DeliveryStatus.sent] * 3 + [DeliveryStatus.failed] + [DeliveryStatus.queued] * 2
        for i, st in enumerate(statuses):
            sub = reader(s, f"s{i}@example.com")
            s.add(Delivery(edition_id=ed.id, subscriber_id=sub.id, status=st))
        edition_id = ed.id
    proc = nashra("status", str(edition_id))
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if f"│ {edition_id} " in line or line.strip().startswith(f"{edition_id} "))
    cells = [c.strip() for c in row.replace("┃", "│").split("│") if c.strip()]
    # id, kind, status, recipients, sent, failed, remaining …
    assert cells[:7] == [str(edition_id), "alert", "sending", "6", "3", "1", "2"], proc.stdout
    assert "example.com" not in proc.stdout  # no address on the operator's screen


def test_subscribers_import_then_export_round_trips(pg_env, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text(
        "email,sections,frequency,alerts,status,consent_source,consented_at\n"
        "a@example.com,,daily,yes,active,print form,2025-01-02T03:04:05+00:00\n"
        "not-an-address,,daily,yes,active,,\n",
        encoding="utf-8",
    )
    proc = nashra("subscribers", "import", str(src))
    assert proc.returncode == 1, proc.stderr  # a row was skipped: a script must see it
    assert "line 3" in proc.stdout and "1 skipped" in proc.stdout  # the bad row is reported by its line
    out = tmp_path / "out.csv"
    assert nashra("subscribers", "export", str(out)).returncode == 0
    text = out.read_text(encoding="utf-8")
    assert "a@example.com" in text and "not-an-address" not in text
    assert text.splitlines()[0].endswith(",time_zone,newsletters")  # frequency daily, alerts yes: these two
    assert text.splitlines()[1].startswith("a@example.com,,daily,yes,") and text.splitlines()[1].endswith(",daily|alerts")
    with session_scope() as s:
        assert s.scalars(select(Subscriber.email)).all() == ["a@example.com"]


def test_import_of_a_file_with_unknown_columns_is_refused_whole(pg_env, tmp_path):
    src = tmp_path / "bad.csv"
    src.write_text("email,favourite_colour\na@example.com,blue\n", encoding="utf-8")
    proc = nashra("subscribers", "import", str(src))
    assert proc.returncode == 2 and "favourite_colour" in proc.stderr and "Traceback" not in proc.stderr
    with session_scope() as s:
        assert s.scalars(select(Subscriber)).all() == []


def test_editors_add_twice_is_a_clear_error(pg_env):
    assert nashra("editors", "add", "سامي").returncode == 0
    again = nashra("editors", "add", "سامي")
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


def test_edition_pause_resume_cancel_from_the_cli(pg_env, redis_url):
    with session_scope() as s:
        ed = Edition(kind=EditionKind.alert, status=EditionStatus.sending, title="عاجل", params={})
        s.add(ed)
        s.flush()
        edition_id = ed.id
    assert "paused" in nashra("edition", "pause", str(edition_id)).stdout
    again = nashra("edition", "pause", str(edition_id))
    assert again.returncode == 2 and "only a planned or sending edition" in again.stderr
    assert nashra("edition", "resume", str(edition_id)).returncode == 0
    assert "cancelled" in nashra("edition", "cancel", str(edition_id)).stdout
    with session_scope() as s:
        assert s.get(Edition, edition_id).status == EditionStatus.cancelled
    missing = nashra("edition", "cancel", "999999")
    assert missing.returncode == 2 and "no edition" in missing.stderr
