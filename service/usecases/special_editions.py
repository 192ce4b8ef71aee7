"""Special editions, once for every door (the editor's page, `nashra edition compose`):
find stories, choose the digest newsletter whose readers get it (the `daily` one unless
the editor names another) and maybe some sections, preview, count the audience, send a
test copy (with that newsletter's List-Id and From name), send now or at a time.

The preview goes through the same path as the real send (as an alert's does): the
edition is made and rendered by the edition code inside a transaction that is then
rolled back, so what the editor sees is what readers get and previewing writes nothing.
The audience is counted by the planner's own rule.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import func, select

from service.articles.queries import article_by_url, search_articles
from service.articles.sections import section_by_slug_or_name
from service.config import ConfigError, get_settings
from service.db import session_scope
from service.delivery.compose import Sender
from service.dispatch import Dispatcher, current
from service.editions.special import SpecialError, create_special
from service.logs import get_logger
from service.models import (
    Article,
    Newsletter,
    NewsletterKind,
    Section,
    Subscriber,
    SubscriberStatus,
    Subscription,
    fits_id,
    utcnow,
)
from service.newsletters import catalogue
from service.usecases import audience, previews, test_copies

log = get_logger(__name__)

SEARCH_DAYS = (1, 3, 7, 30, 365)  # what the page offers; a year for "the year in review"
__all__ = ["SpecialError"]


@dataclass(frozen=True)
class Composition:
    """What the editor put together (not yet an edition)."""

    title: str = ""
    intro: str = ""
    article_ids: tuple[int, ...] = ()
    section_ids: tuple[int, ...] = ()
    newsletter: str | None = None  # a digest newsletter's slug; None: the site's daily digest


@dataclass(frozen=True)
class Choice:
    """A story as the page lists it."""

    id: int
    title: str
    url: str
    section: str
    when: dt.datetime | None


@dataclass(frozen=True)
class NewsletterChoice:
    slug: str
    name: str
    readers: int  # confirmed readers on it (the sections chosen may narrow them)


@dataclass(frozen=True)
class Preview:
    subject: str
    html: str
    text: str
    audience: int = 0
    variants: tuple[str, ...] = field(default=("all",))
    newsletter: Newsletter | None = None  # whose readers, List-Id and From name (a detached copy)

    @property
    def reach(self) -> str:
        return audience.reach(self.audience)


def _choice(article: Article) -> Choice:
    return Choice(article.id, article.title, article.url, article.section.name if article.section else "",
                  article.published_at or article.first_seen_at)


def sections() -> list[tuple[int, str]]:
    """(id, name) of every section, in the site's order (hidden ones too: old stories)."""
    with session_scope() as s:
        return [(sec.id, sec.name) for sec in s.scalars(select(Section).order_by(Section.position, Section.id))]


def newsletters() -> list[NewsletterChoice]:
    """The digest newsletters a special edition may go to (not hidden), with their readers."""
    with session_scope() as s:
        readers = dict(s.execute(
            select(Subscription.newsletter_id, func.count())
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .where(Subscriber.status == SubscriberStatus.active).group_by(Subscription.newsletter_id)).all())
        return [NewsletterChoice(n.slug, n.name, readers.get(n.id, 0)) for n in catalogue.every(s)
                if n.kind is NewsletterKind.digest]


def _digest_newsletter(session, slug: str | None) -> str | None:
    """The slug, checked: a digest newsletter that is not hidden (None: the default)."""
    if slug is None or slug == "":
        return None
    found = catalogue.by_slug(session, slug.strip().lower()) if isinstance(slug, str) else None
    if found is None or found.hidden or found.kind is not NewsletterKind.digest:
        raise SpecialError(f"لا توجد نشرة موجز {str(slug)[:64]!r} (النشرات: `nashra newsletters list`).")
    return found.slug


def search(words: str = "", section_id: int | None = None, days: int = 3) -> list[Choice]:
    """Stories of the last `days` whose headline holds every word, of one section or all."""
    days = days if days in SEARCH_DAYS else 3
    # Controls (a NUL PostgreSQL text cannot hold) and lone surrogates are no part of a headline.
    words = "".join(ch if ch.isprintable() and not "\ud800" <= ch <= "\udfff" else " " for ch in words[:200])
    with session_scope() as s:
        found = search_articles(s, words=words, section_id=section_id,
                                since=utcnow() - dt.timedelta(days=days))
        return [_choice(a) for a in found]


def chosen(article_ids) -> list[Choice]:
    """The chosen stories in the editor's order (unknown ids left out)."""
    ids = [i for i in article_ids if isinstance(i, int) and fits_id(Article, i)]
    if not ids:
        return []
    with session_scope() as s:
        found = {a.id: a for a in s.scalars(select(Article).where(Article.id.in_(ids))).unique()}
        return [_choice(found[i]) for i in ids if i in found]


def composition_from(*, title: str, intro: str = "", articles: list[str], sections: list[str] = (),
                     newsletter: str | None = None) -> Composition:
    """The CLI's words → a Composition: each article an id or an ingested article's URL
    (in order), each section a name or a slug, the newsletter a digest newsletter's slug.
    Raises SpecialError naming what is unknown."""
    ids: list[int] = []
    section_ids: list[int] = []
    with session_scope() as s:
        for value in articles:
            value = value.strip()
            if value.isascii() and value.isdigit() and len(value) < 10:
                ids.append(int(value))
                continue
            article = article_by_url(s, value)
            if article is None:
                raise SpecialError(f"no ingested article has the URL {value[:200]!r} (give its id or URL)")
            ids.append(article.id)
        for value in sections:
            section = section_by_slug_or_name(s, value.strip())
            if section is None:
                raise SpecialError(f"no section {value.strip()[:100]!r} (see `nashra sections list`)")
            section_ids.append(section.id)
        slug = _digest_newsletter(s, newsletter)
    return Composition(title=title, intro=intro, article_ids=tuple(ids), section_ids=tuple(section_ids),
                       newsletter=slug)


def _create(session, comp: Composition, **kwargs):
    """create_special for this composition, to its newsletter (checked: a digest one)."""
    return create_special(session, title=comp.title, article_ids=list(comp.article_ids), intro=comp.intro,
                          section_ids=list(comp.section_ids), newsletter=_digest_newsletter(session, comp.newsletter),
                          **kwargs)


def preview(comp: Composition, editor_id: int | None = None) -> Preview:
    """The edition as readers would get it, and how many would get it; nothing kept.

    Raises SpecialError for what the editor must fix."""
    shown = previews.unsaved(lambda session: _create(session, comp, editor_id=editor_id),
                             SpecialError, "لا شيء يُعرض: الأخبار المختارة لم تعد موجودة.")
    counts = shown.audience
    return Preview(shown.subject, shown.html, shown.text, sum(counts.values()), tuple(sorted(counts)) or ("all",),
                   shown.newsletter)


def send_test(comp: Composition, to: str, editor, sender: Sender | None = None) -> Preview:
    """The preview, sent now to one address as a test copy (the alerts' kind "test": marked,
    no List-Unsubscribe)."""
    address = test_copies.address(to, SpecialError)
    shown = preview(comp)  # who asks changes nothing in the copy (and the console is no editor row)
    test_copies.send(shown, address, editor, sender, what="special", error=SpecialError)
    return shown


def compose(comp: Composition, *, editor_id: int | None, actor: str | None = None,
            send_at: dt.datetime | None = None, idempotency_key: str | None = None,
            dispatcher: Dispatcher | None = None) -> int:
    """Make the special edition; plan it now (after commit), or leave it scheduled for
    `send_at` (UTC, from usecases.scheduled.parse_send_at).  Returns its id.

    Raises SpecialError (nothing written), or for a missing POSTAL_ADDRESS in production."""
    try:
        get_settings().require_postal_address()
    except ConfigError as exc:
        raise SpecialError(str(exc)) from None
    dispatcher = dispatcher or current()
    with session_scope(write=True) as s:  # reads the articles, then writes (see usecases.digests)
        edition = _create(s, comp, editor_id=editor_id, send_at=send_at, idempotency_key=idempotency_key,
                          actor=actor)
        edition_id = edition.id
        if edition.status.value == "draft" and edition.send_at is None:
            dispatcher.plan_edition(edition_id, edition.kind.value, session=s)
    log.info("special_composed", edition_id=edition_id, editor_id=editor_id, newsletter=comp.newsletter,
             scheduled=send_at is not None)
    return edition_id
