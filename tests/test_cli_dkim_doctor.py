"""`nashra dkim keygen` and `nashra doctor`, run as operators run them (real processes),
against the test run's PostgreSQL and Redis, real SMTP servers (aiosmtpd: plain, and
STARTTLS with AUTH), the real bounce server, and a small DNS server of the test's own
(`--dns-server`): this sandbox has no internet DNS, which is the unreachable case."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import dkim
import pytest
import sqlalchemy as sa

from service.config import get_settings, reset_settings
from service.usecases import dkim as dkim_keys
from tests.support.dns_server import DnsServer
from tests.support.net import free_port
from tests.support.smtp_sink import SmtpSink

DOMAIN = "nashra.test"
SMTP_PASSWORD = "relay-Pa55word-9"
DB_PASSWORD = "db-Pa55word-7"
SECRET_KEY = "test-secret-key-0123456789abcdef"  # tests/conftest.py's


def nashra(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service", *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=120)


def keygen(tmp_path: Path, selector: str = "s2026", name: str = "dkim.pem", *extra: str):
    path = tmp_path / name
    proc = nashra("dkim", "keygen", "--selector", selector, "--out", str(path), *extra)
    return path, proc


def make_key(tmp_path: Path, name: str = "dkim.pem") -> tuple[Path, str]:
    """A key for the doctor's tests (keygen itself is tested through the command above)."""
    key = dkim_keys.generate(get_settings(), "s2026", tmp_path / name)
    return key.path, key.record_value


def printed_record(stdout: str) -> tuple[str, str]:
    """(name, value) of the TXT line keygen printed; the value's strings joined."""
    line = next(x.strip() for x in stdout.splitlines() if " IN TXT " in x)
    name, _, strings = line.partition(". IN TXT ")
    parts = re.findall(r'"([^"]*)"', strings)
    assert all(len(p) <= 255 for p in parts) and len(parts) >= 2  # a 2048-bit key needs two strings
    return name, "".join(parts)


@pytest.fixture
def mail_env(monkeypatch):
    monkeypatch.setenv("MAIL_FROM", f"نشرة <newsletter@{DOMAIN}>")
    monkeypatch.setenv("PUBLIC_URL", f"https://news.{DOMAIN}")
    monkeypatch.setenv("POSTAL_ADDRESS", "Nashra, 1 Example Street, Amman")
    monkeypatch.setenv("SMTP_CONNECT_TIMEOUT", "3")
    reset_settings()


# ---------------------------------------------------------------- keygen


def test_keygen_writes_a_0600_key_and_never_overwrites_one(tmp_path, mail_env):
    path, proc = keygen(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert "DKIM_SELECTOR=s2026" in proc.stdout
    assert f"DKIM_PRIVATE_KEY_PATH={path}" in proc.stdout
    name, value = printed_record(proc.stdout)
    assert name == f"s2026._domainkey.{DOMAIN}"
    assert value.startswith("v=DKIM1; k=rsa; p=")
    body = "".join(path.read_text().splitlines()[1:-1])
    assert body[:60] not in proc.stdout  # the private key is never printed

    first = path.read_bytes()
    again = nashra("dkim", "keygen", "--selector", "s2026", "--out", str(path))
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr
    assert path.read_bytes() == first

    path.chmod(0o644)
    forced = nashra("dkim", "keygen", "--selector", "s2026", "--out", str(path), "--force", "--bits", "1024")
    assert forced.returncode == 0, forced.stderr
    assert path.read_bytes() != first and stat.S_IMODE(path.stat().st_mode) == 0o600

    bad = nashra("dkim", "keygen", "--selector", "no good", "--out", str(tmp_path / "x.pem"))
    assert bad.returncode == 2 and "selector" in bad.stderr and not (tmp_path / "x.pem").exists()


def test_the_printed_record_verifies_a_signature_made_with_the_key(tmp_path, mail_env):
    path, proc = keygen(tmp_path)
    assert proc.returncode == 0, proc.stderr
    name, value = printed_record(proc.stdout)
    message = (f"From: newsletter@{DOMAIN}\r\nTo: reader@example.com\r\nSubject: =?utf-8?b?2YbYtNix2Kk=?=\r\n"
               "Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@nashra.test>\r\n\r\nمرحبا\r\n").encode()
    signed = dkim.sign(message, b"s2026", DOMAIN.encode(), path.read_bytes(),
                       include_headers=[b"From", b"To", b"Subject", b"Date", b"Message-ID"],
                       canonicalize=(b"relaxed", b"relaxed")) + message  # sign() gives the header
    asked = []

    def dnsfunc(qname, timeout=5):
        qname = qname.decode() if isinstance(qname, bytes) else qname
        asked.append(qname)
        return value.encode() if qname.rstrip(".") == name else b""

    assert dkim.verify(signed, dnsfunc=dnsfunc)
    assert [a.rstrip(".") for a in asked] == [name]
    assert not dkim.verify(signed.replace("مرحبا".encode(), "وداعا".encode()),
                           dnsfunc=lambda q, timeout=5: value.encode())
    # Another key's record does not verify it.
    other, proc2 = keygen(tmp_path, "s2026", "other.pem")
    _, other_value = printed_record(proc2.stdout)
    assert not dkim.verify(signed, dnsfunc=lambda q, timeout=5: other_value.encode())


# ---------------------------------------------------------------- doctor


def _server_tls(tmp_path: Path):
    import ssl

    key, cert = tmp_path / "relay.key", tmp_path / "relay.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=relay.test", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx, cert


def _zone(selector: str, dkim_value: str) -> dict:
    strings = " ".join(f'"{dkim_value[i:i + 255]}"' for i in range(0, len(dkim_value), 255))
    return {
        (f"{selector}._domainkey.{DOMAIN}", "TXT"): [strings],
        (DOMAIN, "TXT"): ['"v=spf1 ip4:127.0.0.1 -all"', '"google-site-verification=abc"'],
        (DOMAIN, "MX"): [f"10 mx.{DOMAIN}."],
        (f"_dmarc.{DOMAIN}", "TXT"): ['"v=DMARC1; p=quarantine; rua=mailto:dmarc@nashra.test"'],
        (f"mx.{DOMAIN}", "A"): ["127.0.0.1"],
    }


def _assert_no_secret(out: str, *more: str) -> None:
    for secret in (SMTP_PASSWORD, DB_PASSWORD, SECRET_KEY, *more):
        assert secret not in out


@pytest.fixture
def auth_relay(tmp_path, monkeypatch):
    """An aiosmtpd relay that wants STARTTLS and AUTH, its certificate trusted by the doctor."""
    ctx, cert = _server_tls(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    sink = SmtpSink(auth={"nashra": SMTP_PASSWORD}, tls_context=ctx)
    sink.start()
    yield sink
    sink.stop()


def test_doctor_all_ok(pg_env, redis_url, smtp_sink, auth_relay, bounce_server, tmp_path, monkeypatch, mail_env):
    path, value = make_key(tmp_path)
    monkeypatch.setenv("DATABASE_URL", pg_env.replace("postgres@", f"postgres:{DB_PASSWORD}@"))  # trust: ignored
    monkeypatch.setenv("SMTP_URL", f"smtp+starttls://nashra:{SMTP_PASSWORD}@127.0.0.1:{auth_relay.port},"
                                   f"smtp://127.0.0.1:{smtp_sink.port}")
    monkeypatch.setenv("DKIM_SELECTOR", "s2026")
    monkeypatch.setenv("DKIM_PRIVATE_KEY_PATH", str(path))
    with DnsServer(_zone("s2026", value)) as dns:
        run = nashra("doctor", "--dns-server", dns.address, "--mx-port", str(bounce_server.port))
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    lines = out.splitlines()
    assert lines and all(line.startswith("ok ") for line in lines), out
    for check in ("settings", "SECRET_KEY", "POSTAL_ADDRESS", "PUBLIC_URL", "database", "redis", "relay 1 of 2",
                  "relay 2 of 2", "DKIM key", "DKIM record", "SPF", "DMARC", "bounce routing"):
        assert any(line.split(":", 1)[0].removeprefix("ok").strip().startswith(check) for line in lines), check
    relay1 = next(x for x in lines if "relay 1 of 2" in x)
    assert "STARTTLS used" in relay1 and "login works" in relay1 and "AUTH" in relay1
    assert "PIPELINING" in relay1 and "SIZE" in relay1
    relay2 = next(x for x in lines if "relay 2 of 2" in x)
    assert "no AUTH offered" in relay2 and "PIPELINING" in relay2
    assert "latest revision" in out and "publishes this key's public key" in out
    assert "p=quarantine" in out and "a Nashra bounce server" in out
    assert "***" in next(x for x in lines if x.startswith("ok   database"))
    _assert_no_secret(out + run.stderr, "".join(path.read_text().splitlines()[1:3]))
    assert not auth_relay.messages and not smtp_sink.messages  # the doctor sends nothing


def test_doctor_says_what_to_fix_and_exits_1(pg_env, auth_relay, bounce_server, tmp_path, monkeypatch, mail_env):
    # An unmigrated database (reachable, no schema), a relay nobody listens on, a relay
    # that refuses the password, a DKIM key the published record is not of, a forged
    # bounce server (another SECRET_KEY), and production settings left as they came.
    admin = sa.create_engine(pg_env.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    empty = f"nashra_doctor_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{empty}"'))
    try:
        path, _ = make_key(tmp_path)
        path.chmod(0o640)  # the group may read it: anyone in it could sign as the domain
        _, other_value = make_key(tmp_path, "other.pem")
        dead = free_port()
        db_url = pg_env.rsplit("/", 1)[0].replace("postgres@", f"postgres:{DB_PASSWORD}@") + "/" + empty
        monkeypatch.setenv("DATABASE_URL", db_url)
        monkeypatch.setenv("SMTP_URL", f"smtp+starttls://nashra:{SMTP_PASSWORD}@127.0.0.1:{dead},"
                                       f"smtp+starttls://nashra:not-{SMTP_PASSWORD}@127.0.0.1:{auth_relay.port}")
        monkeypatch.setenv("DKIM_SELECTOR", "s2026")
        monkeypatch.setenv("DKIM_PRIVATE_KEY_PATH", str(path))
        monkeypatch.setenv("PUBLIC_URL", f"http://news.{DOMAIN}")
        monkeypatch.setenv("POSTAL_ADDRESS", "")
        with DnsServer(_zone("s2026", other_value)) as dns:
            run = nashra("doctor", "--dns-server", dns.address, "--mx-port", str(bounce_server.port),
                         env={"SECRET_KEY": "another-secret-key-for-this-run-1234"})
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                         {"n": empty})
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{empty}"'))
        admin.dispose()
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    assert "Traceback" not in run.stderr
    fixes = {line.split(":")[1].strip(): line for line in out.splitlines() if line.startswith("FIX:")}
    assert "nashra db upgrade" in fixes["database"]
    assert "cannot connect within SMTP_CONNECT_TIMEOUT" in fixes["relay 1 of 2 (smtp+starttls"]
    assert "login refused" in fixes["relay 2 of 2 (smtp+starttls"]
    assert "does not match DKIM_PRIVATE_KEY_PATH" in fixes["DKIM record"]
    assert "chmod 600" in fixes["DKIM key"]
    assert "https" in fixes["PUBLIC_URL"] and "empty" in fixes["POSTAL_ADDRESS"]
    assert "refuses" in fixes["bounce routing"]
    assert out.startswith("ok   settings")
    _assert_no_secret(out + run.stderr, f"not-{SMTP_PASSWORD}", "another-secret-key-for-this-run-1234")


def test_doctor_without_dns_says_it_could_not_check(pg_env, smtp_sink, tmp_path, monkeypatch, mail_env):
    path, _ = make_key(tmp_path)
    monkeypatch.setenv("DKIM_SELECTOR", "s2026")
    monkeypatch.setenv("DKIM_PRIVATE_KEY_PATH", str(path))
    nobody = free_port()  # a UDP port nothing answers on: DNS unreachable, as in this sandbox
    run = nashra("doctor", "--dns-server", f"127.0.0.1:{nobody}")
    out = run.stdout
    assert run.returncode == 0, out + run.stderr  # could not tell is not "needs fixing"
    assert "Traceback" not in run.stderr
    assert "unchecked: DKIM record: could not check the published record:" in out
    assert "unchecked: SPF:" in out and "unchecked: DMARC:" in out and "unchecked: bounce routing:" in out
    assert "ok   DKIM key:" in out and "FIX" not in out


def test_doctor_reports_settings_that_do_not_load(monkeypatch):
    run = nashra("doctor", env={"SMTP_URL": f"ftp://user:{SMTP_PASSWORD}@host"})
    assert run.returncode == 1
    assert run.stdout.startswith("FIX: settings: SMTP_URL:")
    assert "Traceback" not in run.stderr
    _assert_no_secret(run.stdout + run.stderr)


def test_doctor_reports_a_key_that_is_not_a_key(pg_env, smtp_sink, tmp_path, monkeypatch, mail_env):
    bad = tmp_path / "broken.pem"
    bad.write_text("-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----\n")
    monkeypatch.setenv("DKIM_SELECTOR", "s2026")
    monkeypatch.setenv("DKIM_PRIVATE_KEY_PATH", str(bad))
    run = nashra("doctor", "--dns-server", f"127.0.0.1:{free_port()}")
    assert run.returncode == 1
    assert re.search(r"^FIX: DKIM key: .*broken\.pem is not a PEM private key", run.stdout, re.M), run.stdout
    missing = tmp_path / "missing.pem"
    monkeypatch.setenv("DKIM_PRIVATE_KEY_PATH", str(missing))
    run = nashra("doctor", "--dns-server", f"127.0.0.1:{free_port()}")
    assert run.returncode == 1 and "cannot read" in run.stdout


def test_each_relay_as_its_url_asks(smtp_sink, tmp_path, monkeypatch, mail_env):
    from service.config import SmtpTarget
    from service.usecases.doctor import FIX, OK, check_relay

    settings = get_settings()
    plain = check_relay(1, 1, SmtpTarget(f"smtp+starttls://127.0.0.1:{smtp_sink.port}"), settings)
    assert plain.status == FIX and "STARTTLS not offered" in plain.message

    ctx, cert = _server_tls(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    tls = SmtpSink(auth={"nashra": SMTP_PASSWORD}, ssl_context=ctx)
    tls.start()
    try:
        ok = check_relay(2, 2, SmtpTarget(f"smtps://nashra:{SMTP_PASSWORD}@127.0.0.1:{tls.port}"), settings)
        assert ok.status == OK, ok.message
        assert "TLS from the first byte" in ok.message and "login works" in ok.message
        assert ok.check == f"relay 2 of 2 (smtps://127.0.0.1:{tls.port})"
        monkeypatch.delenv("SSL_CERT_FILE")  # the certificate is no longer trusted
        untrusted = check_relay(1, 1, SmtpTarget(f"smtps://127.0.0.1:{tls.port}"), settings)
        assert untrusted.status == FIX and "TLS handshake failed" in untrusted.message
    finally:
        tls.stop()


def test_database_check_on_sqlite_creates_nothing(sqlite_env, tmp_path, monkeypatch):
    from service.usecases.doctor import FIX, OK, check_database

    [found] = check_database(get_settings())
    assert found.status == OK and "latest revision" in found.message
    missing = tmp_path / "elsewhere" / "nashra.sqlite3"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{missing}")
    reset_settings()
    [found] = check_database(get_settings())
    assert found.status == FIX and "no database at" in found.message
    assert not missing.parent.exists()
