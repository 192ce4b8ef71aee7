"""Settings: a bad value stops start-up with a message naming the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.config import DEMO_SECRET_KEY, ConfigError, load_settings


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("SMTP_URL", "http://mail.example", "SMTP_URL"),
        ("SMTP_URL", "smtp://", "SMTP_URL"),
        ("TIMEZONE", "Mars/Olympus", "TIMEZONE"),
        ("PUBLIC_URL", "news.example", "PUBLIC_URL"),
        ("REDIS_URL", "amqp://x", "REDIS_URL"),
        ("FEED_ALLOW_PRIVATE", "perhaps", "FEED_ALLOW_PRIVATE"),
        ("MAIL_FROM", "not an address", "MAIL_FROM"),
        ("DIGEST_DAILY_AT", "25:00", "DIGEST_DAILY_AT"),
        ("LEASE_SECONDS", "0", "LEASE_SECONDS"),
        ("SMTP_TIMEOUT", "-1", "SMTP_TIMEOUT"),
        ("RATE_PER_SECOND", "fast", "RATE_PER_SECOND"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT"),
        ("DOMAIN_RATES", "gmail.com", "DOMAIN_RATES"),
    ],
)
def test_bad_value_names_the_variable(monkeypatch, var, value, needle):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert needle in str(err.value)


def test_defaults_are_the_embedded_ones(monkeypatch, tmp_path):
    s = load_settings()
    assert s.database_url.startswith("sqlite:///") and s.database_url.endswith("nashra.sqlite3")
    assert s.broker_url.startswith("sqla+sqlite:///")
    assert s.timezone == "Asia/Amman"
    assert s.feed_urls == []


def test_feed_urls_are_comma_separated(monkeypatch):
    monkeypatch.setenv("FEED_URLS", "https://a.example/rss, https://b.example/atom ,")
    assert load_settings().feed_urls == ["https://a.example/rss", "https://b.example/atom"]


def test_smtp_url_forms(monkeypatch):
    monkeypatch.setenv("SMTP_URL", "smtp+starttls://user%40x:p%3Ass@mail.example:587")
    smtp = load_settings().smtp
    assert (smtp.security, smtp.host, smtp.port, smtp.username, smtp.password) == (
        "starttls", "mail.example", 587, "user@x", "p:ss",
    )
    assert "p:ss" not in repr(smtp)


def test_postgres_url_gets_the_psycopg_driver(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db/nashra")
    assert load_settings().database_url == "postgresql+psycopg://u@db/nashra"


def test_demo_secret_refused_outside_demo(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", DEMO_SECRET_KEY)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        load_settings().require_production_secret()
    monkeypatch.setenv("NASHRA_DEMO", "1")
    load_settings().require_production_secret()  # the demo may use it


def test_cli_reports_bad_setting_and_exits_2(monkeypatch, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "TIMEZONE": "Nowhere/Land", "NASHRA_VAR_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "service", "db", "upgrade"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "TIMEZONE" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_refuses_demo_secret_for_the_worker(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "NASHRA_VAR_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "service", "worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "SECRET_KEY" in proc.stderr
