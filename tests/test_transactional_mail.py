"""One-off mails (confirmation, welcome) go only to a reader in the right state, survive a
relay that is briefly away, and never put a reader's address into a log line through an
exception's text.  What they carry (List-Id, VERP, DKIM, the welcome's one-click
List-Unsubscribe) is checked with every other kind in tests/test_compose_headers.py."""

from __future__ import annotations

import re
from email.message import EmailMessage

import lxml.html
import pytest

from service import dispatch
from service.config import get_settings, reset_settings
from service.db import session_scope
from service.delivery import smtp_pool
from service.delivery.one_off import send_transactional
from service.delivery.smtp import SmtpError, SmtpTransientError
from service.delivery.verdicts import judge
from service.models import (
    Frequency,
    Newsletter,
    NewsletterKind,
    Section,
    Subscriber,
    SubscriberStatus,
)
from service.subscribers import lifecycle
from service.subscribers.consent import Evidence
from service.usecases.subscribers import SignupRequest, sign_up
from tests.support.email_checks import check_email
from tests.support.net import free_port
from tests.support.readers import reader

close_connection = smtp_pool.close_all  # the web process and tests keep no session between tests


def send_one(to: str, message: bytes):
    """A one-off through the one sender every mail takes (smtp_pool.send_now)."""
    settings = get_settings()
    return smtp_pool.send_now(settings, settings.mail_from_address, to, message)


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


# ---------------------------------------------------------------- the welcome says when the digest comes


@pytest.fixture
def https_site(pg_env, smtp_sink, monkeypatch):
    """As in production, the reader's links are https (check_email insists)."""
    monkeypatch.setenv("PUBLIC_URL", "https://news.example")
    reset_settings()


def _signed_up_confirmed_welcomed(smtp_sink, monkeypatch, email: str, **choices) -> EmailMessage:
    """Sign up through the use-case every form calls, confirm with the link from the real
    confirmation mail, and send what that asked for (as the worker would): the welcome,
    as the SMTP sink received it."""
    recorder = dispatch.Recorder()
    monkeypatch.setattr(dispatch, "_installed", recorder)
    close_connection()
    req = SignupRequest(email=email, sections=choices.pop("sections", []), frequency=choices.pop("frequency", "daily"),
                        alerts="yes", consented=True, **choices)
    result = sign_up(req, source="test", evidence=Evidence())
    assert result.outcome == "created"

    def deliver_queued() -> None:
        queued, recorder.calls[:] = [c[1:] for c in recorder.calls if c[0] == "send_transactional"], []
        for kind, sub_id in queued:
            with session_scope() as s:
                assert send_transactional(s, kind, sub_id)

    deliver_queued()
    [confirm] = [m.message for m in smtp_sink.messages if m.rcpt_tos == [email]]
    [token] = re.findall(r"https?://\S+/confirm/([A-Za-z0-9_\-.]+)", confirm.get_body(("plain",)).get_content())
    with session_scope() as s:
        lifecycle.confirm(s, token)
    deliver_queued()
    close_connection()
    welcome = [m.message for m in smtp_sink.messages if m.rcpt_tos == [email]][1:]
    assert len(welcome) == 1
    return welcome[0]


def _parts(message: EmailMessage) -> tuple[str, str]:
    html_part, text_part = message.get_body(("html",)), message.get_body(("plain",))
    assert html_part["Content-Transfer-Encoding"] == "base64" == text_part["Content-Transfer-Encoding"]
    return html_part.get_content(), text_part.get_content()


def _chosen(html: str) -> list[str]:
    return [p.text_content() for p in lxml.html.document_fromstring(html).xpath("//p[@class='text'][strong]")]


def test_the_welcome_says_the_hour_the_reader_chose(https_site, smtp_sink, monkeypatch):
    message = _signed_up_confirmed_welcomed(smtp_sink, monkeypatch, "evening@example.com", digest_hour="18")
    html, text = _parts(message)
    assert check_email(html, text) == []
    # One line per newsletter they are on, in the site's order.
    lines = ["النشرة اليومية: كل يوم الساعة 18:00 بتوقيت الأردن، كل الأقسام", "عاجل: الأخبار العاجلة فور نشرها"]
    assert _chosen(html) == lines and all(f"{line}\n" in text.replace("\r\n", "\n") for line in lines)
    # The inbox snippet (the hidden preheader) names them.
    [preheader] = lxml.html.document_fromstring(html).xpath("//div[@class='preheader']")
    assert preheader.text_content().startswith("اخترت: النشرة اليومية · عاجل.")


def test_the_welcome_of_a_weekly_reader_says_the_day_in_the_sites_digits(https_site, smtp_sink, monkeypatch):
    monkeypatch.setenv("ARABIC_INDIC_DIGITS", "true")
    monkeypatch.setenv("DIGEST_DAILY_AT", "07:30")  # every slot leaves at this minute
    reset_settings()
    message = _signed_up_confirmed_welcomed(smtp_sink, monkeypatch, "weekly@example.com", frequency="weekly",
                                            digest_hour="18", digest_weekday="0")
    html, text = _parts(message)
    assert check_email(html, text) == []
    line = "النشرة الأسبوعية: كل يوم الاثنين الساعة ١٨:٣٠ بتوقيت الأردن، كل الأقسام"
    assert line in _chosen(html) and f"{line}\n" in text.replace("\r\n", "\n")
    assert "18:30" not in html + text


def test_the_welcome_of_a_reader_who_never_chose_says_the_default_hour_and_day(https_site, smtp_sink, monkeypatch):
    message = _signed_up_confirmed_welcomed(smtp_sink, monkeypatch, "default@example.com", frequency="weekly")
    html, text = _parts(message)
    line = "النشرة الأسبوعية: كل يوم السبت الساعة 07:00 بتوقيت الأردن، كل الأقسام"  # DIGEST_WEEKLY_DAY 5, DIGEST_DAILY_AT
    assert line in _chosen(html) and f"{line}\n" in text.replace("\r\n", "\n")


def test_a_reader_without_a_digest_is_told_no_hour(https_site, smtp_sink, monkeypatch):
    with session_scope() as s:
        sub = reader(s, "alerts-only@example.com", frequency="none", alerts=True)
        close_connection()
        assert send_transactional(s, "welcome", sub.id)
    close_connection()
    html, text = _parts(smtp_sink.messages[-1].message)
    assert check_email(html, text) == []
    assert _chosen(html) == ["عاجل: الأخبار العاجلة فور نشرها"] and "الساعة" not in html + text


def test_the_welcome_lists_each_newsletter_with_its_own_sections(https_site, smtp_sink, monkeypatch):
    with session_scope() as s:
        world = Section(slug="world", name="عربي دولي", position=1)
        s.add(world)
        s.flush()
        s.add(Newsletter(slug="friday", name="نشرة الجمعة", kind=NewsletterKind.digest, frequency=Frequency.weekly,
                         default_weekday=4, default_hour=9, sections=[], position=5))
        world_id = world.id
    message = _signed_up_confirmed_welcomed(smtp_sink, monkeypatch, "two@example.com", sections=[str(world_id)],
                                            newsletters=["daily", "friday"])
    html, text = _parts(message)
    assert check_email(html, text) == []
    assert _chosen(html) == ["النشرة اليومية: كل يوم الساعة 07:00 بتوقيت الأردن، عربي دولي",
                             "نشرة الجمعة: كل يوم الجمعة الساعة 09:00 بتوقيت الأردن، عربي دولي"]


@pytest.mark.parametrize("rule, copies", [("resend", 2), ("hold", 1)])
def test_a_one_off_whose_dot_got_no_answer_follows_smtp_ambiguous(smtp_sink, monkeypatch, rule, copies):
    """The one sender's rule after the dot holds for one-offs too: `resend` sends it once
    more with the same Message-ID (a possible duplicate, never a lost confirmation);
    `hold` sends it once.  Either way it counts as maybe delivered, not as a failure."""
    monkeypatch.setenv("SMTP_DATA_TIMEOUT", "1")
    monkeypatch.setenv("SMTP_AMBIGUOUS", rule)
    reset_settings()
    close_connection()
    smtp_sink.faults["reader@example.com"] = "no_reply"
    message = MSG.replace(b"Subject: hi", b"Message-ID: <one-off-1@nashra.example>\r\nSubject: hi")
    outcome = send_one("reader@example.com", message)
    assert outcome.verdict == "unknown"
    assert len(smtp_sink.unanswered) == copies
    assert {m.data.split(b"Message-ID: ")[1].split(b"\r\n")[0] for m in smtp_sink.unanswered} == {
        b"<one-off-1@nashra.example>"}
    close_connection()
