"""Breaking-news alerts: an editor's click becomes an edition in one short transaction.

An alert is keyed either on an article we ingested (its URL) or on a headline and
link the editor typed.  An alert of an article carries the article's link, lead image
and caption; the editor may word its headline and summary themselves (the editors' form
fills them from the article: `prefill`).  A headline never says «عاجل» twice: the mail's
band and subject say it once already, so a typed «عاجل: عاجل: …» or «(عاجل) …» is stored
as «عاجل: …», the one form both leave alone.  A retried request with the same idempotency key, or the same
article alerted twice within ten minutes (a double click from two editors), returns the
edition that already exists instead of mailing everyone again.

An alert is one alerts newsletter's (`alerts` unless the editor names another:
`alerts_newsletter`); its readers are that newsletter's.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.articles.queries import article_by_url
from service.articles.sanitise import html_to_text
from service.articles.text import shorten, truncate
from service.editions import keys
from service.models import (
    Article,
    Edition,
    EditionArticle,
    EditionKind,
    EditionStatus,
    Newsletter,
    NewsletterKind,
    audit,
    utcnow,
)
from service.newsletters import catalogue

HEADLINE_MAX = 200
SUMMARY_MAX = 400
PREFILL_SUMMARY = 300  # what the form offers from an article: an alert is read in seconds
# «عاجل» at the head of a headline, as sites write it: «عاجل:», «عاجل |», «(عاجل)», «خبر عاجل -» …
# (never the start of another word: «عاجلة», «عاجلاً»).
_BREAKING_RE = re.compile(r"\s*[\[(«]?\s*(?:خبر\s+)?عاجل(?![\u0600-\u06ff])\s*[\])»]?\s*[:：|\-–—،,]?\s*")
DUPLICATE_WINDOW = dt.timedelta(minutes=10)
# Embeddings, overrides, isolates and the marks: stripped from what an editor types,
# headline and link alike (a U+202E in a link shows "https://x.example/exe.gpj" as
# something else, in the href and in the text part).
_BIDI_CONTROLS = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"))


class AlertError(ValueError):
    """The request cannot become an alert; the message says why, for the editor."""


def _refuse_unstorable(value: str, field: str) -> None:
    # PostgreSQL text cannot hold NUL, and a lone surrogate (which JSON's \ud800 gives)
    # is no UTF-8 at all: say so, instead of a DataError at INSERT or in the planner.
    for ch in value:
        if ch == "\x00" or "\ud800" <= ch <= "\udfff" or (unicodedata.category(ch) == "Cc" and not ch.isspace()):
            raise AlertError(f"{field} contains a control character (U+{ord(ch):04X}); remove it")


def _clean_line(value: str | None, field: str, limit: int, required: bool) -> str:
    value = value or ""
    _refuse_unstorable(value, field)
    value = unicodedata.normalize("NFC", value).translate(_BIDI_CONTROLS)
    value = " ".join(value.split())  # CR/LF and runs of spaces become one space
    if required and not value:
        raise AlertError(f"{field} is required")
    if len(value) > limit:
        raise AlertError(f"{field} is longer than {limit} characters")
    return value


def _check_url(url: str | None, field: str) -> str:
    url = (url or "").strip()
    if len(url) > 2000:
        raise AlertError(f"{field} is too long")
    _refuse_unstorable(url, field)
    url = url.translate(_BIDI_CONTROLS)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c in url for c in "\r\n \t"):
        raise AlertError(f"{field} must be an absolute http(s) link")
    if any(unicodedata.category(c) in ("Zs", "Zl", "Zp", "Cf") for c in url):
        raise AlertError(f"{field} must not contain spaces or invisible characters")
    return url


def _breaking_prefixes(headline: str) -> list[str]:
    found, rest = [], headline
    while (m := _BREAKING_RE.match(rest)) and m.end() and rest[m.end():].strip():
        found.append(m.group(0))
        rest = rest[m.end():]
    return found


def without_breaking(headline: str) -> str:
    """The headline without its «عاجل» prefix(es): the mail adds the word itself."""
    prefixes = _breaking_prefixes(headline)
    return headline[sum(len(p) for p in prefixes):].strip() if prefixes else headline


def breaking_once(headline: str) -> str:
    """«عاجل: عاجل: خبر», «(عاجل) خبر», «خبر عاجل | خبر» → «عاجل: خبر»: one prefix, in a
    form the alert's subject keeps as it is and its band takes off the headline (one that
    starts with the word).  A single «عاجل: …» / «عاجل | …» / «عاجل …» stays as typed."""
    prefixes = _breaking_prefixes(headline)
    if not prefixes or (len(prefixes) == 1 and headline.startswith("عاجل")):
        return headline
    return "عاجل: " + headline[sum(len(p) for p in prefixes):].strip()


@dataclass(frozen=True)
class Prefill:
    """What the editors' form offers for an alert of a recent article."""

    article_id: int
    article_url: str
    headline: str
    summary: str
    lead_image_url: str | None
    lead_image_caption: str | None
    section: str | None
    published_at: dt.datetime | None


def _first_paragraph(body_html: str) -> str:
    for piece in re.split(r"</p\s*>", body_html or "", flags=re.I):
        text = html_to_text(piece)
        if len(text) > 40:
            return text
    return ""


def prefill(article: Article) -> Prefill:
    """The headline without «عاجل» (the mail says it), the summary (or the body's first
    paragraph) cut at a sentence or a word with an ellipsis, the article's link, lead
    image and caption."""
    headline = truncate(without_breaking(" ".join(article.title.split())), HEADLINE_MAX)
    summary = shorten(article.summary or _first_paragraph(article.body_html), PREFILL_SUMMARY)
    return Prefill(article.id, article.url, headline, summary, article.lead_image_url, article.lead_image_caption,
                   article.section.name if article.section else None, article.published_at)


def alerts_newsletter(session: Session, slug: str | None = None) -> Newsletter:
    """The alerts newsletter an alert goes to: the one `slug` names, else the site's
    default (catalogue.default_alerts).  AlertError for a slug that names no newsletter,
    a hidden (retired) one, or a digest."""
    if slug is None:
        found = catalogue.default_alerts(session)
        if found is None:
            raise AlertError("there is no alerts newsletter to send to (see `nashra newsletters list`)")
        return found
    found = catalogue.by_slug(session, slug.strip().lower()) if isinstance(slug, str) else None
    if found is None:
        raise AlertError(f"newsletter: no newsletter {str(slug)[:64]!r}")
    if found.hidden:
        raise AlertError(f"newsletter: {found.slug!r} is hidden (retired); nothing new is sent to it")
    if found.kind is not NewsletterKind.alerts:
        raise AlertError(f"newsletter: {found.slug!r} is a digest, not an alerts newsletter")
    return found


def key_for(idempotency_key: str, editor_id: int | None) -> str:
    """The stored key: an editor's keys are theirs alone (another editor sending the
    same key makes their own alert, and never sees this one); the CLI's are the operator's."""
    prefix = f"alert:e{editor_id}:" if editor_id is not None else "alert:"
    return prefix + _clean_line(idempotency_key, "idempotency_key", keys.KEY_MAX - len(prefix), True)


def create_alert(
    session: Session,
    *,
    editor_id: int | None,
    article_url: str | None = None,
    headline: str | None = None,
    url: str | None = None,
    summary: str | None = None,
    idempotency_key: str | None = None,
    actor: str | None = None,
    send_at: dt.datetime | None = None,
    newsletter: str | None = None,
) -> Edition:
    """`send_at` (UTC, checked by the caller): a scheduled alert, a draft until then
    (service/editions/scheduled.py).  `newsletter`: the slug of the alerts newsletter whose
    readers get it (None: the site's default, `alerts`)."""

    key = None
    if idempotency_key is not None:
        key = key_for(idempotency_key, editor_id)
        found = keys.existing(session, key)
        if found is not None:
            return found

    article = None
    if article_url:
        article_url = _check_url(article_url, "article_url")
        url = _check_url(url, "url") if url else None
        if url and url != article_url:
            raise AlertError("give either article_url, or headline and url — an article's alert links to the article")
        article = article_by_url(session, article_url)
        if article is None:
            raise AlertError("no ingested article has that URL (run `nashra ingest`, or give headline and url)")
        # The site's own text may be longer than an alert holds: shorten it at a word or
        # a sentence, do not refuse it (only what the editor typed is refused for length).
        # The editor's own headline and summary, when given, word it instead.
        url = article.url
        if not (headline or "").strip():
            headline = truncate(" ".join(article.title.split()), HEADLINE_MAX)
        if summary is None:
            summary = shorten(article.summary or "", SUMMARY_MAX)
    else:
        url = _check_url(url, "url")
    headline = breaking_once(_clean_line(headline, "headline", HEADLINE_MAX, True))
    summary = _clean_line(summary, "summary", SUMMARY_MAX, False)
    target = alerts_newsletter(session, newsletter)

    if idempotency_key is None:
        # Two editors clicking "send" on the same story within minutes: one alert.
        recent = session.scalars(
            select(Edition)
            .where(Edition.kind == EditionKind.alert, Edition.created_at >= utcnow() - DUPLICATE_WINDOW)
            .where(Edition.status != EditionStatus.cancelled)
            # The same story to another alerts newsletter is that newsletter's own alert.
            .where(Edition.newsletter_id == target.id)
            .order_by(Edition.id.desc())
            .limit(50)
        ).all()
        for edition in recent:
            # The same send time only: "send now" must not return the one scheduled for 06:30.
            if edition.params.get("url") == url and edition.send_at == send_at:
                return edition

    edition = Edition(
        kind=EditionKind.alert,
        status=EditionStatus.draft,
        title=headline,
        idempotency_key=key,
        params={"headline": headline, "url": url, "summary": summary},
        created_by=editor_id,
        send_at=send_at,
        newsletter_id=target.id,
    )
    edition, created = keys.add_keyed(session, edition)
    if not created:
        return edition
    if article is not None:
        session.add(EditionArticle(edition_id=edition.id, article_id=article.id, version=article.version))
    audit(session, actor or (f"editor:{editor_id}" if editor_id else "cli"), "alert.create", f"edition:{edition.id}",
          newsletter=target.slug, **({"send_at": send_at.isoformat()} if send_at else {}))
    session.flush()
    return edition
