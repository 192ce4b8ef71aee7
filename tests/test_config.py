"""Settings: a bad value stops start-up with a message naming the variable."""

from __future__ import annotations

import subprocess
import sys

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

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


# ------------------------------------------------------------------ MAIL_FROM on an Arabic domain

IDN_FROM = "نشرة <newsletter@أخبار.example>"
IDN_ALABEL = "xn--igbicxr.example"  # أخبار.example as SMTP and headers carry it


def test_an_arabic_domain_in_mail_from_is_kept_as_its_a_label(monkeypatch):
    monkeypatch.setenv("MAIL_FROM", IDN_FROM)
    s = load_settings()
    assert s.mail_from_address == f"newsletter@{IDN_ALABEL}"  # the envelope sender's base
    assert s.mail_from_header == f"نشرة <newsletter@{IDN_ALABEL}>"  # the display name as written
    assert s.mail_from == s.mail_from_header


def test_the_helo_name_is_the_a_label(monkeypatch):
    from service.delivery.smtp import helo_name

    monkeypatch.setenv("MAIL_FROM", IDN_FROM)
    assert helo_name(load_settings()) == IDN_ALABEL


def test_ascii_mail_from_is_left_exactly_as_written(monkeypatch):
    for value in ('"Nashra News, Amman" <news@nashra.example>', "news@Nashra.Example", "نشرة <newsletter@nashra.example>"):
        monkeypatch.setenv("MAIL_FROM", value)
        assert load_settings().mail_from == value


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("نشرة <نشرة@أخبار.example>", "before @ must be ASCII"),  # would need SMTPUTF8
        ("نشرة <nashra@☃.example>", "not a valid internationalised domain name"),  # not IDNA 2008
        ("نشرة <nashra@أخبار..example>", "not a valid internationalised domain name"),  # an empty label
        ("نشرة <nashra@-أخبار.example>", "not a valid internationalised domain name"),  # a hyphen first
        ("نشرة <nashra@news..example>", "not a valid host name"),  # an ASCII one, as badly formed
        ("نشرة <nashra@" + "أخبار" * 13 + ".example>", "not a valid internationalised domain name"),  # > 63
        ('"a b"@nashra.example', "plain address"),  # no message could carry it
        ("نشرة <newsletter@nashra.example>\nBcc: x@example.com", "line break"),
    ],
)
def test_a_mail_from_no_message_could_carry_stops_start_up(monkeypatch, value, needle):
    monkeypatch.setenv("MAIL_FROM", value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "MAIL_FROM" in str(err.value) and needle in str(err.value)


_ARABIC = "".join(chr(c) for c in range(0x0621, 0x064B))  # hamza … yeh, no harakat
_label = st.one_of(
    st.text(alphabet=_ARABIC, min_size=1, max_size=20),  # a plausible Arabic label
    st.text(alphabet=_ARABIC + "abc019-\u0660\u0661" + "☃!_.\u200d\u00df", min_size=0, max_size=70),  # anything
)
_local = st.one_of(
    st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,10}", fullmatch=True),
    st.text(alphabet=st.characters(exclude_characters='()<>[]"\\,;:@', exclude_categories=("Cs", "Zs", "Cc")),
            min_size=0, max_size=12),
)


@hypothesis.settings(max_examples=300, deadline=None)
@given(local=_local, labels=st.lists(_label, min_size=1, max_size=3))
def test_any_mail_from_starts_with_an_ascii_sender_or_not_at_all(local, labels):
    """Either the settings refuse MAIL_FROM at start, naming it, or every message can carry
    it: an ASCII address, the domain's A-labels decoding back to what was written."""
    import idna

    domain = ".".join(labels + ["example"])
    try:
        s = load_settings(mail_from=f"نشرة <{local}@{domain}>")
    except ConfigError as exc:
        assert str(exc).count("\n") == 1 and "MAIL_FROM:" in str(exc)
        hypothesis.event("refused at start")
        return
    hypothesis.event("accepted, " + ("an A-label" if not domain.isascii() else "ASCII"))
    address = s.mail_from_address
    assert address.isascii() and address.count("@") == 1 and local.isascii()
    sent_local, _, sent_domain = address.partition("@")
    assert sent_local == local
    assert idna.decode(sent_domain) == idna.decode(idna.encode(domain, uts46=True))
