"""Readers' pages: signup, confirmation, preferences (with their data: download, delete),
unsubscribe.

Routes are thin: they parse the form, check the CSRF token, call one use-case
(service.usecases.readers, or usecases.subscribers.sign_up) and render what it returns.
No route opens a transaction or sees a row (the `readers-call-use-cases` contract in
.importlinter).  Every refusal is an Arabic page with a 4xx status, reached before
anything is written.  Pages that carry a token are sent with `Cache-Control: no-store`
(service.web.security, for every answer).  The consent evidence a signup and a
confirmation record (IP, user agent, form URL) is read off the request here and never
logged.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse, JSONResponse, Response

from service import resources
from service.config import get_settings
from service.logs import get_logger
from service.usecases import readers, subscribers
from service.usecases.readers import BadToken, Evidence, InvalidInput
from service.web import csrf, security, signup_limit
from service.web.access import ANYONE
from service.web.auth import client_address
from service.web.templating import error_page, render

log = get_logger(__name__)
router = APIRouter(dependencies=[ANYONE])  # readers: no credentials; a token in the path is theirs

HONEYPOT = "website"
MSG_CSRF = "انتهت صلاحية هذه الصفحة أو لم تُرسَل من نموذجنا. أعد تحميل الصفحة وحاول مرة أخرى."
MSG_CONSENT = "نحتاج إلى موافقتك على تلقّي رسائلنا قبل الاشتراك."
MSG_RATE = "وصلتنا طلبات كثيرة من جهازك. انتظر بضع دقائق ثم حاول مرة أخرى."
MSG_BAD_LINK = "هذا الرابط غير صالح أو انتهت صلاحيته. إن نسخته من رسالة، فتأكد من نسخه كاملاً."
MAX_SECTIONS_FIELDS = readers.MAX_SECTIONS_FIELDS


def evidence(request: Request, form_url: object = None, text_version: object = None) -> Evidence:
    """Where this signup or confirmation came from, for the consent record (not for logs)."""
    return readers.evidence(ip=client_address(request), user_agent=request.headers.get("user-agent"),
                            form_url=form_url, text_version=text_version)


def form_page(embed: bool) -> str:
    """Where our own signup form is."""
    return get_settings().public_url + ("/?embed=1" if embed else "/")


def _signup_page(request: Request, *, embed: bool, status_code: int = 200, error: InvalidInput | None = None,
                 values: dict | None = None) -> HTMLResponse:
    # Embedded, the article page that framed the form, as far as the browser told us
    # (usually its origin only); our own page needs no field (`form_page`).
    form_url = (values or {}).get("form_url") or (readers.clean_url(request.headers.get("referer")) if embed else None)
    return render(
        request,
        "signup.html",
        status_code=status_code,
        embed=embed,
        csrf_token=csrf.issue("signup"),
        error=error,
        values=values or {"frequency": "daily", "alerts": "yes", "sections": [], "newsletters": None},
        response_headers=security.embeddable() if embed else None,
        form_url=readers.clean_url(form_url) or "",
        **readers.signup_form(),
    )


def newsletters_field(form: FormData) -> list[str] | None:
    """The newsletters ticked; None for a form that did not offer them (an older embedded
    form: its `frequency` and `alerts` say).  Our form marks that it offered them, so that
    ticking none is an answer («choose one»), not the older form's silence."""
    if form.get("newsletters_shown") != "1" and "newsletters" not in form:
        return None
    return [str(v) for v in form.getlist("newsletters")[:MAX_SECTIONS_FIELDS + 1]]


@router.get("/", response_class=HTMLResponse)
async def signup_form(request: Request, embed: str | None = None):
    return await run_in_threadpool(_signup_page, request, embed=embed == "1")


@router.get("/time-zone.js")
def time_zone_js():
    """Fills the signup and preferences forms' zone with the browser's (the CSP allows our own files only)."""
    return Response(resources.time_zone_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=300"})


@router.get("/signup-challenge.js")
def challenge_js():
    """The signup form's proof-of-work script (SIGNUP_CHALLENGE): the CSP allows our own files only."""
    return Response(resources.signup_challenge_js(), media_type="text/javascript",
                    headers={"Cache-Control": "max-age=300"})


def _form_values(form: FormData) -> dict:
    email = form.get("email")
    return {
        # Echoed back into the form: only the first line, never beyond an address's length.
        "email": (email.splitlines() or [""])[0][:readers.MAX_EMAIL_LENGTH] if isinstance(email, str) else "",
        "sections": [str(v) for v in form.getlist("sections")[:MAX_SECTIONS_FIELDS]],
        "newsletters": newsletters_field(form),
        "frequency": form.get("frequency") or "",
        "alerts": form.get("alerts") or "",
        "consent": form.get("consent") == "yes",
        "digest_hour": str(form.get("digest_hour") or "")[:2],
        "digest_weekday": str(form.get("digest_weekday") or "")[:1],
        "time_zone": str(form.get("time_zone") or "")[:64],
        "form_url": readers.clean_url(form.get("form_url")),
    }


@router.post("/subscribe", response_class=HTMLResponse)
async def subscribe(request: Request):
    form = await request.form()
    embed = form.get("embed") == "1"
    values = _form_values(form)

    verdict = await run_in_threadpool(signup_limit.allow, "subscribe", client_address(request))  # Redis or DB
    if not verdict:
        log.info("signup_rate_limited")
        response = await run_in_threadpool(
            _signup_page, request, embed=embed, status_code=429,
            error=InvalidInput("form", MSG_RATE), values=values,
        )
        response.headers["Retry-After"] = str(signup_limit.retry_after(verdict))
        return response
    if not csrf.valid(form.get(csrf.FIELD), "signup"):
        log.info("signup_bad_csrf")
        return await run_in_threadpool(
            _signup_page, request, embed=embed, status_code=400,
            error=InvalidInput("form", MSG_CSRF), values=values,
        )
    if form.get(HONEYPOT):
        # A bot filled the field people cannot see: it gets the page a person gets.
        log.info("signup_honeypot")
        return render(request, "signup_done.html", embed=embed,
                      response_headers=security.embeddable() if embed else None)

    def work() -> HTMLResponse:
        try:
            subscribers.sign_up(
                subscribers.SignupRequest(
                    email=form.get("email"), sections=form.getlist("sections"), frequency=form.get("frequency"),
                    alerts=form.get("alerts") or "no", consented=form.get("consent") == "yes",
                    digest_hour=form.get("digest_hour"), digest_weekday=form.get("digest_weekday"),
                    time_zone=form.get("time_zone"), newsletters=newsletters_field(form),
                    challenge=form.get("challenge"), solution=form.get("solution")),
                source="web:embed" if embed else "web:form",
                evidence=evidence(request, readers.clean_url(form.get("form_url")) or form_page(embed),
                                  form.get("consent_version")),
            )
        except InvalidInput as exc:
            log.info("signup_invalid", field=exc.field)
            return _signup_page(request, embed=embed, status_code=400, error=exc, values=values)
        return render(request, "signup_done.html", embed=embed,
                      response_headers=security.embeddable() if embed else None)

    return await run_in_threadpool(work)


def _confirm_page(request: Request, token: str, reader: readers.Reader, *, status_code: int = 200,
                  error: InvalidInput | None = None) -> HTMLResponse:
    return render(request, "confirm.html", status_code=status_code, token=token,
                  csrf_token=csrf.issue(f"confirm:{reader.id}"), error=error, newsletters=reader.newsletters)


def _confirmed_page(request: Request, reader: readers.Reader) -> HTMLResponse:
    return render(request, "confirmed.html", preferences_url=reader.preferences_url, newsletters=reader.newsletters)


@router.get("/confirm/{token}", response_class=HTMLResponse)
def confirm_form(request: Request, token: str):
    # No state change here: mail scanners and link previews follow GET links, and a
    # confirmation nobody clicked would defeat double opt-in.  The button POSTs.
    try:
        reader = readers.confirmation(token)
    except BadToken:
        log.info("confirm_bad_token")
        return error_page(request, "تعذّر تأكيد الاشتراك", MSG_BAD_LINK, status_code=400)
    if reader.confirmed:
        return _confirmed_page(request, reader)  # already confirmed: say so, change nothing
    return _confirm_page(request, token, reader)


@router.post("/confirm/{token}", response_class=HTMLResponse)
async def confirm_now(request: Request, token: str):
    form = await request.form()

    def work() -> HTMLResponse:
        try:
            done = readers.confirm(token, authorised=lambda sid: csrf.valid(form.get(csrf.FIELD), f"confirm:{sid}"),
                                   evidence=evidence(request))
        except BadToken:
            log.info("confirm_bad_token")
            return error_page(request, "تعذّر تأكيد الاشتراك", MSG_BAD_LINK, status_code=400)
        if done.refused:
            return _confirm_page(request, token, done.reader, status_code=400, error=InvalidInput("form", MSG_CSRF))
        return _confirmed_page(request, done.reader)

    return await run_in_threadpool(work)


def _preferences_page(request: Request, token: str, page: readers.PreferencesPage) -> HTMLResponse:
    if page.left_all:
        return render(request, "unsubscribed.html")
    error = InvalidInput("form", MSG_CSRF) if page.refused else page.error
    return render(
        request,
        "preferences.html",
        status_code=400 if error is not None else 200,
        token=token,
        csrf_token=csrf.issue(f"preferences:{page.subscriber_id}"),
        error=error,
        saved=page.saved,
        **page.values,
    )


def _data_action(request: Request, token: str, form: FormData, action: str):
    """The preferences page's «your data»: download it (JSON), or delete it (a page that
    asks again, then the deletion: service/subscribers/privacy.py)."""
    def authorised(sub_id: int) -> bool:
        purpose = f"forget:{sub_id}" if action == "forget_confirm" else f"preferences:{sub_id}"
        return csrf.valid(form.get(csrf.FIELD), purpose)

    try:
        answer = readers.reader_data(token, action, authorised=authorised)
    except BadToken:
        log.info("preferences_bad_token")
        return error_page(request, "تعذّر فتح بياناتك", MSG_BAD_LINK, status_code=400)
    if answer.page == "refused":
        return _preferences_page(request, token, answer.preferences)
    if answer.page == "export":
        return JSONResponse(answer.data, headers={"Content-Disposition": 'attachment; filename="nashra-my-data.json"'})
    if answer.page == "ask":
        return render(request, "forget.html", token=token, csrf_token=csrf.issue(f"forget:{answer.subscriber_id}"),
                      preferences_url=f"/preferences/{token}")
    return render(request, "forgotten.html")


DATA_ACTIONS = readers.DATA_ACTIONS


@router.get("/preferences/{token}", response_class=HTMLResponse)
def preferences_form(request: Request, token: str):
    try:
        page = readers.preferences(token)
    except BadToken:
        log.info("preferences_bad_token")
        return error_page(request, "تعذّر فتح صفحة التفضيلات", MSG_BAD_LINK, status_code=400)
    return _preferences_page(request, token, page)


def ordered_sections(form: FormData, prefix: str = "") -> list[str]:
    """The ticked sections (`<prefix>sections`), ordered by the rank the reader typed next
    to each (`<prefix>rank_<id>`).

    A section without a usable rank goes after the ranked ones, in page order.  (Too
    many is the use-case's refusal.)
    """
    ticked = [str(v) for v in form.getlist(f"{prefix}sections")]

    def key(item: tuple[int, str]) -> tuple[int, int]:
        pos, sid = item
        rank = str(form.get(f"{prefix}rank_{sid}") or "").strip()
        return (int(rank), pos) if rank.isascii() and rank.isdigit() and len(rank) < 4 else (1000, pos)

    if len(ticked) > MAX_SECTIONS_FIELDS:
        return ticked  # refused whole by the use-case: no point ordering them
    return [sid for _, sid in sorted(enumerate(ticked), key=key)]


# Each newsletter's fields are `n<id>_<field>` (n12_digest_hour, n12_sections, n12_rank_3…);
# `n<id>_shown` says the page had its part, so an unticked box is an answer.
_FIELDS = ("digest_hour", "digest_weekday", "quiet_start", "quiet_end", "quiet_mode", "alert_cap")
MAX_NEWSLETTER_PARTS = 100


def newsletter_parts(form: FormData) -> dict[str, readers.NewsletterChoices]:
    parts = {}
    for key in form:
        if not (key.startswith("n") and key.endswith("_shown")):
            continue
        ident = key[1:-len("_shown")]
        if not (ident.isascii() and ident.isdigit() and len(ident) <= 9) or len(parts) >= MAX_NEWSLETTER_PARTS:
            continue
        prefix = f"n{ident}_"
        parts[str(int(ident))] = readers.NewsletterChoices(
            sections=ordered_sections(form, prefix), **{f: form.get(prefix + f) for f in _FIELDS})
    return parts


def preferences_form_values(form: FormData) -> readers.PreferencesForm:
    return readers.PreferencesForm(
        newsletters=newsletter_parts(form), pause=form.get("pause"), time_zone=form.get("time_zone"),
        join=form.get("join"), leave=form.get("leave"), leave_all=form.get("action") == "leave_all")


@router.post("/preferences/{token}", response_class=HTMLResponse)
async def preferences_save(request: Request, token: str):
    form = await request.form()
    action = form.get("action")
    if action in DATA_ACTIONS:
        return await run_in_threadpool(_data_action, request, token, form, action)

    def work():
        try:
            page = readers.save_preferences(
                token, preferences_form_values(form),
                authorised=lambda sid: csrf.valid(form.get(csrf.FIELD), f"preferences:{sid}"))
        except BadToken:
            log.info("preferences_bad_token")
            return error_page(request, "تعذّر حفظ التفضيلات", MSG_BAD_LINK, status_code=400)
        return _preferences_page(request, token, page)

    return await run_in_threadpool(work)


MSG_BAD_UNSUBSCRIBE = "تعذّر إلغاء الاشتراك"


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_form(request: Request, token: str):
    # No state change here: mail scanners and link previews follow GET links.
    try:
        page = readers.unsubscribe_state(token, request.query_params.get("n"))
    except BadToken:
        return error_page(request, MSG_BAD_UNSUBSCRIBE, MSG_BAD_LINK, status_code=400)
    except InvalidInput as exc:
        log.info("unsubscribe_bad_newsletter")
        return error_page(request, MSG_BAD_UNSUBSCRIBE, exc.message, status_code=400)
    if page.state == "unsubscribed":
        return render(request, "unsubscribed.html")
    # The buttons post to the same link, edition included (its unsubscribe count): one
    # with the newsletter (`n`), one without (all of them).
    return render(request, "unsubscribe.html", token=token, edition=readers.edition_ref(request.query_params.get("e")),
                  newsletter=page)


@router.post("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_now(request: Request, token: str):
    # RFC 8058 one-click: the mail client POSTs "List-Unsubscribe=One-Click" with no
    # cookie and no CSRF token; the signed link is the authority.  The body is not read:
    # what to leave is in the link (`n`: one newsletter; none: all).
    try:
        left = readers.unsubscribe(token, request.query_params.get("e"), request.query_params.get("n"))
    except BadToken:
        log.info("unsubscribe_bad_token")
        return error_page(request, MSG_BAD_UNSUBSCRIBE, MSG_BAD_LINK, status_code=400)
    except InvalidInput as exc:
        log.info("unsubscribe_bad_newsletter")
        return error_page(request, MSG_BAD_UNSUBSCRIBE, exc.message, status_code=400)
    if left.everything:
        return render(request, "unsubscribed.html")
    return render(request, "unsubscribed.html", newsletter_name=left.newsletter_name,
                  preferences_url=left.preferences_url)
