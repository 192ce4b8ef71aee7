"""Suppressions in the open (issue 21, item 5): `nashra suppressions list|lift` run as an
operator runs them (the real console script, in its own process, against PostgreSQL),
the reason filter on the admins' page, and a complaint that only an admin may lift.

The suppressions are made the way the service makes them (`suppress`, and a reader
forgotten after a bounce); what a test reads is the command's output and exit status,
the suppression list, the audit log — which must never hold an address — and the
command's log lines (stderr), which must not either.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.db import session_scope
from service.models import AuditLog, FeedbackEvent, Subscriber, SubscriberStatus, Suppression
from service.staff.editors import create_editor
from service.subscribers import hashes, privacy
from service.subscribers.suppression import is_suppressed, suppress
from service.usecases import suppressions
from tests.support.readers import reader

NASHRA = Path(sys.executable).with_name("nashra")
ADDRESSES = {
    "hard@example.com": ("hard_bounce", "smtp 5.1.1 for delivery:7"),
    "full@example.com": ("soft_bounce", "3 soft bounces within 15 days (last: delivery:9)"),
    "angry@example.org": ("complaint", "smtp abuse complaint about delivery:8"),
    "asked@example.org": ("manual", "the reader wrote to the newsroom"),
}


def nashra(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(NASHRA), *args], env=os.environ.copy(), capture_output=True, text=True, timeout=120)


@pytest.fixture
def listed(pg_env):
    """Four suppressions, one per reason, oldest first; readers for three of them."""
    with session_scope() as s:
        for email, status in (("hard@example.com", "active"), ("full@example.com", "active"),
                              ("angry@example.org", "unsubscribed")):
            reader(s, email, status=status)
        s.flush()
        for email, (reason, detail) in ADDRESSES.items():
            assert suppress(s, email, reason, detail=detail, actor="bounces")
    with session_scope() as s:
        return dict(s.execute(sa.select(Suppression.email, Suppression.id)).all())


def rows_of(stdout: str) -> list[list[str]]:
    """The table's rows (after the header), split on runs of two or more spaces."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert re.match(r"\s+id\s+address\s+reason\s+since\s+detail$", lines[0]), stdout
    return [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]


def lift_lines() -> list[AuditLog]:
    with session_scope() as s:
        return list(s.scalars(sa.select(AuditLog).where(AuditLog.action == "suppression.lift").order_by(AuditLog.id)))


def no_address_in(*texts: str) -> None:
    for text in texts:
        for email in ADDRESSES:
            assert email not in text, text


# ---------------------------------------------------------------- list


def test_list_shows_id_address_reason_since_and_detail_newest_first(listed):
    run = nashra("suppressions", "list")
    assert run.returncode == 0, run.stderr
    rows = rows_of(run.stdout)
    assert [r[1] for r in rows] == list(reversed(ADDRESSES))
    for ident, email, reason, since, detail in rows:
        assert int(ident) == listed[email]
        assert (reason, detail) == ADDRESSES[email]
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", since)
    no_address_in(run.stderr)  # the log lines name no address


def test_list_by_reason_and_by_search(listed):
    soft = nashra("suppressions", "list", "--reason", "soft_bounce")
    assert soft.returncode == 0 and [r[1] for r in rows_of(soft.stdout)] == ["full@example.com"]
    org = nashra("suppressions", "list", "--search", "EXAMPLE.ORG")  # case does not matter
    assert [r[1] for r in rows_of(org.stdout)] == ["asked@example.org", "angry@example.org"]
    both = nashra("suppressions", "list", "--search", "example.org", "--reason", "complaint")
    assert [r[1:3] for r in rows_of(both.stdout)] == [["angry@example.org", "complaint"]]
    # A search is a plain substring: % and _ are not wildcards.
    assert nashra("suppressions", "list", "--search", "%").stdout.strip() == "no suppressions matching the search"
    none = nashra("suppressions", "list", "--reason", "manual", "--search", "example.com")
    assert none.returncode == 0
    assert none.stdout.strip() == "no suppressions for reason manual matching the search"
    limited = nashra("suppressions", "list", "--limit", "2")
    assert [r[1] for r in rows_of(limited.stdout.split("\n(")[0])] == ["asked@example.org", "angry@example.org"]
    assert "the newest 2 shown" in limited.stdout


def test_list_refuses_an_unknown_reason_and_says_which_exist(listed):
    run = nashra("suppressions", "list", "--reason", "bounced")
    assert run.returncode == 2 and "hard_bounce" in run.stderr and "soft_bounce" in run.stderr
    assert "Traceback" not in run.stderr


def test_an_empty_list_says_so(pg_env):
    run = nashra("suppressions", "list")
    assert run.returncode == 0 and run.stdout.strip() == "no suppressions"


# ---------------------------------------------------------------- lift


def test_lift_takes_the_address_off_the_list_with_an_audit_line_that_names_no_address(listed):
    run = nashra("suppressions", "lift", " Hard@Example.COM ", "--why", "the relay's outage on 3 March, not the mailbox")
    assert run.returncode == 0, run.stderr
    assert f"suppression {listed['hard@example.com']} lifted (was hard_bounce since" in run.stdout
    no_address_in(run.stdout, run.stderr)
    with session_scope() as s:
        assert not is_suppressed(s, "hard@example.com")
        assert s.scalar(sa.select(sa.func.count()).select_from(Suppression)) == 3
        # A lift starts the soft-bounce count again (service/inbound/actions.py).
        reader = s.scalar(sa.select(Subscriber.id).where(Subscriber.email == "hard@example.com"))
        assert s.execute(sa.select(FeedbackEvent.source, FeedbackEvent.kind, FeedbackEvent.subscriber_id)).all() == [
            ("suppressions", "lifted", reader)]
    [line] = lift_lines()
    assert line.actor == "cli" and line.origin.startswith("cli ")  # `cli user@host`: who, from where
    assert line.target == f"suppression:{listed['hard@example.com']}"
    assert line.details["was"] == "hard_bounce" and line.details["reason"] == "the relay's outage on 3 March, not the mailbox"
    no_address_in(json.dumps(line.details), line.target or "")
    # `nashra audit` shows it, without the address.
    audit = nashra("audit", "--action", "suppression.")
    assert audit.returncode == 0 and "suppression.lift" in audit.stdout
    no_address_in(audit.stdout)
    # Lifted once: a second time is "not on the list".
    again = nashra("suppressions", "lift", "hard@example.com", "--why", "again")
    assert again.returncode == 1 and "not on the suppression list" in again.stderr


def test_the_operator_may_lift_a_complaint_and_is_told_the_reader_stays_unsubscribed(listed):
    run = nashra("suppressions", "lift", "angry@example.org", "--why", "they wrote: the report was a mis-click")
    assert run.returncode == 0, run.stderr
    assert "was complaint" in run.stdout and "stays so until they sign up again" in run.stdout
    with session_scope() as s:
        assert not is_suppressed(s, "angry@example.org")
        assert s.scalar(sa.select(Subscriber.status).where(Subscriber.email == "angry@example.org")) \
            is SubscriberStatus.unsubscribed
    assert [line.details["was"] for line in lift_lines()] == ["complaint"]


def test_lift_of_an_unknown_address_is_a_clear_error_that_changes_nothing(listed):
    run = nashra("suppressions", "lift", "nobody@example.com", "--why", "a test")
    assert run.returncode == 1
    assert "not on the suppression list (nothing was changed)" in run.stderr and "Traceback" not in run.stderr
    assert lift_lines() == []
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Suppression)) == 4


@pytest.mark.parametrize("why", ["", "   ", "x" * 501])
def test_lift_without_a_usable_reason_is_refused_and_changes_nothing(listed, why):
    run = nashra("suppressions", "lift", "hard@example.com", "--why", why)
    assert run.returncode == 2, run.stdout
    assert run.stderr.startswith("error: ") and "(nothing was changed)" in run.stderr
    assert ("at most 500 characters" in run.stderr) if why.strip() else ("say why" in run.stderr)
    assert lift_lines() == []
    with session_scope() as s:
        assert is_suppressed(s, "hard@example.com")


def test_lift_without_why_is_a_usage_error(listed):
    run = nashra("suppressions", "lift", "hard@example.com")
    assert run.returncode == 2 and "--why" in run.stderr
    assert lift_lines() == []


def test_lift_of_a_forgotten_readers_blocked_address_keeps_only_the_forgotten_hash(listed):
    # The bounced reader asked to be forgotten: the suppression became a keyed hash that
    # still blocks every mail, the signup form too.
    with session_scope() as s:
        privacy.forget_address(s, "hard@example.com", actor="test")
    with session_scope() as s:
        assert hashes.reason_for(s, "hard@example.com") == "hard_bounce" and is_suppressed(s, "hard@example.com")
    run = nashra("suppressions", "lift", "hard@example.com", "--why", "the bounce was the relay's fault")
    assert run.returncode == 0, run.stderr
    assert "forgotten" in run.stdout and "(hard_bounce)" in run.stdout
    no_address_in(run.stdout, run.stderr)
    with session_scope() as s:
        # No longer blocked; still a hash, so an old list cannot import it again.
        assert hashes.reason_for(s, "hard@example.com") == "forgotten" and not is_suppressed(s, "hard@example.com")
    [line] = lift_lines()
    assert line.details == {"was": "hard_bounce", "hashed": True, "reason": "the bounce was the relay's fault"}
    assert line.target is None


# ---------------------------------------------------------------- who may lift a complaint


def test_a_complaint_is_lifted_only_by_an_admin(listed):
    complaint, hard = listed["angry@example.org"], listed["hard@example.com"]
    with pytest.raises(suppressions.AdminOnly):
        suppressions.lift(complaint, "an editor thinks it was a mistake", actor="editor:1", by_admin=False)
    with pytest.raises(suppressions.AdminOnly):
        suppressions.lift_address("angry@example.org", "an editor thinks so", actor="editor:1", by_admin=False)
    with session_scope() as s:
        assert is_suppressed(s, "angry@example.org")
    assert lift_lines() == []
    # Other reasons are not an admin's alone; a complaint is, and an admin may.
    assert suppressions.lift(hard, "relay outage", actor="editor:1", by_admin=False)
    assert suppressions.lift(complaint, "the reader asked us to", actor="admin:2", by_admin=True)
    assert [line.details["was"] for line in lift_lines()] == ["hard_bounce", "complaint"]


# ---------------------------------------------------------------- the admins' page


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def admin(listed, queue_redis):
    with session_scope() as s:
        _, token = create_editor(s, "منى", "admin")
    from service.web.app import create_app

    with TestClient(create_app()) as client:
        form = client.get("/editor").text
        resp = client.post("/editor/login", data={"csrf_token": CSRF.search(form).group(1), "name": "منى",
                                                  "token": token}, follow_redirects=False)
        assert resp.status_code == 303, resp.text
        yield client


def test_the_admin_page_filters_by_reason_and_keeps_the_search(admin, listed):
    page = admin.get("/editor/suppressions").text
    assert all(email in page for email in ADDRESSES)
    assert '<select id="reason" name="reason">' in page and "ارتدادات مؤقتة متكررة" in page
    soft = admin.get("/editor/suppressions", params={"reason": "soft_bounce"}).text
    assert "full@example.com" in soft and "hard@example.com" not in soft and "angry@example.org" not in soft
    assert '<option value="soft_bounce" selected>' in soft
    both = admin.get("/editor/suppressions", params={"reason": "complaint", "q": "example.org"}).text
    assert "angry@example.org" in both and "asked@example.org" not in both
    none = admin.get("/editor/suppressions", params={"reason": "manual", "q": "example.com"}).text
    assert "لا عناوين محظورة تطابق البحث" in none
    # An unknown reason shows every reason rather than an error.
    odd = admin.get("/editor/suppressions", params={"reason": "<script>"})
    assert odd.status_code == 200 and all(email in odd.text for email in ADDRESSES) and "<script>" not in odd.text
    # A lift from the filtered page comes back to the same filter.
    csrf = CSRF.search(soft).group(1)
    lifted = admin.post(f"/editor/suppressions/{listed['full@example.com']}/lift?reason=soft_bounce",
                        data={"csrf_token": csrf, "reason": "the mailbox was emptied"})
    assert lifted.status_code == 200 and "لا عناوين محظورة تطابق البحث" in lifted.text
    assert "hard@example.com" not in lifted.text
