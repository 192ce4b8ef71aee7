"""Special editions: an edition an editor puts together by hand (election night, a year in
review) — chosen stories in the editor's order, a title, an introduction in plain text
(paragraphs split on blank lines), and optionally only the readers of some sections.

A special edition is one newsletter's (the `daily` digest's unless the editor names
another): its readers — those with a subscription to it, confirmed, not paused — get
it, narrowed by `audience_condition` to those whose subscription follows one of the
chosen sections (a reader of every section follows them all).  The planner joins the
subscription and calls it.

Every reader gets the same copy (one variant, "all"): the editor chose the stories and
their order, so a reader's own section order does not reshuffle them.  It is rendered
once, sent by the same engine, and is in the ledger like any edition.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from service.config import get_settings
from service.editions import keys
from service.editions.article_view import article_view
from service.models import (
    Article,
    Edition,
    EditionArticle,
    EditionKind,
    EditionStatus,
    Newsletter,
    NewsletterKind,
    Section,
    Subscription,
    audit,
    fits_id,
    utcnow,
)
from service.newsletters import catalogue
from service.rendering import contexts
from service.rendering.render import render_variant
from service.rendering.viewmodels import RenderedVariant

TITLE_MAX = 200
INTRO_MAX = 4000
PARAGRAPHS_MAX = 20
ARTICLES_MAX = 40  # as many as a digest carries (and the HTML stays under Gmail's clip)
KEY_PREFIX = "special:"
_BIDI_CONTROLS = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"))


class SpecialError(ValueError):
    """The request cannot be a special edition; the message says why, for the editor."""


def _storable(value: str, what: str) -> str:
    # PostgreSQL text holds no NUL, UTF-8 no lone surrogate; other controls are noise.
    for ch in value:
        if ch == "\x00" or "\ud800" <= ch <= "\udfff" or (unicodedata.category(ch) == "Cc" and not ch.isspace()):
            raise SpecialError(f"{what} فيه محرف تحكّم (U+{ord(ch):04X}): احذفه.")
    return unicodedata.normalize("NFC", value).translate(_BIDI_CONTROLS)


def clean_title(title: str | None) -> str:
    title = " ".join(_storable(title or "", "العنوان").split())
    if not title:
        raise SpecialError("اكتب عنواناً للعدد الخاص.")
    if len(title) > TITLE_MAX:
        raise SpecialError(f"العنوان أطول من {TITLE_MAX} حرفاً.")
    return title


def paragraphs(intro: str | None) -> list[str]:
    """Plain text → paragraphs: split on blank lines, each one line of single spaces."""
    text = _storable((intro or "").replace("\r\n", "\n").replace("\r", "\n"), "المقدمة")
    if len(text) > INTRO_MAX:
        raise SpecialError(f"المقدمة أطول من {INTRO_MAX} حرف.")
    out = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    out = [p for p in out if p]
    if len(out) > PARAGRAPHS_MAX:
        raise SpecialError(f"المقدمة أكثر من {PARAGRAPHS_MAX} فقرة.")
    return out


def _ids(values, what: str) -> list[int]:
    out: list[int] = []
    for value in values or ():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or not fits_id(Article, value):
            raise SpecialError(f"{what}: رقم غير صالح.")
        if value not in out:  # the first place an editor put a story is its place
            out.append(value)
    return out


def check_sections(session: Session, section_ids) -> list[int]:
    ids = _ids(section_ids, "الأقسام")
    if ids:
        known = set(session.scalars(sa.select(Section.id).where(Section.id.in_(ids))))
        if missing := [i for i in ids if i not in known]:
            raise SpecialError(f"لا يوجد قسم بالرقم {missing[0]}.")
    return ids


def chosen_articles(session: Session, article_ids) -> list[Article]:
    """The articles, in the order given (a repeated one keeps its first place)."""
    ids = _ids(article_ids, "الأخبار")
    if not ids:
        raise SpecialError("اختر خبراً واحداً على الأقل.")
    if len(ids) > ARTICLES_MAX:
        raise SpecialError(f"العدد الخاص يحمل {ARTICLES_MAX} خبراً على الأكثر.")
    found = {a.id: a for a in session.scalars(sa.select(Article).where(Article.id.in_(ids))).unique()}
    if missing := [i for i in ids if i not in found]:
        raise SpecialError(f"لا يوجد خبر بالرقم {missing[0]}.")
    return [found[i] for i in ids]


def newsletter_for(session: Session, newsletter: Newsletter | str | None) -> Newsletter:
    """The digest newsletter a special edition goes to: the one given (a row or a slug),
    else the site's `daily` digest; an unknown, hidden (retired) or alerts one is refused."""
    if newsletter is None:
        found = catalogue.by_slug(session, catalogue.DAILY)
    elif isinstance(newsletter, Newsletter):
        found = newsletter
    else:
        found = catalogue.by_slug(session, newsletter.strip().lower()) if isinstance(newsletter, str) else None
    if found is None:
        raise SpecialError("لا توجد نشرة بهذا الاسم.")
    if found.hidden:
        raise SpecialError(f"النشرة «{found.name}» موقوفة: لا يُرسل إليها عدد جديد.")
    if found.kind is not NewsletterKind.digest:  # an alerts list is for breaking news only
        raise SpecialError(f"النشرة «{found.name}» للأخبار العاجلة: العدد الخاص يُرسل إلى نشرة موجز.")
    return found


def create_special(session: Session, *, title: str | None, article_ids, intro: str | None = "",
                   section_ids=(), editor_id: int | None = None, send_at: dt.datetime | None = None,
                   idempotency_key: str | None = None, actor: str | None = None,
                   newsletter: Newsletter | str | None = None) -> Edition:
    """The special edition as a draft (scheduled when `send_at` is given; checked by the
    caller), for the readers of `newsletter` (a Newsletter or its slug; None: `daily`).
    A retried request with the same key returns the edition it made."""
    key = None
    if idempotency_key:
        prefix = f"{KEY_PREFIX}e{editor_id}:" if editor_id is not None else KEY_PREFIX
        key = prefix + idempotency_key[: keys.KEY_MAX - len(prefix)]
        found = keys.existing(session, key)
        if found is not None:
            return found
    target = newsletter_for(session, newsletter)
    title = clean_title(title)
    intro_paragraphs = paragraphs(intro)
    sections = check_sections(session, section_ids)
    articles = chosen_articles(session, article_ids)
    edition = Edition(kind=EditionKind.special, status=EditionStatus.draft, title=title, idempotency_key=key,
                      params={"intro": intro_paragraphs, "sections": sections}, created_by=editor_id,
                      send_at=send_at, newsletter_id=target.id)
    edition, created = keys.add_keyed(session, edition)
    if not created:
        return edition
    for position, article in enumerate(articles):
        session.add(EditionArticle(edition_id=edition.id, article_id=article.id, version=article.version,
                                   position=position))
    audit(session, actor or (f"editor:{editor_id}" if editor_id else "cli"), "special.create",
          f"edition:{edition.id}", articles=len(articles), sections=sections, newsletter=target.slug,
          send_at=send_at.isoformat() if send_at else None)
    session.flush()
    session.refresh(edition)
    return edition


def audience_condition(edition: Edition, dialect: str) -> sa.ColumnElement[bool]:
    """Who of the newsletter's readers gets it (the planner joins their Subscription to
    the edition's newsletter): all of them, or with chosen sections only those whose
    subscription follows one of them (an empty list means every section)."""
    wanted = [i for i in (edition.params or {}).get("sections") or () if isinstance(i, int)]
    if not wanted:
        return sa.true()
    as_text = sa.cast(Subscription.sections, sa.Text)
    every = sa.or_(Subscription.sections.is_(None), as_text.in_(["[]", "null", ""]))
    if dialect == "postgresql":
        doc = sa.cast(as_text, postgresql.JSONB)
        follows = sa.or_(*(doc.op("@>")(sa.literal([i], postgresql.JSONB)) for i in wanted))
    else:
        items = sa.func.json_each(Subscription.sections).table_valued("value")
        follows = sa.exists(sa.select(sa.literal(1)).select_from(items).where(items.c.value.in_(wanted)))
    return sa.or_(every, follows)


def render_special(edition: Edition, extra: dict | None = None) -> RenderedVariant | None:
    """The one copy every reader gets (None: its stories are gone)."""
    articles = [article_view(ea.article) for ea in edition.articles]
    if not articles:
        return None
    ctx = contexts.special_context(contexts.site_view(get_settings()), title=edition.title,
                                   intro=(edition.params or {}).get("intro") or (),
                                   articles=articles, edition_date=edition.send_at or edition.created_at or utcnow())
    return render_variant("special", ctx | (extra or {}))
