"""The editors' pages: log in with a token, compose an alert, preview it, send a test,
send it, and watch (or cancel) recent editions.

Every POST carries a CSRF token bound to the editor; the login cookie is HttpOnly and
SameSite=Strict.  A hidden idempotency key minted with the form makes a double click
on "send" one alert, not two.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from service import resources
from service.config import get_settings
from service.db import session_scope
from service.delivery.progress import progress
from service.editions.alerts import AlertError
from service.logs import get_logger
from service.models import Edition
from service.usecases import alerts, editions
from service.usecases.alerts import PreviewError, preview_alert, send_test_alert
from service.web import csrf
from service.web.auth import COOKIE, EditorIdentity, cookie_editor, editor_for_token
from service.web.templating import render

log = get_logger(__name__)
router = APIRouter(prefix="/editor")
RECENT = 20
COOKIE_MAX_AGE = 12 * 3600
MSG_CSRF = "انتهت صلاحية الصفحة. أعد تحميلها وحاول مرة أخرى."


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


def _page(request: Request, editor: EditorIdentity, status_code: int = 200, **ctx):
    ctx.setdefault("form", {})
    ctx.setdefault("idempotency_key", uuid.uuid4().hex)
    return render(
        request,
        "editor.html",
        status_code=status_code,
        editor=editor,
        csrf_token=csrf.issue(f"editor:{editor.id}"),
        editions=recent_editions(),
        **ctx,
    )


def _login_page(request: Request, status_code: int = 200, error: str | None = None):
    return render(request, "editor_login.html", status_code=status_code, error=error,
                  csrf_token=csrf.issue("editor-login"))


@router.get("")
def editor_home(request: Request):
    editor = cookie_editor(request)
    if editor is None:
        return _login_page(request)
    return _page(request, editor, sent=request.query_params.get("sent"),
                 cancelled=request.query_params.get("cancelled"))


@router.get("/live.js")
def live_js():
    return Response(resources.editor_live_js(), media_type="text/javascript",
                    headers={"Cache-Control": "max-age=300"})


@router.get("/editions")
def editions_fragment(request: Request):
    """The editions table alone, for the page's live progress."""
    editor = cookie_editor(request)
    if editor is None:
        return HTMLResponse("", status_code=401)
    return render(request, "_editions.html", editions=recent_editions(),
                  csrf_token=csrf.issue(f"editor:{editor.id}"))


@router.post("/login")
async def login(request: Request):
    form = await request.form()
    if not csrf.valid(form.get(csrf.FIELD), "editor-login"):
        return _login_page(request, 400, MSG_CSRF)
    token = str(form.get("token") or "").strip()
    editor = await run_in_threadpool(editor_for_token, token)
    if editor is None:
        log.info("editor_login_failed")
        return _login_page(request, 401, "رمز الدخول غير صحيح أو موقوف.")
    log.info("editor_login", editor_id=editor.id)
    response = RedirectResponse("/editor", status_code=303)
    response.set_cookie(COOKIE, token, max_age=COOKIE_MAX_AGE, httponly=True, samesite="strict",
                        secure=get_settings().public_url.startswith("https://"), path="/")
    return response


@router.post("/logout")
async def logout(request: Request):
    response = RedirectResponse("/editor", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def _alert_form(form) -> dict:
    return {k: str(form.get(k) or "").strip() for k in ("article_url", "headline", "url", "summary", "test_to")}


def _send_alert(editor: EditorIdentity, values: dict, key: str | None) -> int:
    if values["article_url"]:
        return alerts.send_alert(editor_id=editor.id, article_url=values["article_url"], idempotency_key=key)
    return alerts.send_alert(editor_id=editor.id, headline=values["headline"], url=values["url"],
                             summary=values["summary"] or None, idempotency_key=key)


async def _authorised_form(request: Request):
    editor = await run_in_threadpool(cookie_editor, request)
    if editor is None:
        return None, None, RedirectResponse("/editor", status_code=303)
    form = await request.form()
    if not csrf.valid(form.get(csrf.FIELD), f"editor:{editor.id}"):
        values = _alert_form(form)
        resp = await run_in_threadpool(lambda: _page(request, editor, 400, error=MSG_CSRF, form=values))
        return editor, None, resp
    return editor, form, None


async def _preview_action(request: Request, action) -> Response:
    """Preview and test share their shape: the editor's form in, the page back with the
    form kept; `action(values, editor)` returns extra page context or raises PreviewError."""
    editor, form, early = await _authorised_form(request)
    if early is not None:
        return early
    values = _alert_form(form)
    key = str(form.get("idempotency_key") or "") or None

    def work():
        try:
            extra = action(values, editor)
        except PreviewError as exc:
            return _page(request, editor, 422, error=str(exc), form=values, idempotency_key=key)
        return _page(request, editor, form=values, idempotency_key=key, **extra)

    return await run_in_threadpool(work)


@router.post("/preview")
async def preview(request: Request):
    return await _preview_action(request, lambda values, editor: {"preview": preview_alert(values, editor.id)})


@router.post("/test")
async def send_test(request: Request):
    def action(values, editor):
        send_test_alert(values, values["test_to"], editor)
        return {"notice": "أُرسلت نسخة تجريبية إلى العنوان المحدد."}

    return await _preview_action(request, action)


@router.post("/send")
async def send(request: Request):
    editor, form, early = await _authorised_form(request)
    if early is not None:
        return early
    values = _alert_form(form)
    key = str(form.get("idempotency_key") or "")[:100] or None

    def work():
        try:
            edition_id = _send_alert(editor, values, key)
        except AlertError as exc:
            return _page(request, editor, 422, error=str(exc), form=values, idempotency_key=key)
        return RedirectResponse(f"/editor?sent={edition_id}", status_code=303)

    return await run_in_threadpool(work)


@router.post("/editions/{edition_id}/cancel")
async def cancel(request: Request, edition_id: int):
    editor, form, early = await _authorised_form(request)
    if early is not None:
        return early

    def work():
        try:
            editions.steer(edition_id, "cancel", editor.actor)
        except editions.ControlRefused as exc:
            return _page(request, editor, 409, error=f"لا يمكن إيقافها: {exc}")
        except editions.NoSuchEdition:
            return _page(request, editor, 404, error="لا توجد نشرة بهذا الرقم.")
        return RedirectResponse(f"/editor?cancelled={edition_id}", status_code=303)

    return await run_in_threadpool(work)
