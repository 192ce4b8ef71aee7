"""The reader's click token in MIME (issue 18 item 5): once per variant the tracked links
are planned, per recipient one token fills them all (mime.FixedSlotTemplate).  Whatever
the byte alignment of the holes, with or without the "~" fillers, the base64 decodes to
the plain substitution; a real digest takes the fast path; a bad token is refused."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.rendering.mime import FixedSlotTemplate, PreparedVariant
from service.rendering.viewmodels import (
    CLICK_TOKEN,
    PREFERENCES_URL,
    UNSUBSCRIBE_URL,
    RenderedVariant,
)

U, P, F = "__U__", "__P__", "__F__"
_text = st.text(alphabet=st.sampled_from(list("ab ج\u200f<>\"=\n")), max_size=40)


def _expected(body: str, unsub: str, prefs: str, token: bytes, filler: bytes | None) -> bytes:
    out = b""
    for part in re.split("(__[UPF]__)", body):
        if part == U:
            out += unsub.encode()
        elif part == P:
            out += prefs.encode()
        elif part == F:
            if filler:
                out += filler * (-len(out) % 3)  # the token starts on a base64 group
            out += token
        else:
            out += part.encode()
    return out


@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(_text, min_size=1, max_size=8), slots=st.lists(st.sampled_from([U, P, F, F]), max_size=7),
       values=st.tuples(_text, _text), size=st.sampled_from([1, 2, 3, 6, 24, 25]),
       filler=st.sampled_from([None, b"~"]))
def test_fixed_holes_decode_to_the_plain_substitution(pieces, slots, values, size, filler):
    body = pieces[0]
    for slot, piece in zip(slots, pieces[1:] + [""] * len(slots), strict=False):
        body += slot + piece
    token = (b"ABCDEFGHIJKLMNOPQRSTUVWXYZ" * 2)[:size]
    template = FixedSlotTemplate(body, (U, P), F, size, filler)
    encoded = template.render({U: values[0].encode(), P: values[1].encode(), F: token})
    got = base64.b64decode(encoded.replace(b"\r\n", b""), validate=True)
    assert got == _expected(body, values[0], values[1], token, filler)
    assert encoded == b"" or all(0 < len(line) <= 76 for line in encoded.split(b"\r\n"))


def test_a_tracked_digest_takes_the_fast_path_and_each_reader_gets_their_token():
    links = "".join(f'<p><a href="https://n.example/r/{i}.AAAAAAAAAAA.{CLICK_TOKEN}">خبر {i}</a></p>' for i in range(1, 90))
    html = (f'<html lang="ar" dir="rtl"><body>{links}<a href="{UNSUBSCRIBE_URL}">إلغاء</a> '
            f'<a href="{PREFERENCES_URL}">تفضيلات</a></body></html>')
    text = "\n".join(f"\u200fخبر {i}: https://n.example/r/{i}.AAAAAAAAAAA.{CLICK_TOKEN}" for i in range(1, 90))
    text += f"\n{UNSUBSCRIBE_URL}\n"
    prepared = PreparedVariant(RenderedVariant(subject="نشرة", html=html, text=text), from_addr="n@nashra.example")
    assert prepared.tracks_clicks
    assert prepared._html.runs[0][0].fast and prepared._text.runs[0][0].fast
    from email import message_from_bytes, policy

    for token in ("A" * 24, "abcdefghijklmnopqrstuvwx"):
        data = prepared.build(to_addr="r@example.com", unsubscribe_url="https://n.example/unsubscribe/t",
                              preferences_url="https://n.example/preferences/t", click_token=token)
        msg = message_from_bytes(data, policy=policy.default)
        html_part = msg.get_body(("html",)).get_content()
        text_part = msg.get_body(("plain",)).get_content()
        found = re.findall(r"/r/(\d+)\.AAAAAAAAAAA\.(~{0,2})([A-Za-z0-9_-]+)", html_part + text_part)
        assert len(found) == 2 * 89 and {t for _, _, t in found} == {token}
        assert 'href="https://n.example/unsubscribe/t"' in html_part


@pytest.mark.parametrize("token", [None, "short", "A" * 23 + "=", "A" * 23 + "/", "A" * 25])
def test_a_tracked_body_needs_a_well_formed_token(token):
    html = f'<a href="https://n.example/r/1.AAAAAAAAAAA.{CLICK_TOKEN}">x</a>'
    prepared = PreparedVariant(RenderedVariant(subject="s", html=html, text="t"), from_addr="n@nashra.example",
                               slots=())
    with pytest.raises(ValueError):
        prepared.build(to_addr="r@example.com", click_token=token)
