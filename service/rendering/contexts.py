"""One small function per kind of email, building its template context from plain views.

Templates never query the database and never format dates: everything they show is
computed here, so a template is layout only and a context is testable on its own.
Bad input (an empty digest, a link that is not http(s), an unknown frequency) is a
ValueError here, before anything is rendered.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from service.config import Settings
from service.rendering import dates
from service.rendering.viewmodels import (
    PREFERENCES_URL,
    UNSUBSCRIBE_URL,
    ArticleView,
    SectionView,
    SiteView,
)

FREQUENCY_LABELS = {"daily": "اليومية", "weekly": "الأسبوعية"}
ALERT_SUMMARY_MAX = 180  # about two lines at 600 px: alerts are short by design
PREHEADER_MAX = 140


@dataclass(frozen=True)
class ArticleItem:
    """An article plus the labels the template prints next to it.

    Times are absolute, in the site's zone: a mail is read hours or days after it was
    sent, and "30 minutes ago" would be wrong by then.
    """

    article: ArticleView
    time: str  # "17:33", in the site's zone
    date: str  # "24 تشرين الثاني/نوفمبر 2021"
    published: str  # "24 تشرين الثاني/نوفمبر 2021، 17:33", or "" without a publish time


@dataclass(frozen=True)
class SectionItems:
    slug: str
    name: str
    items: tuple[ArticleItem, ...]


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


def _item(site: SiteView, article: ArticleView) -> ArticleItem:
    when = article.published_at
    if when is None:
        return ArticleItem(article=article, time="", date="", published="")
    local = dates.local_time(when, site.timezone)
    return ArticleItem(
        article=article,
        time=dates.clock_time(local, arabic_digits=site.arabic_digits),
        date=dates.arabic_date(local, arabic_digits=site.arabic_digits),
        published=_when(site, when),
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


def digest_context(
    site: SiteView,
    sections: Sequence[SectionView],
    *,
    edition_date: dt.date | dt.datetime,
    frequency: str,
    lead: ArticleView | None = None,
) -> dict:
    """A digest: a lead story, then the reader's sections in the reader's order.

    The lead defaults to the first article with an image; it is not repeated in its
    section.
    """
    label = _frequency_label(frequency)
    all_articles = [a for s in sections for a in s.articles]
    if not all_articles:
        raise ValueError("a digest needs at least one article")
    if lead is None:
        lead = next((a for a in all_articles if a.lead_image_url), all_articles[0])
    section_items = []
    for s in sections:
        items = tuple(_item(site, a) for a in s.articles if a.id != lead.id)
        if items:
            section_items.append(SectionItems(slug=s.slug, name=s.name, items=items))
    names = [s.name for s in sections]
    others = [a.title for a in all_articles if a.id != lead.id][:3]
    ctx = _base(site, "digest", " · ".join([lead.title, *others]))
    ctx.update(
        edition_date=_site_date(site, edition_date),
        frequency=frequency,
        frequency_label=label,
        lead=_item(site, lead),
        sections=section_items,
        article_count=len(all_articles),
        reason=(
            f"تصلك هذه الرسالة لأنك مشترك في النشرة {label} من {site.name}"
            f" لأقسام: {'، '.join(names)}."
        ),
    )
    return ctx


def alert_context(
    site: SiteView,
    *,
    headline: str,
    url: str,
    summary: str,
    image: ArticleView | str | None = None,
    sent_at: dt.datetime,
) -> dict:
    """Breaking news: a red band, the headline, two lines, one button."""
    headline = _require_text(headline, "headline")
    _require_url(url, "url")
    image_url = image.lead_image_url if isinstance(image, ArticleView) else image
    image_alt = headline
    if isinstance(image, ArticleView) and image.lead_image_alt:
        image_alt = image.lead_image_alt
    if image_url:
        _require_url(image_url, "image")
    local = dates.local_time(sent_at, site.timezone)
    short = _shorten(summary, ALERT_SUMMARY_MAX)
    ctx = _base(site, "alert", short or headline)
    ctx.update(
        headline=headline,
        url=url,
        summary=short,
        image_url=image_url or None,
        image_alt=image_alt,
        time=dates.clock_time(local, arabic_digits=site.arabic_digits),
        date=_site_date(site, sent_at),
        reason=f"تصلك هذه الرسالة لأنك طلبت الأخبار العاجلة من {site.name}.",
    )
    return ctx


def confirm_context(site: SiteView, *, confirm_url: str) -> dict:
    """Double opt-in: one button; no unsubscribe link (the reader is not subscribed yet)."""
    _require_url(confirm_url, "confirm_url")
    ctx = _base(site, "confirm", f"اضغط الزر لتأكيد اشتراكك في {site.name}.")
    del ctx["unsubscribe_url"], ctx["preferences_url"]
    ctx.update(confirm_url=confirm_url)
    return ctx


def welcome_context(site: SiteView, *, sections: Sequence[SectionView | str], frequency: str) -> dict:
    """Welcome after confirmation: what the reader chose and how to change it.

    `sections` are names (or SectionView) in the reader's order; empty means all.
    `frequency` may be "none" for a reader who only wants breaking news.
    """
    names = _section_names(sections)
    if frequency == "none":
        label = ""
    else:
        label = _frequency_label(frequency)
    ctx = _base(site, "welcome", f"أهلاً بك في {site.name}. هذه اختياراتك وطريقة تعديلها.")
    ctx.update(
        section_names=names,
        frequency=frequency,
        frequency_label=label,
        reason=f"تصلك هذه الرسالة لأنك أكّدت اشتراكك في {site.name}.",
    )
    return ctx


def correction_context(site: SiteView, *, article: ArticleView, note: str) -> dict:
    """A major update to an article the reader already got."""
    if not isinstance(article, ArticleView):
        raise TypeError(f"article must be an ArticleView, got {type(article).__name__}")
    _require_url(article.url, "article.url")
    note = " ".join((note or "").split())
    when = article.updated_at or article.published_at
    item = _item(site, article)
    ctx = _base(site, "correction", note or article.title)
    ctx.update(
        article=item,
        note=note,
        updated_time=dates.clock_time(dates.local_time(when, site.timezone), arabic_digits=site.arabic_digits)
        if when
        else "",
        updated_date=_site_date(site, when) if when else "",
        reason=f"تصلك هذه الرسالة لأنك تلقيت هذا الخبر من {site.name} وقد حُدّث تحديثاً مهماً.",
    )
    return ctx
