"""Digests and corrections: make the edition, then hand it to the planner."""

from __future__ import annotations

from service.db import session_scope
from service.dispatch import Dispatcher, current
from service.editions.corrections import create_corrections
from service.editions.digests import create_digest
from service.logs import get_logger

log = get_logger(__name__)


def start_digest(frequency: str, *, scheduled: bool, dispatcher: Dispatcher | None = None) -> int | None:
    """Create the digest edition and ask for its planning once it is committed."""
    dispatcher = dispatcher or current()
    with session_scope() as session:
        edition, created = create_digest(session, frequency, scheduled=scheduled)
        if edition is None:
            log.info("digest.empty", frequency=frequency)
            return None
        if created:
            dispatcher.plan_edition(edition.id, edition.kind.value, session=session)
            log.info("digest.created", edition_id=edition.id, frequency=frequency, articles=len(edition.articles))
        else:
            log.info("digest.exists", edition_id=edition.id, frequency=frequency)
        return edition.id


def make_corrections(dispatcher: Dispatcher | None = None) -> list[int]:
    """Correction editions for recent major updates, each planned after the commit.

    A draft whose planning message is lost is planned by the sweeper."""
    dispatcher = dispatcher or current()
    with session_scope() as session:
        editions = create_corrections(session)
        for edition in editions:
            dispatcher.plan_edition(edition.id, edition.kind.value, session=session)
        return [e.id for e in editions]
