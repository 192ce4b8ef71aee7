"""Consent you can show, and the reader's data (issue 13, items 3 and 4): the consent
record at signup and confirmation, on the preferences page and in the export; the export
itself; "delete my data" (and `nashra subscribers forget`) leaving only a keyed hash that
an old list cannot get past; unconfirmed signups and old unsubscriptions purged.

Over HTTP (TestClient, a client address of our choosing) against PostgreSQL and Redis;
the sends in the export are real (the batch, an SMTP sink).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import json
import os
import re
import subprocess
import sys

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service import dispatch
from service.config import get_settings, reset_settings
from service.db import session_scope
from service.models import (
    AuditLog,
    Consent,
    Delivery,
    Section,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SuppressedHash,
    Suppression,
    utcnow,
)
from service.newsletters import membership
from service.subscribers import consent
from service.subscribers.csvio import import_csv
from service.subscribers.tokens import make_token
from service.usecases import subscribers as readers
from service.usecases.alerts import send_alert
from tests.support.logs import json_log_lines
from tests.support.readers import reader
from tests.test_quiet_hours import deliver

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
UA = "Mozilla/5.0 (X11; Linux x86_64) Nashra-Test/1.0"
EMAIL = "reader@example.com"


@pytest.fixture
def env(pg_env, queue_redis, smtp_sink):
    with session_scope() as s:
        s.add_all([Section(slug="world", name="عربي دولي", position=1), Section(slug="sport", name="رياضة", position=2)])
    return smtp_sink


def client_from(ip: str) -> TestClient:
    from service.web.app import create_app

    return TestClient(create_app(), client=(ip, 50123), headers={"User-Agent": UA})


def sign_up(client, email: str = EMAIL, **extra):
    page = client.get("/")
    data = {"csrf_token": CSRF.search(page.text).group(1), "email": email, "frequency": "daily", "alerts": "yes",
            "consent": "yes", "consent_version": consent.CURRENT, "website": "", **extra}
    return client.post("/subscribe", data=data)


def confirm(client, sub_id: int, version: int = 1):
    token = make_token("confirm", sub_id, version)
    page = client.get(f"/confirm/{token}")
    return client.post(f"/confirm/{token}", data={"csrf_token": CSRF.search(page.text).group(1)})


def the_reader(email: str = EMAIL) -> Subscriber | None:
    with session_scope() as s:
        return s.scalar(sa.select(Subscriber).where(Subscriber.email == email))


def prefs(sub: Subscriber) -> str:
    return f"/preferences/{make_token('preferences', sub.id, sub.token_version)}"


def prefs_csrf(client, url: str) -> str:
    return CSRF.search(client.get(url).text).group(1)


@pytest.mark.parametrize("mode, signup_ip, confirm_ip", [
    ("network", "203.0.113.0/24", "2001:db8:5::/48"),
    ("full", "203.0.113.77", "2001:db8:5:6::9"),
])
def test_signup_and_confirmation_are_on_the_consent_record_and_the_reader_sees_it(env, monkeypatch, mode, signup_ip,
                                                                                 confirm_ip):
    monkeypatch.setenv("CONSENT_IP", mode)
    reset_settings()
    with json_log_lines() as lines:
        assert sign_up(client_from("203.0.113.77"), digest_hour="18").status_code == 200
        sub = the_reader()
        assert sub.status is SubscriberStatus.pending
        with session_scope() as s:
            assert [x.digest_hour for x in membership.of(s, sub.id) if x.newsletter.slug == "daily"] == [18]
        assert confirm(client_from("2001:db8:5:6::9"), sub.id).status_code == 200
    with session_scope() as s:
        signup, confirmed = s.scalars(sa.select(Consent).where(Consent.subscriber_id == sub.id).order_by(Consent.id))
    assert (signup.event, signup.ip, signup.user_agent, signup.source) == ("signup", signup_ip, UA, "web:form")
    assert signup.form_url == get_settings().public_url + "/"
    assert signup.text_version == consent.CURRENT and signup.text == consent.text_of(consent.CURRENT)
    assert "أوافق على أن ترسل لي" in signup.text
    assert (confirmed.event, confirmed.ip, confirmed.user_agent) == ("confirm", confirm_ip, UA)
    assert confirmed.at >= signup.at
    # Nothing of it in the logs: no address, no IP, no user agent.
    logged = json.dumps(lines, ensure_ascii=False)
    for secret in (EMAIL, "203.0.113", "2001:db8", "Nashra-Test"):
        assert secret not in logged
    # The reader sees it on their preferences page.
    page = client_from("192.0.2.1").get(prefs(the_reader())).text
    assert signup_ip in page and confirm_ip in page and consent.CURRENT in page and "أوافق على أن ترسل لي" in page


def test_an_embedded_form_records_the_page_that_framed_it(env):
    client = client_from("203.0.113.5")
    page = client.get("/?embed=1", headers={"Referer": "https://news.example/world/2021/11/24/story"})
    data = {"csrf_token": CSRF.search(page.text).group(1), "email": EMAIL, "frequency": "weekly", "alerts": "no",
            "consent": "yes", "consent_version": consent.CURRENT, "embed": "1",
            "form_url": re.search(r'name="form_url" value="([^"]+)"', page.text).group(1)}
    assert client.post("/subscribe", data=data).status_code == 200
    with session_scope() as s:
        row = s.scalar(sa.select(Consent))
    assert (row.form_url, row.source) == ("https://news.example/world/2021/11/24/story", "web:embed")


def test_the_export_holds_the_profile_the_consent_record_and_what_was_sent(env):
    client = client_from("203.0.113.9")
    sign_up(client, digest_hour="18")
    confirm(client, the_reader().id)
    with session_scope() as s:
        reader(s, "other@example.com")
    alert_id = send_alert(editor_id=None, headline="عاجل: خبر للتجربة", url="https://news.example/t",
                          dispatcher=dispatch.Recorder())
    deliver(alert_id)
    sub = the_reader()
    url = prefs(sub)
    resp = client.post(url, data={"csrf_token": prefs_csrf(client, url), "action": "export"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    assert "attachment" in resp.headers["content-disposition"]
    data = resp.json()
    assert data["profile"]["email"] == EMAIL and data["profile"]["status"] == "active"
    # Each newsletter with their choices for it.
    daily, alerts = data["newsletters"]
    assert (daily["newsletter"], daily["kind"], daily["frequency"], daily["digest_hour"], daily["sections"]) == (
        "daily", "digest", "daily", 18, "all")
    assert (alerts["newsletter"], alerts["kind"], alerts["quiet_hours"]) == ("alerts", "alerts", None)
    assert [c["event"] for c in data["consent"]] == ["signup", "confirm"]
    assert data["consent"][0]["ip"] == "203.0.113.0/24" and data["consent"][0]["consent_text"]
    [sent] = data["sent"]
    assert (sent["edition"], sent["kind"], sent["newsletter"], sent["status"]) == (alert_id, "alert", "alerts", "sent")
    assert sent["at"] and "خبر للتجربة" in sent["subject"]
    assert "other@example.com" not in resp.text  # theirs only
    # A forged or foreign CSRF token gets the page again, not the data.
    refused = client.post(url, data={"csrf_token": "forged", "action": "export"})
    assert refused.status_code == 400 and "application/json" not in refused.headers["content-type"]


def _holds(email: str) -> list[str]:
    """Every place the database still has the address in clear."""
    found = []
    with session_scope() as s:
        for table in ("subscribers", "suppressions", "consents", "audit_log", "deliveries", "editions"):
            rows = s.execute(sa.text(f"SELECT * FROM {table}")).all()  # noqa: S608 — our own table names
            if any(email in str(row) for row in rows):
                found.append(table)
    return found


def test_delete_asks_first_then_leaves_only_the_keyed_hash_and_an_old_list_cannot_re_add_it(env):
    client = client_from("203.0.113.9")
    sign_up(client)
    confirm(client, the_reader().id)
    sub = the_reader()
    alert_id = send_alert(editor_id=None, headline="خبر", url="https://news.example/x", dispatcher=dispatch.Recorder())
    deliver(alert_id)
    url = prefs(sub)
    page = client.post(url, data={"csrf_token": prefs_csrf(client, url), "action": "forget"})
    assert page.status_code == 200 and "نعم، احذف بياناتي" in page.text
    assert the_reader() is not None  # the first click only asks
    # The preferences page's own token does not delete: only the confirmation page's does.
    wrong = client.post(url, data={"csrf_token": prefs_csrf(client, url), "action": "forget_confirm"})
    assert wrong.status_code == 400 and the_reader() is not None
    done = client.post(url, data={"csrf_token": CSRF.search(page.text).group(1), "action": "forget_confirm"})
    assert done.status_code == 200 and "حُذفت بياناتك" in done.text
    assert the_reader() is None
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Delivery)) == 0
        assert s.scalar(sa.select(sa.func.count()).select_from(Consent)) == 0
        assert s.scalar(sa.select(sa.func.count()).select_from(Subscription)) == 0  # their newsletters went too
        [kept] = s.scalars(sa.select(SuppressedHash))
        key = hmac.new(get_settings().secret_key.encode(), b"nashra.suppressed-address", hashlib.sha256).digest()
        assert kept.hash == hmac.new(key, EMAIL.encode(), hashlib.sha256).hexdigest()
        assert kept.reason == "forgotten"
        origins = s.scalars(sa.select(AuditLog.origin).where(AuditLog.target == f"subscriber:{sub.id}")).all()
        assert origins and all(o is None for o in origins)  # the audit keeps the acts, not the IPs
    assert _holds(EMAIL) == []
    # The link is dead now.
    assert client.get(url).status_code == 400
    # An old list with the address is refused, line by line.
    with session_scope() as s:
        report = import_csv(s, io.StringIO(f"email,status\n{EMAIL.upper()},active\nnew@example.com,active\n"),
                            actor="cli")
    assert report.created == 1 and [line for line, _ in report.problems] == [2]
    assert "forgotten" in report.problems[0][1]
    assert the_reader() is None
    # The reader may come back themselves, through double opt-in; then the hash goes.
    sign_up(client_from("198.51.100.1"))
    back = the_reader()
    assert back.status is SubscriberStatus.pending
    confirm(client, back.id)
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(SuppressedHash)) == 0


def nashra(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service", *args], env=os.environ.copy(), capture_output=True,
                          text=True, timeout=120)


def test_subscribers_forget_does_the_same_for_an_operator(env):
    with session_scope() as s:
        reader(s, EMAIL)
        reader(s, "bounced@example.com")
        s.add(Suppression(email="bounced@example.com", reason="hard_bounce"))
    proc = nashra("subscribers", "forget", "Reader@Example.COM")
    assert proc.returncode == 0, proc.stderr
    assert "forgotten" in proc.stdout and EMAIL not in proc.stdout + proc.stderr
    assert the_reader() is None and _holds(EMAIL) == []
    # A bounced address leaves the suppression list in clear and stays suppressed, as a hash.
    assert nashra("subscribers", "forget", "bounced@example.com").returncode == 0
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Suppression)) == 0
        assert sorted(s.scalars(sa.select(SuppressedHash.reason))) == ["forgotten", "hard_bounce"]
    assert _holds("bounced@example.com") == []
    sign_up(client_from("198.51.100.1"), email="bounced@example.com")
    assert the_reader("bounced@example.com") is None  # the signup is refused, with the same page as ever
    bad = nashra("subscribers", "forget", "not an address")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_unconfirmed_signups_and_old_unsubscriptions_are_purged(env, monkeypatch):
    monkeypatch.setenv("PENDING_DAYS", "7")
    monkeypatch.setenv("UNSUBSCRIBED_DAYS", "30")
    reset_settings()
    now = utcnow()
    day = dt.timedelta(days=1)
    with session_scope() as s:
        reader(s, "stale@example.com", status=SubscriberStatus.pending, consented_at=now - 8 * day)
        reader(s, "fresh@example.com", status=SubscriberStatus.pending, consented_at=now - 6 * day)
        reader(s, "left-long-ago@example.com", status=SubscriberStatus.unsubscribed, newsletters=[],
               unsubscribed_at=now - 31 * day, confirmed_at=now - 400 * day)
        reader(s, "left-lately@example.com", status=SubscriberStatus.unsubscribed, newsletters=[],
               unsubscribed_at=now - 29 * day)
        reader(s, "active@example.com", consented_at=now - 900 * day)
    report = readers.purge()
    assert (report.pending, report.unsubscribed) == (1, 1)
    with session_scope() as s:
        left = sorted(s.scalars(sa.select(Subscriber.email)))
        reasons = list(s.scalars(sa.select(SuppressedHash.reason)))
    assert left == ["active@example.com", "fresh@example.com", "left-lately@example.com"]
    assert reasons == ["unsubscribed"]  # an unconfirmed signup leaves nothing at all
    assert _holds("stale@example.com") == [] and _holds("left-long-ago@example.com") == []
    with session_scope() as s:
        report = import_csv(s, io.StringIO("email,status\nleft-long-ago@example.com,active\nstale@example.com,pending\n"),
                            actor="cli")
    assert [line for line, _ in report.problems] == [2] and report.created == 1
    assert readers.purge().as_dict() == {"pending": 0, "unsubscribed": 0}
