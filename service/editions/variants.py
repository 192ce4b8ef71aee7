"""Render an edition once per audience variant.

A digest's variant is the reader's ordered list of section ids as stored on the
subscriber (JSON text, "all" for every section), prefixed with ALERTED_PREFIX for
readers with breaking alerts on when the digest carries stories an alert already mailed
(those readers get them in a short «فاتك؟» block instead of in full).  The delivery
planner builds the key (`planner._variant_expr`) and calls `render_variant_for` once per
distinct variant of an edition; per recipient only the links are filled in afterwards.
"""

from __future__ import annotations

import json
import math

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.config import get_settings
from service.editions.article_view import article_view
from service.editions.catchup import render_catchup
from service.editions.digests import alerted_article_ids
from service.editions.special import render_special
from service.editions.web_copy import url_for as web_copy_url_for
from service.logs import get_logger
from service.models import Edition, EditionKind, Newsletter, Section, utcnow
from service.newsletters import catalogue
from service.rendering import contexts
from service.rendering.render import render_variant
from service.rendering.viewmodels import ArticleView, RenderedVariant, SectionView

log = get_logger(__name__)

# Gmail clips a message's HTML at about 102 KB, hiding everything after the cut,
# the footer's unsubscribe link included (docs/email-rules.md: stay under 100 KB of HTML).
HTML_BUDGET_BYTES = 95_000
# A digest variant for readers who get breaking alerts: "a:" + the sections key.
ALERTED_PREFIX = "a:"


def split_variant(variant: str) -> tuple[str, bool]:
    """(the sections key, whether its readers had alerts on): "a:[3, 1]" → ("[3, 1]", True)."""
    if variant.startswith(ALERTED_PREFIX):
        return variant[len(ALERTED_PREFIX) :], True
    return variant, False


def parse_variant(variant: str) -> list[int] | None:
    """None means every section, in the site's order."""
    if variant in ("", "all", "[]", "null"):
        return None
    try:
        ids = json.loads(variant)
    except ValueError:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        return None
    return ids or None


def _digest_sections(session: Session, edition: Edition, variant: str) -> list[SectionView]:
    wanted = parse_variant(variant)
    all_sections = session.scalars(select(Section).order_by(Section.position, Section.id)).all()
    order = wanted if wanted is not None else [s.id for s in all_sections]
    by_id = {s.id: s for s in all_sections}
    grouped: dict[int | None, list] = {}
    for ea in edition.articles:
        grouped.setdefault(ea.article.section_id, []).append(article_view(ea.article, updated=ea.updated))
    sections = []
    for section_id in order:
        section = by_id.get(section_id)
        if section is not None and grouped.get(section_id):
            sections.append(SectionView(slug=section.slug, name=section.name, articles=tuple(grouped[section_id])))
    if wanted is None and grouped.get(None):  # articles no section claims still reach "all" readers
        sections.append(SectionView(slug="other", name="منوعات", articles=tuple(grouped[None])))
    return sections


NEWSLETTER_WORD = "النشرة "  # the templates say «النشرة <label>»


def _newsletter_label(session: Session, edition: Edition) -> str | None:
    """What a digest of a newsletter other than the site's own two calls itself in its
    subject, masthead and footer («النشرة <label>»): its name, less a leading «النشرة».
    None for `daily` and `weekly` (and a digest of none), whose label is their cadence's."""
    if edition.newsletter_id is None:
        return None
    newsletter = session.get(Newsletter, edition.newsletter_id)
    if newsletter is None or newsletter.slug in (catalogue.DAILY, catalogue.WEEKLY):
        return None
    return newsletter.name.removeprefix(NEWSLETTER_WORD).strip() or newsletter.name


def _named(ctx: dict, label: str | None) -> dict:
    """The digest's context speaking of its newsletter by name rather than by cadence (a
    Friday sports round-up is not «the weekly digest»)."""
    if label is None:
        return ctx
    old = NEWSLETTER_WORD + ctx["frequency_label"]
    return ctx | {"frequency_label": label, "reason": ctx["reason"].replace(old, NEWSLETTER_WORD + label, 1)}


def _drop_from_longest(sections: list[SectionView], keep: set[int], n: int) -> list[SectionView] | None:
    """`sections` less `n` articles, each taken from the end of the longest section.

    Articles in `keep` (the lead, the first section's first article) never go, and a
    section loses its last article only once no section has two.  None when nothing
    may be dropped.
    """
    lists: list[list[ArticleView]] = [list(s.articles) for s in sections]
    dropped = 0
    while dropped < n:
        droppable = [i for i, arts in enumerate(lists) if any(a.id not in keep for a in arts)]
        if not droppable:
            break
        # The longest section; among equals the later one, so the reader's first
        # choices keep the most.
        i = max(droppable, key=lambda j: (len(lists[j]), j))
        arts = lists[i]
        k = max(j for j, a in enumerate(arts) if a.id not in keep)
        del arts[k]
        dropped += 1
    if not dropped:
        return None
    return [
        SectionView(slug=s.slug, name=s.name, articles=tuple(arts))
        for s, arts in zip(sections, lists, strict=True)
        if arts
    ]


def render_variant_for(session: Session, edition: Edition, variant: str,
                       report: dict | None = None) -> RenderedVariant | None:
    """`report` (the digest preview's): filled, for a digest, with the sections offered
    before the size budget, those kept, the lead and the HTML's size."""
    settings = get_settings()
    site = contexts.site_view(settings)
    # «اعرض في المتصفح»: one link per variant, nobody's token in it.  A preview's edition
    # that was never flushed has no id, hence no copy to link to.
    web: dict = {"web_copy_url": web_copy_url_for(edition.id, variant)} if edition.id is not None else {}
    if edition.kind == EditionKind.digest:
        key, with_alerts = split_variant(variant)
        sections = _digest_sections(session, edition, key)
        if not sections:
            return None  # nothing in this reader's sections today
        alerted = alerted_article_ids(session, edition) if with_alerts else set()
        lead = contexts.choose_lead(sections, alerted=alerted)
        edition_date = edition.window_end or edition.created_at or utcnow()
        frequency = edition.frequency.value if edition.frequency else "daily"
        keep = {lead.id, sections[0].articles[0].id}
        label = _newsletter_label(session, edition)
        total = sum(len(s.articles) for s in sections)
        offered = sections
        while True:
            ctx = _named(contexts.digest_context(site, sections, edition_date=edition_date, frequency=frequency,
                                                 lead=lead, alerted=alerted), label) | web
            rendered = render_variant("digest", ctx)
            size = len(rendered.html.encode("utf-8"))
            count = sum(len(s.articles) for s in sections)
            if size <= HTML_BUDGET_BYTES:
                break
            # Drop about as many articles as the excess is worth, then measure again.
            excess = math.ceil((size - HTML_BUDGET_BYTES) * count / size)
            trimmed = _drop_from_longest(sections, keep, max(1, excess))
            if trimmed is None:
                break  # nothing left that may go: send it as it is
            sections = trimmed
        if report is not None:
            report.update(offered=offered, kept=sections, lead=lead, alerted=alerted, html_bytes=size)
        if count < total:
            log.warning(
                "digest_trimmed_for_size",
                edition_id=edition.id,
                dropped=total - count,
                kept=count,
                html_bytes=size,
            )
        return rendered
    if edition.kind == EditionKind.alert:
        p = edition.params
        article = article_view(edition.articles[0].article) if edition.articles else None
        ctx = contexts.alert_context(
            site,
            headline=p["headline"],
            url=p["url"],
            summary=p.get("summary", ""),
            article=article,  # an alert of an article carries its caption, times and read-also links
            sent_at=edition.send_at or edition.created_at or utcnow(),  # a scheduled alert: its time, not its making
        ) | web
        return render_variant("alert", ctx)
    if edition.kind == EditionKind.correction:
        if not edition.articles:
            return None
        ctx = contexts.correction_context(
            site, article=article_view(edition.articles[0].article, updated=True), note=edition.params.get("note", "")
        ) | web
        return render_variant("correction", ctx)
    if edition.kind == EditionKind.catchup:  # the alerts a reader's quiet hours held
        return render_catchup(session, edition, variant, extra=web)
    if edition.kind == EditionKind.special:  # an editor's own edition: one copy for every reader
        return render_special(edition, extra=web)
    raise ValueError(f"unknown edition kind {edition.kind}")
