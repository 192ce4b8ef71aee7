"""The site's sections, with stable slugs, and the mapping of feed categories onto them.

Slugs are the stable identity (subscribers' choices and URLs refer to them); names are
what readers see.  Sections are the newsroom's: an admin adds, renames, hides and orders
them (`nashra sections …`, the admins' page) before or after any feed exists; the nine
built-in ones below are seeded only into an install that has none when its first feed
is added or polled (`seed_defaults_if_empty`).  A hidden section is no longer offered to
readers on the signup and preferences forms; readers who chose it keep it, and its
articles still go out.

Feeds name categories however their CMS does ("عربي ودولي", "World", "الرياضة"): a
category is recorded the first time it is seen and mapped onto the section whose name or
slug it matches (spelling-insensitive), or onto a built-in section one of whose aliases
matches; when none does it is kept unmapped and reported (`unmapped_categories`, shown by
`nashra sections list`, `nashra feeds list` and the admins' page) until an admin maps it
(`map_category`), which also files that category's articles under the section.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from service.articles.text import clean_title, match_key
from service.db import insert_ignoring
from service.models import (
    Article,
    Category,
    Feed,
    Newsletter,
    NewsletterKind,
    Section,
    Subscriber,
    SubscriberStatus,
    Subscription,
    audit,
)

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
NAME_MAX = 128


@dataclass(frozen=True)
class SectionDef:
    slug: str
    name: str
    aliases: tuple[str, ...] = ()


DEFAULT_SECTIONS: tuple[SectionDef, ...] = (
    SectionDef("local", "محليات", ("محلي", "محليات", "أخبار محلية", "الأردن", "اخبار الاردن", "local", "jordan")),
    SectionDef(
        "arab-world",
        "عربي دولي",
        ("عربي دولي", "عربي ودولي", "عربي و دولي", "عربي", "دولي", "عربيات", "العالم", "عالمي", "arab", "world", "international"),
    ),
    SectionDef("economy", "اقتصاد", ("اقتصاد", "الاقتصاد", "اقتصادي", "مال وأعمال", "أسواق", "economy", "business", "markets")),
    SectionDef("sports", "رياضة", ("رياضة", "الرياضة", "رياضي", "كرة القدم", "sport", "sports")),
    SectionDef(
        "technology", "تكنولوجيا", ("تكنولوجيا", "التكنولوجيا", "تقنية", "علوم وتكنولوجيا", "tech", "technology", "science")
    ),
    SectionDef("culture", "ثقافة وفنون", ("ثقافة", "ثقافة وفنون", "فن", "فنون", "ثقافة وفن", "culture", "arts")),
    SectionDef("health", "صحة", ("صحة", "الصحة", "طب", "health")),
    SectionDef("opinion", "آراء ومقالات", ("رأي", "آراء", "مقالات", "آراء ومقالات", "مقالات الرأي", "opinion")),
    SectionDef("variety", "منوعات", ("منوعات", "متفرقات", "variety", "misc")),
)

_ALIASES: dict[str, str] = {match_key(a): d.slug for d in DEFAULT_SECTIONS for a in (d.name, d.slug, *d.aliases)}


def ensure_sections(session: Session) -> None:
    """Create the default sections that are missing; never rename or reorder existing ones.

    Idempotent, and safe when two processes run it at once (the unique slug/name decide).
    """
    existing = {row.slug: row for row in session.scalars(sa.select(Section))}
    names = {row.name for row in existing.values()}
    for position, definition in enumerate(DEFAULT_SECTIONS):
        if definition.slug in existing or definition.name in names:
            continue
        with session.begin_nested():  # a concurrent seeder may win the race; that is fine
            session.add(Section(slug=definition.slug, name=definition.name, position=position))
            try:
                session.flush()
            except sa.exc.IntegrityError:
                pass


def seed_defaults_if_empty(session: Session) -> bool:
    """The built-in sections, for an install that has no section at all (its first feed
    added or polled); an install whose admin made its own sections is left as it is."""
    if session.scalar(sa.select(Section.id).limit(1)) is not None:
        return False
    ensure_sections(session)
    return True


class SectionError(ValueError):
    """A section cannot be added or changed as asked; the message says why."""


def known_sections_text(session: Session) -> str:
    """`رياضة (sports), محليات (local)` — what an error names when it cannot find one."""
    rows = session.execute(sa.select(Section.name, Section.slug).order_by(Section.position, Section.id)).all()
    return ", ".join(f"{name} ({slug})" for name, slug in rows) or "none yet: add one with `nashra sections add NAME`"


def find_section(session: Session, value: str | int) -> Section:
    """The section an admin names: its slug, its name (or a built-in alias), or its id
    (an int: the page's forms; digits typed at the console if no slug is spelled so)."""
    if isinstance(value, int):
        found = session.get(Section, value) if 0 < value < 2**31 else None
        if found is None:
            raise SectionError(f"no section {value}")
        return found
    text = (value or "").strip()
    found = section_by_slug_or_name(session, text)
    if found is None and text.isascii() and text.isdigit() and len(text) < 10:
        found = session.get(Section, int(text))
    if found is None:
        raise SectionError(f"unknown section {text!r} (known: {known_sections_text(session)})")
    return found


def _clean_name(name: str) -> str:
    cleaned = clean_title(name)
    if not cleaned or len(cleaned) > NAME_MAX:
        raise SectionError(f"a section needs a name of 1 to {NAME_MAX} characters")
    if any(unicodedata.category(c) in ("Cc", "Cs", "Co") for c in cleaned):
        raise SectionError("a section's name cannot hold control characters")
    return cleaned


def _slug_for(session: Session, name: str, slug: str | None) -> str:
    if slug is not None:
        slug = slug.strip().lower()
        if not SLUG_RE.match(slug):
            raise SectionError(f"slug {slug!r}: use 1 to 64 of a-z, 0-9 and inner hyphens (e.g. arab-world)")
        return slug
    # No slug given: a built-in one when the name is one of the built-in names or
    # aliases (رياضة → sports), else the name's Latin letters, else section-N.
    candidate = _ALIASES.get(match_key(name)) or "-".join(re.findall(r"[a-z0-9]+", name.lower()))[:64].strip("-")
    if not candidate:
        candidate = f"section-{(session.scalar(sa.select(sa.func.max(Section.id))) or 0) + 1}"
    base, n = candidate, 2
    while session.scalar(sa.select(Section.id).where(Section.slug == candidate)) is not None:
        candidate = f"{base[:60]}-{n}"
        n += 1
    return candidate


def _refuse_taken(session: Session, name: str, slug: str, but: int | None = None) -> None:
    for column, value, what in ((Section.name, name, "name"), (Section.slug, slug, "slug")):
        other = session.scalar(sa.select(Section).where(column == value))
        if other is not None and other.id != but:
            raise SectionError(f"the {what} {value!r} is already section {other.name} ({other.slug})")


def add_section(session: Session, name: str, slug: str | None = None, *, actor: str) -> Section:
    """A new section, last in the site's order; raises SectionError."""
    name = _clean_name(name)
    slug = _slug_for(session, name, slug)
    _refuse_taken(session, name, slug)
    position = (session.scalar(sa.select(sa.func.max(Section.position))) or 0) + 1
    section = Section(name=name, slug=slug, position=position, hidden=False)
    session.add(section)
    session.flush()
    audit(session, actor, "section.add", f"section:{section.id}", name=name, slug=slug)
    return section


def rename_section(session: Session, section: Section, name: str, slug: str | None = None, *,
                   actor: str) -> Section:
    """A new name (what readers see) and, if given, a new slug (what CSV files and
    integrations name); readers' choices follow, being kept by id."""
    name = _clean_name(name)
    new_slug = section.slug if slug is None else _slug_for(session, name, slug)
    _refuse_taken(session, name, new_slug, but=section.id)
    before = (section.name, section.slug)
    section.name, section.slug = name, new_slug
    session.flush()
    audit(session, actor, "section.rename", f"section:{section.id}", old_name=before[0], name=name,
          old_slug=before[1], slug=new_slug)
    return section


def set_hidden(session: Session, section: Section, hidden: bool, *, actor: str) -> bool:
    """Hide (or offer again) a section; False when it already was so."""
    if section.hidden == hidden:
        return False
    section.hidden = hidden
    session.flush()
    audit(session, actor, "section.hide" if hidden else "section.unhide", f"section:{section.id}", name=section.name)
    return True


def reorder(session: Session, first: list[Section], *, actor: str) -> list[Section]:
    """`first` in that order at the top of the site's order, the others after them as
    they were; positions become 1, 2, 3 …  Returns every section in the new order."""
    everything = list(session.scalars(sa.select(Section).order_by(Section.position, Section.id)))
    wanted = []
    for section in first:
        if section not in wanted:
            wanted.append(section)
    ordered = wanted + [s for s in everything if s not in wanted]
    for position, section in enumerate(ordered, start=1):
        section.position = position
    session.flush()
    audit(session, actor, "section.order", None, slugs=[s.slug for s in ordered])
    return ordered


def move(session: Session, section: Section, step: int, *, actor: str) -> list[Section]:
    """One place up (step -1) or down (+1) in the site's order."""
    everything = list(session.scalars(sa.select(Section).order_by(Section.position, Section.id)))
    i = everything.index(section)
    j = max(0, min(len(everything) - 1, i + step))
    everything.insert(j, everything.pop(i))
    return reorder(session, everything, actor=actor)


@dataclass(frozen=True)
class SectionRow:
    id: int
    slug: str
    name: str
    position: int
    hidden: bool
    readers: int  # confirmed readers who chose it by name for a digest (readers of every section not counted)
    articles: int
    feeds: int


def _digest_subscriptions() -> sa.Select:
    """The subscriptions whose sections choose what a reader reads: confirmed readers'
    on the digests the site still makes (alerts are not by section; a retired digest
    sends nothing)."""
    return (sa.select(Subscription.subscriber_id)
            .join(Newsletter, Newsletter.id == Subscription.newsletter_id)
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .where(Subscriber.status == SubscriberStatus.active, Newsletter.kind == NewsletterKind.digest,
                   Newsletter.hidden.is_(False)))


def _empty(column) -> sa.ColumnElement[bool]:
    return sa.or_(column.is_(None), sa.cast(column, sa.Text).in_(["[]", "null", ""]))


def _chosen_counts(session: Session) -> dict[int, int]:
    """section id → confirmed readers whose list names it on a digest (once each, however
    many digests they chose it for): one pass over the subscriptions."""
    if session.get_bind().dialect.name == "postgresql":
        items = sa.func.jsonb_array_elements_text(sa.cast(Subscription.sections, postgresql.JSONB)).table_valued("value")
        value = sa.cast(items.c.value, sa.Integer)
    else:
        items = sa.func.json_each(Subscription.sections).table_valued("value")
        value = items.c.value
    chosen = (_digest_subscriptions().add_columns(value.label("section")).join(items, sa.true())).subquery()
    rows = session.execute(sa.select(chosen.c.section, sa.func.count(sa.distinct(chosen.c.subscriber_id)))
                           .group_by(chosen.c.section))
    return {int(k): n for k, n in rows if k is not None}


def every_section_readers(session: Session) -> int:
    """Confirmed readers with no list of their own on a digest that draws on every
    section: they get every section."""
    readers = _digest_subscriptions().where(_empty(Subscription.sections), _empty(Newsletter.sections)).subquery()
    return session.scalar(sa.select(sa.func.count(sa.distinct(readers.c.subscriber_id)))) or 0


def section_rows(session: Session) -> list[SectionRow]:
    chosen = _chosen_counts(session)
    articles = dict(session.execute(sa.select(Article.section_id, sa.func.count()).group_by(Article.section_id)).all())
    feeds = dict(session.execute(sa.select(Feed.section_id, sa.func.count()).group_by(Feed.section_id)).all())
    return [SectionRow(s.id, s.slug, s.name, s.position, s.hidden, chosen.get(s.id, 0), articles.get(s.id, 0),
                       feeds.get(s.id, 0))
            for s in session.scalars(sa.select(Section).order_by(Section.position, Section.id))]


@dataclass(frozen=True)
class UnmappedCategory:
    id: int
    name: str
    articles: int


def unmapped_categories(session: Session) -> list[UnmappedCategory]:
    """Categories feeds used that no section claims, with how many articles carry them."""
    count = sa.select(sa.func.count()).where(Article.category_id == Category.id).scalar_subquery()
    rows = session.execute(sa.select(Category.id, Category.name, count).where(Category.section_id.is_(None))
                           .order_by(count.desc(), Category.name))
    return [UnmappedCategory(i, n, c) for i, n, c in rows]


def find_category(session: Session, value: str | int) -> Category:
    if isinstance(value, int):
        found = session.get(Category, value) if 0 < value < 2**31 else None
        if found is None:
            raise SectionError(f"no category {value}")
        return found
    text = clean_title(value)[:200]
    found = session.scalar(sa.select(Category).where(Category.name == text))
    if found is None and text.isascii() and text.isdigit() and len(text) < 10:
        found = session.get(Category, int(text))
    if found is None:
        key = match_key(text)
        found = next((c for c in session.scalars(sa.select(Category)) if match_key(c.name) == key), None) if key else None
    if found is None:
        raise SectionError(f"no feed has used a category {text!r}")
    return found


def map_category(session: Session, category: Category, section: Section, *, actor: str) -> int:
    """File `category` (and its articles that were filed by it, or nowhere) under
    `section`; returns how many articles moved."""
    before = category.section_id
    category.section_id = section.id
    moved = session.execute(
        sa.update(Article)
        .where(Article.category_id == category.id,
               sa.or_(Article.section_id.is_(None), Article.section_id == before) if before else
               Article.section_id.is_(None))
        .values(section_id=section.id)
        .execution_options(synchronize_session=False)
    ).rowcount or 0
    session.flush()
    audit(session, actor, "category.map", f"category:{category.id}", category=category.name, section=section.slug,
          articles=moved)
    return moved


def section_by_slug_or_name(session: Session, value: str) -> Section | None:
    """`sports`, `رياضة`, `الرياضة`: whatever an operator types for a section."""
    value = (value or "").strip()
    if not value:
        return None
    found = session.scalar(sa.select(Section).where(sa.or_(Section.slug == value.lower(), Section.name == value)))
    if found is not None:
        return found
    slug = _ALIASES.get(match_key(value))
    return session.scalar(sa.select(Section).where(Section.slug == slug)) if slug else None


class CategoryMap:
    """Category name → (category id, section id), cached for one poll."""

    def __init__(self, session: Session):
        self.session = session
        self._cache: dict[str, tuple[int, int | None]] = {}
        self._sections: dict[str, int] | None = None

    def _section_ids(self) -> dict[str, int]:
        """slug → id, plus each section's name and slug as match keys → id."""
        if self._sections is None:
            rows = self.session.execute(sa.select(Section.id, Section.slug, Section.name)).all()
            found: dict[str, int] = {slug: id_ for id_, slug, _ in rows}
            for id_, slug, name in rows:
                for key in (match_key(name), match_key(slug)):
                    if key:
                        found.setdefault("=" + key, id_)
            self._sections = found
        return self._sections

    def _section_for(self, name: str) -> int | None:
        ids = self._section_ids()
        own = ids.get("=" + match_key(name))  # a section of the site's own by that name
        if own is not None:
            return own
        slug = _ALIASES.get(match_key(name))
        return ids.get(slug) if slug else None

    def resolve(self, raw_name: str) -> tuple[int, int | None] | None:
        name = clean_title(raw_name)[:200]
        if not name:
            return None
        if name in self._cache:
            return self._cache[name]
        row = self.session.execute(
            sa.select(Category.id, Category.section_id).where(Category.name == name)
        ).first()
        if row is None:
            row = self._insert(name, self._section_for(name))
        self._cache[name] = (row[0], row[1])
        return self._cache[name]

    def _insert(self, name: str, section_id: int | None):
        # ON CONFLICT DO NOTHING: two feeds introducing the same new category at the same
        # moment must not fail each other's poll.
        stmt = insert_ignoring(self.session, Category, ["name"])
        self.session.execute(stmt.values(name=name, section_id=section_id))
        return self.session.execute(
            sa.select(Category.id, Category.section_id).where(Category.name == name)
        ).one()
