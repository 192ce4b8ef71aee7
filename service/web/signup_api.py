"""`POST /api/subscribe`: the signup of a site's own form, called from the reader's browser.

JSON `{email, newsletters, sections, consent, form_url}` (+ optional `digest_hour`,
`digest_weekday`, `time_zone` — an IANA name, absent: TIMEZONE — and the honeypot
`website`, which a person leaves empty):

* `newsletters` are slugs of the newsletters the form offers (an unknown, hidden or
  unoffered one → 422 naming it, nothing written); absent, the older one-subscription
  words say: `frequency` daily (default) or weekly, `alerts` true/false (default false),
  mapped onto `daily`/`weekly` and `alerts`;
* `consent` is the version of the consent sentence the form showed
  (service/subscribers/consent.py: the README prints the current one); `sections` are
  section ids or slugs (empty or absent: every section), for the digests chosen;
* CORS for SIGNUP_ALLOWED_ORIGINS only (and our own PUBLIC_URL): a preflight from another
  origin gets 403 and no Access-Control-Allow-Origin, and a POST that names another
  Origin is refused before anything is read.  No cookie is read or set, and
  credentials are never allowed;
* the same limits as the form (the same per-client bucket, 5 per 10 minutes; at most 3
  confirmation mails a day to one address), the same honeypot, the same double opt-in;
* with SIGNUP_CHALLENGE on, a proof of work: `GET /api/challenge` gives a challenge,
  and the body carries it back as `challenge` with the counter found as `solution`
  (service/subscribers/challenge.py); missing, forged, expired or spent → 422
  `{"error": "challenge"}`;
* the same answer for every address — new, pending, already subscribed, suppressed —
  `202 {"status": "check_your_inbox"}`; only bad input (422, naming the field, in Arabic),
  a bad body (400, 413) or the limit (429 with Retry-After) answer otherwise.

The client address is the browser's (the request comes straight from it); a site that
called this from its own server would put every reader behind its one address and hit
the limit at once.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from service.config import get_settings
from service.logs import get_logger
from service.usecases import readers, subscribers
from service.usecases.readers import InvalidInput
from service.web import signup_limit
from service.web.access import ANYONE
from service.web.auth import client_address
from service.web.readers import HONEYPOT, MSG_RATE, evidence

log = get_logger(__name__)
router = APIRouter(dependencies=[ANYONE])  # anyone may sign up; the limits and double opt-in guard it

PATH = "/api/subscribe"
CHALLENGE_PATH = "/api/challenge"
MAX_BODY = 16 * 1024
PREFLIGHT_MAX_AGE = 600
MSG_DONE = "تحقّق من بريدك: أرسلنا إليك رابطاً لتأكيد الاشتراك."
MSG_BODY = "أرسل كائن JSON بالحقول email وconsent (وnewsletters وsections إن شئت)."
MSG_CONSENT_VERSION = "أرسل في consent إصدار نص الموافقة الذي عرضه النموذج ({current})."
MSG_ORIGIN = "هذا الموقع غير مأذون له بالاشتراك عبر واجهتنا."


def _own_origin() -> str:
    parts = urlsplit(get_settings().public_url)
    return f"{parts.scheme}://{parts.netloc.lower()}"


def allowed(origin: str) -> bool:
    origin = origin.strip().lower()
    return origin in get_settings().signup_allowed_origins or origin == _own_origin()


def _cors(origin: str | None) -> dict[str, str]:
    headers = {"Vary": "Origin"}
    if origin:
        headers["Access-Control-Allow-Origin"] = origin
    return headers


def _answer(status: int, body: dict, origin: str | None, **headers: str) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={**_cors(origin), **headers})


@router.options(PATH)
async def preflight(request: Request):
    origin = request.headers.get("origin")
    method = (request.headers.get("access-control-request-method") or "POST").upper()
    if not origin or not allowed(origin) or method != "POST":
        log.info("signup_api_preflight_refused")
        return Response(status_code=403, headers={"Vary": "Origin"})
    return Response(status_code=204, headers={
        **_cors(origin),
        "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE),
    })


def _error(field: str, message: str, origin: str | None, status: int = 422) -> JSONResponse:
    return _answer(status, {"error": field, "message": message}, origin)


@router.post(PATH)
async def subscribe(request: Request):
    origin = request.headers.get("origin")
    if origin is not None and not allowed(origin):
        # A browser would not let that page read our answer anyway; it must not sign anyone up either.
        log.info("signup_api_origin_refused")
        return JSONResponse({"error": "origin", "message": MSG_ORIGIN}, status_code=403, headers={"Vary": "Origin"})
    verdict = await run_in_threadpool(signup_limit.allow, "subscribe", client_address(request))  # the form's bucket
    if not verdict:
        log.info("signup_rate_limited", door="api")
        return _answer(429, {"error": "rate", "message": MSG_RATE}, origin,
                       **{"Retry-After": str(signup_limit.retry_after(verdict))})
    body = await request.body()
    if len(body) > MAX_BODY:
        return _error("body", MSG_BODY, origin, 413)
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        return _error("body", MSG_BODY, origin, 400)
    if data.get(HONEYPOT):
        log.info("signup_honeypot", door="api")
        return _answer(202, {"status": "check_your_inbox", "message": MSG_DONE}, origin)
    version = data.get("consent")
    if not readers.consent_version_known(version):
        return _error("consent", MSG_CONSENT_VERSION.format(current=readers.CONSENT_VERSION), origin)
    sections = data.get("sections")
    req = subscribers.SignupRequest(
        email=data.get("email"), sections=[] if sections is None else sections,
        frequency=data.get("frequency", "daily"), alerts=data.get("alerts", False), consented=True,
        digest_hour=data.get("digest_hour"), digest_weekday=data.get("digest_weekday"),
        time_zone=data.get("time_zone"), newsletters=data.get("newsletters"),
        challenge=data.get("challenge"), solution=data.get("solution"))
    form_url = data.get("form_url") if readers.clean_url(data.get("form_url")) else request.headers.get("referer")
    proof = evidence(request, form_url, version)

    def work() -> JSONResponse:
        try:
            subscribers.sign_up(req, source="api", evidence=proof, slugs=True)
        except InvalidInput as exc:
            log.info("signup_invalid", field=exc.field, door="api")
            return _error(exc.field, exc.message, origin)
        return _answer(202, {"status": "check_your_inbox", "message": MSG_DONE}, origin)

    return await run_in_threadpool(work)


@router.get(CHALLENGE_PATH)
def challenge(request: Request):
    """A proof-of-work challenge for the next POST /api/subscribe (SIGNUP_CHALLENGE):
    `{"required": true, "challenge", "bits", "issued", "expires_in"}`, or
    `{"required": false}` when it is off.  Stateless: nothing is stored until it is spent."""
    origin = request.headers.get("origin")
    if origin is not None and not allowed(origin):
        return JSONResponse({"error": "origin", "message": MSG_ORIGIN}, status_code=403, headers={"Vary": "Origin"})
    issued = subscribers.new_challenge()
    return _answer(200, {"required": False} if issued is None else {"required": True, **issued}, origin)
