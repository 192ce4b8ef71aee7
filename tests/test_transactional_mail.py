"""One-off mails (confirmation, welcome) go only to a reader in the right state, survive a
relay that is briefly away, and never put a reader's address into a log line through an
exception's text.  What they carry (List-Id, VERP, DKIM, the welcome's one-click
List-Unsubscribe) is checked with every other kind in tests/test_compose_headers.py."""

from __future__ import annotations

import pytest

from service.config import reset_settings
from service.db import session_scope
from service.delivery.one_off import send_transactional
from service.delivery.smtp import SmtpError, SmtpTransientError, close_connection, send_one
from service.delivery.verdicts import judge
from service.models import Subscriber, SubscriberStatus
from tests.support.net import free_port

MSG = b"From: a@nashra.example\r\nTo: x@example.com\r\nSubject: hi\r\n\r\nbody\r\n"


def test_a_relay_that_is_down_is_retried_not_dropped(monkeypatch):
    monkeypatch.setenv("SMTP_URL", f"smtp://127.0.0.1:{free_port()}")  # nothing listens there
    reset_settings()
    close_connection()
    with pytest.raises(SmtpTransientError) as err:
        send_one("reader@example.com", MSG)
    assert isinstance(err.value, OSError)  # the task's autoretry_for=(OSError,) retries it
    close_connection()


def test_a_final_refusal_for_the_reader_is_not_retried(smtp_sink):
    close_connection()
    smtp_sink.rcpt_replies["gone@example.com"] = "550 5.1.1 <gone@example.com>: no such user"
    with pytest.raises(SmtpError) as err:
        send_one("gone@example.com", MSG)
    assert not isinstance(err.value, OSError)
    assert "gone@example.com" not in str(err.value)  # Celery logs this text
    close_connection()


def test_exception_text_never_carries_an_address():
    outcome = judge("rcpt", 550, b"5.1.1 <bob@example.com>: Recipient address rejected")
    assert "bob@example.com" not in str(SmtpError(outcome))
    assert "bob@example.com" not in repr(SmtpTransientError(outcome))


def test_the_transactional_task_retries_for_about_forty_minutes():
    from service.jobs.tasks import send_transactional

    assert send_transactional.max_retries >= 10 and send_transactional.retry_backoff_max == 600


def _reader(status: SubscriberStatus) -> int:
    with session_scope() as s:
        sub = Subscriber(email="reader@example.com", status=status)
        s.add(sub)
        s.flush()
        return sub.id


def test_a_one_off_for_a_reader_in_the_wrong_state_is_not_sent(pg_env, smtp_sink):
    close_connection()
    active, pending = _reader(SubscriberStatus.active), None
    with session_scope() as s:
        assert send_transactional(s, "confirm", active) is False  # already confirmed
        pending = Subscriber(email="new@example.com", status=SubscriberStatus.pending)
        s.add(pending)
        s.flush()
        assert send_transactional(s, "welcome", pending.id) is False  # not confirmed yet
    assert smtp_sink.messages == []
    close_connection()


def test_a_relay_that_is_down_makes_the_task_retry(pg_env, monkeypatch):
    monkeypatch.setenv("SMTP_URL", f"smtp://127.0.0.1:{free_port()}")  # nothing listens there
    reset_settings()
    close_connection()
    sub_id = _reader(SubscriberStatus.pending)
    with session_scope() as s, pytest.raises(SmtpTransientError) as err:
        send_transactional(s, "confirm", sub_id)
    assert isinstance(err.value, OSError)  # the Celery task's autoretry_for=(OSError,)
    close_connection()
