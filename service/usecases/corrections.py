"""Corrections an editor sends by hand (service/editions/correction_offers.py): what the
page offers, each with the exact number of readers it reaches, and sending one.

The count is the planner's: the correction is made, counted by `audience_by_variant`
and rolled back, so the page's number is who the mail reaches.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.config import get_settings
from service.db import session_factory, session_scope
from service.delivery.planner import audience_by_variant
from service.dispatch import Dispatcher, current
from service.editions import correction_offers
from service.logs import get_logger
from service.usecases import audience

log = get_logger(__name__)

OfferGone = correction_offers.OfferGone


@dataclass(frozen=True)
class OfferView:
    offer: correction_offers.Offer
    audience: int

    @property
    def reach(self) -> str:
        return audience.reach(self.audience)

    @property
    def readers(self) -> str:
        return audience.readers(self.audience)


def offers() -> list[OfferView]:
    session = session_factory()()
    try:
        out = []
        for offer in correction_offers.offers(session):
            with session.begin_nested() as savepoint:
                edition = correction_offers.create_correction(session, offer, actor="preview")
                reached = sum(audience_by_variant(session, edition).values())
                savepoint.rollback()
            out.append(OfferView(offer, reached))
        return out
    finally:
        session.rollback()  # counting leaves no edition behind
        session.close()


def send(article_id: int, version: int | None, *, actor: str, dispatcher: Dispatcher | None = None) -> int:
    """Create the offered correction and ask for its planning after commit; its id.
    Raises OfferGone when there is nothing (or no longer anything) to send, ConfigError
    without a POSTAL_ADDRESS in production."""
    get_settings().require_postal_address()
    dispatcher = dispatcher or current()
    with session_scope() as s:
        edition = correction_offers.send_offered(s, article_id, version, actor=actor)
        dispatcher.plan_edition(edition.id, edition.kind.value, session=s)
        edition_id = edition.id
    log.info("correction_sent_by_hand", edition_id=edition_id, article_id=article_id, actor=actor)
    return edition_id
