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
from service.delivery.compose import newsletter_of_edition
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
    newsletter: Newsletter | None = None  # the edition's (compose.newsletter_of_edition): a test copy's headers


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
        # Read before the rollback, as a copy bound to no session: its headers for a test copy.
        newsletter = newsletter_of_edition(session, edition.id)
    finally:
        session.rollback()
        session.close()
    if variant is None:
        raise error(nothing)
    home = get_settings().public_url + "/"
    html, text = personalise(variant, unsubscribe_url=home, preferences_url=home)
    return Unsaved(variant.subject, html, text, counts, newsletter)
