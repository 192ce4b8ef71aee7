"""What anyone may read on the web: an edition's web copy, and the public archive with
its Atom feed (README, "The web copy and the archive")."""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlencode

from sqlalchemy.orm import Session

from service.config import get_settings
from service.db import session_scope
from service.editions import archive, web_copy
from service.editions.variants import render_variant_for
from service.logs import get_logger
from service.models import Edition, utcnow
from service.rendering.atom import AtomCategory, AtomEntry, atom_feed

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


class NoSuchNewsletter(LookupError):
    """`?newsletter=` names no newsletter (unknown, or not a slug at all): a 404."""


@dataclass(frozen=True)
class ArchivePage:
    entries: list[archive.ArchiveEntry]
    page: int
    pages: int
    feed_url: str
    # The visible newsletters, for the page's navigation (hidden ones are left out of it,
    # though their editions stay listed and their own archive answers by slug).
    newsletters: list[archive.ArchiveNewsletter]
    newsletter: archive.ArchiveNewsletter | None = None  # the one this page lists, if any

    def page_query(self, page: int) -> str:
        """The query string of another page of this listing (it keeps the filter)."""
        params = {"newsletter": self.newsletter.slug} if self.newsletter else {}
        return "?" + urlencode(params | {"page": page})


def _filter(session: Session, slug: str | None) -> tuple[list[archive.ArchiveNewsletter],
                                                          archive.ArchiveNewsletter | None]:
    everyone = archive.newsletters(session)
    if slug is None:
        return everyone, None
    found = archive.find(everyone, slug)
    if found is None:
        raise NoSuchNewsletter(slug)
    return everyone, found


def _query(newsletter: archive.ArchiveNewsletter | None) -> str:
    return "?" + urlencode({"newsletter": newsletter.slug}) if newsletter else ""


def archive_page(page: int, newsletter: str | None = None) -> ArchivePage | None:
    """Page `page` (from 1) of the archive, of one newsletter when `newsletter` (a slug)
    is given; None when the archive is not public or the page is past the end (page 1 of
    an empty archive is a page that says so).  NoSuchNewsletter when the slug names none.
    Two statements, whatever the page: the newsletters, and the page's entries with
    their count."""
    settings = get_settings()
    if not settings.archive_public or not 1 <= page <= MAX_PAGE:
        return None
    with session_scope() as session:
        everyone, chosen = _filter(session, newsletter)
        found = archive.listing(session, newsletter_id=chosen.id if chosen else None,
                                offset=(page - 1) * archive.PER_PAGE, limit=archive.PER_PAGE)
    if not found.entries and page > 1:
        return None
    pages = max(1, math.ceil(found.total / archive.PER_PAGE))
    return ArchivePage(entries=found.entries, page=page, pages=pages,
                       feed_url=settings.public_url + FEED_PATH + _query(chosen),
                       newsletters=[n for n in everyone if not n.hidden], newsletter=chosen)


def _feed_entry(settings, e: archive.ArchiveEntry) -> AtomEntry:
    # An entry's id stays when SECRET_KEY (and so the copy's address) changes, and is the
    # same in the whole archive's feed and its newsletter's.
    newsletter = (AtomCategory(term=e.newsletter_slug, label=e.newsletter_name,
                               scheme=settings.public_url + ARCHIVE_PATH + "?newsletter=")
                  if e.newsletter_slug else None)
    return AtomEntry(id=f"{settings.public_url}{ARCHIVE_PATH}#edition-{e.edition_id}", title=e.title, url=e.url,
                     updated=e.sent_at, category=e.kind_label, more_categories=(newsletter,) if newsletter else ())


def archive_feed(newsletter: str | None = None) -> bytes | None:
    """The archive's Atom feed (its latest editions; of one newsletter when `newsletter`,
    a slug, is given); None when the archive is not public, NoSuchNewsletter when the
    slug names none."""
    settings = get_settings()
    if not settings.archive_public:
        return None
    with session_scope() as session:
        # The whole archive's feed has no navigation: the newsletters are read only for a slug.
        chosen = _filter(session, newsletter)[1] if newsletter is not None else None
        found = archive.entries(session, newsletter_id=chosen.id if chosen else None, limit=archive.FEED_ENTRIES)
    query = _query(chosen)
    return atom_feed(
        feed_id=settings.public_url + ARCHIVE_PATH + query,
        title=f"{settings.site_name} — أرشيف {chosen.name if chosen else 'النشرة'}",
        self_url=settings.public_url + FEED_PATH + query,
        page_url=settings.public_url + ARCHIVE_PATH + query,
        updated=found[0].sent_at if found else utcnow(),
        entries=[_feed_entry(settings, e) for e in found],
    )
