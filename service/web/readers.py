"""Readers' pages: signup, confirmation, preferences (with their data: download, delete),
unsubscribe.

Routes are thin: they parse the form, check the CSRF token, and call the plain
functions in service.subscribers (or service.usecases.subscribers) inside one
transaction.  Every refusal is an Arabic page with a 4xx status, reached before anything
is written.  Pages that carry a token are sent with `Cache-Control: no-store`
(service.web.security, for every answer).  The consent evidence a signup and a
confirmation record (IP, user agent, form URL) is read off the request here and never
logged.
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse, JSONResponse

from service.config import get_settings
from service.db import session_scope
from service.logs import get_logger
from service.models import Subscriber, SubscriberStatus, utcnow
from service.subscribers import choices, consent, lifecycle
from service.subscribers.consent import Evidence
from service.subscribers.errors import InvalidInput
from service.subscribers.hours import WEEKDAYS_AR, effective_hour, effective_weekday, offered_hours
from service.subscribers.quiet import CAPS, PAUSE_WEEKS
from service.subscribers.tokens import BadToken, link, read_token
from service.subscribers.validation import (
    MAX_EMAIL_LENGTH,
    all_sections,
    parse_frequency,
    parse_yes_no,
    section_ids,
)
from service.usecases import subscribers as readers
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
MAX_SECTIONS_FIELDS = 100


def _sections() -> list:
    with session_scope() as s:
        return [{"id": x.id, "name": x.name, "slug": x.slug} for x in all_sections(s)]


def _hour_options() -> list[dict]:
    return [{"value": h, "label": f"{h:02d}:00"} for h in offered_hours()]


def _weekday_options() -> list[dict]:
    return [{"value": i, "label": name} for i, name in enumerate(WEEKDAYS_AR)]


def evidence(request: Request, form_url: object = None, text_version: object = None) -> Evidence:
    """Where this signup or confirmation came from, for the consent record (not for logs)."""
    return Evidence(ip=client_address(request), user_agent=request.headers.get("user-agent"),
                    form_url=consent.clean_url(form_url), text_version=text_version if consent.known(text_version)
                    else consent.CURRENT)


def form_page(embed: bool) -> str:
    """Where our own signup form is."""
    return get_settings().public_url + ("/?embed=1" if embed else "/")


def _signup_page(request: Request, *, embed: bool, status_code: int = 200, error: InvalidInput | None = None,
                 values: dict | None = None) -> HTMLResponse:
    # Embedded, the article page that framed the form, as far as the browser told us
    # (usually its origin only); our own page needs no field (`form_page`).
    form_url = (values or {}).get("form_url") or (consent.clean_url(request.headers.get("referer")) if embed else None)
    return render(
        request,
        "signup.html",
        status_code=status_code,
        embed=embed,
        sections=_sections(),
        csrf_token=csrf.issue("signup"),
        error=error,
        values=values or {"frequency": "daily", "alerts": "yes", "sections": []},
        response_headers=security.embeddable() if embed else None,
        hours=_hour_options(),
        default_hour=effective_hour(None),
        weekdays=_weekday_options(),
        default_weekday=effective_weekday(None),
        consent_text=consent.text_of(consent.CURRENT),
        consent_version=consent.CURRENT,
        form_url=consent.clean_url(form_url) or "",
    )


@router.get("/", response_class=HTMLResponse)
async def signup_form(request: Request, embed: str | None = None):
    return await run_in_threadpool(_signup_page, request, embed=embed == "1")


def _form_values(form: FormData) -> dict:
    email = form.get("email")
    return {
        # Echoed back into the form: only the first line, never beyond an address's length.
        "email": (email.splitlines() or [""])[0][:MAX_EMAIL_LENGTH] if isinstance(email, str) else "",
        "sections": [str(v) for v in form.getlist("sections")[:MAX_SECTIONS_FIELDS]],
        "frequency": form.get("frequency") or "",
        "alerts": form.get("alerts") or "",
        "consent": form.get("consent") == "yes",
        "digest_hour": str(form.get("digest_hour") or "")[:2],
        "digest_weekday": str(form.get("digest_weekday") or "")[:1],
        "form_url": consent.clean_url(form.get("form_url")),
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
            readers.sign_up(
                readers.SignupRequest(
                    email=form.get("email"), sections=form.getlist("sections"), frequency=form.get("frequency"),
                    alerts=form.get("alerts") or "no", consented=form.get("consent") == "yes",
                    digest_hour=form.get("digest_hour"), digest_weekday=form.get("digest_weekday")),
                source="web:embed" if embed else "web:form",
                evidence=evidence(request, consent.clean_url(form.get("form_url")) or form_page(embed),
                                  form.get("consent_version")),
            )
        except InvalidInput as exc:
            log.info("signup_invalid", field=exc.field)
            return _signup_page(request, embed=embed, status_code=400, error=exc, values=values)
        return render(request, "signup_done.html", embed=embed,
                      response_headers=security.embeddable() if embed else None)

    return await run_in_threadpool(work)


def _confirm_page(request: Request, token: str, sub: Subscriber, *, status_code: int = 200,
                  error: InvalidInput | None = None) -> HTMLResponse:
    return render(request, "confirm.html", status_code=status_code, token=token,
                  csrf_token=csrf.issue(f"confirm:{sub.id}"), error=error)


def _confirmed_page(request: Request, sub: Subscriber) -> HTMLResponse:
    return render(request, "confirmed.html", preferences_url=link("preferences", sub.id, sub.token_version))


@router.get("/confirm/{token}", response_class=HTMLResponse)
def confirm_form(request: Request, token: str):
    # No state change here: mail scanners and link previews follow GET links, and a
    # confirmation nobody clicked would defeat double opt-in.  The button POSTs.
    try:
        with session_scope() as s:
            sub = lifecycle.subscriber_to_confirm(s, token)
    except BadToken:
        log.info("confirm_bad_token")
        return error_page(request, "تعذّر تأكيد الاشتراك", MSG_BAD_LINK, status_code=400)
    if sub.status is SubscriberStatus.active:
        return _confirmed_page(request, sub)  # already confirmed: say so, change nothing
    return _confirm_page(request, token, sub)


@router.post("/confirm/{token}", response_class=HTMLResponse)
async def confirm_now(request: Request, token: str):
    form = await request.form()

    def work() -> HTMLResponse:
        try:
            with session_scope() as s:
                sub = lifecycle.subscriber_to_confirm(s, token, lock=True)
                if not csrf.valid(form.get(csrf.FIELD), f"confirm:{sub.id}"):
                    log.info("confirm_bad_csrf", subscriber_id=sub.id)
                    return _confirm_page(request, token, sub, status_code=400,
                                         error=InvalidInput("form", MSG_CSRF))
                sub = lifecycle.confirm(s, token, evidence=evidence(request))
        except BadToken:
            log.info("confirm_bad_token")
            return error_page(request, "تعذّر تأكيد الاشتراك", MSG_BAD_LINK, status_code=400)
        return _confirmed_page(request, sub)

    return await run_in_threadpool(work)


def _preferences_page(request: Request, token: str, sub: Subscriber, *, status_code: int = 200,
                      error: InvalidInput | None = None, saved: bool = False, sections: list | None = None):
    chosen = list(sub.sections or [])
    with session_scope() as s:
        options = [{"id": x.id, "name": x.name} for x in all_sections(s, keep=chosen)]
    rank = {sid: i + 1 for i, sid in enumerate(chosen)}
    for opt in options:
        opt["checked"] = opt["id"] in rank
        opt["rank"] = rank.get(opt["id"], "")
    # The reader's own order first, then the rest in the site's order.
    options.sort(key=lambda o: (0, o["rank"]) if o["checked"] else (1, 0))
    return render(
        request,
        "preferences.html",
        status_code=status_code,
        token=token,
        sections=options,
        frequency=sub.frequency.value,
        alerts=sub.alerts,
        pending=sub.status is SubscriberStatus.pending,
        csrf_token=csrf.issue(f"preferences:{sub.id}"),
        unsubscribe_url=link("unsubscribe", sub.id, sub.token_version),
        error=error,
        saved=saved,
        **_schedule_view(sub),
    )


def _schedule_view(sub: Subscriber) -> dict:
    """The preferences page's «when» and «your data» parts."""
    now = utcnow()
    paused = sub.paused_until if sub.paused_until is not None and sub.paused_until > now else None
    with session_scope() as s:
        record = consent.history(s, sub)
    tz = get_settings().tz
    for entry in record:  # shown in local time; the export keeps UTC
        entry["at_local"] = dt.datetime.fromisoformat(entry["at"]).astimezone(tz).strftime("%Y-%m-%d %H:%M")
    return {
        "hours": _hour_options(),
        "digest_hour": effective_hour(sub.digest_hour),
        "weekdays": _weekday_options(),
        "digest_weekday": effective_weekday(sub.digest_weekday),
        "quiet_start": sub.quiet_start,
        "quiet_end": sub.quiet_end,
        "quiet_mode": sub.quiet_mode or "hold",
        "alert_cap": sub.alert_cap,
        "caps": CAPS,
        "pause_weeks": PAUSE_WEEKS,
        "paused_until": paused.astimezone(get_settings().tz).strftime("%Y-%m-%d %H:%M") if paused else None,
        "consent_record": record,
    }


def _data_action(request: Request, token: str, form: FormData, action: str):
    """The preferences page's «your data»: download it (JSON), or delete it (a page that
    asks again, then the deletion: service/subscribers/privacy.py)."""
    try:
        sub_id, _ = read_token("preferences", token)
    except BadToken:
        return error_page(request, "تعذّر فتح بياناتك", MSG_BAD_LINK, status_code=400)
    purpose = f"forget:{sub_id}" if action == "forget_confirm" else f"preferences:{sub_id}"
    try:
        if not csrf.valid(form.get(csrf.FIELD), purpose):
            log.info("reader_data_bad_csrf", subscriber_id=sub_id)
            with session_scope() as s:
                sub = lifecycle.subscriber_for_token(s, "preferences", token)
            return _preferences_page(request, token, sub, status_code=400, error=InvalidInput("form", MSG_CSRF))
        if action == "export":
            sub_id, data = readers.export_for(token)
            log.info("reader_data_exported", subscriber_id=sub_id)
            return JSONResponse(data, headers={"Content-Disposition": 'attachment; filename="nashra-my-data.json"'})
        if action == "forget":
            with session_scope() as s:
                lifecycle.subscriber_for_token(s, "preferences", token)
            return render(request, "forget.html", token=token, csrf_token=csrf.issue(f"forget:{sub_id}"),
                          preferences_url=f"/preferences/{token}")
        readers.forget_for(token)
    except BadToken:
        log.info("preferences_bad_token")
        return error_page(request, "تعذّر فتح بياناتك", MSG_BAD_LINK, status_code=400)
    return render(request, "forgotten.html")


DATA_ACTIONS = ("export", "forget", "forget_confirm")


@router.get("/preferences/{token}", response_class=HTMLResponse)
def preferences_form(request: Request, token: str):
    try:
        with session_scope() as s:
            sub = lifecycle.subscriber_for_token(s, "preferences", token)
    except BadToken:
        log.info("preferences_bad_token")
        return error_page(request, "تعذّر فتح صفحة التفضيلات", MSG_BAD_LINK, status_code=400)
    return _preferences_page(request, token, sub)


def ordered_sections(form: FormData) -> list[str]:
    """The ticked sections, ordered by the rank the reader typed next to each.

    A section without a usable rank goes after the ranked ones, in page order.
    """
    ticked = [str(v) for v in form.getlist("sections")]
    if len(ticked) > MAX_SECTIONS_FIELDS:
        raise InvalidInput("sections", "اختر الأقسام من القائمة المعروضة فقط.")

    def key(item: tuple[int, str]) -> tuple[int, int]:
        pos, sid = item
        rank = str(form.get(f"rank_{sid}") or "").strip()
        return (int(rank), pos) if rank.isascii() and rank.isdigit() and len(rank) < 4 else (1000, pos)

    return [sid for _, sid in sorted(enumerate(ticked), key=key)]


@router.post("/preferences/{token}", response_class=HTMLResponse)
async def preferences_save(request: Request, token: str):
    form = await request.form()
    action = form.get("action")
    if action in DATA_ACTIONS:
        return await run_in_threadpool(_data_action, request, token, form, action)

    def work():
        try:
            with session_scope() as s:
                sub = lifecycle.subscriber_for_token(s, "preferences", token, lock=True)
                if not csrf.valid(form.get(csrf.FIELD), f"preferences:{sub.id}"):
                    log.info("preferences_bad_csrf", subscriber_id=sub.id)
                    return _preferences_page(request, token, sub, status_code=400,
                                             error=InvalidInput("form", MSG_CSRF))
                try:
                    chosen = section_ids(s, ordered_sections(form))
                    frequency = parse_frequency(form.get("frequency"))
                    alerts = parse_yes_no(form.get("alerts") or "no")
                    hour = choices.digest_hour(form.get("digest_hour"))
                    weekday = choices.digest_weekday(form.get("digest_weekday"))
                    quiet_start, quiet_end, quiet_mode = choices.quiet_hours(
                        form.get("quiet_start"), form.get("quiet_end"), form.get("quiet_mode"))
                    cap = choices.alert_cap(form.get("alert_cap"))
                    paused_until = choices.pause(form.get("pause"), sub.paused_until, utcnow())
                except InvalidInput as exc:
                    log.info("preferences_invalid", subscriber_id=sub.id, field=exc.field)
                    return _preferences_page(request, token, sub, status_code=400, error=exc)
                lifecycle.update_preferences(s, sub, sections=chosen, frequency=frequency, alerts=alerts)
                lifecycle.update_schedule(s, sub, digest_hour=hour, digest_weekday=weekday, quiet_start=quiet_start,
                                          quiet_end=quiet_end, quiet_mode=quiet_mode, alert_cap=cap,
                                          paused_until=paused_until)
        except BadToken:
            log.info("preferences_bad_token")
            return error_page(request, "تعذّر حفظ التفضيلات", MSG_BAD_LINK, status_code=400)
        return _preferences_page(request, token, sub, saved=True)

    return await run_in_threadpool(work)


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_form(request: Request, token: str):
    # No state change here: mail scanners and link previews follow GET links.
    try:
        sub_id, version = read_token("unsubscribe", token)
    except BadToken:
        return error_page(request, "تعذّر إلغاء الاشتراك", MSG_BAD_LINK, status_code=400)
    with session_scope() as s:
        sub = s.get(Subscriber, sub_id)
        state = None
        if sub is not None and sub.token_version == version:
            state = "subscribed"
        elif sub is not None and sub.status is SubscriberStatus.unsubscribed and version < sub.token_version:
            state = "unsubscribed"
    if state is None:
        return error_page(request, "تعذّر إلغاء الاشتراك", MSG_BAD_LINK, status_code=400)
    if state == "unsubscribed":
        return render(request, "unsubscribed.html")
    return render(request, "unsubscribe.html", token=token)


@router.post("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_now(request: Request, token: str):
    # RFC 8058 one-click: the mail client POSTs "List-Unsubscribe=One-Click" with no
    # cookie and no CSRF token; the signed link is the authority.  The body is not read.
    try:
        with session_scope() as s:
            lifecycle.unsubscribe_by_token(s, token)
    except BadToken:
        log.info("unsubscribe_bad_token")
        return error_page(request, "تعذّر إلغاء الاشتراك", MSG_BAD_LINK, status_code=400)
    return render(request, "unsubscribed.html")

