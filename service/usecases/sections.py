"""Sections and the feeds' categories, for admins (the page) and operators (`nashra sections …`).

Every change is one transaction and one audit line; SectionError says why one is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.articles import sections as domain
from service.db import session_scope
from service.logs import get_logger

log = get_logger(__name__)

SectionError = domain.SectionError


@dataclass(frozen=True)
class Overview:
    sections: list[domain.SectionRow]
    every_section_readers: int  # confirmed readers with no list of their own: every section
    unmapped: list[domain.UnmappedCategory]


def overview() -> Overview:
    with session_scope() as s:
        return Overview(domain.section_rows(s), domain.every_section_readers(s), domain.unmapped_categories(s))


def add(name: str, slug: str | None = None, *, actor: str) -> domain.SectionRow:
    with session_scope() as s:
        section = domain.add_section(s, name, slug or None, actor=actor)
        row = domain.SectionRow(section.id, section.slug, section.name, section.position, False, 0, 0, 0)
    log.info("section_added", section_id=row.id, actor=actor)
    return row


def rename(which: str | int, name: str, slug: str | None = None, *, actor: str) -> tuple[str, str]:
    """(new name, slug)."""
    with session_scope() as s:
        section = domain.rename_section(s, domain.find_section(s, which), name, slug or None, actor=actor)
        return section.name, section.slug


def hide(which: str | int, hidden: bool = True, *, actor: str) -> tuple[str, bool]:
    """(the section's name, whether this changed anything)."""
    with session_scope() as s:
        section = domain.find_section(s, which)
        return section.name, domain.set_hidden(s, section, hidden, actor=actor)


def order(first: list[str | int], *, actor: str) -> list[str]:
    """Put these sections first, in this order; returns every section's slug in the new order."""
    with session_scope() as s:
        wanted = [domain.find_section(s, w) for w in first]
        return [x.slug for x in domain.reorder(s, wanted, actor=actor)]


def move(which: str | int, step: int, *, actor: str) -> None:
    with session_scope() as s:
        domain.move(s, domain.find_section(s, which), step, actor=actor)


def map_category(category: str | int, section: str | int, *, actor: str) -> tuple[str, str, int]:
    """(category name, section name, articles re-filed)."""
    with session_scope() as s:
        cat = domain.find_category(s, category)
        sec = domain.find_section(s, section)
        moved = domain.map_category(s, cat, sec, actor=actor)
        return cat.name, sec.name, moved
