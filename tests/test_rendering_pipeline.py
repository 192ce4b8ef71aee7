"""The digest path end to end, without a database: context → render → personalise → MIME."""

from __future__ import annotations

import email
import email.policy

import pytest

from service.rendering import contexts
from service.rendering.mime import build_message
from service.rendering.personalise import personalise
from service.rendering.render import render_variant
from service.rendering.viewmodels import PREFERENCES_URL, UNSUBSCRIBE_URL
from tests.support import email_samples as samples

UNSUB = "https://news.example/unsubscribe/tok-unsub.1"
PREFS = "https://news.example/preferences/tok-prefs.1"


def _parts(data: bytes) -> dict[str, str]:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    return {p.get_content_type(): p.get_content() for p in msg.walk() if not p.is_multipart()}


def test_digest_renders_once_with_placeholders_then_personalises():
    variant = render_variant("digest", samples.all_contexts()["digest"])
    assert UNSUBSCRIBE_URL in variant.html and PREFERENCES_URL in variant.html
    assert UNSUBSCRIBE_URL in variant.text and PREFERENCES_URL in variant.text
    html, text = personalise(variant, unsubscribe_url=UNSUB, preferences_url=PREFS)
    assert f'href="{UNSUB}"' in html and f'href="{PREFS}"' in html
    assert UNSUB in text and PREFS in text
    assert "__NASHRA_" not in html + text


def test_digest_message_parses_back_to_what_was_rendered():
    variant = render_variant("digest", samples.all_contexts()["digest"])
    html, text = personalise(variant, unsubscribe_url=UNSUB, preferences_url=PREFS)
    data = build_message(
        subject=variant.subject, html=html, text=text,
        from_addr="نشرة <newsletter@nashra.example>", to_addr="reader@example.com",
    )
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg["Subject"] == variant.subject
    assert msg.get_content_type() == "multipart/alternative"
    parts = _parts(data)
    assert parts["text/html"] == html and parts["text/plain"] == text


def test_confirm_mail_carries_the_confirm_link_and_no_unsubscribe():
    ctx = contexts.confirm_context(samples.SITE, confirm_url="https://news.example/confirm/abc")
    variant = render_variant("confirm", ctx)
    assert 'href="https://news.example/confirm/abc"' in variant.html
    assert "https://news.example/confirm/abc" in variant.text
    assert UNSUBSCRIBE_URL not in variant.html + variant.text


def test_personalise_refuses_a_link_that_would_break_out_of_the_attribute():
    variant = render_variant("confirm", samples.all_contexts()["confirm"])
    with pytest.raises(ValueError, match="unsubscribe_url"):
        personalise(variant, unsubscribe_url='https://x.example/"><script>', preferences_url=PREFS)
