"""What anyone may read on the web: an edition's web copy, and the public archive with
its Atom feed (README, "The web copy and the archive")."""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy.orm import Session

from service.config import get_settings
from service.db import session_scope
from service.editions import archive, web_copy
from service.editions.variants import render_variant_for
from service.logs import get_logger
from service.models import Edition, utcnow
from service.rendering.atom import AtomEntry, atom_feed

log = get_logger(__name__)

ARCHIVE_PATH = "/archive"
FEED_PATH = "/archive/feed.atom"
MAX_PAGE = 100_000
# Copies of an edition's "all" variant that no reader got (so none is stored) are
# rendered when first asked for and kept here: the archive's digests, mostly.
_RENDERED_MAX = 64
_rendered: OrderedDict[tuple[int, dt.datetime | None], str | None] = OrderedDict()
_rendered_lock = threading.Lock()


@dataclass(frozen=True)
class WebCopy:
    html: str
    indexable: bool  # listed in a public archive: search engines may keep it


def _render_all(session: Session, edition: Edition) -> str | None:
    # created_at in the key: ids start again in a fresh database (the tests'), copies never change.
    key = (edition.id, edition.created_at)
    with _rendered_lock:
        if key in _rendered:
            _rendered.move_to_end(key)
            return _rendered[key]
    try:
        rendered = render_variant_for(session, edition, web_copy.ALL)
    except ValueError:
        log.warning("web_copy_render_failed", edition_id=edition.id)
        rendered = None
    html = rendered.html if rendered is not None else None
    with _rendered_lock:
        _rendered[key] = html
        while len(_rendered) > _RENDERED_MAX:
            _rendered.popitem(last=False)
    return html


def _archived(edition: Edition) -> bool:
    return edition.kind in archive.ARCHIVED_KINDS and edition.status in archive.LISTED


def web_copy_page(edition_id: int, ref: str) -> WebCopy | None:
    """The page at /e/{edition_id}/{ref}; None when there is none to show (unknown,
    forged, a draft or a cancelled edition)."""
    if not 0 < edition_id < 2**31:  # editions.id is an INTEGER: no copy, not a database error
        return None
    settings = get_settings()
    with session_scope() as session:
        found = web_copy.find(session, edition_id, ref)
        if found is None:
            return None
        html = found.html if found.html is not None else _render_all(session, found.edition)
        if html is None:
            return None
        public = settings.archive_public and _archived(found.edition)
        indexable = public and found.variant == web_copy.ALL
        # A reader's own variant of an archived edition points engines at the archive's copy.
        canonical = web_copy.url_for(edition_id, web_copy.ALL) if public and not indexable else None
        page = web_copy.public_html(html, signup_url=settings.public_url + "/", indexable=indexable,
                                    canonical_url=canonical, site_name=settings.site_name)
        log.info("web_copy_shown", edition_id=edition_id, kind=found.edition.kind.value)
        return WebCopy(html=page, indexable=indexable)


@dataclass(frozen=True)
class ArchivePage:
    entries: list[archive.ArchiveEntry]
    page: int
    pages: int
    feed_url: str


def archive_page(page: int) -> ArchivePage | None:
    """Page `page` (from 1) of the archive; None when the archive is not public or the
    page is past the end (page 1 of an empty archive is a page that says so)."""
    if not get_settings().archive_public or not 1 <= page <= MAX_PAGE:
        return None
    with session_scope() as session:
        total = archive.count(session)
        pages = max(1, math.ceil(total / archive.PER_PAGE))
        if page > pages:
            return None
        found = archive.entries(session, offset=(page - 1) * archive.PER_PAGE)
    return ArchivePage(entries=found, page=page, pages=pages, feed_url=get_settings().public_url + FEED_PATH)


def archive_feed() -> bytes | None:
    """The archive's Atom feed (its latest editions); None when the archive is not public."""
    settings = get_settings()
    if not settings.archive_public:
        return None
    with session_scope() as session:
        found = archive.entries(session, limit=archive.FEED_ENTRIES)
    # An entry's id stays when SECRET_KEY (and so the copy's address) changes.
    return atom_feed(
        feed_id=settings.public_url + ARCHIVE_PATH,
        title=f"{settings.site_name} — أرشيف النشرة",
        self_url=settings.public_url + FEED_PATH,
        page_url=settings.public_url + ARCHIVE_PATH,
        updated=found[0].sent_at if found else utcnow(),
        entries=[AtomEntry(id=f"{settings.public_url}{ARCHIVE_PATH}#edition-{e.edition_id}", title=e.title, url=e.url, updated=e.sent_at, category=e.kind_label)
                 for e in found],
    )
