"""MAIL_FROM on an Arabic domain (نشرة <newsletter@أخبار.example>): every message carries
the domain as its A-label — envelope sender, From, Message-ID, List-Unsubscribe's mailto,
the DKIM d= — and a real SMTP server (aiosmtpd, which refuses a non-ASCII MAIL FROM
without SMTPUTF8) accepts it."""

from __future__ import annotations

import base64
import email
import email.policy
import re
import smtplib
import subprocess

import pytest

from service.config import get_settings, reset_settings
from service.delivery.compose import (
    compose,
    compose_one,
    delivery_for_bounce,
    one_off_for_bounce,
    prepare,
)
from service.rendering.viewmodels import PREFERENCES_URL, UNSUBSCRIBE_URL, RenderedVariant

IDN_FROM = "نشرة <newsletter@أخبار.example>"
ALABEL = "xn--igbicxr.example"  # أخبار.example
HTML = f'<p dir="rtl">مرحبا <a href="{UNSUBSCRIBE_URL}">إلغاء</a> <a href="{PREFERENCES_URL}">تفضيلات</a></p>'
TEXT = f"مرحبا\n\u200f{UNSUBSCRIBE_URL}\n\u200f{PREFERENCES_URL}\n"


@pytest.fixture
def idn_from(monkeypatch):
    monkeypatch.setenv("MAIL_FROM", IDN_FROM)
    monkeypatch.setenv("PUBLIC_URL", "https://news.example")
    reset_settings()
    return get_settings()


def _parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def _sendmail(port: int, envelope_from: str, rcpt: str, data: bytes) -> None:
    """The message as any client would hand it over: plain smtplib, no SMTPUTF8."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail(envelope_from, [rcpt], data)


def test_a_one_off_from_an_arabic_domain_is_all_ascii_and_a_real_server_takes_it(idn_from, smtp_sink):
    variant = RenderedVariant(subject="أهلاً بك في نشرة", html=HTML, text=TEXT)
    out = compose_one("welcome", variant, to_addr="reader@example.com", subscriber_id=5, token_version=1,
                      settings=idn_from)

    assert out.envelope_from.isascii() and out.envelope_from.endswith("@" + ALABEL)
    assert one_off_for_bounce(out.envelope_from) == ("subscriber", 5)  # the VERP still verifies
    assert re.fullmatch(rf"<nashra\.welcome\.[0-9a-f]{{20}}@{re.escape(ALABEL)}>", out.message_id)
    head = out.data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and "أخبار".encode() not in out.data

    _sendmail(smtp_sink.port, out.envelope_from, "reader@example.com", out.data)
    [got] = smtp_sink.wait_for(1, timeout=10)
    assert got.mail_from == out.envelope_from and got.rcpt_tos == ["reader@example.com"]
    msg = got.message
    assert msg["Message-ID"] == out.message_id
    [sender] = msg["From"].addresses
    assert sender.display_name == "نشرة" and sender.addr_spec == f"newsletter@{ALABEL}"
    mailto = re.search(r"<(mailto:[^>]+)>", msg["List-Unsubscribe"])[1]
    assert mailto.startswith(f"mailto:unsubscribe@{ALABEL}?")
    assert msg["Feedback-ID"].endswith(f":nashra:{ALABEL}")


def test_the_raw_arabic_address_is_what_a_server_would_have_refused(smtp_sink):
    """Why the A-label: the same envelope with the U-label cannot be sent without SMTPUTF8."""
    with pytest.raises((smtplib.SMTPException, UnicodeEncodeError)):
        _sendmail(smtp_sink.port, "newsletter@أخبار.example", "reader@example.com", b"Subject: x\r\n\r\nx\r\n")
    assert smtp_sink.messages == []


def test_a_ledger_rows_message_id_and_verp_use_the_a_label(idn_from, smtp_sink):
    tpl = prepare(7, "alert", "all", "عاجل", HTML, TEXT, settings=idn_from)
    out = compose(tpl, delivery_id=11, subscriber_id=5, token_version=2, to_addr="reader@example.com",
                  settings=idn_from)
    assert out.message_id.startswith("<nashra.7.5.") and out.message_id.endswith(f"@{ALABEL}>")
    assert delivery_for_bounce(out.envelope_from) == 11 and out.envelope_from.endswith("@" + ALABEL)
    _sendmail(smtp_sink.port, out.envelope_from, "reader@example.com", out.data)
    [got] = smtp_sink.wait_for(1, timeout=10)
    assert _parse(got.data)["Message-ID"] == out.message_id


def test_dkim_signs_for_the_a_label_domain(idn_from, tmp_path, monkeypatch):
    import dkim

    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    pub = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"], check=True,
                         capture_output=True).stdout
    monkeypatch.setenv("DKIM_SELECTOR", "nashra")
    monkeypatch.setenv("DKIM_PRIVATE_KEY_PATH", str(key))
    reset_settings()
    asked = []

    def dns(name, timeout=5):
        asked.append(name)
        return b"v=DKIM1; k=rsa; p=" + base64.b64encode(pub)

    variant = RenderedVariant(subject="تأكيد الاشتراك", html="<p>x</p>", text="x")
    out = compose_one("confirm", variant, to_addr="reader@example.com", subscriber_id=5)
    assert dkim.verify(out.data, dnsfunc=dns)
    assert asked == [f"nashra._domainkey.{ALABEL}.".encode()]
