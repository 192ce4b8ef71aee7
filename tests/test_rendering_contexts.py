"""Contexts and templates: what the reader sees, and bad input refused before rendering."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

import lxml.html
import pytest

from service.config import load_settings
from service.rendering import contexts
from service.rendering.render import render_variant
from service.rendering.viewmodels import (
    PREFERENCES_URL,
    UNSUBSCRIBE_URL,
    ArticleView,
    Link,
    SectionView,
)
from tests.support import email_samples as samples
from tests.support.email_checks import check_email

SITE = samples.SITE
AT = samples.EDITION_AT


def test_site_view_follows_settings():
    s = load_settings(public_url="https://news.example/", hijri_dates=True, arabic_indic_digits=True)
    site = contexts.site_view(s)
    assert site.public_url == "https://news.example" and site.hijri_dates and site.arabic_digits
    assert site.postal_address == s.postal_address


def test_digest_shows_sections_in_the_readers_order_and_the_lead_once():
    secs = samples.sections(12)
    reordered = [secs[2], secs[0], secs[1], *secs[3:]]
    variant = render_variant("digest", contexts.digest_context(SITE, reordered, edition_date=AT, frequency="weekly"))
    html = variant.html
    positions = [html.index(f">{s.name}</h2>") for s in reordered]
    assert positions == sorted(positions)
    assert html.count(f">{samples.LEAD.title}</a>") == 1  # lead on top, not repeated in its section
    assert "النشرة الأسبوعية" in html and "24 تشرين الثاني/نوفمبر 2021" in html
    assert 'alt="وزير دفاع الاحتلال بيني غانتس"' in html and ">وزير دفاع الاحتلال بيني غانتس</p>" in html


def test_the_lead_carries_its_section_and_a_section_of_the_lead_alone_stays():
    only = ArticleView(id=50, title="خبر محلي وحيد", url="https://news.example/50", section_name="محليات",
                       published_at=AT, lead_image_url="https://news.example/50.jpg")
    other = ArticleView(id=51, title="خبر اقتصادي", url="https://news.example/51", published_at=AT)
    secs = [SectionView("local", "محليات", (only,)), SectionView("economy", "اقتصاد", (other,))]
    ctx = contexts.digest_context(SITE, secs, edition_date=AT, frequency="daily")
    assert ctx["lead"].article.id == 50 and ctx["lead_section"] == "محليات"
    assert [(s.name, len(s.items), s.note) for s in ctx["sections"]] == [
        ("محليات", 0, contexts.LEAD_IS_HERE), ("اقتصاد", 1, "")]
    v = render_variant("digest", ctx)
    doc = lxml.html.document_fromstring(v.html)
    assert doc.xpath("//p[@class='kicker']")[0].text_content() == "محليات"
    assert [h.text_content() for h in doc.xpath("//h2")] == ["محليات", "اقتصاد"]
    assert v.html.count(">خبر محلي وحيد</a>") == 1  # still shown once, on top
    assert "== محليات ==\n\n" + contexts.LEAD_IS_HERE in v.text and "[محليات]" in v.text


def test_digest_footer_has_reason_links_and_postal_address():
    v = render_variant("digest", samples.all_contexts()["digest"])
    footer = v.html[v.html.index('class="footer'):]
    assert "تصلك هذه الرسالة لأنك مشترك في النشرة اليومية" in footer
    assert f'href="{PREFERENCES_URL}"' in footer and f'href="{UNSUBSCRIBE_URL}"' in footer
    assert "عمّان" in footer and "الأردن" in footer
    assert PREFERENCES_URL in v.text and UNSUBSCRIBE_URL in v.text and SITE.postal_address.split("،")[0] in v.text


def test_updated_mark_only_on_updated_articles():
    a = ArticleView(id=1, title="خبر محدث", url="https://news.example/1", published_at=AT, updated=True)
    b = ArticleView(id=2, title="خبر عادي", url="https://news.example/2", published_at=AT)
    c = ArticleView(id=3, title="خبر ثالث", url="https://news.example/3", published_at=AT)
    v = render_variant(
        "digest",
        contexts.digest_context(SITE, [SectionView("s", "قسم", (c, a, b))], edition_date=AT, frequency="daily", lead=c),
    )
    assert v.html.count('class="badge"') == 1
    content = v.html[v.html.index('class="container"') :]
    block = content[content.index("خبر محدث") : content.index("خبر عادي")]
    assert "محدَّث" in block
    assert "21:33 · [محدَّث]" in v.text and v.text.count("[محدَّث]") == 1


def test_an_article_the_site_updated_carries_its_update_time():
    """The seed article (published 2021-11-24 17:33, updated 2023-06-18 12:17) is new to
    this digest, and still marked with the site's «آخر تحديث»."""
    seed = dataclasses.replace(samples.LEAD, updated=False)
    same_minute = ArticleView(id=5, title="خبر", url="https://news.example/5", published_at=AT,
                              updated_at=AT + dt.timedelta(seconds=20))  # a feed's "updated" at publishing
    v = render_variant("digest", contexts.digest_context(
        SITE, [SectionView("s", "قسم", (seed, same_minute))], edition_date=AT, frequency="daily", lead=seed))
    assert '<span class="badge"' in v.html and v.html.count('class="badge"') == 1
    assert "آخر تحديث: 18 حزيران/يونيو 2023، 12:17" in v.html
    assert "24 تشرين الثاني/نوفمبر 2021، 17:33 · آخر تحديث: 18 حزيران/يونيو 2023، 12:17" in v.text


def test_an_alert_of_the_seed_article_shows_what_the_site_publishes_with_it():
    ctx = contexts.alert_context(SITE, headline=samples.LEAD.title, url=samples.LEAD.url,
                                 summary=samples.LEAD.summary, article=samples.LEAD, sent_at=AT)
    v = render_variant("alert", ctx)
    doc = lxml.html.document_fromstring(v.html)
    assert doc.xpath("//p[contains(@class, 'caption')]")[0].text_content() == "وزير دفاع الاحتلال بيني غانتس"
    meta = doc.xpath("//p[@class='meta']")[0].text_content()
    assert meta == "نشر: 24 تشرين الثاني/نوفمبر 2021، 17:33 · آخر تحديث: 18 حزيران/يونيو 2023، 12:17 (توقيت الأردن)"
    links = [(a.text_content(), a.get("href")) for a in doc.xpath("//p[@class='read-also']/a")]
    assert links == [(link.title, link.url) for link in samples.LEAD.read_also]
    assert "اقرأ أيضاً:" in v.text and all(link.url in v.text for link in samples.LEAD.read_also)
    assert meta in v.text
    # At most two, https only.
    more = dataclasses.replace(samples.QUAKE, read_also=(
        Link("قديم", "http://news.example/old"), *samples.QUAKE.read_also))
    ctx = contexts.alert_context(SITE, headline="خبر", url=more.url, summary="", article=more, sent_at=AT)
    assert [link.url for link in ctx["read_also"]] == [link.url for link in samples.QUAKE.read_also[:2]]


def test_a_typed_alert_says_when_it_was_sent():
    v = render_variant("alert", contexts.alert_context(SITE, headline="خبر", url="https://news.example/a",
                                                       summary="", sent_at=AT))
    assert "نشرة · 24 تشرين الثاني/نوفمبر 2021، 21:33 (توقيت الأردن)" in v.text
    assert "اقرأ أيضاً" not in v.html and "class=\"caption" not in v.html


def test_times_are_absolute_in_the_site_zone():
    """A digest is read hours later: «قبل 30 دقيقة» would be wrong by then."""
    a = ArticleView(id=1, title="خبر", url="https://news.example/1", published_at=AT - dt.timedelta(hours=2))
    b = ArticleView(id=2, title="آخر", url="https://news.example/2", published_at=AT - dt.timedelta(minutes=3))
    ctx = contexts.digest_context(SITE, [SectionView("s", "قسم", (a, b))], edition_date=AT, frequency="daily", lead=a)
    assert ctx["lead"].published == "24 تشرين الثاني/نوفمبر 2021، 19:33"  # 17:33 UTC in Amman
    assert ctx["sections"][0].items[0].published == "24 تشرين الثاني/نوفمبر 2021، 21:30"
    v = render_variant("digest", ctx)
    assert "قبل" not in v.html + v.text and "الآن" not in v.html + v.text
    assert "21:30" in v.html and "21:30" in v.text
    assert "الأوقات بتوقيت الأردن" in v.html and "الأوقات بتوقيت الأردن" in v.text


def test_hostile_text_is_escaped_and_article_html_sanitised():
    bad = ArticleView(
        id=9,
        title='<script>alert(1)</script> عنوان',
        url="https://news.example/9",
        summary="",  # the correction's lead is then the body's first paragraph, through nh3
        published_at=AT,
        body_html=(
            '<p onclick="x()">نص <a href="javascript:alert(1)">رابط</a> و<a href="http://plain.example">آخر</a>'
            ' و<a href="https://ok.example/أ">ثالث</a> عن OPEC+</p><script>steal()</script><iframe src="https://x"></iframe>'
        ),
    )
    v = render_variant("correction", contexts.correction_context(SITE, article=bad, note="<b>ملاحظة</b>"))
    body = v.html[v.html.index("<body") :]
    doc = lxml.html.document_fromstring(v.html)
    assert not doc.xpath("//script | //iframe")
    assert not [a for el in doc.iter() if isinstance(el.tag, str) for a in el.attrib if a.startswith("on")]
    assert all(a.get("href") for a in doc.iter("a"))  # links whose href was unsafe are unwrapped
    # shown as the text it is, not run
    assert doc.xpath("//h1")[0].text_content().startswith("<script>alert(1)</script> عنوان")
    assert "<b>ملاحظة</b>" in doc.xpath("//p[@class='note']")[0].text_content()
    assert "javascript:" not in body and "http://plain.example" not in body
    assert 'href="https://ok.example/أ"' in body
    assert '<span dir="ltr">OPEC+</span>' in body
    assert "steal()" not in v.text and "نص رابط وآخر وثالث عن" in v.text
    # the HTML passes; the text part does hold the title's literal "<script>" as text
    assert [p for p in check_email(v.html, v.text) if "text part" not in p] == []


def test_a_correction_says_once_what_changed():
    note = "تصحيح: تم تعديل تاريخ الزيارة."
    body = "<p><strong>تصحيح:</strong> تم تعديل تاريخ الزيارة.</p>" + "".join(
        f"<p>فقرة رقم {n} من نص الخبر.</p>" for n in range(1, 31))
    article = dataclasses.replace(
        samples.LEAD, title="تحديث: " + samples.LEAD.title, summary=note + " " + samples.LEAD.summary, body_html=body)
    v = render_variant("correction", contexts.correction_context(SITE, article=article, note=note))
    visible = v.html[v.html.index("</div>", v.html.index('class="preheader"')) :]
    assert visible.count("تم تعديل تاريخ الزيارة") == 1 and v.text.count("تم تعديل تاريخ الزيارة") == 1
    assert v.subject == "تصحيح: " + samples.LEAD.title
    assert visible.count("تصحيح") == 1 and "badge" not in visible  # the band says it; no badge
    assert samples.LEAD.summary in visible and samples.LEAD.summary in v.text  # the corrected lead
    assert "فقرة رقم" not in v.html  # the body stays on the site
    assert samples.LEAD.lead_image_url in visible and samples.LEAD.lead_image_caption in visible
    assert v.preheader == "تم تعديل تاريخ الزيارة."  # the inbox snippet: what changed


def test_a_correction_without_a_summary_leads_with_the_first_paragraph_that_is_not_the_note():
    article = dataclasses.replace(samples.LEAD, summary="", body_html=(
        "<p><strong>تحديث:</strong> أضيفت تفاصيل الاتفاق.</p><p>وقع المغرب اتفاقاً أمنياً.</p><p>فقرة ثانية.</p>"))
    ctx = contexts.correction_context(SITE, article=article, note="تحديث: أضيفت تفاصيل الاتفاق.")
    assert (ctx["word"], ctx["note"], ctx["lead"]) == ("تحديث", "أضيفت تفاصيل الاتفاق.", "وقع المغرب اتفاقاً أمنياً.")


def test_a_hostile_summary_is_text():
    bad = ArticleView(id=9, title="عنوان", url="https://news.example/9", summary="<img src=x onerror=alert(1)> ملخص")
    v = render_variant("correction", contexts.correction_context(SITE, article=bad, note="ملاحظة"))
    doc = lxml.html.document_fromstring(v.html)
    assert not doc.xpath("//body//img[@src='x']")
    assert "<img src=x onerror=alert(1)> ملخص" in doc.xpath("//p[@class='text']")[0].text_content()


def test_alert_is_short_red_and_has_one_button():
    long = "جملة طويلة عن الحدث " * 40
    ctx = contexts.alert_context(SITE, headline="  زلزال\nفي   الجنوب ", url="https://news.example/a", summary=long, sent_at=AT)
    assert ctx["headline"] == "زلزال في الجنوب"
    assert len(ctx["summary"]) <= contexts.ALERT_SUMMARY_MAX + 1 and ctx["summary"].endswith("…")
    v = render_variant("alert", ctx)
    assert v.subject == "عاجل | زلزال في الجنوب"
    assert v.html.count('class="btn"') == 1 and ">عاجل</td>" in v.html
    assert "background-color:#c8102e" in v.html


def test_welcome_lists_choices_and_refuses_section_ids():
    v = render_variant("welcome", contexts.welcome_context(SITE, sections=[], frequency="none", alerts=True))
    assert "كل الأقسام" in v.html and "من دون نشرة دورية" in v.html
    assert "<strong>الأخبار العاجلة:</strong> تصلك فور نشرها" in v.html and "الأخبار العاجلة: تصلك فور نشرها" in v.text
    with pytest.raises(TypeError, match="names"):
        contexts.welcome_context(SITE, sections=[3, 1], frequency="daily")


def test_arabic_digits_setting_reaches_the_email():
    site = dataclasses.replace(SITE, arabic_digits=True, hijri_dates=True)
    v = render_variant("digest", samples.all_contexts(site)["digest"])
    assert "٢٤ تشرين الثاني/نوفمبر ٢٠٢١ — ١٩ ربيع الثاني ١٤٤٣ هـ" in v.html
    assert "١٧:٣٣" in v.html
    assert '<span dir="ltr">+962 6 123 4567</span>' in v.html  # article text is left as written


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: contexts.digest_context(SITE, [], edition_date=AT, frequency="daily"), "at least one article"),
        (lambda: contexts.digest_context(SITE, samples.sections(3), edition_date=AT, frequency="hourly"), "frequency"),
        (lambda: contexts.alert_context(SITE, headline=" ", url="https://x.example", summary="", sent_at=AT), "headline"),
        (lambda: contexts.alert_context(SITE, headline="خبر", url="javascript:alert(1)", summary="", sent_at=AT), "url"),
        (lambda: contexts.alert_context(SITE, headline="خبر", url="https://x.example", summary="", image="ftp://x/y.jpg", sent_at=AT), "image"),
        (lambda: contexts.confirm_context(SITE, confirm_url="/confirm/abc"), "confirm_url"),
        (lambda: render_variant("newsletter", {"kind": "newsletter"}), "unknown email kind"),
        (lambda: render_variant("alert", samples.all_contexts()["digest"]), "built for 'digest'"),
    ],
)
def test_bad_input_is_a_clear_error(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_alert_takes_an_article_view_as_its_image():
    with_image = dataclasses.replace(samples.LEAD, lead_image_alt="غانتس في الرباط")
    ctx = contexts.alert_context(SITE, headline="خبر", url="https://news.example/a", summary="", image=with_image, sent_at=AT)
    v = render_variant("alert", ctx)
    assert 'alt="غانتس في الرباط"' in v.html and samples.LEAD.lead_image_url in v.html
    no_image = dataclasses.replace(samples.LEAD, lead_image_url=None)
    ctx = contexts.alert_context(SITE, headline="خبر", url="https://news.example/a", summary="", image=no_image, sent_at=AT)
    assert "<img" not in render_variant("alert", ctx).html


def test_welcome_accepts_section_views_in_the_readers_order():
    secs = samples.sections(6)
    v = render_variant("welcome", contexts.welcome_context(SITE, sections=secs[::-1], frequency="weekly"))
    assert "، ".join(s.name for s in secs[::-1]) in v.html and "النشرة الأسبوعية" in v.text


def test_alert_subject_does_not_say_breaking_twice():
    from service.config import load_settings
    from service.models import utcnow
    from service.rendering import contexts
    from service.rendering.render import render_variant

    site = contexts.site_view(load_settings())
    typed = render_variant("alert", contexts.alert_context(
        site, headline="عاجل: زلزال في الجنوب", url="https://news.example/q", summary="", sent_at=utcnow()))
    plain = render_variant("alert", contexts.alert_context(
        site, headline="زلزال في الجنوب", url="https://news.example/q", summary="", sent_at=utcnow()))
    assert typed.subject == "عاجل: زلزال في الجنوب"
    assert plain.subject == "عاجل | زلزال في الجنوب"


def test_the_digest_inbox_line_leads_with_the_headline_and_the_preheader_adds_the_next_two():
    v = render_variant("digest", samples.all_contexts()["digest"])
    headline, _, rest = v.subject.partition(" | ")
    assert headline == samples.LEAD.title and len(headline) <= contexts.SUBJECT_HEADLINE_MAX
    assert rest == "النشرة اليومية" and not v.subject.startswith(SITE.name + " ")  # From already says نشرة
    others = [a.title for s in samples.sections(12) for a in s.articles if a.id != samples.LEAD.id]
    assert v.preheader == " · ".join(others[:2])
    assert samples.LEAD.title not in v.preheader
    long_lead = dataclasses.replace(samples.LEAD, title="عنوان طويل جداً عن خبر مهم " * 5)
    ctx = contexts.digest_context(SITE, samples.sections(4), edition_date=AT, frequency="daily", lead=long_lead)
    cut = render_variant("digest", ctx).subject.partition(" | ")[0]
    assert len(cut) <= contexts.SUBJECT_HEADLINE_MAX + 1 and cut.endswith("…")


@pytest.mark.parametrize("headline", ["عاجل: زلزال في الجنوب", "زلزال في الجنوب"])
def test_breaking_is_said_once(headline):
    v = render_variant("alert", contexts.alert_context(SITE, headline=headline, url="https://news.example/q",
                                                       summary="", sent_at=AT))
    visible = v.html[v.html.index("</div>", v.html.index('class="preheader"')) :]
    def said(text):  # the word itself, not «الأخبار العاجلة» in the footer's reason
        return len(re.findall(r"(?<!ال)عاجل(?!ة)", text))

    assert said(v.subject) == 1 and said(visible) == 1 and said(v.text) == 1
    assert ">زلزال في الجنوب</h1>" in visible
    assert "زلزال" not in v.preheader  # the snippet adds to the subject, it does not repeat it


@pytest.mark.parametrize("kind", ["digest", "alert", "correction", "confirm", "welcome"])
def test_no_preheader_repeats_its_subject(kind):
    v = render_variant(kind, samples.all_contexts()[kind])
    words = set(v.subject.replace("|", " ").replace(":", " ").split()) - {"في", "من", "على"}
    assert v.preheader and not v.preheader.startswith(v.subject)
    assert len(words & set(v.preheader.split())) < len(words) / 2, (v.subject, v.preheader)


@pytest.mark.parametrize(("alerts", "line"), [(True, "تصلك فور نشرها"), (False, "لا تصلك")])
def test_the_welcome_says_what_the_reader_chose(alerts, line):
    ctx = contexts.welcome_context(SITE, sections=["رياضة", "اقتصاد"], frequency="weekly", alerts=alerts)
    v = render_variant("welcome", ctx)
    doc = lxml.html.document_fromstring(v.html)
    chosen = [p.text_content() for p in doc.xpath("//p[@class='text'][strong]")]
    assert chosen == ["الأقسام: رياضة، اقتصاد", "المواعيد: النشرة الأسبوعية", f"الأخبار العاجلة: {line}"]
    assert all(c in v.text for c in chosen)
    assert v.preheader == f"اخترت: النشرة الأسبوعية · رياضة، اقتصاد · الأخبار العاجلة {line}."


def test_the_welcome_says_when_the_digest_arrives():
    daily = render_variant("welcome", contexts.welcome_context(
        SITE, sections=["رياضة"], frequency="daily", alerts=True, digest_hour=18))
    line = "كل يوم الساعة 18:00 بتوقيت الأردن"
    doc = lxml.html.document_fromstring(daily.html)
    chosen = [p.text_content() for p in doc.xpath("//p[@class='text'][strong]")]
    assert chosen[1] == f"المواعيد: النشرة اليومية، {line}"
    assert f"المواعيد: النشرة اليومية، {line}\n" in daily.text
    assert daily.preheader.startswith(f"اخترت: النشرة اليومية {line} · رياضة")
    assert check_email(daily.html, daily.text) == []

    # Weekly, the site's minute, Arabic-Indic digits, and a zone whose label holds Latin.
    site = dataclasses.replace(SITE, arabic_digits=True, timezone="UTC")
    weekly = render_variant("welcome", contexts.welcome_context(
        site, sections=[], frequency="weekly", digest_hour=6, digest_weekday=0, digest_minute=30))
    line = "كل يوم الاثنين الساعة ٠٦:٣٠ بالتوقيت العالمي"
    assert f"</strong> النشرة الأسبوعية، {line} <span dir=\"ltr\">(UTC)</span></p>" in weekly.html
    assert f"المواعيد: النشرة الأسبوعية، {line} \u200e(UTC)\u200e\n" in weekly.text
    assert f"{line} \u200e(UTC)\u200e · كل الأقسام" in weekly.preheader
    assert check_email(weekly.html, weekly.text) == []


def test_no_digest_no_digest_time():
    ctx = contexts.welcome_context(SITE, sections=[], frequency="none", alerts=True, digest_hour=18, digest_weekday=5)
    v = render_variant("welcome", ctx)
    assert ctx["digest_time_line"] == "" and "الساعة" not in v.html + v.text + v.preheader
    assert "<strong>المواعيد:</strong> من دون نشرة دورية</p>" in v.html
    # A caller that does not know the hour states none (as before).
    assert contexts.welcome_context(SITE, sections=[], frequency="daily")["digest_time_line"] == ""


def test_welcome_weekdays_are_the_forms_and_bad_times_are_refused():
    from service.subscribers.hours import WEEKDAYS_AR

    assert contexts.WEEKDAYS == WEEKDAYS_AR  # CLDR's names, Monday = 0, as the reader's form offers them
    for kwargs, message in [({"digest_hour": 24}, "hour"), ({"digest_hour": 7, "digest_minute": 60}, "minute"),
                            ({"digest_hour": 7, "digest_weekday": 7, "frequency": "weekly"}, "weekday"),
                            ({"digest_hour": 7, "frequency": "weekly"}, "weekday")]:
        with pytest.raises(ValueError, match=message):
            contexts.welcome_context(SITE, sections=[], **{"frequency": "daily", **kwargs})


def test_stories_already_alerted_go_to_the_short_block():
    secs = samples.sections(12)
    opec = next(a for s in secs for a in s.articles if "OPEC+" in a.title)
    lead_only = [s for s in secs if s.slug == "tech"][0].articles[0]
    ctx = contexts.digest_context(SITE, secs, edition_date=AT, frequency="daily",
                                  alerted={samples.LEAD.id, opec.id, lead_only.id})
    assert ctx["lead"].article.id not in {samples.LEAD.id, opec.id, lead_only.id}  # the lead is news to them
    assert [m.article.id for m in ctx["missed"]] == [samples.LEAD.id, opec.id, lead_only.id]
    tech = next(s for s in ctx["sections"] if s.slug == "tech")
    assert tech.items == () and tech.note == contexts.MISSED_ARE_BELOW
    assert all(i.article.id not in {opec.id, samples.LEAD.id} for s in ctx["sections"] for i in s.items)
    v = render_variant("digest", ctx)
    doc = lxml.html.document_fromstring(v.html)
    assert [a.get("href") for a in doc.xpath("//p[@class='missed']/a")] == [samples.LEAD.url, opec.url, lead_only.url]
    assert opec.title not in v.preheader and samples.LEAD.title not in v.preheader
    assert check_email(v.html, v.text) == []
