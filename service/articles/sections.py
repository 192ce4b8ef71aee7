"""The site's sections, with stable slugs, and the mapping of feed categories onto them.

Slugs are the stable identity (subscribers' choices and URLs refer to them); names are
what readers see.  Feeds name categories however their CMS does ("عربي ودولي", "World",
"الرياضة"): a category is recorded the first time it is seen, mapped onto a section when
one of the aliases below matches, and left unmapped — but kept — when none does, so an
operator can map it later (UPDATE categories SET section_id = …) without losing history.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.articles.text import clean_title, match_key
from service.db import insert_ignoring
from service.models import Category, Section


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
        if self._sections is None:
            self._sections = {slug: id_ for id_, slug in self.session.execute(sa.select(Section.id, Section.slug))}
        return self._sections

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
            slug = _ALIASES.get(match_key(name))
            section_id = self._section_ids().get(slug) if slug else None
            row = self._insert(name, section_id)
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
