"""The bounce mailbox read over IMAP (`nashra bounces fetch`), against a real Dovecot.

Each test sends a real edition through the real delivery path to the SMTP sink, takes
the VERP envelope sender the sink recorded, builds the reports a receiving system would
write about those messages, and APPENDs them to a private Dovecot (tests/support/dovecot.py:
IMAPS on a free loopback port, a certificate the test makes) as the bounce mailbox's
MTA would have stored them.  Then `fetch_bounces()` (or the `nashra` command) reads the
mailbox, and the test looks at what an operator would: the ledger rows, the
suppressions, the readers, and which folder each message ended in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from service.config import get_settings, load_settings, reset_settings
from service.db import session_scope
from service.inbound import mailbox
from service.inbound.mailbox import MailboxError, fetch_bounces, recipient_of
from service.jobs import names
from service.jobs.app import celery_config
from service.models import (
    AuditLog,
    Delivery,
    DeliveryStatus,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from tests.support.bounce_samples import arf, delivered_to, dsn, out_of_office
from tests.support.delivery import planned_edition, run_all_batches, snapshot
from tests.support.dovecot import PASSWORD, running_dovecot

DONE = "Nashra-processed"


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def dovecot():
    yield from running_dovecot()


@pytest.fixture
def sent(pg_env, smtp_sink):
    """Three readers were sent a digest and the relay said 250 to each: {address: Received}."""
    eid = planned_edition(3)
    run_all_batches(eid)
    got = smtp_sink.wait_for(3)
    assert len(got) == 3
    return {m.rcpt_tos[0]: m for m in got}


@pytest.fixture
def imap_env(dovecot, monkeypatch):
    """BOUNCE_IMAP_URL names the Dovecot's INBOX; its certificate is trusted (also by a
    `nashra` subprocess: SSL_CERT_FILE is what OpenSSL's default verify paths read)."""
    monkeypatch.setenv("BOUNCE_IMAP_URL", dovecot.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(dovecot.cert))
    reset_settings()
    return dovecot


def fetch(dovecot, **kw) -> mailbox.FetchSummary:
    return fetch_bounces(get_settings(), ssl_context=dovecot.ssl_context(), **kw)


def the_three(sent) -> list[bytes]:
    """A hard bounce for reader1, a complaint about reader2's mail, reader0's out-of-office:
    each as the mailbox's MTA stored it (Delivered-To the mailbox, X-Original-To the VERP)."""
    r0, r1, r2 = (sent[f"reader{i}@example.com"] for i in range(3))
    return [
        delivered_to(dsn(r1.mail_from, r1.data), r1.mail_from),
        delivered_to(arf(r2.mail_from, r2.data, r2.mail_from), r2.mail_from),
        delivered_to(out_of_office("reader0@example.com", r0.mail_from), r0.mail_from),
    ]


def row_of(address: str) -> Delivery:
    with session_scope() as s:
        return s.scalar(sa.select(Delivery).join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                        .where(Subscriber.email == address).order_by(Delivery.id))


def suppression(address: str) -> str | None:
    with session_scope() as s:
        return s.scalar(sa.select(Suppression.reason).where(Suppression.email == address))


def no_secrets_in(logs) -> None:
    dumped = json.dumps(logs, default=str)
    for secret in ("@example.com", "+b.", "@nashra.example", PASSWORD):
        assert secret not in dumped, (secret, dumped)


def nashra(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service", *args], env=env or os.environ.copy(),
                          capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- what works


def test_a_hard_bounce_a_complaint_and_an_out_of_office_are_applied_and_moved(sent, imap_env):
    imap_env.append(*the_three(sent))
    with capture_logs() as logs:
        summary = fetch(imap_env)
    assert summary.as_dict() | {"seconds": 0} == {
        "folder": "INBOX", "busy": False, "found": 3, "fetched": 3, "outcomes": {"hard_bounce": 1, "complaint": 1, "ignored": 1},
        "failed": 0, "moved": 3, "remaining": 0, "stopped": None, "seconds": 0}

    row = row_of("reader1@example.com")
    assert row.status == DeliveryStatus.failed and "5.1.1" in row.smtp_reply
    assert suppression("reader1@example.com") == "hard_bounce"
    with session_scope() as s:
        sub = s.scalar(sa.select(Subscriber).where(Subscriber.email == "reader2@example.com"))
        assert sub.status == SubscriberStatus.unsubscribed
    assert suppression("reader2@example.com") == "complaint"
    assert row_of("reader0@example.com").status == DeliveryStatus.sent and suppression("reader0@example.com") is None

    # All three left the INBOX for the done folder (created by the run), marked read.
    assert imap_env.folder("INBOX") == []
    done = imap_env.folder(DONE)
    assert len(done) == 3 and all("\\Seen" in flags for _, flags, _ in done)
    assert sorted(m for _, _, m in done) == sorted(the_three(sent))

    # The log: one line per report (source imap) and the run's counts; no address, no password.
    no_secrets_in(logs)
    lines = {e["event"]: e for e in logs}
    assert {"bounce.hard_bounce", "bounce.complaint", "bounce.ignored"} <= set(lines)
    assert lines["bounce.hard_bounce"]["source"] == "imap"
    run = lines["mailbox.fetched"]
    assert (run["fetched"], run["moved"], run["n_hard_bounce"], run["n_complaint"], run["n_ignored"]) == (3, 3, 1, 1, 1)

    # Again: nothing left to read, nothing changes.
    before = snapshot()
    again = fetch(imap_env)
    assert (again.found, again.fetched, again.moved) == (0, 0, 0)
    assert snapshot() == before and len(imap_env.folder(DONE)) == 3


def test_the_same_reports_delivered_again_change_nothing_more(sent, imap_env):
    """A relay that sends its DSN twice, or a message copied back into the INBOX."""
    imap_env.append(*the_three(sent))
    fetch(imap_env)
    before = snapshot()
    imap_env.append(*the_three(sent))
    summary = fetch(imap_env)
    assert summary.fetched == 3 and summary.moved == 3 and summary.failed == 0
    assert snapshot() == before
    assert len(imap_env.folder(DONE)) == 6


def test_a_crash_between_handling_and_moving_handles_them_again_harmlessly(sent, imap_env, monkeypatch):
    imap_env.append(*the_three(sent))

    class Crash(BaseException):  # as a SIGKILL would: nothing after it runs in this process
        pass

    def crash(self):
        raise Crash

    with monkeypatch.context() as patched, pytest.raises(Crash):
        patched.setattr(mailbox._Run, "move", crash)
        fetch(imap_env)
    applied = snapshot()
    assert suppression("reader1@example.com") == "hard_bounce"  # the transaction had committed
    inbox = imap_env.folder("INBOX")
    assert len(inbox) == 3 and not any("\\Seen" in flags for _, flags, _ in inbox)  # BODY.PEEK: still unread
    assert imap_env.folder(DONE) == []

    summary = fetch(imap_env)
    assert summary.fetched == 3 and summary.moved == 3 and summary.failed == 0
    assert snapshot() == applied  # handled again: nothing more
    assert imap_env.folder("INBOX") == [] and len(imap_env.folder(DONE)) == 3


def test_two_runs_at_once_one_reads_the_other_returns_busy(sent, imap_env):
    imap_env.append(*(the_three(sent) * 10))  # 30 messages, each report ten times
    results, errors = [], []
    barrier = threading.Barrier(2)

    def run():
        try:
            barrier.wait(10)
            results.append(fetch(imap_env))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and len(results) == 2
    assert all(r.failed == 0 and r.stopped is None for r in results), [r.as_dict() for r in results]
    assert sum(r.moved for r in results) == 30 and sum(r.fetched for r in results) == 30
    assert imap_env.folder("INBOX") == []
    assert len(imap_env.folder(DONE)) == 30  # each once (a server's MOVE between two sessions need not be atomic)
    assert row_of("reader1@example.com").status == DeliveryStatus.failed
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(AuditLog)
                        .where(AuditLog.action == "bounce.hard_bounce")) == 1


def test_a_run_while_another_holds_the_mailbox_returns_busy_and_touches_nothing(sent, imap_env):
    imap_env.append(*the_three(sent))
    with mailbox._one_run_at_a_time(get_settings()) as mine:
        assert mine
        busy = fetch(imap_env)
    assert busy.busy and busy.fetched == 0 and len(imap_env.folder("INBOX")) == 3
    with mailbox._one_run_at_a_time(get_settings()):
        proc = nashra("bounces", "fetch")
    assert proc.returncode == 0 and "nothing done" in proc.stdout
    assert fetch(imap_env).moved == 3  # the lock is released


def test_on_sqlite_one_run_at_a_time_is_a_file_lock(sqlite_env):
    settings = get_settings()
    with mailbox._one_run_at_a_time(settings) as first:
        with mailbox._one_run_at_a_time(settings) as second:
            assert (first, second) == (True, False)
    with mailbox._one_run_at_a_time(settings) as again:
        assert again


def test_without_the_move_capability_it_copies_deletes_and_expunges(sent, pg_env, monkeypatch):
    for server in running_dovecot(capabilities="IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE"):
        monkeypatch.setenv("BOUNCE_IMAP_URL", server.url())
        reset_settings()
        server.append(*the_three(sent))
        summary = fetch(server)
        assert summary.moved == 3 and summary.failed == 0
        assert server.folder("INBOX") == []
        assert len(server.folder(DONE)) == 3


def test_a_folder_named_in_the_url_is_read_and_others_are_left_alone(sent, imap_env, monkeypatch):
    r1 = sent["reader1@example.com"]
    imap_env.append(delivered_to(dsn(r1.mail_from, r1.data), r1.mail_from), folder="ارتدادات")
    imap_env.append(b"From: editor@nashra.example\r\nTo: desk@nashra.example\r\nSubject: hi\r\n\r\nnot a bounce\r\n")
    monkeypatch.setenv("BOUNCE_IMAP_URL", imap_env.url("%D8%A7%D8%B1%D8%AA%D8%AF%D8%A7%D8%AF%D8%A7%D8%AA"))
    reset_settings()
    summary = fetch(imap_env)
    assert summary.folder == "ارتدادات" and summary.outcomes == {"hard_bounce": 1} and summary.moved == 1
    assert len(imap_env.folder("INBOX")) == 1  # another folder: not ours to read


# ---------------------------------------------------------------- hostile or broken input


def test_a_forged_verp_address_is_rejected_counted_and_still_moved(sent, imap_env):
    original = sent["reader1@example.com"]
    real = original.mail_from
    local, _, domain = real.partition("@")
    forged = local[:-4] + ("0000" if not local.endswith("0000") else "1111") + "@" + domain
    before = snapshot()
    with capture_logs() as logs:
        summary = fetch_after_append(imap_env, delivered_to(dsn(forged, original.data), forged))
    assert summary.outcomes == {"rejected": 1} and summary.moved == 1
    assert snapshot() == before
    assert imap_env.folder("INBOX") == [] and len(imap_env.folder(DONE)) == 1
    (line,) = [e for e in logs if e["event"] == "bounce.rejected"]
    assert "forged" in line["reason"] and line["source"] == "imap"
    no_secrets_in(logs)


def fetch_after_append(server, *messages: bytes) -> mailbox.FetchSummary:
    server.append(*messages)
    return fetch(server)


def test_a_message_whose_handling_raises_is_flagged_and_left_and_not_tried_again(sent, imap_env, monkeypatch):
    real = mailbox._handle

    def flaky(rcpt, message, settings):
        if b"report-type=feedback-report" in message:
            raise RuntimeError("a bug")
        return real(rcpt, message, settings)

    monkeypatch.setattr(mailbox, "_handle", flaky)
    imap_env.append(*the_three(sent))
    summary = fetch(imap_env)
    assert summary.failed == 1 and summary.moved == 2 and summary.fetched == 3
    (left,) = imap_env.folder("INBOX")
    assert mailbox.FAILED_KEYWORD in left[1] and b"feedback-report" in left[2]
    assert fetch(imap_env).found == 0  # not tried at every run

    # Removing the flag (in a mail client) retries it.
    monkeypatch.setattr(mailbox, "_handle", real)
    imap = imap_env.client()
    imap.select("INBOX")
    imap.uid("STORE", str(left[0]), "-FLAGS", f"({mailbox.FAILED_KEYWORD})")
    imap.logout()
    assert fetch(imap_env).outcomes == {"complaint": 1}
    assert suppression("reader2@example.com") == "complaint"


def test_a_database_that_is_away_stops_the_run_and_flags_nothing(sent, imap_env, monkeypatch):
    def away(rcpt, message, settings):
        raise sa.exc.OperationalError("SELECT 1", {}, OSError("connection refused"))

    imap_env.append(*the_three(sent))
    with monkeypatch.context() as patched:
        patched.setattr(mailbox, "_handle", away)
        summary = fetch(imap_env)
    assert summary.stopped and "database" in summary.stopped and summary.moved == 0 and summary.failed == 0
    inbox = imap_env.folder("INBOX")
    assert len(inbox) == 3 and not any(mailbox.FAILED_KEYWORD in f for _, f, _ in inbox)
    assert fetch(imap_env).moved == 3


def test_an_oversized_message_is_not_downloaded_and_is_moved(sent, imap_env):
    r1 = sent["reader1@example.com"]
    big = delivered_to(dsn(r1.mail_from, r1.data), r1.mail_from) + b"x" * 70_000 + b"\r\n"
    imap_env.append(big)
    summary = fetch(imap_env, max_bytes=64_000)
    assert summary.outcomes == {"too_large": 1} and summary.moved == 1
    assert row_of("reader1@example.com").status == DeliveryStatus.sent


def test_an_untrusted_certificate_is_refused(imap_env, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE")  # the system's trust store: it does not know the test's CA
    with pytest.raises(MailboxError, match="TLS with the bounce mailbox"):
        fetch_bounces(get_settings())


def test_the_recipient_is_taken_by_order_of_trust():
    verp = "newsletter+b.7.abcdef0123@nashra.example"
    # The mailbox's own address first (not ours), the VERP address it was forwarded from after.
    assert recipient_of(b"Delivered-To: bounces@mx.example\r\nX-Original-To: " + verp.encode()
                        + b"\r\nTo: someone@else.example\r\n\r\n") == verp
    # Delivered-To beats To even when both look like ours.
    other = "newsletter+b.8.abcdef0123@nashra.example"
    assert recipient_of(b"To: " + other.encode() + b"\r\nDelivered-To: " + verp.encode() + b"\r\n\r\n") == verp
    # Nothing of ours: the first address (an ARF report to a feedback address).
    assert recipient_of(b"To: fbl@nashra.example\r\n\r\n") == "fbl@nashra.example"
    assert recipient_of(b"Subject: none\r\n\r\n") is None


# ---------------------------------------------------------------- cap and figures


def test_a_run_takes_at_most_its_limit_and_the_next_takes_the_rest(sent, imap_env, capsys):
    n = 120
    messages = (the_three(sent) * (n // 3 + 1))[:n]
    imap_env.append(*messages)
    first = fetch(imap_env, limit=100)
    assert (first.found, first.fetched, first.moved, first.remaining) == (n, 100, 100, n - 100)
    second = fetch(imap_env, limit=100)
    assert (second.fetched, second.remaining) == (n - 100, 0)
    assert imap_env.folder("INBOX") == [] and len(imap_env.folder(DONE)) == n
    with capsys.disabled():
        print(f"\nbounce mailbox: {first.fetched} messages fetched, handled and moved in {first.seconds:.2f} s "
              f"({first.seconds / first.fetched * 1000:.1f} ms each; Dovecot on loopback, PostgreSQL)")


# ---------------------------------------------------------------- the command and beat


def test_nashra_bounces_fetch_prints_the_summary(sent, imap_env):
    imap_env.append(*the_three(sent))
    proc = nashra("bounces", "fetch")
    assert proc.returncode == 0, proc.stderr
    assert "3 fetched (complaint 1, hard_bounce 1, ignored 1)" in proc.stdout
    assert f"3 moved to {DONE}" in proc.stdout
    assert "reader" not in proc.stderr and "+b." not in proc.stderr and PASSWORD not in proc.stderr + proc.stdout
    assert suppression("reader1@example.com") == "hard_bounce"


def test_nashra_bounces_fetch_with_a_wrong_password_is_a_clear_error(pg_env, imap_env):
    env = os.environ.copy() | {"BOUNCE_IMAP_URL": imap_env.url(password="not-the-password")}
    proc = nashra("bounces", "fetch", env=env)
    assert proc.returncode == 2
    assert "refused the login" in proc.stderr and "check the user and password" in proc.stderr
    assert "Traceback" not in proc.stderr and "not-the-password" not in proc.stderr


def test_nashra_bounces_fetch_without_a_mailbox_is_a_clear_error(pg_env):
    env = {k: v for k, v in os.environ.items() if k != "BOUNCE_IMAP_URL"}
    proc = nashra("bounces", "fetch", env=env)
    assert proc.returncode == 2
    assert "BOUNCE_IMAP_URL is not set" in proc.stderr and "Traceback" not in proc.stderr


def test_beat_reads_the_mailbox_only_when_it_is_set():
    assert "bounces-mailbox" not in celery_config(load_settings())["beat_schedule"]
    settings = load_settings(bounce_imap_url="imaps://u:p@imap.example", bounce_imap_seconds=120)
    entry = celery_config(settings)["beat_schedule"]["bounces-mailbox"]
    assert entry["task"] == names.FETCH_BOUNCES and entry["schedule"] == 120.0
    assert names.FIXED_ROUTES[names.FETCH_BOUNCES] == names.DEFAULT


def test_the_task_runs_the_fetch(sent, imap_env):
    from service.jobs.tasks import fetch_bounces as task

    imap_env.append(*the_three(sent))
    # The task verifies with the default trust store: SSL_CERT_FILE (imap_env) names our CA.
    result = task.run()
    assert result["moved"] == 3 and result["outcomes"] == {"hard_bounce": 1, "complaint": 1, "ignored": 1}
