"""MIME: what a mail client receives, over a real SMTP connection, and what is refused."""

from __future__ import annotations

import base64
import email
import email.policy
import smtplib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.config import Settings
from service.delivery.compose import compose, prepare
from service.rendering.mime import Base64Template, PreparedVariant, build_message
from service.rendering.personalise import personalise
from service.rendering.render import render_variant
from service.rendering.viewmodels import PREFERENCES_URL, UNSUBSCRIBE_URL
from tests.support import email_samples as samples

FROM = "نشرة <newsletter@nashra.example>"
UNSUB = "https://news.example/unsubscribe/IjEi.abc?x=1&y=2"
PREFS = "https://news.example/preferences/IjEi.abc"


@pytest.fixture(scope="module")
def digest():
    return render_variant("digest", samples.all_contexts()["digest"])


def _parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def _bodies(msg) -> dict[str, str]:
    return {p.get_content_type(): p.get_content() for p in msg.walk() if not p.is_multipart()}


def _build(variant, **over):
    html, text = personalise(variant, unsubscribe_url=UNSUB, preferences_url=PREFS)
    kw = dict(subject=variant.subject, html=html, text=text, from_addr=FROM, to_addr="reader@example.com")
    kw.update(over)
    return build_message(**kw)


def test_arabic_mail_is_multipart_alternative_utf8_base64(digest):
    data = _build(digest)
    msg = _parse(data)
    assert msg.get_content_type() == "multipart/alternative"
    parts = [p for p in msg.walk() if not p.is_multipart()]
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]  # HTML last = preferred
    for p in parts:
        assert p.get_content_charset() == "utf-8"
        assert p["Content-Transfer-Encoding"] == "base64"
    assert b"quoted-printable" not in data.lower()
    assert str(msg["From"].addresses[0].display_name) == "نشرة"
    assert msg["Subject"] == digest.subject
    assert data.isascii()
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")  # CRLF only


def test_subject_is_rfc2047_and_folded(digest):
    data = _build(digest)
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    subject_lines = head[head.index("Subject:") :].split("\r\n")
    assert subject_lines[0].startswith("Subject: =?utf-8?b?")
    for line in subject_lines[1:]:
        if not line.startswith(" "):
            break
        assert len(line) <= 78


def test_headers_from_unchecked_input_are_refused(digest):
    with pytest.raises(ValueError, match="CR, LF"):
        _build(digest, subject="عاجل\r\nBcc: everyone@example.com")
    with pytest.raises(ValueError, match="CR, LF"):
        _build(digest, to_addr="reader@example.com\r\nBcc: x@example.com")
    with pytest.raises(ValueError, match="CR, LF"):
        _build(digest, headers={"List-Unsubscribe": "<https://x.example>\nBcc: x@example.com"})
    with pytest.raises(ValueError, match="not a valid field name"):
        _build(digest, headers={"Bad Name": "x"})
    with pytest.raises(ValueError, match="set by build_message"):
        _build(digest, headers={"Content-Transfer-Encoding": "quoted-printable"})
    with pytest.raises(ValueError, match="not an email address"):
        _build(digest, to_addr="no-at-sign")
    with pytest.raises(ValueError, match="Message-ID"):
        _build(digest, message_id="no-brackets@x")


def test_extra_headers_and_international_domains():
    data = build_message(
        subject="تجربة",
        html="<p>x</p>",
        text="x\n",
        from_addr=FROM,
        to_addr="قارئ <reader@مثال.example>",
        headers={"List-Unsubscribe": f"<{UNSUB}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        message_id="<e1.s2@nashra.example>",
    )
    msg = _parse(data)
    assert msg["To"].addresses[0].display_name == "قارئ"
    assert msg["To"].addresses[0].domain == "xn--mgbh0fb.example"
    assert msg["List-Unsubscribe"] == f"<{UNSUB}>"
    assert msg["Message-ID"] == "<e1.s2@nashra.example>"


def test_prepared_variant_builds_the_same_message_as_build_message(digest):
    prepared = PreparedVariant(digest, from_addr=FROM, headers={"List-Id": "digest.nashra.example"})
    data = prepared.build(
        to_addr="reader@example.com",
        unsubscribe_url=UNSUB,
        preferences_url=PREFS,
        headers={"List-Unsubscribe": f"<{UNSUB}>"},
    )
    msg = _parse(data)
    html, text = personalise(digest, unsubscribe_url=UNSUB, preferences_url=PREFS)
    assert _bodies(msg) == {"text/plain": text, "text/html": html}
    assert 'href="https://news.example/unsubscribe/IjEi.abc?x=1&amp;y=2"' in html
    assert msg["Subject"] == digest.subject and msg["To"] == "reader@example.com"
    assert msg["List-Id"] == "digest.nashra.example"
    assert all(len(line) <= 76 for line in data.split(b"\r\n\r\n", 1)[1].split(b"\r\n"))
    with pytest.raises(ValueError, match="CR, LF"):
        prepared.build(to_addr="a@example.com\nBcc: b@example.com", unsubscribe_url=UNSUB, preferences_url=PREFS)
    with pytest.raises(ValueError, match="repeats"):
        prepared.build(to_addr="a@example.com", unsubscribe_url=UNSUB, preferences_url=PREFS, headers={"list-id": "x"})


def test_a_body_with_personal_links_is_never_sent_with_the_placeholders_in(digest):
    prepared = PreparedVariant(digest, from_addr=FROM)
    with pytest.raises(ValueError, match="personal links"):
        prepared.build(to_addr="reader@example.com")


def test_build_message_is_the_same_assembly_as_a_prepared_variant():
    """One header and body assembler: build_message is a PreparedVariant with no holes, so
    a placeholder in already-personalised text is left alone, and an empty body still parses."""
    data = build_message(subject="تجربة", html="<p>x</p>", text="", from_addr=FROM, to_addr="r@example.com",
                         headers={"List-Id": "<digest.nashra.example>"})
    msg = _parse(data)
    assert not msg.defects
    assert _bodies(msg) == {"text/plain": "", "text/html": "<p>x</p>"}
    assert msg["List-Id"] == "<digest.nashra.example>" and msg["Message-ID"].endswith("@nashra.example>")
    literal = build_message(subject="x", html=f"<p>{UNSUBSCRIBE_URL}</p>", text="x", from_addr=FROM, to_addr="r@example.com")
    assert UNSUBSCRIBE_URL in _bodies(_parse(literal))["text/html"]


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(_text, min_size=1, max_size=5),
    slots=st.lists(st.sampled_from([UNSUBSCRIBE_URL, PREFERENCES_URL]), max_size=4),
    values=st.tuples(_text, _text),
)
def test_base64_template_decodes_to_plain_substitution(pieces, slots, values):
    """Whatever the byte alignment of the holes, the pieces decode to the substituted text."""
    body = pieces[0]
    for slot, piece in zip(slots, pieces[1:] + [""] * len(slots), strict=False):
        body += slot + piece
    fill = {UNSUBSCRIBE_URL: values[0], PREFERENCES_URL: values[1]}
    template = Base64Template(body, (UNSUBSCRIBE_URL, PREFERENCES_URL))
    encoded = template.render({k: v.encode() for k, v in fill.items()})
    assert encoded == b"\r\n".join(template.lines({k: v.encode() for k, v in fill.items()}))
    expected = body.replace(UNSUBSCRIBE_URL, fill[UNSUBSCRIBE_URL]).replace(PREFERENCES_URL, fill[PREFERENCES_URL])
    assert base64.b64decode(encoded.replace(b"\r\n", b""), validate=True) == expected.encode()
    assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))


def test_a_real_smtp_server_receives_a_readable_arabic_message(smtp_sink, digest):
    prepared = PreparedVariant(digest, from_addr=FROM)
    with smtplib.SMTP("127.0.0.1", smtp_sink.port, timeout=10) as smtp:
        for i in range(3):
            data = prepared.build(
                to_addr=f"reader{i}@example.com",
                unsubscribe_url=f"https://news.example/unsubscribe/t{i}",
                preferences_url=f"https://news.example/preferences/t{i}",
            )
            smtp.sendmail("newsletter@nashra.example", [f"reader{i}@example.com"], data)
    received = smtp_sink.wait_for(3)
    for b in (_bodies(r.message) for r in received):
        assert "المغرب والاحتلال" in b["text/html"]
        assert "\u200f\u200ehttps://news.example" in b["text/plain"]  # RLM first, the link between LRMs
    assert {r.message["To"] for r in received} == {"reader0@example.com", "reader1@example.com", "reader2@example.com"}
    assert all(r.message["Subject"] == digest.subject for r in received)
    # each reader got their own links and nobody else's
    for r in received:
        n = r.message["To"][len("reader")]
        html = _bodies(r.message)["text/html"]
        assert f"/unsubscribe/t{n}" in html and all(f"/unsubscribe/t{m}" not in html for m in "012" if m != n)


# ------------------------------------------------------------------ From: display names that need quoting


FROMS = [
    ('"Nashra News, Amman" <news@nashra.example>', "Nashra News, Amman", "news@nashra.example"),
    ('"Nashra: Amman" <news@nashra.example>', "Nashra: Amman", "news@nashra.example"),
    ('"Nashra \\"Daily\\" (Amman)" <news@nashra.example>', 'Nashra "Daily" (Amman)', "news@nashra.example"),
    ("نشرة عمّان، اليومية <news@nashra.example>", "نشرة عمّان، اليومية", "news@nashra.example"),
    ("Nashra News <news@nashra.example>", "Nashra News", "news@nashra.example"),
]


def _check_from(raw: bytes, name: str, addr: str) -> None:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    header = msg["From"]
    assert not header.defects, header.defects
    assert len(header.groups) == 1 and header.groups[0].display_name is None
    assert len(header.addresses) == 1
    assert header.addresses[0].display_name == name
    assert header.addresses[0].addr_spec == addr


@pytest.mark.parametrize(("mail_from", "name", "addr"), FROMS)
def test_build_message_from_has_exactly_one_mailbox(mail_from, name, addr):
    raw = build_message(subject="خبر", html="<p>x</p>", text="x", from_addr=mail_from, to_addr="r@example.org")
    _check_from(raw, name, addr)


@pytest.mark.parametrize(("mail_from", "name", "addr"), FROMS)
def test_delivery_compose_from_has_exactly_one_mailbox(mail_from, name, addr):
    settings = Settings(mail_from=mail_from)
    html = f'<p>x <a href="{UNSUBSCRIBE_URL}">u</a> <a href="{PREFERENCES_URL}">p</a></p>'
    text = f"x {UNSUBSCRIBE_URL} {PREFERENCES_URL}"
    tpl = prepare(1, "digest", "all", "خبر اليوم", html, text, settings=settings)
    out = compose(tpl, delivery_id=7, subscriber_id=3, token_version=1, to_addr="r@example.org", settings=settings)
    _check_from(out.data, name, addr)
