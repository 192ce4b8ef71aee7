"""Subscriber CSV import and export (the README's "Subscriber CSV" contract).

Columns: email (required), sections (names or slugs joined by "|"; empty = all),
frequency (daily|weekly|none), alerts (yes|no), status (active: consented elsewhere;
pending: we send a confirmation), consent_source, consented_at (ISO 8601), time_zone (the
reader's IANA zone, service/subscribers/clocks.py; empty: TIMEZONE for a new reader, left
as it is for one already here), newsletters (slugs joined by "|").

Which newsletters a row puts its reader on (service/newsletters/): those its
`newsletters` cell names — an unknown or retired (hidden) one makes the row an error —
or, when the cell is empty or the column absent, what `frequency` and `alerts` meant
before there were several: `daily` or `weekly`, and `alerts` (catalogue.legacy_slugs).
`sections` go to the digest newsletters of the row (among a newsletter's own sections,
when it has some).  A reader already here is put on exactly the newsletters the row
speaks of, among those it may speak of: every visible newsletter for a `newsletters`
cell, the first three for `frequency`/`alerts`; their other subscriptions (a retired
newsletter's, one a legacy row cannot name) are left as they are, and the choices of
those they keep (digest hour, quiet hours…) too, but their sections, which the row sets.

An unknown column refuses the whole file before anything is written.  A bad row is
reported by its line number and skipped; the good rows go in.  A reader who left us
(unsubscribed) or whose address is suppressed is never re-added by an import: their
choice outranks an old list.

The export of another newsletter tool is read as it is (README, "Moving in"): a listmonk
export (email, name, attributes, status, …) or a Mailchimp one ("Email Address",
OPTIN_TIME, …, one file per kind: subscribed, unsubscribed, cleaned).  Its email column,
its status and its consent time are read; the columns that mean nothing here are listed
in the report and ignored.

The import goes at the speed of the database: the file is read as a stream, in chunks
of CHUNK rows; each chunk is validated in Python, then its addresses are looked up with
one query per table (readers, the suppression list, the keyed hashes) and written with
one multi-row INSERT … ON CONFLICT DO NOTHING per table.  `import_csv` leaves the
transaction to its caller; `CsvImport` lets the caller (the use-case) commit each chunk,
so memory stays bounded whatever the file's size and an interrupted import keeps what
it committed: run the same file again and the readers already there are skipped.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import threading
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, NamedTuple

import sqlalchemy as sa
from email_validator import SPECIAL_USE_DOMAIN_NAMES
from sqlalchemy import select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from service import dispatch
from service.db import insert_ignoring
from service.logs import get_logger
from service.models import (
    Consent,
    Frequency,
    NewsletterKind,
    Section,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SuppressedHash,
    Suppression,
    audit,
    utcnow,
)
from service.newsletters import catalogue
from service.subscribers import clocks, hashes
from service.subscribers.consent import ip_for_record
from service.subscribers.errors import InvalidInput
from service.subscribers.validation import MAX_EMAIL_LENGTH, MAX_LOCAL_PART, normalise_email

log = get_logger(__name__)

# `newsletters` last: a consumer of the older export that reads columns by place still can.
COLUMNS = ("email", "sections", "frequency", "alerts", "status", "consent_source", "consented_at", "time_zone",
           "newsletters")
CHUNK = 5000  # rows per chunk: one lookup and one INSERT per table, one commit (use-case)
MAX_CONSENT_SOURCE = 200
MAX_LISTED = 1000  # bad rows listed by line in the report; the rest are counted
MAX_UNKNOWN_SECTIONS = 50
MAX_NEWSLETTERS = 100  # slugs in one cell: no site has more; a longer cell is a broken file

# listmonk's export: uuid, email, name, attributes, status (enabled|disabled|blocklisted),
# created_at, updated_at — and, from a list's view, the subscription's status and time.
LISTMONK = ("id", "uuid", "name", "attributes", "created_at", "updated_at", "subscription_status",
            "subscription_created_at", "lists")
# Mailchimp's export: one file per kind; the kind shows in its columns.
MAILCHIMP_EMAIL = "email address"
MAILCHIMP_TIMES = ("confirm_time", "optin_time")  # the confirmation first: that is the consent
MAILCHIMP_IPS = ("confirm_ip", "optin_ip")
MAILCHIMP_KIND = (("clean_time", "cleaned"), ("unsub_time", "unsubscribed"))
# A foreign status (either tool's, or the import's own) → what becomes of the row here:
# active/pending (a reader), unsubscribed (kept as a keyed hash: never imported, may sign
# up again themselves), suppressed (on the suppression list), skip (left out, counted).
FOREIGN_STATUS = {
    "active": "active", "pending": "pending",
    "subscribed": "active", "enabled": "active", "confirmed": "active",
    "unconfirmed": "pending",
    "unsubscribed": "unsubscribed",
    "cleaned": "suppressed", "blocklisted": "suppressed", "blacklisted": "suppressed",
    "disabled": "skip", "archived": "skip", "transactional": "skip", "nonsubscribed": "skip",
}
SUPPRESS_REASON = {"cleaned": "hard_bounce", "blocklisted": "manual", "blacklisted": "manual"}
FOREIGN_NOTES = {
    "unsubscribed": "unsubscribed in {source}: not imported; kept as a keyed hash so that no import adds them",
    "suppressed": "{status} in {source}: not imported; on the suppression list",
    "skip": "{status} in {source}: not imported",
    "known": "unsubscribed or suppressed in {source}: already known here as such",
}

# PostgreSQL: each chunk goes into temporary tables by COPY (binary: psycopg's C code
# formats the rows), and every lookup and write is one statement joined to them, so that
# a statement's text and plan do not grow with the chunk.
# ON COMMIT DELETE ROWS: no address outlives its chunk's transaction in a pooled connection.
PG_TEMP = """
CREATE TEMPORARY TABLE IF NOT EXISTS nashra_import_keys (email text, hash text) ON COMMIT DELETE ROWS;
CREATE TEMPORARY TABLE IF NOT EXISTS nashra_import_new_readers (email text, status text, source text,
                                                                consented_at timestamptz, ip text, time_zone text)
    ON COMMIT DELETE ROWS;
CREATE TEMPORARY TABLE IF NOT EXISTS nashra_import_new_subscriptions (email text, newsletter_id integer, sections text)
    ON COMMIT DELETE ROWS;
CREATE TEMPORARY TABLE IF NOT EXISTS nashra_import_reader_changes (id bigint, activate boolean, source text,
                                                                   consented_at timestamptz, time_zone text)
    ON COMMIT DELETE ROWS;
TRUNCATE nashra_import_keys, nashra_import_new_readers, nashra_import_new_subscriptions, nashra_import_reader_changes
"""
PG_KEYS = ("nashra_import_keys", "email, hash", ("text", "text"))
PG_NEW = ("nashra_import_new_readers", "email, status, source, consented_at, ip, time_zone",
          ("text", "text", "text", "timestamptz", "text", "text"))
PG_NEW_SUBSCRIPTIONS = ("nashra_import_new_subscriptions", "email, newsletter_id, sections", ("text", "int4", "text"))
PG_CHANGES = ("nashra_import_reader_changes", "id, activate, source, consented_at, time_zone",
              ("int8", "bool", "text", "timestamptz", "text"))
# With each reader, their subscriptions as one line of text ("newsletter id=sections JSON",
# joined by ";", by newsletter id): a reader whose line is their row's (_Plan.signature),
# as in a file imported again, is unchanged without a row of theirs parsed.
PG_EXISTING = """
SELECT s.id, s.email, s.status, s.created_at, s.updated_at, s.time_zone,
       (SELECT string_agg(CAST(p.newsletter_id AS text) || '=' || CAST(p.sections AS text), ';'
                          ORDER BY p.newsletter_id)
        FROM subscriptions AS p WHERE p.subscriber_id = s.id) AS held
FROM subscribers AS s WHERE s.email = ANY(ARRAY(SELECT email FROM nashra_import_keys))
"""
# "= ANY(ARRAY(SELECT …))", not a join: with a join the planner may pick a hash join over
# a scan of the whole table (250 ms a chunk against a million readers, 9 ms this way).
PG_SUPPRESSED = "SELECT p.email FROM suppressions AS p WHERE p.email = ANY(ARRAY(SELECT email FROM nashra_import_keys))"
PG_HASHED = "SELECT h.hash FROM suppressed_hashes AS h WHERE h.hash = ANY(ARRAY(SELECT hash FROM nashra_import_keys))"
# ON CONFLICT DO NOTHING: a reader who signed up since the lookup keeps their row (and
# counts as already here); the consent rows go with the readers this statement created.
PG_INSERT = """
WITH created AS (
    INSERT INTO subscribers (email, status, consent_source, consented_at, confirmed_at, token_version, created_at,
                             updated_at, time_zone)
    SELECT v.email, v.status, v.source, v.consented_at,
           CASE WHEN v.status = 'active' THEN CAST(:now AS timestamptz) END, 1, :now, :now, v.time_zone
    FROM nashra_import_new_readers AS v
    ON CONFLICT (email) DO NOTHING
    RETURNING id, email, status
), consent AS (
    INSERT INTO consents (subscriber_id, event, at, source, ip)
    SELECT c.id, 'import', v.consented_at, v.source, v.ip FROM created AS c
    JOIN nashra_import_new_readers AS v USING (email)
), subscribed AS (
    INSERT INTO subscriptions (newsletter_id, subscriber_id, sections, quiet_mode, alerts_today, created_at)
    SELECT w.newsletter_id, c.id, CAST(w.sections AS json), 'hold', 0, :now FROM created AS c
    JOIN nashra_import_new_subscriptions AS w USING (email)
)
SELECT id, status FROM created
"""
PG_UPDATE = """
UPDATE subscribers AS s
SET updated_at = :now, time_zone = v.time_zone,
    status = CASE WHEN v.activate THEN 'active' ELSE s.status END,
    confirmed_at = CASE WHEN v.activate THEN CAST(:now AS timestamptz) ELSE s.confirmed_at END,
    consent_source = CASE WHEN v.activate THEN v.source ELSE s.consent_source END,
    consented_at = CASE WHEN v.activate THEN v.consented_at ELSE s.consented_at END
FROM nashra_import_reader_changes AS v
WHERE s.id = v.id AND s.id = ANY(ARRAY(SELECT id FROM nashra_import_reader_changes))
"""
# The subscriptions of readers already here, changed as a whole chunk: one statement each
# for those they leave and for those they join or whose sections change (arrays: the
# statement's text does not grow with the chunk).
PG_LEAVE = """
DELETE FROM subscriptions AS p
USING unnest(CAST(:sids AS bigint[]), CAST(:nids AS integer[])) AS v(sid, nid)
WHERE p.subscriber_id = v.sid AND p.newsletter_id = v.nid
"""
PG_JOIN = """
INSERT INTO subscriptions (newsletter_id, subscriber_id, sections, quiet_mode, alerts_today, created_at)
SELECT v.nid, v.sid, CAST(v.sections AS json), 'hold', 0, :now
FROM unnest(CAST(:nids AS integer[]), CAST(:sids AS bigint[]), CAST(:sections AS text[])) AS v(nid, sid, sections)
ON CONFLICT (newsletter_id, subscriber_id) DO UPDATE SET sections = EXCLUDED.sections
"""
PG_HASHES = """
INSERT INTO suppressed_hashes (hash, reason, created_at)
SELECT h, 'unsubscribed', :now FROM unnest(CAST(:hashes AS text[])) AS h
ON CONFLICT (hash) DO NOTHING
"""
PG_SUPPRESS = """
INSERT INTO suppressions (email, reason, detail, created_at)
SELECT v.email, v.reason, :detail, :now FROM unnest(CAST(:emails AS text[]), CAST(:reasons AS text[])) AS v(email, reason)
ON CONFLICT (email) DO NOTHING
"""


class CsvError(ValueError):
    """The file as a whole cannot be imported (no header, unknown columns…).

    `report` holds what was committed before it, when the error came after the first
    chunk (the use-case's import commits chunk by chunk)."""

    report: ImportReport | None = None


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    confirmations: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line, why), skipped; the first MAX_LISTED
    unknown_sections: list[str] = field(default_factory=list)  # as the file wrote them, once each
    known_sections: list[str] = field(default_factory=list)  # "name (slug)", in the site's order
    unknown_newsletters: list[str] = field(default_factory=list)  # slugs no newsletter has, or retired ones
    known_newsletters: list[str] = field(default_factory=list)  # the slugs a file may name, in the site's order
    source: str = "nashra"  # the file's layout: nashra, listmonk or mailchimp
    ignored_columns: list[str] = field(default_factory=list)  # as the header wrote them
    left_out: dict[str, int] = field(default_factory=dict)  # note → rows (foreign statuses)
    rows: int = 0  # data rows read
    chunks: int = 0  # chunks written
    skipped_count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def skipped(self) -> int:
        return self.skipped_count

    @property
    def already(self) -> int:
        """Readers of the file who were here before (an earlier import, a signup)."""
        return self.updated + self.unchanged

    def problem(self, line: int, why: str) -> None:
        with self._lock:  # the use-case's reader and writer threads both report
            self.skipped_count += 1
            if len(self.problems) < MAX_LISTED:
                self.problems.append((line, why))

    def leave_out(self, note: str) -> None:
        with self._lock:
            self.left_out[note] = self.left_out.get(note, 0) + 1

    def summary(self) -> str:
        head = (f"{self.created} created, {self.already} already here ({self.updated} updated, "
                f"{self.unchanged} unchanged), {self.skipped} skipped, {self.confirmations} confirmation(s) queued")
        lines = [head, *(f"line {line}: {why}" for line, why in self.problems)]
        if self.skipped > len(self.problems):
            lines.append(f"… and {self.skipped - len(self.problems)} more skipped row(s)")
        lines += [f"{count} row(s): {note}" for note, count in self.left_out.items()]
        if self.ignored_columns:
            lines.append(f"a {self.source} export: column(s) ignored (no meaning here): "
                         f"{', '.join(repr(c) for c in self.ignored_columns)}")
        if self.unknown_sections:
            known = ", ".join(self.known_sections) or "none yet (add them with `nashra sections add NAME`)"
            lines.append(f"unknown section(s): {', '.join(repr(u) for u in self.unknown_sections)}; "
                         f"the sections are: {known}")
        if self.unknown_newsletters:
            lines.append(f"unknown or retired newsletter(s): {', '.join(repr(u) for u in self.unknown_newsletters)}; "
                         f"the newsletters are: {', '.join(self.known_newsletters) or 'none'}")
        return "\n".join(lines)


class _Plan(NamedTuple):
    """The newsletters one row puts its reader on, and what it may change."""

    wanted: dict[int, list[int]]  # newsletter id → the reader's sections for it ([] for alerts)
    scope: frozenset[int]  # the newsletters the row speaks of: others the reader is on are left alone
    as_json: tuple[tuple[int, str], ...]  # (newsletter id, sections as JSON), for the writes
    signature: str  # the subscriptions as PG_EXISTING writes them, for a reader on exactly these


@dataclass(slots=True)
class _Row:
    line: int
    email: str
    plan: _Plan
    kind: str  # active | pending | unsubscribed | suppressed
    consent_source: str
    consented_at: dt.datetime
    ip: str | None = None
    reason: str | None = None  # the suppression's, for kind == "suppressed"
    time_zone: str | None = None  # None: TIMEZONE for a new reader; unchanged for one already here


class _Existing(NamedTuple):
    id: int
    email: str
    status: str
    created_at: dt.datetime
    updated_at: dt.datetime
    time_zone: str | None
    subscriptions: dict[int, list[int]] | None  # newsletter id → their sections there (None: see `signature`)
    signature: str | None = None  # PostgreSQL: them as one line of text, parsed only when it is not the row's


class _Catalogue:
    """The site's newsletters as an import reads them: by slug, and the scopes of a row."""

    def __init__(self, session: Session):
        rows = catalogue.every(session, hidden=True)
        # Plain values, not the rows: the session that read them is gone when rows are parsed.
        self.by_slug = {n.slug: (n.id, n.hidden) for n in rows}
        self.kind = {n.id: n.kind for n in rows}
        self.own_sections = {n.id: set(n.sections or []) for n in rows}
        self.visible = frozenset(n.id for n in rows if not n.hidden)
        self.legacy = frozenset(n.id for n in rows if n.slug in (catalogue.DAILY, catalogue.WEEKLY, catalogue.ALERTS))
        self.order = {n.id: i for i, n in enumerate(rows)}
        self.slugs = [n.slug for n in rows if not n.hidden]


class UnknownNewsletter(InvalidInput):
    def __init__(self, value: str, why: str):
        super().__init__("newsletters", why)
        self.value = value


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
        super().__init__("sections", f"unknown section {value[:100]!r}")
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


def _parse_when(raw: str, now: dt.datetime, column: str = "consented_at") -> dt.datetime:
    if not raw:
        return now
    try:
        when = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(column, f"not an ISO 8601 time: {raw[:40]!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)  # documented: a time without an offset is UTC
    try:
        when = when.astimezone(dt.UTC)
    except OverflowError:  # 0001-01-01T00:00+23:59 is before the year 1 in UTC
        raise InvalidInput(column, f"not a time we can store: {raw[:40]!r}") from None
    if when > now + dt.timedelta(days=1):
        raise InvalidInput(column, "is in the future")
    return when


# The addresses most lists are made of — a dot-atom of letters, digits, _ + and -, at a
# domain of plain ASCII labels under an alphabetic top-level domain — need none of the
# validator's work (a third of the import's time): for them `_normalise` gives what
# `normalise_email` gives (tests/test_import_bulk.py holds it to that), and anything else
# goes to `normalise_email`.
_ATOM = r"[a-z0-9_+\-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?"
_PLAIN_EMAIL = re.compile(rf"({_ATOM}(?:\.{_ATOM})*)@((?:{_LABEL}\.)+([a-z]{{2,63}}))")
_SPECIAL_TLDS = frozenset(SPECIAL_USE_DOMAIN_NAMES)


def _normalise(value: str) -> str:
    if len(value) <= MAX_EMAIL_LENGTH and value.isascii():
        low = value.lower()
        match = _PLAIN_EMAIL.fullmatch(low)
        if (match and len(match[1]) <= MAX_LOCAL_PART and "--" not in match[2]
                and match[3] not in _SPECIAL_TLDS):
            return low
    return normalise_email(value)


_FREQUENCIES = {"": Frequency.daily, **{f.value: f for f in Frequency}}
_YES_NO = {"": True, "yes": True, "no": False}
# NUL and the other controls (Unicode's Cc, but tab, CR and LF) and lone surrogates.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


class _Layout:
    """Where each meaning is in the file's rows, for the file's source (its header)."""

    def __init__(self, header: list[str]):
        cleaned = [h.strip().lower() for h in header]
        self.width = len(cleaned)
        if len(set(cleaned)) != len(cleaned):
            raise CsvError("a column appears twice in the header row")
        ignored: list[str] = []
        if MAILCHIMP_EMAIL in cleaned:
            self.source = "mailchimp"
            known = {MAILCHIMP_EMAIL, *COLUMNS, *MAILCHIMP_TIMES, *MAILCHIMP_IPS, *(k for k, _ in MAILCHIMP_KIND)}
            if "email" in cleaned:
                raise CsvError("both 'Email Address' and 'email' columns: which one is the address?")
            ignored = [h.strip() for h, c in zip(header, cleaned, strict=True) if c not in known]
            self.file_status = next((kind for col, kind in MAILCHIMP_KIND if col in cleaned), "subscribed")
        elif any(c in LISTMONK for c in cleaned):
            self.source = "listmonk"
            unknown = [h for h in cleaned if h not in COLUMNS and h not in LISTMONK]
            if unknown:
                raise CsvError(f"unknown column(s): {', '.join(repr(h) for h in unknown)}; allowed: "
                               f"{', '.join(COLUMNS)} (or a listmonk or Mailchimp export as it is)")
            ignored = [h.strip() for h, c in zip(header, cleaned, strict=True)
                       if c in LISTMONK and c not in ("created_at", "subscription_created_at", "subscription_status")]
            self.file_status = "enabled"
        else:
            self.source = "nashra"
            unknown = [h for h in cleaned if h not in COLUMNS]
            if unknown:
                raise CsvError(f"unknown column(s): {', '.join(repr(h) for h in unknown)}; allowed: "
                               f"{', '.join(COLUMNS)} (or a listmonk or Mailchimp export as it is)")
            self.file_status = ""
        self.ignored = ignored
        where = {c: i for i, c in enumerate(cleaned)}
        email = where.get(MAILCHIMP_EMAIL if self.source == "mailchimp" else "email")
        if email is None:
            raise CsvError("the header row has no 'email' column")
        self.email = email
        blank = self.width  # the empty cell `_parse` adds at the end of every row
        self.sections = where.get("sections", blank)
        self.frequency = where.get("frequency", blank)
        self.alerts = where.get("alerts", blank)
        self.consent_source = where.get("consent_source", blank)
        self.time_zone = where.get("time_zone", blank)
        self.newsletters = where.get("newsletters", blank)
        self.default_source = "import" if self.source == "nashra" else self.source
        self.list_status = where.get("subscription_status") if self.source == "listmonk" else None
        if self.source == "listmonk":
            self.status = where.get("status", blank)
            self.when = [where[c] for c in ("consented_at", "subscription_created_at", "created_at") if c in where]
        elif self.source == "mailchimp":
            self.status = where.get("status", blank)
            self.when = [where[c] for c in ("consented_at", *MAILCHIMP_TIMES) if c in where]
        else:
            self.status = where.get("status", blank)
            self.when = [where["consented_at"]] if "consented_at" in where else []
        self.ips = [where[c] for c in MAILCHIMP_IPS if c in where] if self.source == "mailchimp" else []


class CsvImport:
    """One import: the header read and checked at once (CsvError), then `chunks()` of
    validated rows, each written by `apply(session, rows)`, and `finish(session)`.

    The caller owns the transactions: `import_csv` runs it all in its caller's; the
    use-case commits each chunk (service/usecases/subscribers.py)."""

    def __init__(self, fileobj: IO, *, now: dt.datetime | None = None, chunk: int = CHUNK):
        self.now = now or utcnow()
        self.chunk = max(1, chunk)
        self.report = ImportReport()
        self._stream = _text_stream(fileobj)
        self._owned = self._stream is not fileobj
        self._reader = csv.reader(self._stream)
        try:
            header = next(self._reader, None)
        except (UnicodeDecodeError, csv.Error) as exc:
            self.close()
            raise CsvError(f"cannot read the header row or the lines after it ({exc}); save the file as UTF-8 CSV"
                           ) from None
        if not header or not any(h.strip() for h in header):
            self.close()
            raise CsvError("the file is empty: a header row is required")
        try:
            self.layout = _Layout(header)
        except CsvError:
            self.close()
            raise
        self.report.source = self.layout.source
        self.report.ignored_columns = self.layout.ignored
        self._lookup: dict[str, int] = {}
        self._sections: dict[str, tuple[list[int], str]] = {}
        self._stored_sections: dict[str, list[int]] = {}
        self._plans: dict[tuple, _Plan] = {}
        self._catalogue: _Catalogue | None = None
        self._pg = False
        self._hash = hashes.address_hash

    def close(self) -> None:
        if self._owned:
            self._owned = False
            self._stream.detach()  # the caller's file stays open: it is theirs to close

    def prepare(self, session: Session) -> None:
        self._lookup = _section_lookup(session)
        self._catalogue = _Catalogue(session)
        self._hash = hashes.address_hasher()

    # ------------------------------------------------------------ reading

    def chunks(self) -> Iterator[list[_Row]]:
        """Validated rows, CHUNK at a time; bad rows go to the report.  Raises CsvError
        when the file cannot be read on (a bad encoding, a field over the csv module's
        limit): the chunk being read is then not written at all."""
        report, layout, reader = self.report, self.layout, self._reader
        batch: list[_Row] = []
        seen: dict[str, int] = {}
        try:
            for rec in reader:
                if not rec:
                    continue  # a blank line
                line = reader.line_num
                report.rows += 1
                if len(rec) > layout.width:
                    report.problem(line, "more fields than the header has")
                    continue
                try:
                    row = self._parse(line, rec)
                except InvalidInput as exc:
                    report.problem(line, f"{exc.field}: {exc.message}")
                    if (isinstance(exc, UnknownSection) and exc.value[:100] not in report.unknown_sections
                            and len(report.unknown_sections) < MAX_UNKNOWN_SECTIONS):
                        report.unknown_sections.append(exc.value[:100])
                    if (isinstance(exc, UnknownNewsletter) and exc.value not in report.unknown_newsletters
                            and len(report.unknown_newsletters) < MAX_UNKNOWN_SECTIONS):
                        report.unknown_newsletters.append(exc.value)
                    continue
                if row is None:
                    continue
                if row.email in seen:
                    report.problem(line, f"same address as line {seen[row.email]}")
                    continue
                seen[row.email] = line
                batch.append(row)
                if len(batch) >= self.chunk:
                    yield batch
                    batch, seen = [], {}
        except UnicodeDecodeError as exc:
            # The decoder reads ahead by blocks: the bad bytes are at or after this line.
            raise CsvError(f"after line {reader.line_num}: cannot read the file ({exc}); save it as UTF-8 CSV"
                           ) from None
        except csv.Error as exc:
            raise CsvError(f"line {reader.line_num}: cannot read the file ({exc})") from None
        if batch:
            yield batch

    def _parse(self, line: int, rec: list[str]) -> _Row | None:
        layout, now = self.layout, self.now
        # Every cell stripped, a spreadsheet's defusing apostrophe taken off; one empty
        # cell more at the end stands for the columns the file does not have.
        values = [undefuse(v) if v[:1] == "'" else v for v in (v.strip() for v in rec)]
        if not any(values):
            return None  # a line of empty fields
        values += [""] * (layout.width + 1 - len(values))
        raw_email = values[layout.email]
        if not raw_email:
            raise InvalidInput("email", "missing or not a valid address")
        try:
            email = _normalise(raw_email)
        except InvalidInput:
            raise InvalidInput("email", "missing or not a valid address") from None
        status = values[layout.status].lower()
        if layout.source == "nashra":
            kind = status or "pending"
            if kind not in ("active", "pending"):
                raise InvalidInput("status", f"must be active or pending, not {status[:20]!r}")
        else:
            status = status or layout.file_status
            if layout.list_status is not None and status not in ("blocklisted", "disabled"):
                status = values[layout.list_status].lower() or status  # listmonk: the list's subscription
            kind = FOREIGN_STATUS.get(status)
            if kind is None:
                raise InvalidInput("status", f"{status[:20]!r} is not a status of a {layout.source} export")
            if kind == "skip":
                note = FOREIGN_NOTES["skip"].format(status=status, source=layout.source)
                self.report.leave_out(note)
                return None
        freq = values[layout.frequency]
        frequency = _FREQUENCIES.get(freq) or _FREQUENCIES.get(freq.lower())
        if frequency is None:
            raise InvalidInput("frequency", f"must be daily, weekly or none, not {freq.lower()[:20]!r}")
        alerts = _YES_NO.get(values[layout.alerts].lower())
        if alerts is None:
            raise InvalidInput("alerts", f"must be yes or no, not {values[layout.alerts].lower()[:20]!r}")
        source = values[layout.consent_source] or layout.default_source
        if len(source) > MAX_CONSENT_SOURCE:
            raise InvalidInput("consent_source", f"longer than {MAX_CONSENT_SOURCE} characters")
        if _CONTROL.search(source):  # PostgreSQL text holds no NUL; the rest is no one's consent record
            raise InvalidInput("consent_source", "contains a control character")
        when = now
        for index in layout.when:  # the first that says
            if values[index]:
                when = _parse_when(values[index], now, "consented_at" if layout.source == "nashra" else "time")
                break
        ip = None
        for index in layout.ips:
            ip = ip_for_record(values[index]) if values[index] else None
            if ip:
                break
        raw = values[layout.sections]
        sections = self._sections.get(raw)
        if sections is None:
            ids = _parse_sections(raw, self._lookup)
            sections = (ids, json.dumps(ids))
            if len(self._sections) < 10_000 and len(raw) < 500:  # a few sets of sections, many times over
                self._sections[raw] = sections
        named = values[layout.newsletters]
        key = (named, frequency, alerts, raw)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plan(named, frequency, alerts, sections[0])
            if len(self._plans) < 10_000 and len(named) + len(raw) < 500:  # like the sections: a few, many times
                self._plans[key] = plan
        try:
            zone = clocks.check(values[layout.time_zone])
        except InvalidInput:
            raise InvalidInput("time_zone", f"{values[layout.time_zone][:40]!r} is not a time zone: an IANA name "
                                            "such as Europe/Berlin, or empty for the site's") from None
        return _Row(line, email, plan, kind, source, when, ip,
                    SUPPRESS_REASON.get(status) if kind == "suppressed" else None, zone)

    def _plan(self, named: str, frequency: Frequency, alerts: bool, sections: list[int]) -> _Plan:
        """The newsletters a row names (its `newsletters` cell, else its `frequency` and
        `alerts`), with the row's sections on each digest; UnknownNewsletter when one is
        not there or is retired."""
        known = self._catalogue
        if named:
            slugs = [part.strip().lower() for part in named.split("|") if part.strip()]
            if len(slugs) > MAX_NEWSLETTERS:
                raise InvalidInput("newsletters", f"more than {MAX_NEWSLETTERS} newsletters")
            scope = known.visible
        else:
            slugs = catalogue.legacy_slugs(frequency, alerts)
            scope = known.legacy
        wanted: dict[int, list[int]] = {}
        for slug in slugs:
            found, shown = known.by_slug.get(slug), slug[:64]
            if found is None:
                raise UnknownNewsletter(shown, f"no newsletter {shown!r}")
            newsletter_id, hidden = found
            if hidden:
                raise UnknownNewsletter(shown, f"the newsletter {shown!r} is retired (hidden): no one joins it")
            wanted[newsletter_id] = self._sections_for(newsletter_id, sections)
        ordered = dict(sorted(wanted.items(), key=lambda item: known.order[item[0]]))
        as_json = tuple((nid, json.dumps(ids)) for nid, ids in ordered.items())
        return _Plan(ordered, scope, as_json, ";".join(f"{nid}={ids}" for nid, ids in sorted(as_json)))

    def _sections_for(self, newsletter_id: int, sections: list[int]) -> list[int]:
        """The row's sections on a digest — those among its own, when it draws from only
        some (none left: all of its own) — and none on alerts."""
        if self._catalogue.kind[newsletter_id] is not NewsletterKind.digest:
            return []
        own = self._catalogue.own_sections[newsletter_id]
        return [i for i in sections if i in own] if own else list(sections)

    # ------------------------------------------------------------ writing

    def apply(self, session: Session, rows: list[_Row]) -> None:
        """Write one chunk: a lookup per table, one INSERT per table, the updates; the
        confirmations of its pending readers are asked for once `session` commits."""
        report, now = self.report, self.now
        self._pg = session.get_bind().dialect.name == "postgresql"
        if self._pg:
            existing, suppressed, forgotten = self._lookup_pg(session, rows)
        else:
            existing, suppressed, forgotten = self._lookup_sqlite(session, rows)
        new: list[_Row] = []
        updates: list[dict] = []
        activations: list[dict] = []
        to_hash: list[dict] = []
        to_suppress: list[dict] = []
        moves = _Moves()
        for row in rows:
            if row.kind in ("unsubscribed", "suppressed"):
                self._foreign_gone(row, existing, suppressed, forgotten, to_hash, to_suppress)
                continue
            if row.email in suppressed:
                report.problem(row.line, "address is on the suppression list; not imported")
                continue
            if row.email in forgotten:
                report.problem(row.line, "this reader asked to be forgotten or unsubscribed; an import does "
                                         "not add them back")
                continue
            sub = existing.get(row.email)
            if sub is None:
                new.append(row)
                continue
            if sub.created_at == now or sub.updated_at == now:
                report.problem(row.line, "same address as an earlier line of this file")
                continue
            if sub.status == SubscriberStatus.unsubscribed:
                report.problem(row.line, "this reader unsubscribed; an import does not re-add them")
                continue
            zone = row.time_zone if row.time_zone is not None else sub.time_zone  # an empty cell keeps theirs
            changes = {"b_id": sub.id, "b_now": now, "b_time_zone": zone}
            # The same subscriptions, as a file imported again finds them: nothing to parse.
            moved = sub.signature != row.plan.signature and moves.add(sub.id, self._held(sub), row.plan)
            if sub.status == SubscriberStatus.pending and row.kind == "active":
                changes.update(b_source=row.consent_source, b_consented=row.consented_at)
                activations.append(changes)
                report.updated += 1
            elif moved or sub.time_zone != zone:
                updates.append(changes)
                report.updated += 1
            else:
                report.unchanged += 1
        self._insert(session, new)
        self._update(session, updates, activations)
        self._move(session, moves)
        if to_hash:
            if self._pg:
                session.execute(sa.text(PG_HASHES), {"hashes": [v["hash"] for v in to_hash], "now": now})
            else:
                session.execute(insert_ignoring(session, SuppressedHash.__table__, ["hash"]), to_hash)
        if to_suppress:
            if self._pg:
                session.execute(sa.text(PG_SUPPRESS), {"emails": [v["email"] for v in to_suppress],
                                                       "reasons": [v["reason"] for v in to_suppress],
                                                       "detail": to_suppress[0]["detail"], "now": now})
            else:
                session.execute(insert_ignoring(session, Suppression.__table__, ["email"]), to_suppress)
        report.chunks += 1

    def _lookup_pg(self, session: Session, rows: list[_Row]) -> tuple[dict, set[str], set[str]]:
        session.execute(sa.text(PG_TEMP))
        by_hash = {self._hash(r.email): r.email for r in rows}
        _copy(session, PG_KEYS, [(email, digest) for digest, email in by_hash.items()])
        existing = {email: _Existing(sid, email, status, created_at, updated_at, zone, None, held or "")
                    for sid, email, status, created_at, updated_at, zone, held in session.execute(
                        sa.text(PG_EXISTING)).all()}
        suppressed = set(session.scalars(sa.text(PG_SUPPRESSED)).all())
        # A reader who asked to be forgotten, or left long ago, is kept only as a keyed hash.
        forgotten = {by_hash[h] for h in session.scalars(sa.text(PG_HASHED)).all()} - set(existing)
        return existing, suppressed, forgotten

    def _lookup_sqlite(self, session: Session, rows: list[_Row]) -> tuple[dict, set[str], set[str]]:
        """SQLite's lookups (the embedded default): a query per table with the chunk's addresses."""
        subs = Subscriber.__table__
        emails = [r.email for r in rows]
        found = session.execute(
            select(subs.c.id, subs.c.email, subs.c.status, subs.c.created_at, subs.c.updated_at, subs.c.time_zone)
            .where(subs.c.email.in_(emails))).all()
        held: dict[int, dict[int, list[int]]] = {row.id: {} for row in found}
        if held:
            table = Subscription.__table__
            for sid, nid, sections in session.execute(
                    select(table.c.subscriber_id, table.c.newsletter_id, table.c.sections)
                    .where(table.c.subscriber_id.in_(list(held)))):
                held[sid][nid] = list(sections or [])
        existing = {r.email: _Existing(r.id, r.email, r.status, r.created_at, r.updated_at, r.time_zone, held[r.id])
                    for r in found}
        suppressed = set(session.scalars(select(Suppression.email).where(Suppression.email.in_(emails))))
        # A reader who asked to be forgotten, or left long ago, is kept only as a keyed hash.
        by_hash = {self._hash(e): e for e in emails if e not in existing}
        forgotten = {by_hash[h] for h in session.scalars(
            select(SuppressedHash.hash).where(SuppressedHash.hash.in_(list(by_hash))))} if by_hash else set()
        return existing, suppressed, forgotten

    def _held(self, sub: _Existing) -> dict[int, list[int]]:
        """The reader's subscriptions, from PG_EXISTING's line of text if that is what we have."""
        if sub.subscriptions is not None:
            return sub.subscriptions
        held = {}
        for item in sub.signature.split(";") if sub.signature else ():
            nid, _, sections = item.partition("=")
            held[int(nid)] = self._stored(sections)
        return held

    def _stored(self, sections: str | None) -> list[int]:
        """Sections as the database's JSON text, parsed once per distinct value (a few, many
        times over)."""
        parsed = self._stored_sections
        ids = parsed.get(sections)
        if ids is None:
            ids = json.loads(sections) if sections else []
            if len(parsed) < 10_000 and len(sections or "") < 500:
                parsed[sections] = ids
        return ids

    def _foreign_gone(self, row: _Row, existing, suppressed, forgotten, to_hash, to_suppress) -> None:
        """An address the other tool's export says left (unsubscribed) or must not be
        mailed (cleaned, blocklisted): it is not imported, and it is remembered so."""
        source, report = self.layout.source, self.report
        if row.email in existing and row.kind == "unsubscribed":
            report.problem(row.line, f"unsubscribed in {source}, but a reader here with this address: left as "
                                     "they are (unsubscribe them from their preferences page if they ask)")
            return
        if row.email in forgotten or row.email in suppressed:
            note = FOREIGN_NOTES["known"].format(source=source)
        elif row.kind == "unsubscribed":
            to_hash.append({"hash": self._hash(row.email), "reason": "unsubscribed", "created_at": self.now})
            note = FOREIGN_NOTES["unsubscribed"].format(source=source)
        else:
            to_suppress.append({"email": row.email, "reason": row.reason or "manual",
                                "detail": f"imported from {source}", "created_at": self.now})
            note = FOREIGN_NOTES["suppressed"].format(status={"hard_bounce": "cleaned"}.get(row.reason or "",
                                                                                             "blocklisted"),
                                                      source=source)
        report.leave_out(note)

    def _insert(self, session: Session, new: list[_Row]) -> None:
        if not new:
            return
        now = self.now
        subs = Subscriber.__table__
        if self._pg:
            return self._insert_pg(session, new)
        values = [{
            "email": r.email, "status": SubscriberStatus(r.kind), "consent_source": r.consent_source,
            "consented_at": r.consented_at, "confirmed_at": now if r.kind == "active" else None, "token_version": 1,
            "created_at": now, "updated_at": now, "time_zone": r.time_zone,
        } for r in new]
        # ON CONFLICT DO NOTHING: a reader who signed up since the lookup keeps their row
        # (and counts as already here).
        stmt = insert_ignoring(session, subs, ["email"]).returning(subs.c.id, subs.c.email)
        ids = dict((email, sid) for sid, email in session.execute(stmt, values))
        created = [(r, ids[r.email]) for r in new if r.email in ids]
        if created:
            session.execute(sa.insert(Consent.__table__), [
                {"subscriber_id": sid, "event": "import", "at": r.consented_at, "source": r.consent_source,
                 "ip": r.ip} for r, sid in created])
            joined = [{"newsletter_id": nid, "subscriber_id": sid, "sections": ids, "quiet_mode": "hold",
                       "alerts_today": 0, "created_at": now} for r, sid in created for nid, ids in r.plan.wanted.items()]
            if joined:
                session.execute(sa.insert(Subscription.__table__), joined)
        self._count_created(session, len(new), [sid for r, sid in created if r.kind == "pending"],
                            len(created))

    def _insert_pg(self, session: Session, new: list[_Row]) -> None:
        _copy(session, PG_NEW, [(r.email, r.kind, r.consent_source, r.consented_at, r.ip, r.time_zone) for r in new])
        _copy(session, PG_NEW_SUBSCRIPTIONS, [(r.email, nid, ids) for r in new for nid, ids in r.plan.as_json])
        created = session.execute(sa.text(PG_INSERT), {"now": self.now}).all()
        self._count_created(session, len(new), [sid for sid, status in created if status == "pending"], len(created))

    def _count_created(self, session: Session, tried: int, pending: list[int], created: int) -> None:
        report = self.report
        report.unchanged += tried - created
        report.created += created
        if pending:
            report.confirmations += len(pending)
            dispatcher = dispatch.current()
            # Asked for once this chunk commits (never for rows a rollback took away).
            dispatch.after_commit(session, lambda: _confirm(dispatcher, pending))

    def _update(self, session: Session, updates: list[dict], activations: list[dict]) -> None:
        subs = Subscriber.__table__
        if self._pg:
            changes = [(u["b_id"], "b_source" in u, u.get("b_source"), u.get("b_consented"), u["b_time_zone"])
                       for u in (*updates, *activations)]
            if changes:
                _copy(session, PG_CHANGES, changes)
                session.execute(sa.text(PG_UPDATE), {"now": self.now})
            return
        common = {"updated_at": sa.bindparam("b_now", type_=subs.c.updated_at.type),
                  "time_zone": sa.bindparam("b_time_zone")}
        where = subs.c.id == sa.bindparam("b_id")
        if updates:
            session.execute(sa.update(subs).where(where).values(**common), updates)
        if activations:
            session.execute(sa.update(subs).where(where).values(
                **common, status=SubscriberStatus.active, confirmed_at=sa.bindparam("b_now", type_=subs.c.updated_at.type),
                consent_source=sa.bindparam("b_source"),
                consented_at=sa.bindparam("b_consented", type_=subs.c.consented_at.type)), activations)

    def _move(self, session: Session, moves: _Moves) -> None:
        """Readers already here leave the newsletters of their rows' scope the rows do not
        name, join those they name, and take the rows' sections."""
        if self._pg:
            if moves.leave:
                session.execute(sa.text(PG_LEAVE), {"sids": [sid for sid, _ in moves.leave],
                                                    "nids": [nid for _, nid in moves.leave]})
            if moves.join:
                session.execute(sa.text(PG_JOIN), {"nids": [nid for nid, _, _ in moves.join],
                                                   "sids": [sid for _, sid, _ in moves.join],
                                                   "sections": [ids for _, _, ids in moves.join], "now": self.now})
            return
        table = Subscription.__table__
        if moves.leave:
            session.execute(sa.delete(table).where(table.c.subscriber_id == sa.bindparam("b_sid"),
                                                   table.c.newsletter_id == sa.bindparam("b_nid")),
                            [{"b_sid": sid, "b_nid": nid} for sid, nid in moves.leave])
        if moves.join:
            stmt = sqlite_insert(table)  # SQLite here: PostgreSQL took the branch above
            values = [{"newsletter_id": nid, "subscriber_id": sid, "sections": json.loads(ids), "quiet_mode": "hold",
                       "alerts_today": 0, "created_at": self.now} for nid, sid, ids in moves.join]
            session.execute(stmt.on_conflict_do_update(index_elements=["newsletter_id", "subscriber_id"],
                                                       set_={"sections": stmt.excluded.sections}), values)

    def finish(self, session: Session, actor: str = "cli", *, interrupted: bool = False) -> ImportReport:
        report = self.report
        report.problems.sort(key=lambda p: p[0])  # by line, whichever thread found them
        if report.unknown_sections:
            report.known_sections = [f"{sec.name} ({sec.slug})" for sec in
                                     session.scalars(select(Section).order_by(Section.position, Section.id))]
        if report.unknown_newsletters:
            report.known_newsletters = [n.slug for n in catalogue.every(session)]
        details = {"created": report.created, "updated": report.updated, "skipped": report.skipped}
        if report.source != "nashra":
            details["source"] = report.source
        if interrupted:
            details["interrupted"] = True
        audit(session, actor, "subscribers_import", None, **details)
        log.info("subscribers_imported", created=report.created, updated=report.updated,
                 unchanged=report.unchanged, skipped=report.skipped, confirmations=report.confirmations,
                 source=report.source, rows=report.rows, interrupted=interrupted)
        return report


@dataclass(slots=True)
class _Moves:
    """What a chunk changes in the subscriptions of readers already here."""

    leave: list[tuple[int, int]] = field(default_factory=list)  # (subscriber id, newsletter id)
    join: list[tuple[int, int, str]] = field(default_factory=list)  # (newsletter id, subscriber id, sections JSON)

    def add(self, subscriber_id: int, held: dict[int, list[int]], plan: _Plan) -> bool:
        """The reader's moves from the subscriptions they `held` to the row's; whether there
        were any."""
        before = len(self.leave) + len(self.join)
        self.leave += [(subscriber_id, nid) for nid in held if nid in plan.scope and nid not in plan.wanted]
        self.join += [(nid, subscriber_id, ids) for nid, ids in plan.as_json if held.get(nid) != plan.wanted[nid]]
        return len(self.leave) + len(self.join) > before


def _copy(session: Session, target: tuple[str, str, tuple[str, ...]], rows: list[tuple]) -> None:
    """COPY rows into one of the import's temporary tables, in this session's transaction."""
    table, columns, types = target
    with session.connection().connection.driver_connection.cursor() as cur:
        with cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(list(types))
            for row in rows:
                copy.write_row(row)
        # A temporary table is never analysed by autovacuum: without this the planner
        # guesses its size and may scan the whole of `subscribers` for every chunk.
        cur.execute(f"ANALYZE {table}")


def _confirm(dispatcher: dispatch.Dispatcher, ids: list[int]) -> None:
    for sid in ids:
        dispatcher.send_transactional("confirm", sid)


def import_csv(session: Session, fileobj: IO, *, actor: str = "cli", now: dt.datetime | None = None,
               chunk: int = CHUNK, checkpoint: Callable[[ImportReport], None] | None = None) -> ImportReport:
    """Import readers from a CSV file (text or binary), in the caller's transaction: the
    caller commits — or `checkpoint(report)`, called after each chunk is written, may.

    Raises CsvError if the file cannot be read as the contract says; the caller's
    transaction must then roll back (session_scope does), so nothing uncommitted is
    written.  Otherwise bad rows are listed in the report and skipped.
    """
    job = CsvImport(fileobj, now=now, chunk=chunk)
    try:
        job.prepare(session)
        for rows in job.chunks():
            job.apply(session, rows)
            if checkpoint is not None:
                checkpoint(job.report)
        return job.finish(session, actor)
    finally:
        job.close()


def export_csv(session: Session, fileobj: IO[str], *, include_unsubscribed: bool = False) -> int:
    """Write readers as CSV in the import format; returns the number of rows.

    Unsubscribed readers are left out by default, so that an export can be imported
    again (the contract's status column knows only active and pending).

    `newsletters` lists the reader's newsletters (not the retired ones: an import could
    not name them, and leaves them as they are).  `frequency`, `alerts` and `sections`
    say what an older consumer understands: the daily (else the weekly) digest and its
    sections, and whether they are on `alerts`.
    """
    slugs = {s.id: s.slug for s in session.scalars(select(Section))}
    visible = {n.id: n.slug for n in catalogue.every(session)}  # in the site's order
    writer = csv.writer(fileobj, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    query = select(Subscriber).order_by(Subscriber.id)
    if not include_unsubscribed:
        query = query.where(Subscriber.status != SubscriberStatus.unsubscribed)
    count = 0
    for batch in session.scalars(query.execution_options(yield_per=EXPORT_BATCH)).partitions():
        held = _subscriptions_of(session, [sub.id for sub in batch])
        for sub in batch:
            mine = held.get(sub.id, {})
            on = {visible[nid]: ids for nid, ids in mine.items() if nid in visible}
            digest = catalogue.DAILY if catalogue.DAILY in on else catalogue.WEEKLY if catalogue.WEEKLY in on else None
            writer.writerow([defuse(cell) for cell in (
                sub.email,
                "|".join(slugs[i] for i in (on[digest] if digest else []) if i in slugs),
                digest or Frequency.none.value,
                "yes" if catalogue.ALERTS in on else "no",
                sub.status.value,
                sub.consent_source or "",
                sub.consented_at.isoformat() if sub.consented_at else "",
                sub.time_zone or "",
                "|".join(slug for nid, slug in visible.items() if nid in mine),
            )])
            count += 1
    log.info("subscribers_exported", rows=count)
    return count


EXPORT_BATCH = 1000  # readers read at once, and their subscriptions in one query


def _subscriptions_of(session: Session, ids: list[int]) -> dict[int, dict[int, list[int]]]:
    """subscriber id → newsletter id → their sections there."""
    table = Subscription.__table__
    held: dict[int, dict[int, list[int]]] = {}
    for sid, nid, sections in session.execute(select(table.c.subscriber_id, table.c.newsletter_id, table.c.sections)
                                              .where(table.c.subscriber_id.in_(ids))):
        held.setdefault(sid, {})[nid] = list(sections or [])
    return held


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


__all__ = ["CHUNK", "COLUMNS", "CsvError", "CsvImport", "ImportReport", "defuse", "export_csv", "import_csv", "undefuse"]
