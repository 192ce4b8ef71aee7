"""Readers: in bulk (import a CSV, with double opt-in for `pending` rows; export one), one
at a time (sign up from any form, take their data, be forgotten), and the hourly purge."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO

from sqlalchemy import select

from service.clicks import retention
from service.config import get_settings
from service.db import session_scope
from service.inbound import actions
from service.models import Section
from service.subscribers import challenge, choices, clocks, lifecycle, privacy
from service.subscribers.consent import Evidence
from service.subscribers.csvio import CHUNK, CsvError, CsvImport, ImportReport, export_csv
from service.subscribers.errors import InvalidInput
from service.subscribers.validation import (
    MSG_SECTION_UNKNOWN,
    normalise_email,
    section_ids,
)
from service.usecases import signups


def import_file(path: str, actor: str = "cli", *, chunk: int = CHUNK,
                progress: Callable[[ImportReport, int, int], None] | None = None) -> ImportReport:
    """Import readers from a CSV file, a chunk of rows per transaction: bad rows reported
    by line and skipped; the whole file refused before anything is written if its header
    breaks the contract (CsvError, OSError).  A file that cannot be read on later (a bad
    encoding, a broken quote) raises CsvError with `report` set: the chunks before it are
    committed, and a second run of the fixed file skips the readers already there.
    KeyboardInterrupt likewise, once the chunk being written is committed.
    Confirmations for `pending` rows are asked for as each chunk commits.
    `progress(report, bytes_read, bytes_total)` is called after each chunk.

    One thread writes a chunk while this one reads and checks the next (the database
    works while Python parses): at most two chunks are in memory, and a chunk is written
    only once the one before it is committed."""
    with open(path, "rb") as raw:
        total = os.fstat(raw.fileno()).st_size
        job = CsvImport(raw, chunk=chunk)
        try:
            with session_scope() as session:
                job.prepare(session)

            def write(rows) -> None:
                with session_scope(write=True) as session:
                    job.apply(session, rows)
                if progress is not None:
                    progress(job.report, raw.tell(), total)

            with ThreadPoolExecutor(1, thread_name_prefix="import-writer") as writer:
                in_flight: Future | None = None
                try:
                    for rows in job.chunks():
                        if in_flight is not None:
                            in_flight.result()
                        in_flight = writer.submit(write, rows)
                    if in_flight is not None:
                        in_flight.result()
                except (CsvError, KeyboardInterrupt) as exc:  # a file that breaks, or Ctrl-C
                    if in_flight is not None:
                        in_flight.result()  # the chunk being written is written whole
                    if job.report.chunks:
                        with session_scope() as session:
                            job.finish(session, actor, interrupted=True)
                        exc.report = job.report  # what is in: the caller says so
                    raise
            with session_scope() as session:
                return job.finish(session, actor)
        finally:
            job.close()


def export_to(out: IO[str]) -> int:
    """Write every subscribed reader in the import format; returns how many."""
    with session_scope() as session:
        return export_csv(session, out)


# ---------------------------------------------------------------- one reader

MSG_CONSENT = "نحتاج إلى موافقتك على تلقّي رسائلنا قبل الاشتراك."
MAX_SECTIONS = 100


@dataclass(frozen=True)
class SignupRequest:
    """What a signup form (ours, or a site's own through POST /api/subscribe) sent, raw."""

    email: object
    sections: list
    frequency: object
    alerts: object
    consented: bool
    digest_hour: object = None
    digest_weekday: object = None
    time_zone: object = None  # the reader's IANA zone (the browser's); empty: TIMEZONE
    challenge: object = None  # the proof of work, when SIGNUP_CHALLENGE is on
    solution: object = None
    newsletters: object = None  # slugs; None: `frequency` and `alerts` say (usecases/signups.py)


def new_challenge() -> dict | None:
    """A proof-of-work challenge for a signup form (None when SIGNUP_CHALLENGE is off)."""
    if not get_settings().signup_challenge:
        return None
    c = challenge.issue()
    return {"challenge": c.value, "bits": c.bits, "issued": c.issued, "expires_in": c.expires_in}


_SLUGS = select(Section.slug, Section.id)  # built once: the JSON API asks it on every signup


def _by_slug(session, raw: list) -> tuple[list[str], set[int] | None]:
    """Section ids or slugs (a site's own form knows its slugs) → ids, as text, and every
    section id when they were read (so the ids need no second query)."""
    if all(isinstance(item, int) and not isinstance(item, bool) for item in raw):
        return [str(item) for item in raw], None  # ids only: nothing to look up
    slugs = dict(session.connection().execute(_SLUGS).all())
    out = []
    for item in raw:
        if isinstance(item, int) and not isinstance(item, bool):
            out.append(str(item))
        elif isinstance(item, str) and (item.strip().isascii() and item.strip().isdigit()):
            out.append(item.strip())
        elif isinstance(item, str) and item.strip().lower() in slugs:
            out.append(str(slugs[item.strip().lower()]))
        else:
            raise InvalidInput("sections", MSG_SECTION_UNKNOWN)
    return out, set(slugs.values())


def sign_up(req: SignupRequest, *, source: str, evidence: Evidence, slugs: bool = False) -> lifecycle.SignupResult:
    """Validate, record the signup with its consent evidence, queue the double-opt-in mail
    after the commit.  Raises InvalidInput (nothing written); every other outcome — new,
    already subscribed, suppressed, capped — is the caller's same answer.  `slugs`:
    sections may be given by slug as well as by id (the JSON API)."""
    if not isinstance(req.sections, list) or len(req.sections) > MAX_SECTIONS:
        raise InvalidInput("sections", MSG_SECTION_UNKNOWN)
    email = normalise_email(req.email)
    asked = signups.wanted(req.newsletters, req.frequency, req.alerts)
    if not req.consented:
        raise InvalidInput("consent", MSG_CONSENT)
    hour, weekday = choices.digest_hour(req.digest_hour), choices.digest_weekday(req.digest_weekday)
    zone = clocks.check(req.time_zone)
    if get_settings().signup_challenge:  # last, so that a typo in the form does not spend the proof
        challenge.verify(req.challenge, req.solution)
    # write=True: a signup reads, then writes (on SQLite its transaction takes the write
    # lock first, so a concurrent signup's commit cannot fail it; PostgreSQL: no change).
    with session_scope(write=True) as session:
        # The lookups go on the session's Connection: the same transaction, without the
        # ORM's execute path (nothing here is an ORM object; half of a lookup's CPU).
        raw, known = _by_slug(session, req.sections) if slugs else (req.sections, None)
        chosen = section_ids(session.connection(), raw, known)
        newsletters = (signups.choose(session, asked) if asked is not None
                       else signups.choose(session, signups.legacy(req.frequency, req.alerts), legacy_words=True))
        return lifecycle.signup(session, email=email, picks=signups.picks(newsletters, chosen),
                                consent_source=source, digest_hour=hour, digest_weekday=weekday, evidence=evidence,
                                time_zone=zone)


def export_for(token: str) -> tuple[int, dict]:
    """The reader a preferences link names, and their data (raises BadToken)."""
    with session_scope() as session:
        sub = lifecycle.subscriber_for_token(session, "preferences", token)
        return sub.id, privacy.export_data(session, sub)


def forget_for(token: str) -> int:
    """Forget the reader a preferences link names (their own request); returns their id."""
    with session_scope() as session:
        sub = lifecycle.subscriber_for_token(session, "preferences", token, lock=True)
        return privacy.forget(session, sub, actor=f"subscriber:{sub.id}")


def forget_address(raw_email: str, actor: str = "cli") -> int | None:
    """`nashra subscribers forget EMAIL` (raises InvalidInput for what is not an address)."""
    email = normalise_email(raw_email)
    with session_scope() as session:
        return privacy.forget_address(session, email, actor=actor)


def purge(now: dt.datetime | None = None) -> privacy.PurgeReport:
    """Beat's hourly purge, one transaction per batch so that no lock is held for long."""
    total = privacy.PurgeReport()
    while True:
        with session_scope() as session:
            report = privacy.purge_batch(session, now)
        total.pending += report.pending
        total.unsubscribed += report.unsubscribed
        if report.pending < privacy.PURGE_BATCH and report.unsubscribed < privacy.PURGE_BATCH:
            break
    # Click counts and unique-click sketches past CLICK_DAYS (service/clicks/retention.py).
    with session_scope() as session:
        retention.forget_old(session, now=now)
    # Delivery reports past the soft-bounce window restart nothing any more (actions.py).
    while True:
        with session_scope() as session:
            gone = actions.forget_old_reports(session, now=now)
        if gone < actions.FORGET_BATCH:
            return total
