"""The RTL checker: every rendered email passes it, and each rule can fail."""

from __future__ import annotations

import dataclasses

import pytest

from service.rendering.personalise import personalise
from service.rendering.render import render_variant
from tests.support import email_samples as samples
from tests.support.email_checks import check_email

KINDS = ("digest", "alert", "confirm", "welcome", "correction")


def _rendered(kind: str, site=samples.SITE, **kw):
    return render_variant(kind, samples.all_contexts(site, **kw)[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_passes_before_and_after_personalising(kind):
    variant = _rendered(kind)
    assert check_email(variant.html, variant.text) == []
    html, text = personalise(
        variant,
        unsubscribe_url="https://news.example/unsubscribe/abc.def",
        preferences_url="https://news.example/preferences/abc.def",
    )
    assert check_email(html, text) == []


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_passes_with_hijri_dates_and_arabic_digits(kind):
    site = dataclasses.replace(samples.SITE, hijri_dates=True, arabic_digits=True)
    variant = _rendered(kind, site)
    assert check_email(variant.html, variant.text) == []


def test_forty_article_digest_stays_under_gmail_clipping():
    variant = _rendered("digest", digest_articles=40)
    assert variant.html.count('class="item"') == 39  # the lead is shown once, on top
    assert len(variant.html.encode()) < 100 * 1024
    assert check_email(variant.html, variant.text) == []


@pytest.fixture(scope="module")
def good():
    v = render_variant("digest", samples.all_contexts()["digest"])
    return v.html, v.text


def _problems_after(good, old, new, *, in_text=False):
    html, text = good
    if in_text:
        assert old in text
        return check_email(html, text.replace(old, new, 1))
    assert old in html, old
    return check_email(html.replace(old, new, 1), text)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('<html lang="ar" dir="rtl"', "<html", "<html> must carry"),
        ('class="wrapper" dir="rtl" lang="ar"', 'class="wrapper"', "first wrapper"),
        ("style='direction:rtl; text-align:right;", "style='", "direction:rtl; text-align:right"),
        ('role="presentation" dir="rtl" class="container"', 'class="container"', 'role="presentation"'),
        ("text-align:right; border-collapse", "text-align:start; border-collapse", "text-align:start/end"),
        ('<span dir="ltr">OPEC+</span>', "<bdi>OPEC+</bdi>", "<bdi> found"),
        ('<span dir="ltr">OPEC+</span>', "OPEC+", '"OPEC+" must be wrapped'),
        ('<span dir="ltr">+962 6 123 4567</span>', "+962 6 123 4567", '"+962 6 123 4567" must be wrapped'),
        ('class="preheader"', 'class="pre"', "no hidden preheader"),
        ('<meta name="color-scheme" content="light dark">', "", "color-scheme"),
        ('width="264" style="display:block', 'style="display:block', "numeric width"),
        ('alt="وزير', 'title="وزير', "has no alt"),
        ('href="https://news.example/economy/100"', 'href="http://news.example/economy/100"', "is not https"),
        ("color:#c8102e", "color:#c12", "6-digit"),
        ("color:#1a1a1a", "color:red", "colour values must be 6-digit"),
        ("<title>", "<title>{{ subject }}", "unrendered Jinja"),
        (
            'font-family:Tahoma, "Segoe UI", "Geeza Pro", "Noto Naskh Arabic", Arial, sans-serif',
            "font-family:Courier",
            "font stack",
        ),
    ],
)
def test_each_html_rule_can_fail(good, old, new, expected):
    problems = _problems_after(good, old, new)
    assert any(expected in p for p in problems), problems


def test_html_over_100_kb_fails(good):
    html, text = good
    padded = html.replace("</body>", "<!--" + "x" * 90_000 + "--></body>")
    assert any("Gmail clips" in p for p in check_email(padded, text))


def test_text_line_running_left_to_right_fails(good):
    problems = _problems_after(good, "\u200f\u200ehttps://news.example/arab-world/103\u200e",
                               "https://news.example/arab-world/103", in_text=True)
    assert any("U+200F" in p for p in problems), problems
    assert any("U+200E" in p for p in problems), problems


def test_an_unmarked_run_in_the_text_part_fails(good):
    problems = _problems_after(good, "\u200eOPEC+\u200e", "OPEC+", in_text=True)
    assert any("'OPEC+' must sit between two U+200E marks" in p for p in problems), problems


def test_html_in_the_text_part_fails(good):
    problems = _problems_after(good, "== عربي دولي ==", "<p>== عربي دولي ==</p>", in_text=True)
    assert any("HTML tags or entities" in p for p in problems), problems


def test_http_links_pass_only_when_allowed(good):
    html, text = good
    local = html.replace("https://news.example", "http://127.0.0.1:8000")
    assert any("is not https" in p for p in check_email(local, text))
    assert check_email(local, text, allow_http=True) == []
