"""`GET /r/<link>.<sig>[.<token>]`: a link from a mail, counted, then a 302 to the article.

Anything we did not sign — a forged or altered path, an oversized one, a NUL — is a 400
page with no Location: `/r/` redirects only to URLs an edition carried (no open
redirect).  A HEAD is redirected and not counted; a scanner's GET is redirected and
counted apart (service/clicks/scanners.py).  The redirect tells the article's site
nothing about the mail (`Referrer-Policy: no-referrer`) and is never cached (each click
is a click).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from service.usecases import clicks
from service.web.access import ANYONE
from service.web.templating import error_page

router = APIRouter()

MSG_FORGED = "هذا الرابط غير صالح: ربما نُسخ ناقصاً أو عُدّل. افتح الرابط من رسالة النشرة كما هو."
MSG_GONE = "لم يعد هذا الرابط محفوظاً لدينا."


@router.api_route("/r/{ref}", methods=["GET", "HEAD"], dependencies=[ANYONE])
async def follow_link(ref: str, request: Request):
    outcome = await run_in_threadpool(clicks.follow, ref, request.method, request.headers)
    if outcome is clicks.Refused.gone:
        return error_page(request, "رابط غير موجود", MSG_GONE, status_code=404)
    if isinstance(outcome, clicks.Refused) or not outcome.url.startswith(("https://", "http://")):
        return error_page(request, "رابط غير صالح", MSG_FORGED, status_code=400)
    return RedirectResponse(outcome.url, status_code=302,
                            headers={"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"})
