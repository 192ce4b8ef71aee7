"""The editors' pages: log in with name and token, compose an alert, preview it, send a
test, send it, and watch (or cancel) recent editions.

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
from service.db import session_scope
from service.delivery.progress import progress
from service.editions.alerts import AlertError
from service.logs import get_logger
from service.models import Edition
from service.usecases import alerts, editions, sessions
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
FORM_FIELDS = ("article_url", "headline", "url", "summary", "test_to")
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


def _page(request: Request, editor: EditorIdentity, status_code: int = 200, **ctx):
    ctx.setdefault("form", {})
    ctx.setdefault("idempotency_key", uuid.uuid4().hex)
    return render(
        request,
        "editor.html",
        status_code=status_code,
        editor=editor,
        csrf_token=csrf.issue(csrf_purpose(editor)),
        editions=recent_editions(),
        **ctx,
    )


def _text(form, key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


@router.get("")
def editor_home(request: Request, editor: EditorIdentity | None = page(Role.editor, anonymous="login")):
    if editor is None:
        return login_form(request)
    return _page(request, editor, sent=request.query_params.get("sent"),
                 cancelled=request.query_params.get("cancelled"))


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
    return {k: _text(form, k) for k in FORM_FIELDS}


def _send_alert(editor: EditorIdentity, values: dict, key: str | None) -> int:
    if values["article_url"]:
        return alerts.send_alert(editor_id=editor.id, article_url=values["article_url"], idempotency_key=key)
    return alerts.send_alert(editor_id=editor.id, headline=values["headline"], url=values["url"],
                             summary=values["summary"] or None, idempotency_key=key)


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
        try:
            extra = action(values, editor)
        except PreviewError as exc:
            return _page(request, editor, 422, error=str(exc), form=values, idempotency_key=key)
        return _page(request, editor, form=values, idempotency_key=key, **extra)

    return await run_in_threadpool(work)


@router.post("/preview")
async def preview(request: Request, editor: EditorIdentity = EDITOR):
    return await _preview_action(request, editor, lambda values, who: {"preview": preview_alert(values, who.id)})


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
            edition_id = _send_alert(editor, values, key)
        except AlertError as exc:
            return _page(request, editor, 422, error=str(exc), form=values, idempotency_key=key)
        return RedirectResponse(f"/editor?sent={edition_id}", status_code=303)

    return await run_in_threadpool(work)


@router.post("/editions/{edition_id}/cancel")
async def cancel(request: Request, edition_id: int, editor: EditorIdentity = EDITOR):
    form, early = await _checked_form(request, editor)
    if early is not None:
        return early

    def work():
        try:
            editions.steer(edition_id, "cancel", editor.actor, role=editor.role)
        except editions.ControlRefused as exc:
            return _page(request, editor, 409, error=f"لا يمكن إيقافها: {exc}")
        except editions.NoSuchEdition:
            return _page(request, editor, 404, error="لا توجد نشرة بهذا الرقم.")
        except editions.NotAllowed:
            return _page(request, editor, 403, error="إيقاف هذه النشرة لمن له دور المدير.")
        return RedirectResponse(f"/editor?cancelled={edition_id}", status_code=303)

    return await run_in_threadpool(work)
