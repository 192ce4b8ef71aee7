"""A confirmation link works as long as the unconfirmed signup it confirms is kept:
PENDING_DAYS (the purge deletes the signup then), not a fixed week.

The link is the one in the real confirmation mail (sent over SMTP to a real server);
the reader opens it some days later in the real app on PostgreSQL: the reader's clock
(the one the link is checked against) is moved on, the link is not re-made.
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from itsdangerous.timed import TimestampSigner

from service.config import reset_settings
from service.db import session_scope
from service.delivery.one_off import send_transactional
from service.delivery.smtp_pool import close_all as close_connection
from service.models import Subscriber, SubscriberStatus

HOUR = 3600
DAY = 24 * HOUR
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def client(pg_env, smtp_sink):
    from service.web.app import create_app

    close_connection()
    with TestClient(create_app()) as c:
        yield c
    close_connection()


def _mailed_link(smtp_sink, email: str) -> str:
    """A new pending reader, their confirmation mail sent, the link's path read from it."""
    with session_scope() as s:
        sub = Subscriber(email=email, status=SubscriberStatus.pending)
        s.add(sub)
        s.flush()
        assert send_transactional(s, "confirm", sub.id)
    [mail] = [m for m in smtp_sink.messages if m.rcpt_tos == [email]]
    text = mail.message.get_body(("plain",)).get_content()
    [url] = re.findall(r"https?://\S+/confirm/[A-Za-z0-9_\-.]+", text)
    return urlsplit(url).path


def _opened_later(monkeypatch, seconds: int) -> None:
    """From now on the clock that links are checked against reads `seconds` later."""
    now = time.time
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: int(now()) + seconds)


def _status(email: str) -> SubscriberStatus:
    with session_scope() as s:
        return s.query(Subscriber).filter_by(email=email).one().status


@pytest.mark.parametrize("pending_days", [3, 10])
def test_a_link_inside_pending_days_confirms(client, smtp_sink, monkeypatch, pending_days):
    monkeypatch.setenv("PENDING_DAYS", str(pending_days))
    reset_settings()
    path = _mailed_link(smtp_sink, "late-but-fine@example.com")
    _opened_later(monkeypatch, pending_days * DAY - HOUR)  # an hour before it lapses
    page = client.get(path)
    assert page.status_code == 200 and "تأكيد الاشتراك" in page.text
    done = client.post(path, data={"csrf_token": CSRF.search(page.text).group(1)})
    assert done.status_code == 200 and "تم تأكيد اشتراكك" in done.text
    assert _status("late-but-fine@example.com") is SubscriberStatus.active


@pytest.mark.parametrize("pending_days", [3, 10])
def test_a_link_older_than_pending_days_is_refused_with_a_clear_page(
    client, smtp_sink, monkeypatch, pending_days
):
    monkeypatch.setenv("PENDING_DAYS", str(pending_days))
    reset_settings()
    path = _mailed_link(smtp_sink, "too-late@example.com")
    _opened_later(monkeypatch, pending_days * DAY + HOUR)  # an hour after it lapsed
    page = client.get(path)
    assert page.status_code == 400
    assert "تعذّر تأكيد الاشتراك" in page.text and "انتهت صلاحيته" in page.text
    assert 'href="/"' in page.text  # the way back to the signup form, for a new link
    assert "<form" not in page.text  # nothing to press: this link confirms nothing any more
    # Pressing the button of a page opened in time does not help either.
    refused = client.post(path, data={"csrf_token": "whatever"})
    assert refused.status_code == 400 and "انتهت صلاحيته" in refused.text
    assert _status("too-late@example.com") is SubscriberStatus.pending
