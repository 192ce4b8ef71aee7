"""One small function per kind of email, building its template context from plain views.

Templates never query the database and never format dates: everything they show is
computed here, so a template is layout only and a context is testable on its own.
Bad input (an empty digest, a link that is not http(s), an unknown frequency) is a
ValueError here, before anything is rendered.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import nh3
from babel import Locale
from markupsafe import Markup

from service.config import Settings
from service.rendering import dates
from service.rendering.article_html import article_html
from service.rendering.viewmodels import (
    PREFERENCES_URL,
    UNSUBSCRIBE_URL,
    ArticleView,
    Link,
    SectionView,
    SiteView,
)

FREQUENCY_LABELS = {"daily": "اليومية", "weekly": "الأسبوعية"}
# Weekday names from CLDR through Babel, Monday = 0 (Python's weekday(), DIGEST_WEEKLY_DAY).
WEEKDAYS = tuple(Locale.parse("ar").days["format"]["wide"][i] for i in range(7))
ALERT_SUMMARY_MAX = 180  # about two lines at 600 px: alerts are short by design
PREHEADER_MAX = 140
PREHEADER_HEADLINES = 2  # a digest's preheader: the two headlines after the lead
SUBJECT_HEADLINE_MAX = 60  # what a phone's inbox shows of a subject, about
LEAD_IS_HERE = "خبر هذا القسم يتصدّر النشرة أعلاه."
MISSED_ARE_BELOW = "أخبار هذا القسم وصلتك عاجلةً، وتجدها في «فاتك؟» أدناه."
READ_ALSO_MAX = 2  # «اقرأ أيضاً» links an alert carries
UPDATE_MIN_GAP = dt.timedelta(minutes=1)
# A note's own label ("تصحيح:", "تحديث:" …, the words the site puts before a correction or
# an update): the mail says once which of the two it is, in its band and subject.
_NOTE_LABEL = re.compile(
    r"^\s*(?:تم تحديث|تصحيح|تصويب|استدراك|تحديث|محدَّث|محدث|تعديل|توضيح|correction|updated?)\s*[:：\-–—]\s*", re.I
)
_BREAKING = re.compile(r"^\s*عاجل\s*[:：|\-–—]?\s*")
_CORRECTION_WORDS = re.compile(r"^\s*(?:تصحيح|تصويب|استدراك|correction)", re.I)
_SENTENCE_END = re.compile(r"(?<=[.!؟?])\s+")
_BLOCK = re.compile(r"</?(?:p|div|br|li|h\d|blockquote|figcaption|tr)\b[^>]*>", re.I)


@dataclass(frozen=True)
class ArticleItem:
    """An article plus the labels the template prints next to it.

    Times are absolute, in the site's zone: a mail is read hours or days after it was
    sent, and "30 minutes ago" would be wrong by then.
    """

    article: ArticleView
    published: str  # "24 تشرين الثاني/نوفمبر 2021، 17:33", or "" without a publish time
    updated: str = ""  # the site's «آخر تحديث», when it updated the article after publishing


@dataclass(frozen=True)
class SectionItems:
    slug: str
    name: str
    items: tuple[ArticleItem, ...]
    # Where this section's stories went when none is left to list here (a section the
    # reader chose does not vanish because its one story became the lead).
    note: str = ""


def site_view(settings: Settings) -> SiteView:
    return SiteView(
        name=settings.site_name,
        public_url=settings.public_url,
        postal_address=settings.postal_address,
        timezone=settings.timezone,
        hijri_dates=settings.hijri_dates,
        arabic_digits=settings.arabic_indic_digits,
    )


# ------------------------------------------------------------------ helpers


def _require_url(url: str, what: str) -> str:
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{what} must be an absolute http(s) URL, got {url!r}")
    return url


def _require_text(value: str, what: str) -> str:
    text = " ".join((value or "").split())
    if not text:
        raise ValueError(f"{what} must not be empty")
    return text


def _frequency_label(frequency: str) -> str:
    try:
        return FREQUENCY_LABELS[frequency]
    except KeyError:
        raise ValueError(f"frequency must be one of {', '.join(FREQUENCY_LABELS)}, got {frequency!r}") from None


def _shorten(text: str, limit: int) -> str:
    text = " ".join((text or "").split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut.rstrip("،,.؛:") + "…"


def _when(site: SiteView, when: dt.datetime) -> str:
    """`24 تشرين الثاني/نوفمبر 2021، 17:33`: date then time, as the site prints them."""
    return dates.date_and_time(dates.local_time(when, site.timezone), arabic_digits=site.arabic_digits)


def _updated(site: SiteView, article: ArticleView) -> str:
    """The site's update time, when it is one: later than the publish time by a minute or
    more (feeds often stamp "updated" a few seconds after "published")."""
    up, pub = article.updated_at, article.published_at
    if up is None or (pub is not None and up - pub < UPDATE_MIN_GAP):
        return ""
    return _when(site, up)


def _item(site: SiteView, article: ArticleView) -> ArticleItem:
    when = article.published_at
    return ArticleItem(
        article=article,
        published=_when(site, when) if when is not None else "",
        updated=_updated(site, article),
    )


def _site_date(site: SiteView, when: dt.date | dt.datetime) -> str:
    if isinstance(when, dt.datetime):
        when = dates.local_time(when, site.timezone)
    return dates.arabic_date(when, hijri=site.hijri_dates, arabic_digits=site.arabic_digits)


def _base(site: SiteView, kind: str, preheader: str) -> dict:
    return {
        "kind": kind,
        "site": site,
        "zone": dates.zone_label(site.timezone),  # "توقيت الأردن": whose clock the times are on
        "preheader": _shorten(preheader, PREHEADER_MAX),
        "unsubscribe_url": UNSUBSCRIBE_URL,
        "preferences_url": PREFERENCES_URL,
    }


def _section_names(sections: Sequence[SectionView | str]) -> list[str]:
    names = []
    for s in sections:
        if isinstance(s, SectionView):
            names.append(s.name)
        elif isinstance(s, str):
            names.append(s)
        else:
            raise TypeError(
                f"sections must be names or SectionView, got {type(s).__name__}: look the names up first"
            )
    return names


# ------------------------------------------------------------------ kinds


def choose_lead(sections: Sequence[SectionView], *, alerted: Collection[int] = ()) -> ArticleView:
    """The first article with an image, in the reader's order (else the first article),
    among those the reader did not already get as a breaking alert when there are any."""
    articles = [a for s in sections for a in s.articles]
    if not articles:
        raise ValueError("a digest needs at least one article")
    fresh = [a for a in articles if a.id not in alerted] or articles
    return next((a for a in fresh if a.lead_image_url), fresh[0])


def digest_context(
    site: SiteView,
    sections: Sequence[SectionView],
    *,
    edition_date: dt.date | dt.datetime,
    frequency: str,
    lead: ArticleView | None = None,
    alerted: Collection[int] = (),
) -> dict:
    """A digest: a lead story, then the reader's sections in the reader's order.

    The lead defaults to the first article with an image; it carries its section's name
    and is not repeated in its section.  A section whose only story is the lead keeps
    its place, with a line saying so.

    `alerted`: ids of the articles this variant's readers already got as breaking alerts.
    They are not shown again in full: the «فاتك؟» block at the end lists them (headline
    and link), and their sections say so when nothing else is left in them.
    """
    label = _frequency_label(frequency)
    all_articles = [a for s in sections for a in s.articles]
    if not all_articles:
        raise ValueError("a digest needs at least one article")
    if lead is None:
        lead = choose_lead(sections, alerted=alerted)
    alerted = frozenset(alerted) - {lead.id}
    section_items = []
    lead_section = ""
    missed: list[ArticleItem] = []
    for s in sections:
        items = tuple(_item(site, a) for a in s.articles if a.id != lead.id and a.id not in alerted)
        has_lead = any(a.id == lead.id for a in s.articles)
        gone = [a for a in s.articles if a.id in alerted]
        missed += (_item(site, a) for a in gone)
        if has_lead and not lead_section:
            lead_section = s.name
        if items:
            section_items.append(SectionItems(slug=s.slug, name=s.name, items=items))
        elif has_lead:
            section_items.append(SectionItems(slug=s.slug, name=s.name, items=(), note=LEAD_IS_HERE))
        elif gone:
            section_items.append(SectionItems(slug=s.slug, name=s.name, items=(), note=MISSED_ARE_BELOW))
    names = [s.name for s in sections]
    # The inbox line: the subject leads with the lead's headline (the From name already
    # says who sends it), the preheader adds the next two headlines, never the lead again
    # (nor a story the reader already got as an alert).
    others = [a.title for a in all_articles if a.id != lead.id and a.id not in alerted][:PREHEADER_HEADLINES]
    ctx = _base(site, "digest", " · ".join(others) or lead.summary or lead.title)
    ctx.update(
        subject_headline=_shorten(lead.title, SUBJECT_HEADLINE_MAX),
        edition_date=_site_date(site, edition_date),
        frequency=frequency,
        frequency_label=label,
        lead=_item(site, lead),
        lead_section=lead_section or lead.section_name or "",  # the label above the lead
        sections=section_items,
        missed=tuple(missed),
        article_count=len(all_articles),
        reason=(
            f"تصلك هذه الرسالة لأنك مشترك في النشرة {label} من {site.name}"
            f" لأقسام: {'، '.join(names)}."
        ),
    )
    return ctx


def _read_also(article: ArticleView | None) -> tuple[Link, ...]:
    """Up to READ_ALSO_MAX of the article's «اقرأ أيضاً» links, https only (as every link)."""
    if article is None:
        return ()
    links = [link for link in article.read_also if link.title.strip() and urlsplit(link.url).scheme == "https"]
    return tuple(links[:READ_ALSO_MAX])


def alert_context(
    site: SiteView,
    *,
    headline: str,
    url: str,
    summary: str,
    image: ArticleView | str | None = None,
    article: ArticleView | None = None,
    sent_at: dt.datetime,
) -> dict:
    """Breaking news: a red band, the headline, two lines, one button.

    An alert of an article we ingested (`article`) also shows what the site publishes
    with it: the lead image and its caption, the published and updated times as the
    site prints them, and up to two of its «اقرأ أيضاً» links.  A typed alert shows
    when it was sent.  (`image` may still be an ArticleView: it is then the article.)
    """
    headline = _require_text(headline, "headline")
    _require_url(url, "url")
    if isinstance(image, ArticleView):
        article, image = article or image, None
    image_url = image or (article.lead_image_url if article is not None else None)
    caption = (article.lead_image_caption or "") if article is not None else ""
    image_alt = (article.lead_image_alt if article is not None else None) or caption or headline
    if image_url:
        _require_url(image_url, "image")
    short = _shorten(summary, ALERT_SUMMARY_MAX)
    item = _item(site, article) if article is not None else None
    sent = _when(site, sent_at)
    # «عاجل» once: the band says it, so a headline typed as «عاجل: …» loses the word below it.
    shown = _BREAKING.sub("", headline, count=1) or headline
    published = item.published if item else ""
    ctx = _base(site, "alert", short or (f"نشر: {published}" if published else sent))
    ctx.update(
        headline=headline,
        shown_headline=shown,
        url=url,
        summary=short,
        image_url=image_url or None,
        image_alt=image_alt,
        caption=caption if image_url else "",
        published=published,
        updated=item.updated if item else "",
        read_also=_read_also(article),
        sent=sent,
        reason=f"تصلك هذه الرسالة لأنك طلبت الأخبار العاجلة من {site.name}.",
    )
    return ctx


def confirm_context(site: SiteView, *, confirm_url: str) -> dict:
    """Double opt-in: one button; no unsubscribe link (the reader is not subscribed yet)."""
    _require_url(confirm_url, "confirm_url")
    ctx = _base(site, "confirm", "خطوة أخيرة: اضغط الزر في الرسالة. إن لم تطلب الاشتراك فتجاهلها.")
    del ctx["unsubscribe_url"], ctx["preferences_url"]
    ctx.update(confirm_url=confirm_url)
    return ctx


def _digest_time_line(
    site: SiteView, frequency: str, hour: int | None, weekday: int | None, minute: int, time_zone: str | None = None
) -> str:
    """«كل يوم الساعة 07:00 بتوقيت الأردن», or «كل يوم السبت الساعة 07:00 …» for a weekly
    reader: when their digest arrives, on their clock (`time_zone`; None: the site's).  "" without a digest (or
    when the caller does not know the hour)."""
    if frequency == "none" or hour is None:
        return ""
    if not (isinstance(hour, int) and 0 <= hour <= 23) or not (isinstance(minute, int) and 0 <= minute <= 59):
        raise ValueError(f"digest time must be an hour 0-23 and a minute 0-59, got {hour!r}:{minute!r}")
    clock = f"{hour:02d}:{minute:02d}"
    if site.arabic_digits:
        clock = dates.to_arabic_digits(clock)
    day = "كل يوم"
    if frequency == "weekly":
        if not (isinstance(weekday, int) and 0 <= weekday <= 6):
            raise ValueError(f"a weekly digest needs its weekday 0-6 (Monday = 0), got {weekday!r}")
        day = f"كل يوم {WEEKDAYS[weekday]}"
    return f"{day} الساعة {clock} ب{dates.zone_label(time_zone or site.timezone)}"


def welcome_context(
    site: SiteView,
    *,
    sections: Sequence[SectionView | str],
    frequency: str,
    alerts: bool | None = None,
    digest_hour: int | None = None,
    digest_weekday: int | None = None,
    digest_minute: int = 0,
    time_zone: str | None = None,
    newsletters: Sequence[dict] | None = None,
) -> dict:
    """Welcome after confirmation: what the reader chose and how to change it.

    `newsletters`: the newsletters they are on, in the site's order, each a dict with its
    `name`, `kind` (digest|alerts) and, for a digest, `frequency`, `sections` (names; empty:
    all), `digest_hour`, `digest_weekday`, `digest_minute` — the mail then lists them, one
    line each, and the single-subscription arguments above are not shown.

    `sections` are names (or SectionView) in the reader's order; empty means all.
    `frequency` may be "none" for a reader who wants no digest; `alerts` says whether
    breaking news reaches them (None: not known to the caller, and then not stated).
    `digest_hour` (local, 0–23), `digest_weekday` (Monday = 0, for a weekly reader) and
    `digest_minute` (DIGEST_DAILY_AT's) say when the digest arrives — the reader's
    effective hour and day (`subscribers.hours`), on their clock (`time_zone`, an IANA
    name; None: the site's); without an hour, or with no digest, no time is stated.
    """
    names = _section_names(sections)
    label = "" if frequency == "none" else _frequency_label(frequency)
    sections_line = "، ".join(names) if names else "كل الأقسام"
    schedule_line = f"النشرة {label}" if label else "من دون نشرة دورية"
    digest_time_line = _digest_time_line(site, frequency, digest_hour, digest_weekday, digest_minute, time_zone)
    alerts_line = ""
    if alerts is not None:
        alerts_line = "تصلك فور نشرها" if alerts else "لا تصلك"
    # The inbox snippet: the choices themselves, not the greeting the subject already says.
    schedule = f"{schedule_line} {digest_time_line}" if digest_time_line else schedule_line
    chosen = [schedule, sections_line] + ([f"الأخبار العاجلة {alerts_line}"] if alerts_line else [])
    lines = [_newsletter_line(site, n, time_zone) for n in newsletters] if newsletters is not None else None
    if lines is not None:
        chosen = [name for name, _ in lines]
    preheader = "اخترت: " + " · ".join(chosen) + "." if chosen else "اختر نشراتك من صفحة اشتراكك."
    ctx = _base(site, "welcome", preheader)
    ctx.update(
        newsletter_lines=lines,
        section_names=names,
        sections_line=sections_line,
        frequency=frequency,
        frequency_label=label,
        schedule_line=schedule_line,
        digest_time_line=digest_time_line,
        alerts=alerts,
        alerts_line=alerts_line,
        reason=f"تصلك هذه الرسالة لأنك أكّدت اشتراكك في {site.name}.",
    )
    return ctx


def _newsletter_line(site: SiteView, newsletter: dict, time_zone: str | None) -> tuple[str, str]:
    """(name, what it brings and when): «كل يوم الساعة 07:00 بتوقيت …، كل الأقسام» for a
    digest, «الأخبار العاجلة فور نشرها» for alerts."""
    name = _require_text(newsletter.get("name") or "", "newsletter name")
    if newsletter.get("kind") != "digest":
        return name, "الأخبار العاجلة فور نشرها"
    names = _section_names(newsletter.get("sections") or [])
    when = _digest_time_line(site, newsletter.get("frequency") or "daily", newsletter.get("digest_hour"),
                             newsletter.get("digest_weekday"), newsletter.get("digest_minute", 0), time_zone)
    what = "، ".join(names) if names else "كل الأقسام"
    return name, f"{when}، {what}" if when else what


def manage_context(site: SiteView) -> dict:
    """«إدارة اشتراكك»: someone signed up with the address of a reader who is already
    subscribed (active or paused).  The answer on the page is the same for every address
    (no enumeration), so the reader gets their preferences link here instead, and is told
    that nothing changed."""
    ctx = _base(site, "manage", "لم يتغيّر شيء في اشتراكك. هذا رابط صفحة اشتراكك إن أردت تعديله.")
    ctx.update(reason=f"تصلك هذه الرسالة لأن عنوان بريدك أُدخل في نموذج الاشتراك في {site.name}، وأنت مشترك فيها.")
    return ctx


def _unlabelled(text: str) -> str:
    """`text` without the site's labels at the start of its sentences ("تصحيح: …")."""
    sentences = _SENTENCE_END.split(" ".join((text or "").split()))
    return " ".join(s for s in (_NOTE_LABEL.sub("", s, count=1) for s in sentences) if s)


def _paragraphs(body_html: str) -> list[str]:
    """The body's paragraphs as (still untrusted) HTML fragments, empty ones left out."""
    return [p for p in _BLOCK.split(body_html or "") if _plain(p)]


def _plain(fragment: str) -> str:
    return " ".join(html.unescape(nh3.clean(fragment, tags=set())).split())


def _without_note(text: str, note: str) -> str:
    """`text` less its sentences that are the note (or its label's paragraph)."""
    core = note.rstrip(" …").strip()
    kept = []
    for sentence in _SENTENCE_END.split(" ".join((text or "").split())):
        bare = _unlabelled(sentence)
        if not bare or _NOTE_LABEL.match(sentence) or (core and ((len(bare) >= 12 and bare in core) or core in bare)):
            continue
        kept.append(sentence)
    return " ".join(kept)


def correction_context(site: SiteView, *, article: ArticleView, note: str) -> dict:
    """A major update to an article the reader already got, saying once what changed.

    The band and the subject say which it is (تصحيح or تحديث) once; the note box says
    what changed, once — the site's own label is taken off it and its sentences are kept
    out of the lead; the corrected headline, the lead (the summary, or the body's first
    paragraph that is not the note), the lead image and one link follow.  Not the whole
    body: the reader is sent to the article for that.
    """
    if not isinstance(article, ArticleView):
        raise TypeError(f"article must be an ArticleView, got {type(article).__name__}")
    _require_url(article.url, "article.url")
    raw_note = " ".join((note or "").split())
    word = "تصحيح" if _CORRECTION_WORDS.match(raw_note) or _CORRECTION_WORDS.match(article.title) else "تحديث"
    note = _unlabelled(raw_note)
    headline = _unlabelled(article.title) or article.title
    lead = _without_note(article.summary, note)
    lead_html = Markup("")
    if not lead:
        for paragraph in _paragraphs(article.body_html):
            text = _plain(paragraph)
            if text and _without_note(text, note) == text:
                lead, lead_html = text, article_html(paragraph)
                break
    image_url = article.lead_image_url
    if image_url:
        _require_url(image_url, "article.lead_image_url")
    item = _item(site, article)
    ctx = _base(site, "correction", note or headline)
    ctx.update(
        article=item,
        word=word,
        headline=headline,
        note=note,
        lead=lead,
        lead_html=lead_html,
        image_url=image_url or None,
        image_alt=article.lead_image_alt or article.lead_image_caption or headline,
        caption=article.lead_image_caption or "",
        reason=f"تصلك هذه الرسالة لأنك تلقيت هذا الخبر من {site.name} ثم تغيّر فيه ما يهمّك.",
    )
    return ctx


@dataclass(frozen=True)
class HeldItem:
    """One alert a reader's quiet hours held, as the catch-up mail lists it."""

    headline: str
    url: str
    summary: str
    sent: str  # when the alert went out to everyone else, as the site writes a time


def _count_alerts(n: int) -> str:
    """Arabic number agreement: «خبر عاجل واحد», «خبران عاجلان», «3 أخبار عاجلة», «11 خبراً عاجلاً»."""
    if n == 1:
        return "خبر عاجل واحد"
    if n == 2:
        return "خبران عاجلان"
    if 3 <= n <= 10:
        return f"{n} أخبار عاجلة"
    return f"{n} خبراً عاجلاً"


def catchup_context(site: SiteView, *, alerts: Sequence[tuple[str, str, str, dt.datetime]]) -> dict:
    """«بينما كنت نائماً»: the alerts a reader's quiet hours held, oldest first, each with
    its headline, link, two lines and the time it went out, in one short mail.

    `alerts` are (headline, url, summary, sent_at)."""
    if not alerts:
        raise ValueError("a catch-up needs at least one alert")
    items = []
    for headline, url, summary, sent_at in alerts:
        headline = _require_text(headline, "headline")
        _require_url(url, "url")
        shown = _BREAKING.sub("", headline, count=1) or headline
        items.append(HeldItem(shown, url, _shorten(summary, ALERT_SUMMARY_MAX), _when(site, sent_at)))
    count = _count_alerts(len(items))
    ctx = _base(site, "catchup", " · ".join(i.headline for i in items[-PREHEADER_HEADLINES:][::-1]))
    ctx.update(
        items=tuple(items),
        count=count,
        intro=f"وصلك خلال ساعات الهدوء التي اخترتها {count}، جمعناها لك هنا:" if len(items) > 1
        else "وصل خلال ساعات الهدوء التي اخترتها هذا الخبر العاجل:",
        reason=(f"تصلك هذه الرسالة لأنك طلبت الأخبار العاجلة من {site.name}، "
                "وطلبت أن نؤجّل ما يصل منها في ساعات الهدوء إلى نهايتها."),
    )
    return ctx


def special_context(
    site: SiteView,
    *,
    title: str,
    intro: Sequence[str],
    articles: Sequence[ArticleView],
    edition_date: dt.datetime,
) -> dict:
    """A special edition an editor put together: their title, their introduction (plain
    paragraphs), then the stories in their order — the first leads, the others follow,
    each under its section's name.  Nothing is reordered or dropped: the editor chose."""
    title = _require_text(title, "a special edition's title")
    if not articles:
        raise ValueError("a special edition needs at least one article")
    lead, rest = articles[0], articles[1:]
    ctx = _base(site, "special", " ".join(intro)[:PREHEADER_MAX] if intro else " · ".join(a.title for a in rest[:2])
                or lead.title)
    ctx.update(
        title=title,
        subject_title=_shorten(title, SUBJECT_HEADLINE_MAX),
        intro=tuple(p for p in intro if p.strip()),
        edition_date=_site_date(site, edition_date),
        lead=_item(site, lead),
        lead_section=lead.section_name or "",
        items=tuple(_item(site, a) for a in rest),
        article_count=len(articles),
        reason=f"تصلك هذه الرسالة لأنك مشترك في نشرة {site.name}: هذا عدد خاص أعدّه المحررون.",
    )
    return ctx
