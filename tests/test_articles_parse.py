"""Parsing, sanitising and classifying, without the network: the rules in isolation."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from service.articles.parse import parse_feed, parse_time
from service.articles.sanitise import sanitise_body
from service.articles.text import clean_title, match_key
from service.articles.urls import UnsafeURL, canonical_url, check_destination, validate_feed_url
from service.articles.versions import Content, classify, content_hash
from service.articles.xmlsafe import FeedFormatError

DATA = Path(__file__).resolve().parent / "data" / "feeds"
AMMAN = ZoneInfo("Asia/Amman")
NOW = dt.datetime(2025, 11, 24, 12, 0, tzinfo=dt.UTC)


def _parse(name: str, content_type: str = "application/xml", base: str = "https://news.example/feed"):
    return parse_feed((DATA / name).read_bytes(), content_type, base, AMMAN, NOW)


# ------------------------------------------------------------------ formats


def test_atom_entry_with_local_times_xhtml_body_and_lead_figure():
    feed = _parse("atom_local_times.xml")
    assert feed.format == "atom10"
    first, second = feed.items
    assert first.guid == "tag:news.example,2025:article:61001"
    assert first.url == "https://news.example/ar/sports/2025/11/22/faisaly-wehdat"
    assert first.title == "الفيصلي يفوز على الوحدات في قمة الدوري"  # type="html" title, tags gone
    assert first.published_at == dt.datetime(2025, 11, 22, 20, 15, tzinfo=AMMAN)
    assert first.updated_at == dt.datetime(2025, 11, 22, 23, 40, tzinfo=AMMAN)
    assert first.categories == ["sports"]
    assert first.author == "قسم الرياضة"
    # The figure at the top of the body became the lead image, with its caption and alt.
    assert first.lead_image_url == "https://news.example/images/derby.jpg"
    assert first.lead_image_caption == "من مباراة القمة مساء السبت"
    assert first.lead_image_alt == "لاعبان يتنافسان على الكرة"
    assert "<figure" not in first.body_html and "<img" not in first.body_html
    assert first.read_also == [
        {"title": "ترتيب الدوري بعد الجولة العاشرة", "url": "https://news.example/ar/sports/2025/11/15/league-table"}
    ]
    assert first.summary == "حسم الفيصلي قمة الدوري بهدفين مقابل هدف."
    # Only <updated>: that is the publication time; there is no separate update.
    assert second.published_at == dt.datetime(2025, 11, 23, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    assert second.updated_at is None
    assert second.body_html == "<p>أعلن اتحاد الكرة تأجيل مباراة الرمثا والحسين إربد بسبب الأمطار الغزيرة.</p>"
    assert second.summary == "أعلن اتحاد الكرة تأجيل مباراة الرمثا والحسين إربد بسبب الأمطار الغزيرة."


def test_json_feed_1_1():
    feed = _parse("json_feed.json", "application/feed+json")
    assert feed.format == "json11"
    gold, fuel = feed.items
    assert gold.guid == "71001" and fuel.guid == "71002"  # numeric ids become strings
    assert gold.title == "أسعار الذهب ترتفع إلى مستوى قياسي"
    assert gold.lead_image_url == "https://picsum.photos/seed/gold/1200/675"
    assert gold.categories == ["اقتصاد", "ذهب"]
    assert gold.author == "محمد العمري"
    assert gold.updated_at - gold.published_at == dt.timedelta(minutes=90)
    assert gold.read_also[0]["title"] == "توقعات أسعار الذهب"
    assert gold.body_html == "<p>ارتفعت أسعار الذهب في السوق المحلية، الأحد، إلى أعلى مستوى لها على الإطلاق.</p>"
    assert fuel.body_html == "<p>قررت لجنة تسعير المشتقات النفطية تثبيت الأسعار.</p><p>ويسري القرار اعتباراً من بداية الشهر.</p>"


def test_empty_body_is_refused():
    with pytest.raises(FeedFormatError, match="empty response body"):
        parse_feed(b"  \n", "application/xml", "https://x.example/", AMMAN, NOW)


def test_a_repeated_guid_is_skipped():
    xml = (
        '<rss version="2.0"><channel><title>t</title>'
        "<item><title>أ</title><link>https://n.example/1</link><guid>same</guid></item>"
        "<item><title>ب</title><link>https://n.example/2</link><guid>same</guid></item>"
        "</channel></rss>"
    ).encode()
    feed = parse_feed(xml, "", "https://n.example/feed", AMMAN, NOW)
    assert [i.title for i in feed.items] == ["أ"]
    assert feed.problems[-1] == "item 2 (same): repeats an earlier item's id; skipped"


# ------------------------------------------------------------------ times


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Wed, 24 Nov 2021 17:33:00", dt.datetime(2021, 11, 24, 17, 33, tzinfo=AMMAN)),  # local: TIMEZONE
        ("Wed, 24 Nov 2021 17:33:00 +0200", dt.datetime(2021, 11, 24, 15, 33, tzinfo=dt.UTC)),
        ("Wed, 24 Nov 2021 15:33:00 GMT", dt.datetime(2021, 11, 24, 15, 33, tzinfo=dt.UTC)),
        ("Wed, 24 Nov 2021 15:33:00 -0000", dt.datetime(2021, 11, 24, 15, 33, tzinfo=dt.UTC)),
        ("2023-06-18T12:17:00", dt.datetime(2023, 6, 18, 12, 17, tzinfo=AMMAN)),
        ("2023-06-18 12:17", dt.datetime(2023, 6, 18, 12, 17, tzinfo=AMMAN)),
        ("2023-06-18T09:17:00Z", dt.datetime(2023, 6, 18, 9, 17, tzinfo=dt.UTC)),
        ("not a date", None),
        ("", None),
    ],
)
def test_times_with_and_without_zones(raw, expected):
    got = parse_time(raw, AMMAN)
    assert got == expected
    assert got is None or got.tzinfo is not None


def test_local_times_follow_the_configured_zone():
    cairo = ZoneInfo("Africa/Cairo")
    assert parse_time("2021-11-24 17:33", cairo) == dt.datetime(2021, 11, 24, 15, 33, tzinfo=dt.UTC)


# ------------------------------------------------------------------ text and URLs


def test_titles_lose_bidi_controls_and_line_breaks_but_keep_their_letters():
    raw = "\u202bعاجل\u202c:\r\nارتفاع\u200f الأسعار\u2067 %5\u2069\x00"
    assert clean_title(raw) == "عاجل: ارتفاع الأسعار %5"
    # NFC composes; it never rewrites letters (alef + combining hamza is the one letter أ).
    assert clean_title("ا\u0654حمد") == "أحمد"
    assert clean_title("ﻻ") == "ﻻ"  # a presentation-form ligature is left as written (no NFKC)


def test_category_keys_ignore_spelling_variants():
    assert match_key("عربي و دولي") == match_key("عربيّ ودولي") == match_key("عربي ودولي")
    assert match_key("الرياضة") != match_key("رياضة")


@pytest.mark.parametrize(
    "url",
    ["ftp://news.example/feed", "javascript:alert(1)", "file:///etc/passwd", "http://", "/relative/feed.xml",
     "http://user:secret@news.example/feed", "", "   ", "http://news.example:99999/"],
)  # fmt: skip
def test_feed_urls_must_be_absolute_http(url):
    with pytest.raises(UnsafeURL):
        validate_feed_url(url)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/", "http://localhost/feed", "http://10.1.2.3/", "http://192.168.0.1/", "http://169.254.169.254/latest",
     "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/", "http://100.64.0.1/"],
)  # fmt: skip
def test_private_and_loopback_destinations_are_refused(url):
    with pytest.raises(UnsafeURL, match="loopback or private"):
        check_destination(url, allow_private=False)
    check_destination(url, allow_private=True)  # the demo and tests turn it on


def test_canonical_urls_drop_tracking_and_fragments():
    assert (
        canonical_url("HTTPS://News.Example:443/ar/1?utm_source=x&id=5&fbclid=abc#top")
        == "https://news.example/ar/1?id=5"
    )


def test_absolute_http_url_checks_the_length_after_joining():
    from service.articles.urls import absolute_http_url

    base = "https://news.example/feed.xml"
    assert absolute_http_url("/" + "a" * 1980, base=base) is None
    assert absolute_http_url("/" + "a" * 1960, base=base) == "https://news.example/" + "a" * 1960


# ------------------------------------------------------------------ sanitiser


def test_related_block_in_a_container_and_read_also_variants():
    html = (
        "<p>نص الخبر.</p>"
        '<p>اقرأ ايضا: <a href="https://n.example/a">خبر أ</a></p>'
        '<div class="related-news"><h4>مواضيع ذات صلة</h4><a href="https://n.example/b">خبر ب</a></div>'
        "<p>اقرأ أيضاً هذا المقال الطويل الذي يبدأ بالكلمات نفسها لكنه فقرة من الخبر وليس رابطاً إلى غيره.</p>"
    )
    clean = sanitise_body(html, "https://n.example/x")
    assert clean.read_also == [{"title": "خبر أ", "url": "https://n.example/a"}]
    assert clean.related == [{"title": "خبر ب", "url": "https://n.example/b"}]
    assert clean.html == (
        "<p>نص الخبر.</p>"
        "<p>اقرأ أيضاً هذا المقال الطويل الذي يبدأ بالكلمات نفسها لكنه فقرة من الخبر وليس رابطاً إلى غيره.</p>"
    )


def test_read_also_links_that_are_not_http_are_dropped_with_the_block():
    clean = sanitise_body('<p>اقرأ أيضاً: <a href="javascript:alert(1)">فخ</a></p><p>نص</p>', "https://n.example/x")
    assert clean.read_also == [] and clean.html == "<p>نص</p>"


# ------------------------------------------------------------------ versions


BASE = Content(
    title="الحكومة تقر موازنة العام المقبل",
    summary="أقر مجلس الوزراء مشروع الموازنة.",
    body_html="<p>" + " ".join(f"كلمة{i}" for i in range(100)) + "</p>",
    lead_image_url="https://img.example/1.jpg",
)


def _with(**changes) -> Content:
    return Content(**{**BASE.__dict__, **changes})


def test_identical_content_has_one_hash_and_whitespace_does_not_count():
    assert content_hash(BASE) == content_hash(_with(body_html=BASE.body_html.replace(" ", "  \n ")))
    assert content_hash(BASE) != content_hash(_with(title="عنوان آخر"))


@pytest.mark.parametrize(
    "changes, kind, note",
    [
        ({"title": "الحكومة تقر موازنة العام القادم"}, "major", "title changed"),
        ({"title": "الحكومةُ تقرّ موازنة العام المقبل"}, "minor", "title punctuation/diacritics changed"),
        ({"body_html": BASE.body_html.replace("كلمة5 ", "كلمه5 ")}, "minor", "body changed 1% (threshold 20%)"),
        ({"body_html": BASE.body_html.replace("</p>", " " + "إضافة " * 30 + "</p>")}, "major", "body changed 23% (threshold 20%)"),
        ({"body_html": BASE.body_html + "<p>تصحيح: ورد في نسخة سابقة رقم خاطئ.</p>"}, "major", "correction/update note added (تصحيح:)"),
        ({"body_html": BASE.body_html + "<p>Update: the vote passed.</p>"}, "major", "correction/update note added (Update:)"),
        ({"lead_image_url": "https://img.example/2.jpg"}, "minor", "lead image changed"),
        ({"summary": "أقر مجلس الوزراء مشروع موازنة العام."}, "minor", "summary changed"),
    ],
)  # fmt: skip
def test_classification(changes, kind, note):
    got_kind, got_note = classify(BASE, _with(**changes))
    assert (got_kind, got_note.split("; ")[0]) == (kind, note)


# ------------------------------------------------------------------ sanitiser, property

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from lxml import html as lxml_html  # noqa: E402

HOSTILE = [
    "<script>alert(1)</script>", "<SCRIPT SRC=//evil.example/x.js></SCRIPT>", '<img src=x onerror="alert(1)">',
    '<a href="javascript:alert(1)">x</a>', '<a href=" JaVaScRiPt:alert(1)">x</a>', '<a href="jav&#x09;ascript:alert(1)">x</a>',
    "<style>*{display:none}</style>", '<iframe src="https://evil.example"></iframe>', '<p style="background:url(x)">s</p>',
    '<svg onload="alert(1)"><circle/></svg>', '<math><mi xlink:href="javascript:alert(1)">x</mi></math>',
    '<img src="data:image/svg+xml;base64,PHN2Zz4=">', "<!--<script>alert(1)</script>-->", '<object data="x.swf"></object>',
    '<form action="https://evil.example"><input name=p></form>', '<a href="vbscript:msgbox(1)">v</a>',
    '<img src="https://t.example/p.gif" width="1" height="1">', "<p>اقرأ أيضاً: <a href='//n.example/a'>خبر</a></p>",
    "<h3>أخبار ذات صلة</h3><ul><li><a href='/b'>ب</a></li></ul>", "<p>نص \u202eمعكوس</p>", "<base href='https://evil.example/'>",
    '<meta http-equiv="refresh" content="0;url=https://evil.example">', "<p>فقرة عادية <b>غامقة</b></p>", "</p></div><p",
]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(HOSTILE), min_size=1, max_size=8), st.sampled_from(["", "<div>", "<p>", "<table><tr><td>"]))
def test_no_combination_of_hostile_fragments_gets_through(fragments, wrapper):
    clean = sanitise_body(wrapper + "".join(fragments), "https://n.example/ar/x")
    if not clean.html:
        return
    lowered = clean.html.lower()
    for bad in ("<script", "<style", "<iframe", "<svg", "<math", "<object", "<form", "<input", "<base", "<meta",
                "javascript:", "vbscript:", "data:", "\u202e"):  # fmt: skip
        assert bad not in lowered
    root = lxml_html.fragment_fromstring(clean.html, create_parent="div")
    for el in root.iter():
        for name, value in el.attrib.items():
            assert not name.lower().startswith("on") and name != "style"
            if name in ("href", "src"):
                assert value.startswith(("https://", "http://")), value
        if el.tag == "img":
            assert el.get("alt") is not None and el.get("width") != "1"
    for link in clean.read_also + clean.related:
        assert link["url"].startswith(("https://", "http://"))
