"""The public archive: past editions by date, each with its web copy (ARCHIVE_PUBLIC).

What is listed: digests, special editions and alerts that went out (sending or done),
newest first, each naming its newsletter; the archive of one newsletter lists only its
own.  A hidden (retired) newsletter's past editions stay listed: an archive does not
forget what went out.
Corrections are left out (each answers one mail its readers got, and the article it
points to already carries the fix) and so are catch-ups (they repeat alerts that are
listed themselves).  Each entry links to the copy of the "all" variant: every section,
no «فاتك؟» block — what a reader who chose everything got.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.editions.web_copy import ALL, url_for
from service.models import Edition, EditionKind, EditionStatus, EditionVariant, Newsletter
from service.newsletters import catalogue

ARCHIVED_KINDS = (EditionKind.digest, EditionKind.alert, EditionKind.special)
LISTED = (EditionStatus.sending, EditionStatus.done)
PER_PAGE = 30
FEED_ENTRIES = 50
KIND_LABELS = {EditionKind.digest: "نشرة", EditionKind.alert: "عاجل", EditionKind.special: "عدد خاص"}


@dataclass(frozen=True)
class ArchiveNewsletter:
    """A newsletter as the archive speaks of it (plain data: read once, used after the
    session has closed)."""

    id: int
    slug: str
    name: str
    hidden: bool


@dataclass(frozen=True)
class ArchiveEntry:
    edition_id: int
    kind: EditionKind
    title: str
    sent_at: dt.datetime  # UTC
    url: str  # the web copy
    newsletter_slug: str = ""  # "" for an edition of no newsletter (none is listed today)
    newsletter_name: str = ""

    @property
    def kind_label(self) -> str:
        return KIND_LABELS.get(self.kind, "")

    @property
    def newsletter_label(self) -> str:
        """The newsletter's name as the entry shows it beside its kind; "" when the kind
        already says it — the `alerts` newsletter is «عاجل», and its alerts keep that
        one label rather than saying it twice."""
        return "" if self.newsletter_name == self.kind_label else self.newsletter_name


@dataclass(frozen=True)
class Listing:
    entries: list[ArchiveEntry]
    total: int  # entries of the whole listing, every page; 0 when the page asked is past its end


def _title(kind: EditionKind, title: str | None, subject: str | None) -> str:
    # A digest's subject names its lead story ("… | النشرة اليومية"), more than its title
    # does (none when no reader got the "all" variant).  An alert's or a special edition's
    # own title is its headline, without the subject's «عاجل |» or «| عدد خاص» that the
    # entry's label already says.
    if kind == EditionKind.digest and subject:
        return subject.strip()
    return (title or subject or KIND_LABELS.get(kind, "")).strip()


def _sent_at():
    return sa.func.coalesce(Edition.started_at, Edition.planned_at, Edition.created_at)


def newsletters(session: Session) -> list[ArchiveNewsletter]:
    """Every newsletter, hidden ones too (their editions stay listed and reachable), in
    the order readers see them: one small query, the navigation and the slug's lookup."""
    return [ArchiveNewsletter(id=n.id, slug=n.slug, name=n.name, hidden=n.hidden)
            for n in catalogue.every(session, hidden=True)]


def find(newsletters_: list[ArchiveNewsletter], slug: object) -> ArchiveNewsletter | None:
    """The newsletter of `slug` among those read; None for an unknown or malformed one
    (anything that is not a slug, a NUL or a non-ASCII letter included)."""
    if not isinstance(slug, str) or not catalogue.SLUG_RE.match(slug):
        return None
    return next((n for n in newsletters_ if n.slug == slug), None)


def listing(session: Session, *, newsletter_id: int | None = None, offset: int = 0,
            limit: int = PER_PAGE) -> Listing:
    """Up to `limit` entries from `offset`, newest first (of one newsletter when
    `newsletter_id` is given), and how many there are in all: one statement, the total
    a window over the same rows, so a page never needs a second query to count."""
    sent_at = _sent_at().label("sent_at")
    total = sa.func.count().over().label("total")
    query = (
        sa.select(Edition.id, Edition.kind, Edition.title, EditionVariant.subject, sent_at,
                  Newsletter.slug, Newsletter.name, total)
        .outerjoin(EditionVariant, (EditionVariant.edition_id == Edition.id) & (EditionVariant.variant == ALL))
        .outerjoin(Newsletter, Newsletter.id == Edition.newsletter_id)
        .where(Edition.kind.in_(ARCHIVED_KINDS), Edition.status.in_(LISTED))
        .order_by(sent_at.desc(), Edition.id.desc())
        .offset(offset)
        .limit(limit)
    )
    if newsletter_id is not None:
        query = query.where(Edition.newsletter_id == newsletter_id)
    rows = session.execute(query).all()
    found = [
        ArchiveEntry(
            edition_id=eid,
            kind=kind,
            title=_title(kind, title, subject),
            sent_at=when if when.tzinfo else when.replace(tzinfo=dt.UTC),
            url=url_for(eid, ALL),
            newsletter_slug=slug or "",
            newsletter_name=name or "",
        )
        for eid, kind, title, subject, when, slug, name, _ in rows
    ]
    return Listing(entries=found, total=rows[0].total if rows else 0)


def entries(session: Session, *, newsletter_id: int | None = None, offset: int = 0,
            limit: int = PER_PAGE) -> list[ArchiveEntry]:
    """Up to `limit` entries from `offset`, newest first."""
    return listing(session, newsletter_id=newsletter_id, offset=offset, limit=limit).entries

