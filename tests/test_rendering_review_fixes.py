"""Review fixes: display names that need quoting, and the Gmail clipping budget."""

from __future__ import annotations

import email
import email.policy

import pytest

from service.config import Settings
from service.delivery.compose import compose, prepare
from service.rendering.mime import build_message
from service.rendering.views import PREFERENCES_URL, UNSUBSCRIBE_URL

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
