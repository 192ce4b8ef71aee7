"""The editors' JSON API: send an alert, watch it, stop it.

The alert itself is made by service.editions.alerts.create_alert (one short
transaction); planning the fan-out is queued only after that commit, on the alerts
queue, so that a worker never looks for an edition that is not there yet.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from service.db import session_scope
from service.logging import get_logger
from service.models import Edition, EditionStatus
from service.web.auth import EditorIdentity, bearer_editor

log = get_logger(__name__)
router = APIRouter(prefix="/api")
PLAN_TASK = "nashra.alert.plan"
MAX_BODY = 64 * 1024


class AlertRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=4000)
    article_url: str | None = None
    headline: str | None = None
    url: str | None = None
    summary: str | None = None
    idempotency_key: str | None = None


def _unauthorised() -> JSONResponse:
    return JSONResponse({"error": "a valid editor token is required (Authorization: Bearer …)"},
                        status_code=401, headers={"WWW-Authenticate": "Bearer"})


def send_alert(editor: EditorIdentity, req: AlertRequest) -> int:
    """Create the alert edition and queue its planning after commit; returns its id.

    Raises service.editions.alerts.AlertError for bad input (nothing is written then).
    """
    from service.celery_app import app, send_after_commit
    from service.editions.alerts import create_alert

    with session_scope() as s:
        edition = create_alert(
            s,
            editor_id=editor.id,
            article_url=req.article_url,
            headline=req.headline,
            url=req.url,
            summary=req.summary,
            idempotency_key=req.idempotency_key,
        )
        s.flush()
        edition_id = edition.id
        # A retry with the same key returns the existing edition: plan it only if it
        # has not been planned yet (planning is idempotent, but there is no need).
        if edition.status is EditionStatus.draft:
            send_after_commit(s, app.signature(PLAN_TASK, args=(edition_id,), immutable=True))
    log.info("alert_requested", edition_id=edition_id, editor_id=editor.id)
    return edition_id


@router.post("/alerts")
async def post_alert(request: Request):
    from starlette.concurrency import run_in_threadpool

    editor = await run_in_threadpool(bearer_editor, request)
    if editor is None:
        return _unauthorised()
    body = await request.body()
    if len(body) > MAX_BODY:
        return JSONResponse({"error": "request body too large"}, status_code=413)
    try:
        req = AlertRequest.model_validate_json(body or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ())) or "body"
        return JSONResponse({"error": f"{where}: {first.get('msg')}"}, status_code=422)

    from service.editions.alerts import AlertError

    try:
        edition_id = await run_in_threadpool(send_alert, editor, req)
    except AlertError as exc:
        return JSONResponse({"error": str(exc)}, status_code=422)
    return JSONResponse({"edition_id": edition_id}, status_code=202)


def edition_progress(edition_id: int) -> dict | None:
    from service.delivery.progress import progress

    with session_scope() as s:
        if s.get(Edition, edition_id) is None:
            return None
        return progress(s, edition_id)


class ControlRefused(ValueError):
    """The edition's state does not allow the action (e.g. cancelling a finished one)."""


CONTROL_ACTIONS = ("cancel", "pause", "resume")


def control_edition(edition_id: int, editor: EditorIdentity, action: str) -> dict | None:
    """Cancel, pause or resume an edition; returns its progress afterwards, or None if
    there is no such edition.  Resume re-dispatches after the commit."""
    from service.delivery import control
    from service.delivery.progress import progress

    if action not in CONTROL_ACTIONS:
        raise ValueError(action)
    with session_scope() as s:
        if s.get(Edition, edition_id) is None:
            return None
        try:
            getattr(control, action)(s, edition_id, editor.actor)
        except control.ControlError as exc:
            raise ControlRefused(str(exc)) from None
        result = progress(s, edition_id)
    log.info("edition_control", action=action, edition_id=edition_id, editor_id=editor.id)
    return result


def cancel_edition(edition_id: int, editor: EditorIdentity) -> dict | None:
    return control_edition(edition_id, editor, "cancel")


@router.get("/editions/{edition_id}")
def get_edition(request: Request, edition_id: int):
    editor = bearer_editor(request)
    if editor is None:
        return _unauthorised()
    data = edition_progress(edition_id)
    if data is None:
        return JSONResponse({"error": "no such edition"}, status_code=404)
    return data


@router.post("/editions/{edition_id}/{action}")
def post_control(request: Request, edition_id: int, action: str):
    editor = bearer_editor(request)
    if editor is None:
        return _unauthorised()
    if action not in CONTROL_ACTIONS:
        return JSONResponse({"error": f"unknown action; use one of {', '.join(CONTROL_ACTIONS)}"}, status_code=404)
    try:
        data = control_edition(edition_id, editor, action)
    except ControlRefused as exc:
        return JSONResponse({"error": str(exc)}, status_code=409)
    if data is None:
        return JSONResponse({"error": "no such edition"}, status_code=404)
    return data
