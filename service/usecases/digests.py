"""Digests, catch-ups and corrections: make the edition, then hand it to the planner."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from service.config import ConfigError, get_settings
from service.db import session_scope
from service.dispatch import Dispatcher, current
from service.editions import schedule
from service.editions.catchup import create_catchup
from service.editions.corrections import create_corrections
from service.editions.digests import DigestError, create_digest, digest_newsletter
from service.editions.keys import existing
from service.logs import get_logger
from service.models import Edition, utcnow

log = get_logger(__name__)


def _postal_address_set(what: str) -> bool:
    """Beat's and the worker's editions: without a POSTAL_ADDRESS in production, none is
    made, and the log says why (each time: it is a setting to fix, not a passing fault)."""
    try:
        get_settings().require_postal_address()
    except ConfigError as exc:
        log.error("edition.refused", what=what, reason=str(exc))
        return False
    return True


def start_digest(newsletter: str, *, scheduled: bool, dispatcher: Dispatcher | None = None) -> int | None:
    """Create the digest edition of `newsletter` (its slug, or a frequency: `daily` /
    `weekly`, the site's own) and ask for its planning once it is committed.

    Raises ConfigError (nothing made) without a POSTAL_ADDRESS in production, and
    DigestError for a newsletter that is not a visible digest."""
    get_settings().require_postal_address()
    dispatcher = dispatcher or current()
    # Reads the articles, then writes the edition: on SQLite (the demo) the write lock is
    # taken up front, or a worker's commit in between fails it with "database is locked".
    with session_scope(write=True) as session:
        found = digest_newsletter(session, newsletter)
        what = {"newsletter": found.slug, "frequency": found.frequency.value}
        edition, created = create_digest(session, found, scheduled=scheduled)
        if edition is None:
            log.info("digest.empty", **what)
            return None
        if created:
            dispatcher.plan_edition(edition.id, edition.kind.value, session=session)
            log.info("digest.created", edition_id=edition.id, articles=len(edition.articles), **what)
        else:
            log.info("digest.exists", edition_id=edition.id, **what)
        return edition.id


def make_corrections(dispatcher: Dispatcher | None = None) -> list[int]:
    """Correction editions for recent major updates, each planned after the commit.

    A draft whose planning message is lost is planned by the sweeper."""
    if not _postal_address_set("corrections"):
        return []
    dispatcher = dispatcher or current()
    with session_scope(write=True) as session:  # reads, then writes (see start_digest)
        editions = create_corrections(session)
        for edition in editions:
            dispatcher.plan_edition(edition.id, edition.kind.value, session=session)
        return [e.id for e in editions]


def send_due(now: dt.datetime | None = None, dispatcher: Dispatcher | None = None) -> list[int]:
    """Beat's tick (every DIGEST_CHECK_SECONDS): the digest of every slot of every visible
    digest newsletter that is due and not yet made (service/editions/schedule.py), then
    this hour's catch-up of held alerts.

    Each slot in its own transaction, keyed on the slot and its date, so ticks that
    overlap (two beats, a tick run late after an outage, `nashra digest send`) make one
    edition; a slot due while workers were down is still due when they come back, up to
    DIGEST_MAX_LATE_HOURS.  Returns the ids of the editions it made.
    """
    if not _postal_address_set("digests-due"):
        return []  # the slots stay due (up to DIGEST_MAX_LATE_HOURS) until POSTAL_ADDRESS is set
    dispatcher = dispatcher or current()
    now = now or utcnow()
    made: list[int] = []
    with session_scope() as session:
        slots = schedule.due_slots(now, newsletters=schedule.digest_refs(session))
        # A slot's digest made under its site-clock key before slots were UTC instants counts.
        taken = set(session.scalars(select(Edition.idempotency_key).where(
            Edition.idempotency_key.in_([k for slot in slots for k in (slot.key, slot.legacy_key)])))) if slots else set()
        slots = schedule.with_readers(session, [s for s in slots if s.key not in taken and s.legacy_key not in taken],
                                      now)
    for slot in slots:
        with session_scope(write=True) as session:  # reads, then writes (see start_digest)
            if existing(session, slot.key) is not None or not schedule.has_readers(session, slot, now):
                continue
            due = slot.due()
            try:
                edition, created = create_digest(session, slot.newsletter, now=due, scheduled=True, slot=slot)
            except DigestError as exc:  # hidden (or made no digest) since this tick read the list
                log.info("digest.skipped", newsletter=slot.newsletter.slug, slot=slot.key, reason=str(exc))
                continue
            if edition is None:
                if now - due < dt.timedelta(seconds=2 * get_settings().digest_check_seconds):  # said once, not every tick
                    log.info("digest.empty", newsletter=slot.newsletter.slug, frequency=slot.frequency.value,
                             slot=slot.key)
                continue
            if created:
                dispatcher.plan_edition(edition.id, edition.kind.value, session=session)
                made.append(edition.id)
                log.info("digest.created", edition_id=edition.id, newsletter=slot.newsletter.slug, slot=slot.key,
                         articles=len(edition.articles),
                         late_seconds=round((now - due).total_seconds()))
    with session_scope() as session:
        edition, created = create_catchup(session, now)
        if edition is not None and created:
            dispatcher.plan_edition(edition.id, edition.kind.value, session=session)
            made.append(edition.id)
            log.info("catchup.created", edition_id=edition.id, alerts=len(edition.params.get("alerts", [])))
    return made
