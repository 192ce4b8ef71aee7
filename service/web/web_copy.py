"""An edition's web copy (/e/{edition_id}/{ref}) and the public archive (/archive, and
its Atom feed /archive/feed.atom): pages for anyone, nothing written, nothing personal.

A path that names no copy (malformed, forged, a draft or cancelled edition) is a 404
page, decided before the database is asked when the path cannot be one of ours; so is
an archive of a newsletter that `?newsletter=` does not name (unknown, malformed, given
twice).
"""

from __future__ import annotations

import re
from itertools import groupby

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response

from service.config import get_settings
from service.rendering import dates
from service.usecases import web_copies
from service.web.access import ANYONE
from service.web.templating import error_page, render

router = APIRouter(dependencies=[ANYONE])

_EDITION_ID = re.compile(r"[1-9][0-9]{0,17}")  # a BIGINT, without leading zeros
_REF = re.compile(r"[A-Za-z0-9_-]{22}")
_PAGE = re.compile(r"[1-9][0-9]{0,5}")
NOT_FOUND = "لم نجد هذه الصفحة"
MSG_NO_COPY = "لا توجد نسخة بهذا الرابط. إن نسخته من رسالة، فتأكد من نسخه كاملاً."
MSG_NO_ARCHIVE = "أرشيف النشرة غير منشور."
MSG_NO_NEWSLETTER = "لا توجد في الأرشيف نشرة بهذا المعرّف."
# No token in these pages: browsers and proxies may keep them for a while.
CACHE = "public, max-age=300"


def _not_found(request: Request, message: str) -> HTMLResponse:
    return error_page(request, NOT_FOUND, message, status_code=404, response_headers={"X-Robots-Tag": "noindex"})


@router.get("/e/{edition_id}/{ref}")
def web_copy(request: Request, edition_id: str, ref: str):
    if not _EDITION_ID.fullmatch(edition_id) or not _REF.fullmatch(ref):
        return _not_found(request, MSG_NO_COPY)
    copy = web_copies.web_copy_page(int(edition_id), ref)
    if copy is None:
        return _not_found(request, MSG_NO_COPY)
    headers = {"Cache-Control": CACHE}
    if not copy.indexable:
        headers["X-Robots-Tag"] = "noindex"
    return HTMLResponse(copy.html, headers=headers)


def _day(entry) -> str:
    settings = get_settings()
    return dates.arabic_date(dates.local_time(entry.sent_at, settings.tz), hijri=settings.hijri_dates,
                             arabic_digits=settings.arabic_indic_digits)


def _clock(entry) -> str:
    settings = get_settings()
    return dates.clock_time(dates.local_time(entry.sent_at, settings.tz), arabic_digits=settings.arabic_indic_digits)


def _newsletter(request: Request) -> tuple[bool, str | None]:
    """(well-formed, the slug) of `?newsletter=`: none is the whole archive; more than
    one (`?newsletter=a&newsletter=b`) names no one archive."""
    given = request.query_params.getlist("newsletter")
    return len(given) <= 1, given[0] if given else None


@router.get(web_copies.ARCHIVE_PATH)
def archive(request: Request, page: str = "1"):
    if not get_settings().archive_public:
        return _not_found(request, MSG_NO_ARCHIVE)
    if not _PAGE.fullmatch(page):
        return error_page(request, "رقم صفحة غير صالح", "رقم الصفحة عدد صحيح يبدأ من 1.", status_code=400)
    single, slug = _newsletter(request)
    if not single:
        return _not_found(request, MSG_NO_NEWSLETTER)
    try:
        found = web_copies.archive_page(int(page), slug)
    except web_copies.NoSuchNewsletter:
        return _not_found(request, MSG_NO_NEWSLETTER)
    if found is None:
        return _not_found(request, MSG_NO_ARCHIVE if not get_settings().archive_public else "لا توجد صفحة بهذا الرقم.")
    days = [(day, [(e, _clock(e)) for e in group]) for day, group in groupby(found.entries, key=_day)]
    return render(request, "archive.html", archive=found, days=days, response_headers={"Cache-Control": CACHE})


@router.get(web_copies.FEED_PATH)
def archive_feed(request: Request):
    single, slug = _newsletter(request)
    try:
        feed = web_copies.archive_feed(slug) if single else None
    except web_copies.NoSuchNewsletter:
        feed = None
    if feed is None:
        public = get_settings().archive_public
        return _not_found(request, MSG_NO_NEWSLETTER if public else MSG_NO_ARCHIVE)
    return Response(feed, media_type="application/atom+xml; charset=utf-8", headers={"Cache-Control": CACHE})
