"""Bidi marks where there is no markup: the Subject, the preheader and the text part.

Measured in headless Chromium with the browser's own character boxes, as the layout
tests measure the HTML body.  Two parts:

* the measurement behind the choice in service/rendering/bidi.py: each of the issue's
  runs inside an Arabic line, with no marks, with LRM/RLM (what `rtl_line` writes) and
  with the isolates LRI…PDI, in a dir="rtl" box (an Arabic inbox), a dir="auto" box (a
  client that guesses the direction of a subject) and a per-line `unicode-bidi:
  plaintext` box (a plain-text view);
* every mail's Subject, preheader and text part, as rendered, drawn in a right-to-left
  box: `OPEC+`, `+962 6 123 4567`, `5%`, `10:30` and a URL come out in reading order.
"""

from __future__ import annotations

import dataclasses
import html as htmllib
import re

import pytest

from service.rendering import contexts
from service.rendering.bidi import LRM, RLM, ascii_url, rtl_line
from service.rendering.personalise import personalise
from service.rendering.render import render_variant
from service.rendering.viewmodels import ArticleView, SectionView
from tests.support import email_samples as samples

pytestmark = pytest.mark.browser

LRI, PDI = "\u2066", "\u2069"
_MARKS = re.compile("[\u200e\u200f\u2066-\u2069\u202a-\u202e]")
FONT = "font:20px Tahoma, 'Noto Naskh Arabic', sans-serif"
CONTAINERS = {
    "rtl": 'dir="rtl"',
    "auto": 'dir="auto"',
    "plain": 'dir="ltr" style="unicode-bidi:plaintext"',  # each line finds its own direction
}
URL = "https://news.example/local/earthquake-aqaba"
NEEDLES = ("OPEC+", "+962 6 123 4567", "5%", "10:30", URL)

# Each run inside a line as the mails write them (and at the start of one, where a
# client guessing the direction would otherwise take the whole line for Latin).
CASES = [
    ("قرر تحالف OPEC+ الإبقاء على الزيادة", "OPEC+"),
    ("OPEC+ يبقي على خطته لزيادة الإنتاج", "OPEC+"),
    ("اجتماع تحالف (OPEC+) اليوم", "OPEC+"),
    ("للطوارئ اتصلوا على +962 6 123 4567.", "+962 6 123 4567"),
    ("اتصلوا على 06 123 4567 الآن", "06 123 4567"),
    ("ارتفع سعر خام برنت 2.5% في التعاملات", "2.5%"),
    ("5% زيادة في الأسعار", "5%"),
    ("وقعت الهزة عند الساعة 10:30 صباحا", "10:30"),
    ("اقرأ الخبر: " + URL, URL),
    (URL, URL),
    ("الموقع: https://news.example/ar/", "https://news.example/ar/"),
    ("إلغاء الاشتراك: https://news.example/unsubscribe/WzEy.aBc-", "https://news.example/unsubscribe/WzEy.aBc-"),
    ("الرابط https://news.example/a?id=42&s=x هنا", "https://news.example/a?id=42&s=x"),
]
ARABIC_URL = "https://news.example/عربي-دولي/المغرب-اتفاق"

# x of the middle of each character of `needle` (marks skipped) in each [data-k] box.
_XS = """
([needle]) => {
  const marks = /[\\u200e\\u200f\\u2066-\\u2069\\u202a-\\u202e]/;
  const out = {};
  for (const host of document.querySelectorAll('[data-k]')) {
    const walker = document.createTreeWalker(host, NodeFilter.SHOW_TEXT);
    const chars = [];  // [node, offset, char] of every character that is not a mark
    let node;
    while ((node = walker.nextNode()))
      for (let i = 0; i < node.data.length; i++)
        if (!marks.test(node.data[i])) chars.push([node, i, node.data[i]]);
    const text = chars.map(c => c[2]).join('');
    const found = [];
    for (let at = text.indexOf(needle); at >= 0; at = text.indexOf(needle, at + 1)) {
      const xs = [];
      for (let j = 0; j < needle.length; j++) {
        if (needle[j] === ' ') continue;
        const [n, i] = chars[at + j];
        const r = document.createRange(); r.setStart(n, i); r.setEnd(n, i + 1);
        const b = r.getBoundingClientRect();
        xs.push([needle[j], b.left + b.width / 2, b.top]);
      }
      found.push(xs);
    }
    out[host.dataset.k] = found;
  }
  return out;
}
"""


def _box(key: str, text: str, container: str = "rtl", pre: bool = False) -> str:
    attrs = CONTAINERS[container]
    style = FONT + ("; white-space:pre" if pre else "; white-space:nowrap")
    attrs = attrs.replace('style="', f'style="{style}; ') if "style=" in attrs else f'{attrs} style="{style}"'
    return f'<div {attrs} data-k="{key}">{htmllib.escape(text)}</div>'


def _measure(page, boxes: list[str], needle: str) -> dict[str, list[list]]:
    page.set_content("<html><body>" + "\n".join(boxes) + "</body></html>")
    return page.evaluate(_XS, [needle])


def _in_order(xs: list, reference: list) -> bool:
    """The characters come out in the same left-to-right order as in the reference."""
    def order(points):
        return [i for _, i in sorted((x, i) for i, (_, x, _) in enumerate(points))]
    return order(xs) == order(reference)


def _reference(page, line: str, needle: str) -> list:
    """The needle as the HTML body draws it: in <span dir="ltr"> inside an RTL line."""
    html = htmllib.escape(line).replace(htmllib.escape(needle), f'<span dir="ltr">{htmllib.escape(needle)}</span>', 1)
    got = _measure(page, [f'<div dir="rtl" style="{FONT}" data-k="ref">{html}</div>'], needle)
    return got["ref"][0]


# ------------------------------------------------------------------ the measurement


def _strategies(line: str, needle: str) -> dict[str, str]:
    return {
        "none": line,
        "lrm": rtl_line(line),  # what the mails carry
        "lri": line.replace(needle, LRI + needle + PDI),
    }


def test_the_measurement_behind_lrm_rlm(page, record_property):
    table: dict[str, dict[str, bool]] = {}
    for line, needle in CASES:
        ref = _reference(page, line, ascii_url(needle))
        boxes, keys = [], []
        for strategy, text in _strategies(line, needle).items():
            for container in CONTAINERS:
                keys.append(f"{strategy}/{container}")
                boxes.append(_box(keys[-1], text, container))
        got = _measure(page, boxes, ascii_url(needle) if "http" in needle else needle)
        table[line] = {k: bool(got[k]) and _in_order(got[k][0], ref) for k in keys}
    passes = {k: sum(row[k] for row in table.values()) for k in next(iter(table.values()))}
    record_property("bidi_measurement", passes)
    print("\nruns in reading order, of", len(CASES), passes)
    # The marks put every run in reading order in every kind of box…
    assert all(passes[f"lrm/{c}"] == len(CASES) for c in CONTAINERS), passes
    # …and so do the isolates, in Chromium: the choice between them is not made here
    # but by support (bidi.py's docstring).  Without either most runs are reordered.
    assert all(passes[f"lri/{c}"] == len(CASES) for c in CONTAINERS), passes
    assert all(passes[f"none/{c}"] <= len(CASES) - 6 for c in CONTAINERS), passes


def test_marks_cannot_order_an_arabic_url_so_the_text_part_writes_it_in_ascii(page):
    line = "اقرأ الخبر: " + ARABIC_URL
    ref = _reference(page, line, ARABIC_URL)
    lrm_raw = line.replace(ARABIC_URL, LRM + ARABIC_URL + LRM)
    got = _measure(page, [_box("lrm-raw", lrm_raw), _box("lri-raw", line.replace(ARABIC_URL, LRI + ARABIC_URL + PDI))],
                   ARABIC_URL)
    assert not _in_order(got["lrm-raw"][0], ref)  # an embedding is needed, marks have none
    assert _in_order(got["lri-raw"][0], ref)
    written = rtl_line(line)
    encoded = ascii_url(ARABIC_URL)
    assert encoded.isascii() and encoded in written
    got = _measure(page, [_box("ours", written)], encoded)
    assert _in_order(got["ours"][0], sorted(got["ours"][0], key=lambda p: p[1]))


# ------------------------------------------------------------------ every mail, as rendered

AT = samples.EDITION_AT


def _needle_mails() -> dict[str, object]:
    """The sample mails, plus editions whose subjects and preheaders hold every run."""
    opec = ArticleView(id=201, title="تحالف OPEC+ يرفع الإنتاج 5% اعتباراً من 10:30", url="https://news.example/economy/201",
                       summary="قرر التحالف زيادة الإنتاج.", published_at=AT, section_name="اقتصاد",
                       lead_image_url="https://news.example/media/opec.jpg")
    phone = ArticleView(id=202, title="خط ساخن جديد للطوارئ: +962 6 123 4567", url="https://news.example/local/202",
                        summary="يعمل الخط على مدار الساعة.", published_at=AT)
    rate = ArticleView(id=203, title="البنك المركزي يرفع الفائدة 5% عند 10:30", url="https://news.example/economy/203",
                       summary="القرار الثاني هذا العام.", published_at=AT)
    digest = contexts.digest_context(samples.SITE, [SectionView("economy", "اقتصاد", (opec, rate)),
                                                    SectionView("local", "محليات", (phone,))],
                                     edition_date=AT, frequency="daily", lead=opec)
    alert = contexts.alert_context(
        samples.SITE, headline="عاجل: OPEC+ تقر زيادة 5% تبدأ 10:30 — للاستفسار +962 6 123 4567",
        url=URL, summary=f"قال التحالف إن الزيادة 5% تبدأ 10:30. التفاصيل: {URL} أو +962 6 123 4567، وOPEC+ تجتمع غداً.",
        sent_at=AT)
    correction = contexts.correction_context(
        samples.SITE,
        article=dataclasses.replace(samples.LEAD, title="خط الطوارئ الصحيح +962 6 123 4567 لـ OPEC+ بزيادة 5% عند 10:30"),
        note="تصحيح: الرقم الصحيح +962 6 123 4567 ونسبة الزيادة 5% عند 10:30 لاجتماع OPEC+.")
    mails = {f"sample-{k}": v for k, v in samples.all_contexts().items()}
    mails.update({"digest": digest, "alert": alert, "correction": correction})
    return mails


def _parts(kind_and_ctx) -> dict[str, str]:
    name, ctx = kind_and_ctx
    variant = render_variant(ctx["kind"], ctx)
    _, text = personalise(variant, unsubscribe_url="https://news.example/unsubscribe/WzEy.aBc-",
                          preferences_url="https://news.example/preferences/WzEy.aBc-")
    return {"subject": variant.subject, "preheader": variant.preheader, "text": text}


def test_every_mails_subject_preheader_and_text_read_in_order(page):
    seen: dict[str, set[str]] = {part: set() for part in ("subject", "preheader", "text")}
    failures = []
    for name, ctx in _needle_mails().items():
        parts = _parts((name, ctx))
        boxes = [_box(f"{name}/{part}", value, pre=(part == "text")) for part, value in parts.items()]
        for needle in NEEDLES:
            got = _measure(page, boxes, needle)
            for key, occurrences in got.items():
                part = key.split("/", 1)[1]
                for xs in occurrences:
                    seen[part].add(needle)
                    lefts = [x for _, x, _ in xs]
                    if lefts != sorted(lefts):
                        failures.append((key, needle, xs))
    assert failures == []
    for part in ("subject", "preheader", "text"):
        wanted = set(NEEDLES) - ({URL} if part == "subject" else set())  # no link in a subject
        assert wanted <= seen[part], (part, wanted - seen[part])


def test_the_same_lines_without_their_marks_come_out_reordered(page):
    """Control: strip the marks and Chromium reorders OPEC+ and the phone number."""
    parts = _parts(("alert", _needle_mails()["alert"]))
    bare = _MARKS.sub("", parts["subject"])
    assert bare != parts["subject"] and RLM not in bare
    for needle in ("OPEC+", "+962 6 123 4567"):
        xs = _measure(page, [_box("bare", bare)], needle)["bare"][0]
        lefts = [x for _, x, _ in xs]
        assert lefts != sorted(lefts), needle
