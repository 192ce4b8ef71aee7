"""Subscriber CSV import and export (the README's "Subscriber CSV" contract).

Columns: email (required), sections (names or slugs joined by "|"; empty = all),
frequency (daily|weekly|none), alerts (yes|no), status (active: consented elsewhere;
pending: we send a confirmation), consent_source, consented_at (ISO 8601).

An unknown column refuses the whole file before anything is written.  A bad row is
reported by its line number and skipped; the good rows go in.  A reader who left us
(unsubscribed) or whose address is suppressed is never re-added by an import: their
choice outranks an old list.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import unicodedata
from dataclasses import dataclass, field
from typing import IO

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.logs import get_logger
from service.models import (
    Frequency,
    Section,
    Subscriber,
    SubscriberStatus,
    Suppression,
    audit,
    utcnow,
)
from service.subscribers import hashes
from service.subscribers.errors import InvalidInput
from service.subscribers.mail import queue_transactional
from service.subscribers.validation import normalise_email

log = get_logger(__name__)

COLUMNS = ("email", "sections", "frequency", "alerts", "status", "consent_source", "consented_at")
CHUNK = 500
MAX_CONSENT_SOURCE = 200


class CsvError(ValueError):
    """The file as a whole cannot be imported (no header, unknown columns…)."""


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    confirmations: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line, why), skipped
    unknown_sections: list[str] = field(default_factory=list)  # as the file wrote them, once each
    known_sections: list[str] = field(default_factory=list)  # "name (slug)", in the site's order

    @property
    def skipped(self) -> int:
        return len(self.problems)

    def summary(self) -> str:
        head = (f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged, "
                f"{self.skipped} skipped, {self.confirmations} confirmation(s) queued")
        lines = [head, *(f"line {line}: {why}" for line, why in self.problems)]
        if self.unknown_sections:
            known = ", ".join(self.known_sections) or "none yet (add them with `nashra sections add NAME`)"
            lines.append(f"unknown section(s): {', '.join(repr(u) for u in self.unknown_sections)}; "
                         f"the sections are: {known}")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Row:
    line: int
    email: str
    sections: list[int]
    frequency: Frequency
    alerts: bool
    status: SubscriberStatus
    consent_source: str
    consented_at: dt.datetime


def _text_stream(fileobj: IO) -> IO[str]:
    sample = fileobj.read(0)
    if isinstance(sample, bytes):
        # utf-8-sig: spreadsheets save Arabic CSV with a byte-order mark.  newline=""
        # leaves line breaks inside quoted fields to the csv module, as it requires.
        return io.TextIOWrapper(fileobj, encoding="utf-8-sig", newline="")
    return fileobj


def _section_lookup(session: Session) -> dict[str, int]:
    """A section's name or slug as a file may write it → its id: its slug in any case, its
    name with any spacing (NFC: a spreadsheet may have decomposed the letters)."""
    names: dict[str, int] = {}
    for sec in session.scalars(select(Section).order_by(Section.position, Section.id)):
        names[sec.name.strip()] = sec.id
        names[sec.slug.strip().lower()] = sec.id
        names.setdefault("=" + _name_key(sec.name), sec.id)
    return names


def _name_key(value: str) -> str:
    return " ".join(unicodedata.normalize("NFC", value).casefold().split())


class UnknownSection(InvalidInput):
    def __init__(self, value: str):
        super().__init__("sections", f"unknown section {value!r}")
        self.value = value


def _parse_sections(raw: str, lookup: dict[str, int]) -> list[int]:
    out: list[int] = []
    for part in (p.strip() for p in raw.split("|")):
        if not part:
            continue
        sid = lookup.get(part) or lookup.get(part.lower()) or lookup.get("=" + _name_key(part))
        if sid is None:
            raise UnknownSection(part)
        if sid not in out:
            out.append(sid)
    return out


def _parse_when(raw: str, now: dt.datetime) -> dt.datetime:
    if not raw:
        return now
    try:
        when = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput("consented_at", f"not an ISO 8601 time: {raw[:40]!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)  # documented: a time without an offset is UTC
    if when > now + dt.timedelta(days=1):
        raise InvalidInput("consented_at", "is in the future")
    return when


def _parse_row(line: int, rec: dict, lookup: dict[str, int], now: dt.datetime) -> _Row:
    get = lambda k: undefuse((rec.get(k) or "").strip())  # noqa: E731
    try:
        email = normalise_email(get("email"))
    except InvalidInput:
        raise InvalidInput("email", "missing or not a valid address") from None
    freq = get("frequency").lower() or "daily"
    if freq not in {f.value for f in Frequency}:
        raise InvalidInput("frequency", f"must be daily, weekly or none, not {freq[:20]!r}")
    alerts = get("alerts").lower() or "yes"
    if alerts not in ("yes", "no"):
        raise InvalidInput("alerts", f"must be yes or no, not {alerts[:20]!r}")
    status = get("status").lower() or "pending"
    if status not in ("active", "pending"):
        raise InvalidInput("status", f"must be active or pending, not {status[:20]!r}")
    source = get("consent_source") or "import"
    if len(source) > MAX_CONSENT_SOURCE:
        raise InvalidInput("consent_source", f"longer than {MAX_CONSENT_SOURCE} characters")
    if any(c == "\x00" or "\ud800" <= c <= "\udfff" or (unicodedata.category(c) == "Cc" and c not in "\t\r\n")
           for c in source):  # PostgreSQL text holds no NUL; the rest is no one's consent record
        raise InvalidInput("consent_source", "contains a control character")
    return _Row(
        line=line,
        email=email,
        sections=_parse_sections(get("sections"), lookup),
        frequency=Frequency(freq),
        alerts=alerts == "yes",
        status=SubscriberStatus(status),
        consent_source=source,
        consented_at=_parse_when(get("consented_at"), now),
    )


def _apply(session: Session, rows: list[_Row], report: ImportReport, now: dt.datetime) -> None:
    emails = [r.email for r in rows]
    existing = {s.email: s for s in session.scalars(select(Subscriber).where(Subscriber.email.in_(emails)))}
    suppressed = set(session.scalars(select(Suppression.email).where(Suppression.email.in_(emails))))
    # A reader who asked to be forgotten, or left long ago, is kept only as a keyed hash.
    forgotten = hashes.hashed_among(session, [e for e in emails if e not in existing])
    for row in rows:
        if row.email in suppressed:
            report.problems.append((row.line, "address is on the suppression list; not imported"))
            continue
        if row.email in forgotten:
            report.problems.append((row.line, "this reader asked to be forgotten or unsubscribed; an import does "
                                              "not add them back"))
            continue
        sub = existing.get(row.email)
        if sub is None:
            sub = Subscriber(
                email=row.email,
                status=row.status,
                sections=row.sections,
                frequency=row.frequency,
                alerts=row.alerts,
                consent_source=row.consent_source,
                consented_at=row.consented_at,
                confirmed_at=now if row.status is SubscriberStatus.active else None,
            )
            session.add(sub)
            session.flush()
            report.created += 1
            if row.status is SubscriberStatus.pending:
                queue_transactional(session, "confirm", sub.id)
                report.confirmations += 1
            continue
        if sub.status is SubscriberStatus.unsubscribed:
            report.problems.append((row.line, "this reader unsubscribed; an import does not re-add them"))
            continue
        before = (list(sub.sections or []), sub.frequency, sub.alerts, sub.status)
        sub.sections, sub.frequency, sub.alerts = row.sections, row.frequency, row.alerts
        if sub.status is SubscriberStatus.pending and row.status is SubscriberStatus.active:
            sub.status = SubscriberStatus.active
            sub.confirmed_at = now
            sub.consent_source, sub.consented_at = row.consent_source, row.consented_at
        if (list(sub.sections or []), sub.frequency, sub.alerts, sub.status) == before:
            report.unchanged += 1
        else:
            report.updated += 1


def import_csv(session: Session, fileobj: IO, *, actor: str = "cli", now: dt.datetime | None = None) -> ImportReport:
    """Import readers from a CSV file (text or binary).  The caller commits.

    Raises CsvError if the file cannot be read as the contract says; the caller's
    transaction must then roll back (session_scope does), so nothing is written.
    Otherwise bad rows are listed in the report and skipped.
    """
    now = now or utcnow()
    stream = _text_stream(fileobj)
    try:
        return _import(session, stream, actor=actor, now=now)
    finally:
        if stream is not fileobj:
            stream.detach()  # the caller's file stays open: it is theirs to close


def _import(session: Session, stream: IO[str], *, actor: str, now: dt.datetime) -> ImportReport:
    reader = csv.DictReader(stream)
    try:
        header = reader.fieldnames
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CsvError(f"cannot read the header row ({exc}); save the file as UTF-8 CSV") from None
    if not header:
        raise CsvError("the file is empty: a header row is required")
    cleaned = [h.strip().lower() for h in header]
    unknown = [h for h in cleaned if h not in COLUMNS]
    if unknown:
        raise CsvError(f"unknown column(s): {', '.join(repr(h) for h in unknown)}; allowed: {', '.join(COLUMNS)}")
    if "email" not in cleaned:
        raise CsvError("the header row has no 'email' column")
    if len(set(cleaned)) != len(cleaned):
        raise CsvError("a column appears twice in the header row")
    reader.fieldnames = cleaned

    report = ImportReport()
    lookup = _section_lookup(session)
    seen: dict[str, int] = {}
    batch: list[_Row] = []
    try:
        for rec in reader:
            line = reader.line_num
            if None in rec:
                report.problems.append((line, "more fields than the header has"))
                continue
            if not any((v or "").strip() for v in rec.values()):
                continue  # a blank line
            try:
                row = _parse_row(line, rec, lookup, now)
            except InvalidInput as exc:
                report.problems.append((line, f"{exc.field}: {exc.message}"))
                if isinstance(exc, UnknownSection) and exc.value not in report.unknown_sections:
                    report.unknown_sections.append(exc.value[:100])
                continue
            if row.email in seen:
                report.problems.append((line, f"same address as line {seen[row.email]}"))
                continue
            seen[row.email] = line
            batch.append(row)
            if len(batch) >= CHUNK:
                _apply(session, batch, report, now)
                batch = []
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CsvError(f"line {reader.line_num}: cannot read the file ({exc}); save it as UTF-8 CSV") from None
    if batch:
        _apply(session, batch, report, now)
    if report.unknown_sections:
        report.known_sections = [f"{sec.name} ({sec.slug})" for sec in
                                 session.scalars(select(Section).order_by(Section.position, Section.id))]
    audit(session, actor, "subscribers_import", None, created=report.created, updated=report.updated,
          skipped=report.skipped)
    log.info("subscribers_imported", created=report.created, updated=report.updated,
             unchanged=report.unchanged, skipped=report.skipped, confirmations=report.confirmations)
    return report


def export_csv(session: Session, fileobj: IO[str], *, include_unsubscribed: bool = False) -> int:
    """Write readers as CSV in the import format; returns the number of rows.

    Unsubscribed readers are left out by default, so that an export can be imported
    again (the contract's status column knows only active and pending).
    """
    slugs = {s.id: s.slug for s in session.scalars(select(Section))}
    writer = csv.writer(fileobj, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    query = select(Subscriber).order_by(Subscriber.id)
    if not include_unsubscribed:
        query = query.where(Subscriber.status != SubscriberStatus.unsubscribed)
    count = 0
    for sub in session.scalars(query.execution_options(yield_per=1000)):
        writer.writerow([defuse(cell) for cell in (
            sub.email,
            "|".join(slugs[i] for i in (sub.sections or []) if i in slugs),
            sub.frequency.value,
            "yes" if sub.alerts else "no",
            sub.status.value,
            sub.consent_source or "",
            sub.consented_at.isoformat() if sub.consented_at else "",
        )])
        count += 1
    log.info("subscribers_exported", rows=count)
    return count


# A cell a spreadsheet would run as a formula (CSV injection): = + - @, and tab or CR,
# which some spreadsheets skip before looking for one.  `=1+2@example.org` is a valid
# address, so no column is safe by its contents.  Such a cell is written with a leading
# apostrophe (text, for the spreadsheet); so is a cell that already starts with an
# apostrophe followed by one of them, so that `undefuse` (the import) gives back exactly
# what was exported.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _looks_defused(value: str) -> bool:
    return value[:1] == "'" and (value[1:2] in FORMULA_START or value[1:2] == "'")


def defuse(value: str) -> str:
    return "'" + value if value[:1] in FORMULA_START or _looks_defused(value) else value


def undefuse(value: str) -> str:
    return value[1:] if _looks_defused(value) else value


__all__ = ["COLUMNS", "CsvError", "ImportReport", "defuse", "export_csv", "import_csv", "undefuse"]
