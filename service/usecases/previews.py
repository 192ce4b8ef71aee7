"""An edition as readers would get it, made, rendered and counted in a transaction that is
rolled back: a preview leaves no edition behind (an alert's dry run, a special edition's
preview).  It keeps a copy of the edition's newsletter (the row is rolled back with the
rest only if it was made there; a copy is read either way), so that a test copy carries
that newsletter's List-Id and From name as the real send will."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from service.config import get_settings
from service.db import session_factory
from service.delivery.planner import audience_by_variant
from service.editions.variants import render_variant_for
from service.models import Edition, Newsletter
from service.rendering.personalise import personalise


@dataclass(frozen=True)
class Unsaved:
    subject: str
    html: str  # the personal links point at the site's home page
    text: str
    audience: dict[str, int]  # readers per variant
    newsletter: Newsletter | None = None  # a detached copy of the edition's: its headers for a test copy


def detached(newsletter: Newsletter | None) -> Newsletter | None:
    """A copy of the fields the headers read (catalogue.list_id, from_header), bound to no
    session: it outlives the preview's rolled-back transaction."""
    if newsletter is None:
        return None
    return Newsletter(id=newsletter.id, slug=newsletter.slug, name=newsletter.name, kind=newsletter.kind,
                      frequency=newsletter.frequency, from_name=newsletter.from_name, list_id=newsletter.list_id)


def unsaved(make: Callable[[Session], Edition], error: type[Exception], nothing: str) -> Unsaved:
    """`make` the edition in a throwaway transaction, render its "all" variant and count
    its audience.  Raises `error` when it cannot be rendered (`nothing`: it renders empty);
    what `make` raises goes through."""
    session = session_factory()()
    try:
        edition = make(session)
        try:
            variant = render_variant_for(session, edition, "all")
        except ValueError as exc:
            raise error(str(exc)) from None
        counts = audience_by_variant(session, edition)
        newsletter_id = getattr(edition, "newsletter_id", None)
        newsletter = detached(session.get(Newsletter, newsletter_id)) if newsletter_id else None
    finally:
        session.rollback()
        session.close()
    if variant is None:
        raise error(nothing)
    home = get_settings().public_url + "/"
    html, text = personalise(variant, unsubscribe_url=home, preferences_url=home)
    return Unsaved(variant.subject, html, text, counts, newsletter)
