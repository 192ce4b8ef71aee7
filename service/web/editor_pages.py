"""The editors' pages: log in with name and token, compose an alert (or start from a
recent article), preview it with the number of readers it reaches, send a test, send it
(the confirmation repeats the number; a checkbox lets it override readers' quiet hours,
audited as from the API and the CLI), watch, pause, resume or cancel recent editions,
send the correction the page offers after a major update to an alerted article, and see
the next digest of any slot (hour, day) per audience variant (/editor/digest).  The admins' pages are in
service/web/admin_pages.py.

Every route states its role (service.web.access).  The pages ride on a server-side
session (service.usecases.sessions): made at login, rotated at every login, ended by
logout (a POST with its CSRF token), expiring by itself.  Every POST carries a CSRF
token bound to that session; the cookie is HttpOnly and SameSite=Strict.  A hidden
idempotency key minted with the form makes a double click on "send" one alert, not two.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from service import resources
from service.config import ConfigError
from service.db import session_scope
from service.delivery.progress import progress
from service.editions.alerts import AlertError
from service.logs import get_logger
from service.models import Edition
from service.usecases import (
    alerts,
    audience,
    corrections,
    digest_preview,
    edition_report,
    editions,
    newsletters,
    scheduled,
    sessions,
)
from service.usecases.alerts import PreviewError, preview_alert, send_test_alert
from service.web import csrf
from service.web.access import ANYONE, Role, login_form, page
from service.web.auth import (
    EditorIdentity,
    clear_session_cookie,
    client_address,
    session_secret,
    set_session_cookie,
)
from service.web.templating import render

log = get_logger(__name__)
router = APIRouter(prefix="/editor")
RECENT = 20
MSG_CSRF = "انتهت صلاحية الصفحة. أعد تحميلها وحاول مرة أخرى."
MSG_LOGIN = "الاسم أو رمز الدخول غير صحيح، أو الحساب موقوف."
MSG_THROTTLED = "محاولات دخول خاطئة كثيرة. انتظر {minutes} دقيقة ثم حاول مرة أخرى."
FORM_FIELDS = ("article_url", "headline", "url", "summary", "test_to", "send_at", "newsletter")
OVERRIDE_FIELD = "override_quiet_hours"  # the checkbox: readers in their quiet hours get it now too (audited)
EDITOR = page(Role.editor)


def recent_editions(limit: int = RECENT) -> list[dict]:
    """Latest editions with their progress, for the table on the editor's page."""
    rows = []
    with session_scope() as s:
        for ed in s.scalars(select(Edition).order_by(Edition.id.desc()).limit(limit)):
            row = {
                "id": ed.id,
                "kind": ed.kind.value,
                "status": ed.status.value,
                "title": ed.title or (ed.params or {}).get("headline", ""),
                "created_at": ed.created_at.isoformat(sep=" ", timespec="minutes"),
                "recipients": ed.recipients,
                "progress": None,
                # A scheduled draft: when it leaves, on the site's clock.
                "send_at": scheduled.local_text(ed.send_at) if scheduled.is_scheduled(ed) else "",
            }
            try:
                row["progress"] = progress(s, ed.id)
            except Exception:  # noqa: BLE001 — one bad row must not hide the page
                log.warning("progress_failed", edition_id=ed.id)
            rows.append(row)
    return rows


def csrf_purpose(editor: EditorIdentity) -> str:
    # Bound to the session, not only the editor: a form from before a logout (or from
    # another of the editor's sessions) is refused.
    return f"editor-session:{editor.session_id}"


def desk(request: Request, editor: EditorIdentity, template: str, status_code: int = 200, **ctx):
    """Any of the editors' and admins' pages: the editor, the navigation, a CSRF token."""
    return render(request, template, status_code=status_code, editor=editor, is_admin=editor.may(Role.admin),
                  csrf_token=csrf.issue(csrf_purpose(editor)), readers=audience.readers, **ctx)


def _offers() -> list:
    try:
        return corrections.offers()
    except Exception:  # noqa: BLE001 — the alert form must not go down with the offers
        log.exception("correction_offers_failed")
        return []


def _page(request: Request, editor: EditorIdentity, status_code: int = 200, **ctx):
    ctx.setdefault("form", {})
    ctx.setdefault("idempotency_key", uuid.uuid4().hex)
    ctx.setdefault("article", None)
    # The alerts newsletters to choose from: the form offers a choice only when there are several.
    return desk(request, editor, "editor.html", status_code, editions=recent_editions(), recent=alerts.recent(),
                offers=_offers(), alert_newsletters=newsletters.alerts_choices(), **ctx)


def _text(form, key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


@router.get("")
def editor_home(request: Request, editor: EditorIdentity | None = page(Role.editor, anonymous="login")):
    if editor is None:
        return login_form(request)
    query = request.query_params
    ctx = {k: query.get(k) for k in ("sent", "cancelled", "paused", "resumed", "correction", "scheduled")}
    article = None
    wanted = query.get("article", "")
    if wanted.isascii() and wanted.isdigit() and len(wanted) < 10:
        article = alerts.prefill_for(int(wanted))
    if article is not None:  # "use this article": the form filled from it
        ctx["form"] = {"article_url": article.article_url, "headline": article.headline, "summary": article.summary}
        ctx["article"] = article
    elif wanted:
        ctx["error"] = "لا يوجد مقال بهذا الرقم."
    return _page(request, editor, **ctx)


@router.get("/live.js", dependencies=[ANYONE])
def live_js():
    return Response(resources.editor_live_js(), media_type="text/javascript",
                    headers={"Cache-Control": "max-age=300"})


@router.get("/editions")
def editions_fragment(request: Request, editor: EditorIdentity = page(Role.editor, anonymous="status")):
    """The editions table alone, for the page's live progress."""
    return render(request, "_editions.html", editions=recent_editions(), csrf_token=csrf.issue(csrf_purpose(editor)))


@router.post("/login", dependencies=[ANYONE])
async def login(request: Request):
    form = await request.form()
    name = _text(form, "name")
    if not csrf.valid(form.get(csrf.FIELD), "editor-login"):
        return await run_in_threadpool(login_form, request, 400, MSG_CSRF, name)
    try:
        result = await run_in_threadpool(sessions.log_in, name, _text(form, "token"), client_address(request),
                                         session_secret(request))
    except sessions.LoginThrottled as exc:
        return await run_in_threadpool(
            login_form, request, 429, MSG_THROTTLED.format(minutes=max(1, round(exc.retry_after / 60))), name,
            {"Retry-After": str(exc.retry_after)})
    if result is None:
        return await run_in_threadpool(login_form, request, 401, MSG_LOGIN, name)
    _, secret = result
    response = RedirectResponse("/editor", status_code=303)
    set_session_cookie(response, secret)
    return response


@router.post("/logout")
async def logout(request: Request, editor: EditorIdentity = EDITOR):
    form = await request.form()
    if not csrf.valid(form.get(csrf.FIELD), csrf_purpose(editor)):
        # A page on another site cannot log an editor out (nor in as someone else).
        return await run_in_threadpool(lambda: _page(request, editor, 400, error=MSG_CSRF))
    await run_in_threadpool(sessions.log_out, editor, session_secret(request))
    response = RedirectResponse("/editor", status_code=303)
    clear_session_cookie(response)
    return response


def _alert_form(form) -> dict:
    values: dict = {k: _text(form, k) for k in FORM_FIELDS}
    values[OVERRIDE_FIELD] = _text(form, OVERRIDE_FIELD) == "yes"  # a ticked box sends "yes"; unticked, nothing
    return values


def _send_alert(editor: EditorIdentity, values: dict, key: str | None, send_at=None) -> int:
    # An article's alert may be worded by the editor (the form is filled from the article).
    return alerts.send_alert(editor_id=editor.id, article_url=values["article_url"] or None,
                             headline=values["headline"] or None, url=values["url"] or None,
                             summary=values["summary"] or None, idempotency_key=key,
                             override_quiet_hours=values[OVERRIDE_FIELD], send_at=send_at,
                             newsletter=values["newsletter"] or None)  # None: the default alerts newsletter


def _article_of(values: dict):
    """The article the form names, for its image and caption beside the form."""
    for item in alerts.recent():
        if values.get("article_url") and item.article_url == values["article_url"]:
            return item
    return None


async def _checked_form(request: Request, editor: EditorIdentity):
    """(form, None), or (None, the page saying the CSRF token was refused)."""
    form = await request.form()
    if not csrf.valid(form.get(csrf.FIELD), csrf_purpose(editor)):
        values = _alert_form(form)
        resp = await run_in_threadpool(lambda: _page(request, editor, 400, error=MSG_CSRF, form=values))
        return None, resp
    return form, None


def _form_key(form) -> str | None:
    return _text(form, "idempotency_key")[:100] or None


async def _preview_action(request: Request, editor: EditorIdentity, action) -> Response:
    """Preview and test share their shape: the editor's form in, the page back with the
    form kept; `action(values, editor)` returns extra page context or raises PreviewError."""
    form, early = await _checked_form(request, editor)
    if early is not None:
        return early
    values = _alert_form(form)
    key = _form_key(form)

    def work():
        article = _article_of(values)
        try:
            extra = action(values, editor)
        except PreviewError as exc:
            return _page(request, editor, 422, error=str(exc), form=values, idempotency_key=key, article=article)
        return _page(request, editor, form=values, idempotency_key=key, article=article, **extra)

    return await run_in_threadpool(work)


def _send_at_text(values: dict) -> str:
    """The form's send time as the page shows it ("" for now); PreviewError when it cannot be one."""
    try:
        when = scheduled.parse_send_at(values.get("send_at"))
    except scheduled.ScheduleError as exc:
        raise PreviewError(exc.arabic) from None
    return scheduled.local_text(when)


@router.post("/preview")
async def preview(request: Request, editor: EditorIdentity = EDITOR):
    return await _preview_action(request, editor, lambda values, who: {
        "send_at_text": _send_at_text(values), "preview": preview_alert(values, who.id)})


@router.post("/test")
async def send_test(request: Request, editor: EditorIdentity = EDITOR):
    def action(values, who):
        send_test_alert(values, values["test_to"], who)
        return {"notice": "أُرسلت نسخة تجريبية إلى العنوان المحدد."}

    return await _preview_action(request, editor, action)


@router.post("/send")
async def send(request: Request, editor: EditorIdentity = EDITOR):
    form, early = await _checked_form(request, editor)
    if early is not None:
        return early
    values = _alert_form(form)
    key = _form_key(form)

    def work():
        try:
            send_at = scheduled.parse_send_at(values["send_at"])
            edition_id = _send_alert(editor, values, key, send_at)
        except scheduled.ScheduleError as exc:
            return _page(request, editor, 422, error=exc.arabic, form=values, idempotency_key=key)
        except AlertError as exc:
            return _page(request, editor, 422, error=str(exc), form=values, idempotency_key=key)
        return RedirectResponse(f"/editor?{'scheduled' if send_at else 'sent'}={edition_id}", status_code=303)

    return await run_in_threadpool(work)


STEER_WORDS = {"cancel": ("cancelled", "إيقافها", "إلغاء"), "pause": ("paused", "إيقافها مؤقتاً", "الإيقاف المؤقت"),
               "resume": ("resumed", "استئنافها", "استئناف")}


async def _steer(request: Request, edition_id: int, editor: EditorIdentity, action: str):
    form, early = await _checked_form(request, editor)
    if early is not None:
        return early
    done, verb, noun = STEER_WORDS[action]

    def work():
        try:
            editions.steer(edition_id, action, editor.actor, role=editor.role)
        except editions.ControlRefused as exc:
            return _page(request, editor, 409, error=f"لا يمكن {verb}: {exc}")
        except editions.NoSuchEdition:
            return _page(request, editor, 404, error="لا توجد نشرة بهذا الرقم.")
        except editions.NotAllowed:
            return _page(request, editor, 403, error=f"{noun} هذه النشرة لمن له دور المدير.")
        return RedirectResponse(f"/editor?{done}={edition_id}", status_code=303)

    return await run_in_threadpool(work)


@router.post("/editions/{edition_id}/cancel")
async def cancel(request: Request, edition_id: int, editor: EditorIdentity = EDITOR):
    return await _steer(request, edition_id, editor, "cancel")


@router.post("/editions/{edition_id}/pause")
async def pause(request: Request, edition_id: int, editor: EditorIdentity = EDITOR):
    return await _steer(request, edition_id, editor, "pause")


@router.post("/editions/{edition_id}/resume")
async def resume(request: Request, edition_id: int, editor: EditorIdentity = EDITOR):
    return await _steer(request, edition_id, editor, "resume")


@router.post("/corrections/{article_id}")
async def send_correction(request: Request, article_id: int, editor: EditorIdentity = EDITOR):
    """The correction the page offered, to exactly the readers of the alert(s) that
    carried the article before its major update: one action."""
    form, early = await _checked_form(request, editor)
    if early is not None:
        return early
    version = _text(form, "version")

    def work():
        try:
            edition_id = corrections.send(article_id, int(version) if version.isdigit() and len(version) < 10
                                          else None, actor=editor.actor)
        except corrections.OfferGone:
            return _page(request, editor, 409, error="لم يعد هناك تصحيح لإرساله لهذا الخبر: أُرسل من قبل، "
                                                     "أو تغيّر الخبر مرة أخرى (أعد تحميل الصفحة).")
        except ConfigError as exc:  # the deployment, not the editor: say what the operator must set
            log.warning("editor.correction_refused", article_id=article_id, error=str(exc)[:200])
            return _page(request, editor, 503, error="لا يمكن إرسال التصحيح قبل أن يضبط المشرف الإعدادات: " + str(exc))
        return RedirectResponse(f"/editor?correction={edition_id}", status_code=303)

    return await run_in_threadpool(work)


@router.get("/editions/{edition_id}/report")
def edition_report_page(request: Request, edition_id: str, editor: EditorIdentity = EDITOR):
    """What one edition did: delivery, bounces, complaints, unsubscribes, clicks per story
    and section, and its first 24 hours of clicks as a chart drawn here (SVG, no script)."""
    if not (edition_id.isascii() and edition_id.isdigit() and len(edition_id) < 10):
        return desk(request, editor, "editor_report.html", 404, report=None)
    try:
        found = edition_report.report(int(edition_id))
    except edition_report.ReportError:
        return desk(request, editor, "editor_report.html", 404, report=None)
    return desk(request, editor, "editor_report.html", report=found, chart=chart_bars(found.hours))


def chart_bars(hours: list[int], height: int = 160) -> list[dict]:
    """The chart's bars: x, y and height in the SVG's own units (24 bars of 30 units)."""
    peak = max(hours) if hours and max(hours) > 0 else 1
    bars = []
    for h, n in enumerate(hours):
        tall = round(n / peak * height) if n else 0
        bars.append({"hour": h, "clicks": n, "x": 30 * h + 4, "y": 10 + height - tall, "height": tall})
    return bars


@router.get("/digest")
def digest_page(request: Request, editor: EditorIdentity = EDITOR):
    """The next digest of one slot (hour, and day for the weekly one), per audience
    variant: its articles, and what the size budget cut.  By default the next slot that
    has readers; `slot` (a code the page's selector sends: h18, d5h07) picks another.
    Bad input is a 400 with the reason, in Arabic."""
    query = request.query_params
    # `newsletter` (a slug: the page's selector) names any digest; `frequency` (older links)
    # the site's own daily or weekly.
    newsletter = query.get("newsletter") or None
    frequency = query.get("frequency") or (None if newsletter else "daily")
    wanted = query.get("variant") or None
    if wanted is not None and len(wanted) > 200:
        wanted = None
    code = query.get("slot") or ""
    letters = digest_preview.digest_newsletters()
    try:
        if frequency is not None and frequency not in ("daily", "weekly"):
            frequency = "daily"
            raise digest_preview.PreviewRefused("bad frequency", "النشرة يومية أو أسبوعية.")
        if newsletter is not None and newsletter not in {slug for slug, _ in letters}:
            raise digest_preview.PreviewRefused("no such digest", "لا توجد نشرة بهذا الاسم.")
        hour, weekday = digest_preview.parse_slot_code(code)
        result = digest_preview.preview(frequency if newsletter is None else None, newsletter=newsletter,
                                        variant=wanted, hour=hour, weekday=weekday)
    except digest_preview.PreviewRefused as exc:
        return desk(request, editor, "editor_digest.html", 400, error={"message": exc.arabic}, result=None,
                    shown=None, frequency=frequency or "daily", newsletters=letters)
    shown = result.variant(wanted) if wanted else next((v for v in result.variants if v.rendered and not v.empty),
                                                       None)
    return desk(request, editor, "editor_digest.html", result=result, shown=shown, frequency=result.frequency,
                newsletters=letters)
