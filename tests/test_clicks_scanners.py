"""What is not a reader's click (service/clicks/scanners.py), and /r/ paths that are not
ours: decided from the request alone, never raising on what a client sends."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.clicks import signing
from service.clicks.scanners import SCANNER_SECONDS, Verdict, judge

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
SAFARI = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
PERSON = {"user-agent": CHROME, "accept-language": "ar"}
NOW = 2_000_000_000.0


@pytest.mark.parametrize("headers, sent_ago, verdict", [
    (PERSON, 3600, Verdict.count),
    (PERSON, 1, Verdict.count),  # a person's browser, even at once (a mail read as it lands)
    ({"user-agent": SAFARI, "accept-language": "ar-JO"}, 10, Verdict.count),  # Apple Mail's in-app view
    ({"user-agent": CHROME}, 3600, Verdict.count),  # no Accept-Language, but an hour later
    ({"user-agent": CHROME}, SCANNER_SECONDS - 5, Verdict.ignore),  # Safe Links' detonation at delivery
    ({"user-agent": CHROME, "accept-language": " "}, 2, Verdict.ignore),
    ({**PERSON, "sec-purpose": "prefetch;prerender"}, 3600, Verdict.ignore),
    ({**PERSON, "purpose": "prefetch"}, 3600, Verdict.ignore),
    ({**PERSON, "x-moz": "prefetch"}, 3600, Verdict.ignore),
    ({"user-agent": "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))", "accept-language": "en"}, 3600,
     Verdict.ignore),
    ({"user-agent": "Mozilla/4.0 (compatible; ms-office; MSOffice 16)", "accept-language": "en"}, 3600,
     Verdict.ignore),
    ({"user-agent": "python-requests/2.32"}, 3600, Verdict.ignore),
    ({"user-agent": "Mozilla/5.0 (compatible; bingbot/2.0)"}, 3600, Verdict.ignore),
    ({"user-agent": "Mozilla/5.0 HeadlessChrome/124.0"}, 3600, Verdict.ignore),
    ({}, 3600, Verdict.ignore),
    (PERSON, None, Verdict.count),  # a link with no reader's token (the web copy)
    ({"user-agent": CHROME}, None, Verdict.count),
])
def test_what_counts(headers, sent_ago, verdict):
    sent_at = None if sent_ago is None else int(NOW - sent_ago)
    assert judge("GET", headers, sent_at, NOW) is verdict


def test_a_head_is_nothing():
    assert judge("HEAD", PERSON, None, NOW) is Verdict.skip


@settings(max_examples=300, deadline=None)
@given(method=st.sampled_from(["GET", "HEAD", "get"]),
       headers=st.dictionaries(st.sampled_from(["user-agent", "accept-language", "sec-purpose", "purpose", "x-moz",
                                                "x-purpose", "accept"]), st.text(max_size=300)),
       sent_at=st.one_of(st.none(), st.integers(0, 2**32 - 1)), now=st.floats(0, 5e9))
def test_judge_takes_anything(method, headers, sent_at, now):
    assert judge(method, headers, sent_at, now) in Verdict


@settings(max_examples=500, deadline=None)
@given(ref=st.text(max_size=200))
def test_parse_refuses_what_we_did_not_sign(ref):
    parsed = signing.parse(ref)
    if parsed is not None:  # only if it is one of ours: the id's own MAC
        assert ref.split(".")[1] == signing.link_sig(parsed.link_id)


def test_parse_takes_our_links_in_every_shape():
    sig = signing.link_sig(42)
    token = signing.reader_token(7, 3, now=NOW)
    for ref in (f"42.{sig}", f"42.{sig}.", f"42.{sig}.{token}", f"42.{sig}.~{token}", f"42.{sig}.~~{token}"):
        parsed = signing.parse(ref)
        assert parsed is not None and parsed.link_id == 42
        if token in ref:
            assert parsed.sent_at == int(NOW) and signing.token_valid(parsed, 7) and not signing.token_valid(parsed, 8)
    for bad in (f"42.{sig}.~~~{token}", f"43.{sig}", f"42.{sig}.{token}\n", f"042.{sig}", f"42.{sig}..",
                f"42.{sig}.{token[:-1]}", "x" * 81):
        assert signing.parse(bad) is None, bad
