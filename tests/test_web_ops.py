"""Operators' endpoints and the demo-only pages."""

from __future__ import annotations

from email.message import EmailMessage

import pytest
from fastapi.testclient import TestClient

from service.db import session_scope
from service.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    Feed,
    Subscriber,
    SubscriberStatus,
)
from tests.support.net import free_port


def app_client():
    from service.web.app import create_app

    return TestClient(create_app())


def test_healthz_answers_without_database(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/nope")
    from service.config import reset_settings

    reset_settings()
    with app_client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}


def test_readyz_ok_with_migrated_database_and_redis(pg_env, redis_url):
    with app_client() as c:
        resp = c.get("/readyz")
    assert resp.status_code == 200, resp.text
    assert resp.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readyz_names_the_broker_when_redis_is_down(pg_env, monkeypatch):
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/15")
    from service.config import reset_settings

    reset_settings()
    with app_client() as c:
        resp = c.get("/readyz")
    assert resp.status_code == 503
    assert set(resp.json()["failed"]) == {"broker"}


def test_readyz_checks_the_embedded_sqlite_broker(sqlite_env, tmp_path, monkeypatch):
    with app_client() as c:
        assert c.get("/readyz").status_code == 200
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the broker's directory should be")
    monkeypatch.setenv("NASHRA_VAR_DIR", str(blocker))
    from service.config import reset_settings

    reset_settings()
    with app_client() as c:
        resp = c.get("/readyz")
    assert resp.status_code == 503
    assert set(resp.json()["failed"]) == {"broker"}


def test_readyz_names_the_database_when_not_migrated(tmp_path, monkeypatch, redis_url):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    from service.config import reset_settings

    reset_settings()
    with app_client() as c:
        resp = c.get("/readyz")
    assert resp.status_code == 503
    assert set(resp.json()["failed"]) == {"database"}


def test_readyz_names_a_database_behind_head(pg_env, redis_url):
    from sqlalchemy import text

    from service.db import get_engine

    with get_engine().begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'older'"))
    try:
        with app_client() as c:
            resp = c.get("/readyz")
        assert resp.status_code == 503
        assert "older" in resp.json()["failed"]["database"]
    finally:
        from service.web.health import migration_heads

        [head] = migration_heads()
        with get_engine().begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :h"), {"h": head})


def test_metrics_report_ledger_subscribers_and_feeds(pg_env):
    with session_scope() as s:
        subs = [Subscriber(email=f"m{i}@example.com", status=st) for i, st in
                enumerate([SubscriberStatus.active, SubscriberStatus.active, SubscriberStatus.pending])]
        s.add_all(subs)
        alert = Edition(kind=EditionKind.alert, title="عاجل")
        s.add(alert)
        s.add(Feed(url="https://news.example/rss", consecutive_failures=3))
        s.flush()
        s.add_all([
            Delivery(edition_id=alert.id, subscriber_id=subs[0].id, status=DeliveryStatus.sent),
            Delivery(edition_id=alert.id, subscriber_id=subs[1].id, status=DeliveryStatus.retry),
        ])
    with app_client() as c:
        resp = c.get("/metrics")
    assert resp.status_code == 200
    body = resp.text
    assert 'nashra_deliveries{kind="alert",status="sent"} 1.0' in body
    assert 'nashra_deliveries{kind="alert",status="retry"} 1.0' in body
    assert 'nashra_subscribers{status="active"} 2.0' in body
    assert 'nashra_subscribers{status="pending"} 1.0' in body
    assert "nashra_feeds_failing 1.0" in body
    assert "nashra_database_up 1.0" in body
    assert "process_cpu_seconds_total" in body or "python_info" in body
    assert "m0@example.com" not in body


def test_metrics_still_answer_when_database_is_down(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/nope")
    from service.config import reset_settings

    reset_settings()
    with app_client() as c:
        resp = c.get("/metrics")
    assert resp.status_code == 200
    assert "nashra_database_up 0.0" in resp.text


# ------------------------------------------------------------------ demo pages


def _write_eml(folder, name, subject, to, when):
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = "نشرة <newsletter@nashra.example>"
    msg["To"] = to
    msg["Date"] = when
    msg.set_content("\u200fنص الرسالة https://news.example/a")
    msg.add_alternative('<html lang="ar" dir="rtl"><body><p>نص "الرسالة" <b>HTML</b></p></body></html>',
                        subtype="html")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(msg.as_bytes())
    return path


@pytest.fixture
def demo(sqlite_env, monkeypatch):
    monkeypatch.setenv("NASHRA_DEMO", "true")
    from service.config import get_settings, reset_settings

    reset_settings()
    outbox = get_settings().outbox_dir
    import os

    old = _write_eml(outbox, "20240101-old.eml", "الأقدم", "a@example.com", "Mon, 01 Jan 2024 08:00:00 +0000")
    new = _write_eml(outbox, "20240102-new.eml", "عاجل: الأحدث", "b@example.com", "Tue, 02 Jan 2024 08:00:00 +0000")
    os.utime(old, (1_700_000_000, 1_700_000_000))
    os.utime(new, (1_700_000_100, 1_700_000_100))
    return outbox


def test_outbox_lists_newest_first_and_shows_a_message(demo):
    with app_client() as c:
        page = c.get("/outbox")
        assert page.status_code == 200
        assert page.text.index("عاجل: الأحدث") < page.text.index("الأقدم")
        one = c.get("/outbox/20240102-new")
        assert one.status_code == 200
        assert "b@example.com" in one.text and 'sandbox="' in one.text and "srcdoc=" in one.text
        assert "&lt;b&gt;HTML&lt;/b&gt;" in one.text and "&#34;الرسالة&#34;" in one.text  # escaped into srcdoc
        assert "نص الرسالة https://news.example/a" in one.text
        raw = c.get("/outbox/20240102-new.eml")
        assert raw.status_code == 200
        assert raw.headers["content-type"].startswith("message/rfc822")
        assert raw.content == (demo / "20240102-new.eml").read_bytes()


@pytest.mark.parametrize("name", ["..%2F..%2Fsecret", "..%2Fsecret.eml", ".hidden", "a..b.eml", "..%5Csecret.eml"])
def test_outbox_refuses_path_traversal(demo, name):
    (demo.parent / "secret.eml").write_text("Subject: secret\n\nsecret")
    with app_client() as c:
        resp = c.get(f"/outbox/{name}")
    assert resp.status_code in (400, 404)
    assert "secret" not in resp.text


@pytest.mark.parametrize("name", ["..", "../secret", "..\\secret", "/etc/passwd", ".hidden", "a/../../secret",
                                  "secret\x00.eml", ""])
def test_outbox_name_check_stays_inside_the_outbox(demo, name):
    from service.web.demo import safe_eml_path

    assert safe_eml_path(name) is None
    assert safe_eml_path("20240102-new") == (demo / "20240102-new.eml").resolve()


def test_demo_feed_is_served_as_rss(demo):
    from service.web.demo import SAMPLE_FEED

    with app_client() as c:
        resp = c.get("/demo/feed.xml")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/rss+xml")
    assert resp.content == SAMPLE_FEED.read_bytes()
    assert b"<rss" in resp.content


def test_demo_routes_do_not_exist_outside_demo(tmp_path):
    with app_client() as c:
        for path in ("/outbox", "/outbox/x", "/outbox/x.eml", "/demo/feed.xml"):
            assert c.get(path).status_code == 404

