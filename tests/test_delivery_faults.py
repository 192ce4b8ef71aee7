"""Every SMTP fault ends in the right ledger state (real aiosmtpd, real PostgreSQL).

Batches run in the test process here (the same function the Celery task calls), so
each fault is a fast, deterministic test; tests/test_delivery_crash.py does the
same against separate worker processes.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
import time
from email import message_from_bytes
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from service import dispatch
from service.config import get_settings, reset_settings
from service.db import session_scope
from service.delivery import control, fanout, smtp_pool
from service.delivery.batch import REFUSAL_STREAK, SenderRefused, send_batch
from service.delivery.progress import progress
from service.delivery.smtp import SmtpConnection
from service.delivery.smtp_pool import WINDOW_PER_SESSION
from service.delivery.smtp_pool import close_all as close_connection
from service.delivery.sweeper import sweep
from service.models import (
    AuditLog,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    Subscriber,
    Suppression,
    utcnow,
)
from tests.support.delivery import ledger, planned_edition, run_all_batches
from tests.support.smtp_sink import SmtpSink, silent_server


@pytest.fixture(autouse=True)
def _fresh_connection():
    close_connection()
    yield
    close_connection()


@pytest.fixture
def one_connection(monkeypatch):
    """One SMTP session per lane: messages go one after the other, as the assertions of
    the tests that use this need (which reader was sent before a refusal, how many
    connections were opened).  tests/test_delivery_concurrency.py runs the same faults
    with many sessions at once."""
    monkeypatch.setenv("SMTP_CONNECTIONS", "1")
    reset_settings()


@pytest.fixture
def short_timeout(monkeypatch):
    monkeypatch.setenv("SMTP_TIMEOUT", "1")
    monkeypatch.setenv("SMTP_DATA_TIMEOUT", "1")  # the dot's reply has a timeout of its own
    reset_settings()


def row(eid: int, email: str) -> Delivery:
    with session_scope() as s:
        return s.scalars(
            sa.select(Delivery).join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.edition_id == eid, Subscriber.email == email)
        ).one()


def edition(eid: int) -> Edition:
    with session_scope() as s:
        return s.get(Edition, eid)


def suppressed() -> set[str]:
    with session_scope() as s:
        return set(s.scalars(sa.select(Suppression.email)))


@pytest.mark.parametrize("reply", ["451 4.3.0 local error", "452 4.2.2 mailbox full"])
def test_4xx_for_a_recipient_is_retried_later_and_the_rest_go(pg_env, smtp_sink, one_connection, reply):
    smtp_sink.rcpt_replies["reader1@example.com"] = reply
    eid = planned_edition(4)
    before = utcnow()
    run_all_batches(eid)
    assert sorted(smtp_sink.recipients()) == ["reader0@example.com", "reader2@example.com", "reader3@example.com"]
    r = row(eid, "reader1@example.com")
    assert r.status == "retry" and r.smtp_code == int(reply[:3]) and r.attempts == 1
    assert r.next_attempt_at > before + dt.timedelta(seconds=20)  # backoff, with jitter
    assert edition(eid).status == EditionStatus.sending  # not done while a retry waits

    # its time comes, the server has recovered: the sweeper sends it, once
    del smtp_sink.rcpt_replies["reader1@example.com"]
    with session_scope() as s:
        s.execute(sa.update(Delivery).where(Delivery.id == r.id).values(next_attempt_at=utcnow() - dt.timedelta(seconds=1)))
    run_all_batches(eid)
    assert smtp_sink.copies()["reader1@example.com"] == 1
    assert row(eid, "reader1@example.com").attempts == 2
    assert edition(eid).status == EditionStatus.done


def test_retries_stop_at_the_maximum_age(pg_env, smtp_sink):
    smtp_sink.rcpt_replies["reader0@example.com"] = "451 4.3.0 still broken"
    eid = planned_edition(1)
    with session_scope() as s:  # the edition started 25 hours ago (RETRY_MAX_AGE_HOURS=24)
        s.execute(sa.update(Edition).where(Edition.id == eid).values(
            status="sending", started_at=utcnow() - dt.timedelta(hours=25)))
    run_all_batches(eid)
    r = row(eid, "reader0@example.com")
    assert r.status == "failed" and "gave up" in r.smtp_reply
    assert edition(eid).status == EditionStatus.done


def test_550_511_fails_and_suppresses_only_that_reader(pg_env, smtp_sink):
    smtp_sink.rcpt_replies["reader2@example.com"] = "550 5.1.1 <reader2@example.com>: no such user"
    eid = planned_edition(4)
    run_all_batches(eid)
    assert row(eid, "reader2@example.com").status == "failed"
    assert row(eid, "reader2@example.com").smtp_code == 550
    assert suppressed() == {"reader2@example.com"}
    assert len(smtp_sink.messages) == 3
    with session_scope() as s:
        assert s.scalar(sa.select(Suppression.reason)) == "hard_bounce"
    assert edition(eid).status == EditionStatus.done


def test_5xx_after_data_for_one_recipient(pg_env, smtp_sink):
    smtp_sink.data_replies["reader0@example.com"] = "550 5.1.1 mailbox unavailable"
    smtp_sink.data_replies["reader1@example.com"] = "552 5.2.2 mailbox full"
    eid = planned_edition(3)
    run_all_batches(eid)
    assert ledger(eid) == {"reader0@example.com": "failed", "reader1@example.com": "failed", "reader2@example.com": "sent"}
    assert suppressed() == {"reader0@example.com"}  # a full mailbox is not a bad address


def test_a_5_7_1_for_one_reader_fails_that_reader_only(pg_env, smtp_sink):
    """RFC 3463: X.7.1 is also a per-recipient policy answer (Gmail's "550 5.7.1 … blocked")."""
    smtp_sink.rcpt_replies["reader1@example.com"] = "550 5.7.1 <reader1@example.com> blocked by the recipient"
    eid = planned_edition(5)
    run_all_batches(eid)
    assert ledger(eid) == {f"reader{i}@example.com": "failed" if i == 1 else "sent" for i in range(5)}
    assert suppressed() == set()  # a policy answer is not a bad address
    assert edition(eid).status == EditionStatus.done


@pytest.mark.parametrize("where", ["rcpt", "mail"])
def test_sender_refused_pauses_the_edition_and_blames_no_reader(pg_env, redis_url, smtp_sink, one_connection,
                                                               where):
    if where == "rcpt":  # the same 5.7.1 for every reader from reader1 on: it is us
        for i in range(1, 5 + REFUSAL_STREAK):
            smtp_sink.rcpt_replies[f"reader{i}@example.com"] = "554 5.7.1 sending domain blocked by policy"
    else:
        smtp_sink.mail_reply = "550 5.7.1 sender not authorised"
    eid = planned_edition(5 + REFUSAL_STREAK)
    with session_scope() as s:
        (first, last), = fanout.batch_ranges(s, eid, 50)
    with pytest.raises(SenderRefused, match="5.7.1"):
        send_batch(eid, first, last)
    ed = edition(eid)
    assert ed.status == EditionStatus.paused and "5.7.1" in ed.pause_reason
    states = ledger(eid)
    assert suppressed() == set()
    assert "failed" not in states.values()
    sent = [e for e, st in states.items() if st == "sent"]
    # Before the refusal, reader0 went; the messages already handed to the session when the
    # answer came (its window) may go after it, as they would on any of many sessions.
    assert sent[:1] == (["reader0@example.com"] if where == "rcpt" else [])
    assert "reader1@example.com" not in sent
    assert all(st == "queued" for e, st in states.items() if e not in sent)  # handed back, unclaimed
    with session_scope() as s:
        assert s.scalar(sa.select(AuditLog.action).where(AuditLog.target == f"edition:{eid}")) == "edition.pause"

    # the operator fixes it and resumes: what was not sent goes, nothing twice
    smtp_sink.rcpt_replies.clear()
    smtp_sink.mail_reply = None
    with session_scope() as s:
        control.resume(s, eid, actor="cli")
        # the resume enqueues its batches after commit; run the same ranges here
        ranges = fanout.batch_ranges(s, eid, 50)
    for a, b in ranges:
        send_batch(eid, a, b)
    assert sorted(smtp_sink.copies().items()) == sorted((f"reader{i}@example.com", 1)
                                                        for i in range(5 + REFUSAL_STREAK))
    assert edition(eid).status == EditionStatus.done


def test_connection_refused_is_a_relay_away_not_a_pause(pg_env, monkeypatch):
    with silent_server() as port:  # grab a free port, then leave it closed
        pass
    monkeypatch.setenv("SMTP_URL", f"smtp://127.0.0.1:{port}")
    reset_settings()
    eid = planned_edition(2)
    run_all_batches(eid)  # nothing raised: no operator error
    assert edition(eid).status == EditionStatus.sending  # waiting, not paused
    assert set(ledger(eid).values()) == {"retry"}
    assert "cannot reach" in row(eid, "reader0@example.com").smtp_reply


def test_auth_failure_pauses(pg_env, redis_url, monkeypatch):
    sink = SmtpSink(auth={"nashra": "right"})
    sink.start()
    try:
        monkeypatch.setenv("SMTP_URL", f"smtp://nashra:wrong@127.0.0.1:{sink.port}")
        reset_settings()
        eid = planned_edition(2)
        with pytest.raises(SenderRefused, match="535"):
            run_all_batches(eid)
        assert edition(eid).status == EditionStatus.paused and not sink.messages
        # with the right password the same configuration sends
        monkeypatch.setenv("SMTP_URL", f"smtp://nashra:right@127.0.0.1:{sink.port}")
        reset_settings()
        with session_scope() as s:
            control.resume(s, eid, actor="cli")
        run_all_batches(eid)
        assert len(sink.messages) == 2
    finally:
        sink.stop()


def _server_tls(tmp_path, name: str, san: str | None = None):
    import ssl

    key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
    cmd = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
           "-days", "1", "-subj", f"/CN={name}"]
    if san:
        cmd += ["-addext", f"subjectAltName={san}"]
    subprocess.run(cmd, check=True, capture_output=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx, cert


def test_tls_failure_pauses(pg_env, monkeypatch, tmp_path):
    ctx, _ = _server_tls(tmp_path, "not-the-host.example")
    sink = SmtpSink(tls_context=ctx)
    sink.start()
    try:
        monkeypatch.setenv("SMTP_URL", f"smtp+starttls://127.0.0.1:{sink.port}")
        reset_settings()
        eid = planned_edition(2)
        with pytest.raises(SenderRefused, match="TLS"):
            run_all_batches(eid)
        assert edition(eid).status == EditionStatus.paused and not sink.messages
        assert "TLS" in edition(eid).pause_reason
    finally:
        sink.stop()


def test_connection_closed_mid_data_only_250s_count_as_sent(pg_env, smtp_sink, one_connection):
    smtp_sink.faults["reader1@example.com"] = "close_mid_data"
    eid = planned_edition(3)
    run_all_batches(eid)
    assert smtp_sink.dropped == 1
    assert ledger(eid) == {"reader0@example.com": "sent", "reader1@example.com": "retry", "reader2@example.com": "sent"}
    assert "DATA" in row(eid, "reader1@example.com").smtp_reply
    assert smtp_sink.connections == 2  # reconnected for reader2


def test_no_reply_after_data_is_sent_once_more_with_the_same_message_id(pg_env, redis_url, smtp_sink,
                                                                        short_timeout):
    """SMTP_AMBIGUOUS=resend (the default), as Postfix does: the dot may have left and no
    answer came, so the message goes once more — same Message-ID, counted as a possible
    duplicate — and no reader is left without the news."""
    smtp_sink.faults["reader1@example.com"] = "no_reply"
    eid = planned_edition(3)
    run_all_batches(eid)
    assert len(smtp_sink.unanswered) == 1
    first = row(eid, "reader1@example.com")
    assert first.status == "retry" and "RFC 1047" in first.smtp_reply and first.message_id
    assert first.ambiguous == 1
    del smtp_sink.faults["reader1@example.com"]
    with session_scope() as s:
        s.execute(sa.update(Delivery).where(Delivery.id == first.id)
                  .values(next_attempt_at=utcnow() - dt.timedelta(seconds=1)))
    run_all_batches(eid)
    again = smtp_sink.wait_for(3)
    resent = [m for m in again if m.rcpt_tos == ["reader1@example.com"]]
    assert len(resent) == 1
    unanswered_id = message_from_bytes(smtp_sink.unanswered[0].data)["Message-ID"]
    assert message_from_bytes(resent[0].data)["Message-ID"] == unanswered_id == first.message_id
    assert row(eid, "reader1@example.com").status == "sent"
    assert edition(eid).status == EditionStatus.done
    with session_scope() as s:
        assert progress(s, eid)["possible_duplicates"] == 1


def test_no_reply_after_data_is_held_for_a_person_under_hold(pg_env, redis_url, smtp_sink, short_timeout,
                                                            monkeypatch):
    monkeypatch.setenv("SMTP_AMBIGUOUS", "hold")
    reset_settings()
    smtp_sink.faults["reader1@example.com"] = "no_reply"
    eid = planned_edition(3)
    run_all_batches(eid)
    assert len(smtp_sink.unanswered) == 1
    r = row(eid, "reader1@example.com")
    assert r.status == "unknown" and "RFC 1047" in r.smtp_reply and r.message_id
    assert ledger(eid)["reader2@example.com"] == "sent"
    # neither the sweeper nor a redelivered batch sends it again
    del smtp_sink.faults["reader1@example.com"]
    with session_scope() as s:
        sweep(s, now=utcnow() + dt.timedelta(hours=1))
    run_all_batches(eid)
    assert "reader1@example.com" not in smtp_sink.recipients()
    assert edition(eid).status == EditionStatus.done
    with session_scope() as s:
        p = progress(s, eid)
        assert p["unknown"] == 1 and p["remaining"] == 0
        # the operator may decide to send them again
        assert control.resend_unknown(s, eid, actor="cli") == 1
        ranges = fanout.batch_ranges(s, eid, 50)
    for a, b in ranges:
        send_batch(eid, a, b)
    assert smtp_sink.copies()["reader1@example.com"] == 1


def test_server_that_never_answers_leaves_rows_to_retry(pg_env, monkeypatch, short_timeout):
    with silent_server() as port:
        monkeypatch.setenv("SMTP_URL", f"smtp://127.0.0.1:{port}")
        reset_settings()
        eid = planned_edition(3)
        t0 = time.monotonic()
        run_all_batches(eid)
        assert time.monotonic() - t0 < 15  # every step has a timeout
    assert set(ledger(eid).values()) == {"retry"}
    assert edition(eid).status == EditionStatus.sending
    assert "cannot reach" in row(eid, "reader0@example.com").smtp_reply


def test_unsubscribing_mid_edition_receives_nothing_after(pg_env, smtp_sink, one_connection):
    smtp_sink.delay = 0.03
    eid = planned_edition(40)
    worker = threading.Thread(target=run_all_batches, args=(eid,))
    worker.start()
    smtp_sink.wait_for(8, timeout=20)
    with session_scope() as s:  # the reader clicks "unsubscribe" while the edition goes out
        s.execute(sa.update(Subscriber).where(Subscriber.email == "reader30@example.com")
                  .values(status="unsubscribed", unsubscribed_at=utcnow()))
    worker.join(30)
    assert "reader30@example.com" not in smtp_sink.recipients()
    assert ledger(eid)["reader30@example.com"] == "skipped"
    assert len(smtp_sink.messages) == 39


def test_pause_stops_within_a_message_and_resume_sends_the_rest_once(pg_env, redis_url, smtp_sink, one_connection):
    smtp_sink.delay = 0.03
    eid = planned_edition(40)
    worker = threading.Thread(target=run_all_batches, args=(eid,))
    worker.start()
    smtp_sink.wait_for(5, timeout=20)
    with session_scope() as s:
        control.pause(s, eid, actor="editor:1")
    worker.join(30)
    at_pause = len(smtp_sink.messages)
    assert 5 <= at_pause < 40
    time.sleep(0.2)
    assert len(smtp_sink.messages) == at_pause
    states = ledger(eid)
    assert sum(1 for v in states.values() if v == "sent") == at_pause
    assert all(v in ("sent", "queued") for v in states.values())
    with pytest.raises(control.ControlError):
        with session_scope() as s:
            control.pause(s, eid, actor="editor:1")  # already paused: a clear error, no change
    with session_scope() as s:
        control.resume(s, eid, actor="editor:1")
    run_all_batches(eid)
    assert sorted(smtp_sink.copies().values()) == [1] * 40


def test_rows_handed_back_after_a_quick_resume_are_dispatched_at_once(pg_env, smtp_sink, one_connection,
                                                                      monkeypatch):
    """A batch that saw `paused` used to hand its rows back after the editor's resume had
    already dispatched (while they were still claimed, so the resume covered none of
    them), and no batch covered them until the sweeper noticed."""
    from service.delivery import ledger as delivery_ledger

    eid = planned_edition(10, kind="alert")
    enqueued: list = []  # the batch tasks asked for, as a broker would hold them

    class Batches(dispatch.Recorder):
        def send_batches(self, edition_id, kind, ranges, *, session=None):
            dispatch.after_commit(session, lambda: enqueued.extend(
                SimpleNamespace(args=(edition_id, first, last)) for first, last in ranges))

    monkeypatch.setattr(dispatch, "_installed", Batches())
    original_finish = SmtpConnection.finish

    def pause_after_the_third(self, *args, **kwargs):
        answered = original_finish(self, *args, **kwargs)  # the server's answer to the end of data
        if len(smtp_sink.messages) == 3:
            with session_scope() as s:
                control.pause(s, eid, actor="editor:1")
        return answered

    original_release = delivery_ledger.release
    resumed = []

    def resume_just_before_the_hand_back(conn, worker, ids, to, **kw):
        if to == DeliveryStatus.queued and not resumed:
            # The editor's resume commits between the batch's read of `paused` and its
            # hand-back: the batch's rows are still claimed, so the resume covers none.
            with session_scope() as s:
                control.resume(s, eid, actor="editor:1")
            resumed.append([sig.args for sig in enqueued])
        return original_release(conn, worker, ids, to, **kw)

    monkeypatch.setattr(SmtpConnection, "finish", pause_after_the_third)
    monkeypatch.setattr(delivery_ledger, "release", resume_just_before_the_hand_back)
    report = send_batch(eid, 1, 10)
    sent = len(smtp_sink.messages)
    # The third answer paused it; what was already handed to the session (its window) went.
    assert report.stopped == "paused" and 3 <= sent <= 3 + WINDOW_PER_SESSION - 1
    assert resumed == [[]]  # the resume itself found nothing to dispatch
    with session_scope() as s:
        assert s.get(Edition, eid).status == EditionStatus.sending
        queued = s.scalars(sa.select(Delivery.id).where(Delivery.edition_id == eid,
                                                        Delivery.status == DeliveryStatus.queued)).all()
    assert sorted(queued) == list(range(sent + 1, 11))
    # ... but the batch dispatched the rows it handed back: a queued task covers each of them
    covered = {i for sig in enqueued for i in range(sig.args[1], sig.args[2] + 1) if sig.args[0] == eid}
    assert set(queued) <= covered, (queued, [sig.args for sig in enqueued])
    monkeypatch.setattr(SmtpConnection, "finish", original_finish)
    for sig in list(enqueued):  # the worker runs them; no sweeper involved
        send_batch(*sig.args)
    assert smtp_sink.copies() == {f"reader{i}@example.com": 1 for i in range(10)}
    assert set(ledger(eid).values()) == {"sent"}


def test_cancel_stops_and_marks_the_rest_cancelled(pg_env, smtp_sink, one_connection):
    smtp_sink.delay = 0.03
    eid = planned_edition(40)
    worker = threading.Thread(target=run_all_batches, args=(eid,))
    worker.start()
    smtp_sink.wait_for(5, timeout=20)
    with session_scope() as s:
        control.cancel(s, eid, actor="editor:1")
    worker.join(30)
    n = len(smtp_sink.messages)
    states = ledger(eid)
    assert sum(1 for v in states.values() if v == "sent") == n < 40
    assert set(states.values()) == {"sent", "cancelled"}
    assert edition(eid).status == EditionStatus.cancelled
    with pytest.raises(control.ControlError):
        with session_scope() as s:
            control.resume(s, eid, actor="editor:1")
    run_all_batches(eid)
    assert len(smtp_sink.messages) == n


def test_idle_connection_closed_by_the_server_is_reopened_without_a_retry(pg_env, smtp_sink):
    eid = planned_edition(2)
    run_all_batches(eid)
    for session in smtp_pool.lane(get_settings(), "digest").sessions():
        session.conn._smtp.sock.close()  # noqa: SLF001 — as if the server had dropped an idle connection
    eid2 = planned_edition(2, prefix="later")
    run_all_batches(eid2)
    assert set(ledger(eid2).values()) == {"sent"}


def test_a_slow_batch_keeps_its_lease_so_the_sweeper_never_steals_it(pg_env, redis_url, smtp_sink, monkeypatch):
    from service.jobs.app import configure

    monkeypatch.setenv("LEASE_SECONDS", "1")
    reset_settings()
    configure()
    smtp_sink.delay = 0.1  # 30 messages: three times the lease
    eid = planned_edition(30)
    worker = threading.Thread(target=run_all_batches, args=(eid,))
    worker.start()
    expired = 0
    while worker.is_alive():
        with session_scope() as s:
            expired += sweep(s).expired
        time.sleep(0.2)
    worker.join()
    assert expired == 0
    assert sorted(smtp_sink.copies().values()) == [1] * 30
    assert set(ledger(eid).values()) == {"sent"}


@pytest.mark.parametrize("scheme", ["smtp+starttls", "smtps"])
def test_tls_and_auth_as_configured_send(pg_env, monkeypatch, tmp_path, scheme):
    ctx, cert = _server_tls(tmp_path, "sink.test", san="IP:127.0.0.1")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the one CA this test trusts
    sink = SmtpSink(auth={"nashra": "s3cret"}, **({"tls_context": ctx} if scheme == "smtp+starttls" else {"ssl_context": ctx}))
    sink.start()
    try:
        monkeypatch.setenv("SMTP_URL", f"{scheme}://nashra:s3cret@127.0.0.1:{sink.port}")
        reset_settings()
        eid = planned_edition(3)
        run_all_batches(eid)
        assert len(sink.messages) == 3
        assert set(ledger(eid).values()) == {"sent"}
    finally:
        sink.stop()
