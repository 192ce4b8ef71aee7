"""The public archive: past editions by date, each with its web copy (ARCHIVE_PUBLIC).

What is listed: digests, special editions and alerts that went out (sending or done),
newest first.
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
from service.models import Edition, EditionKind, EditionStatus, EditionVariant

ARCHIVED_KINDS = (EditionKind.digest, EditionKind.alert, EditionKind.special)
LISTED = (EditionStatus.sending, EditionStatus.done)
PER_PAGE = 30
FEED_ENTRIES = 50
KIND_LABELS = {EditionKind.digest: "نشرة", EditionKind.alert: "عاجل", EditionKind.special: "عدد خاص"}


@dataclass(frozen=True)
class ArchiveEntry:
    edition_id: int
    kind: EditionKind
    title: str
    sent_at: dt.datetime  # UTC
    url: str  # the web copy

    @property
    def kind_label(self) -> str:
        return KIND_LABELS.get(self.kind, "")


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


def entries(session: Session, *, offset: int = 0, limit: int = PER_PAGE) -> list[ArchiveEntry]:
    """Up to `limit` entries from `offset`, newest first."""
    sent_at = _sent_at().label("sent_at")
    rows = session.execute(
        sa.select(Edition.id, Edition.kind, Edition.title, EditionVariant.subject, sent_at)
        .outerjoin(EditionVariant, (EditionVariant.edition_id == Edition.id) & (EditionVariant.variant == ALL))
        .where(Edition.kind.in_(ARCHIVED_KINDS), Edition.status.in_(LISTED))
        .order_by(sent_at.desc(), Edition.id.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return [
        ArchiveEntry(
            edition_id=eid,
            kind=kind,
            title=_title(kind, title, subject),
            sent_at=when if when.tzinfo else when.replace(tzinfo=dt.UTC),
            url=url_for(eid, ALL),
        )
        for eid, kind, title, subject, when in rows
    ]


def count(session: Session) -> int:
    return session.scalar(
        sa.select(sa.func.count()).select_from(Edition)
        .where(Edition.kind.in_(ARCHIVED_KINDS), Edition.status.in_(LISTED))
    ) or 0
