"""The editors' JSON API: send an alert (or ask, with `"dry_run": true`, whom it would
reach and with which subject), watch it, stop it (service.usecases does the work).

Bearer token only (service.web.access): the pages' session cookie opens nothing here."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool

from service.editions.alerts import AlertError
from service.logs import get_logger
from service.usecases import alerts, editions, scheduled
from service.web.access import Role, api
from service.web.auth import EditorIdentity

log = get_logger(__name__)
router = APIRouter(prefix="/api")
MAX_BODY = 64 * 1024
EDITOR = api(Role.editor)  # alerts (send, watch, steer); a digest's steering also asks for admin


class AlertRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=4000)
    article_url: str | None = None
    headline: str | None = None
    url: str | None = None
    summary: str | None = None
    idempotency_key: str | None = None
    # The slug of the alerts newsletter whose readers get it; absent: the site's `alerts`.
    # Unknown, hidden or a digest → 422, nothing made.
    newsletter: str | None = None
    dry_run: bool = False  # true: the audience and the rendered subject, nothing queued
    override_quiet_hours: bool = False  # true: readers in their quiet hours get it now too (audited)
    # ISO 8601; without an offset on the site's TIMEZONE.  The alert waits until then
    # (cancel it with POST /api/editions/{id}/cancel); gone or >30 days ahead → 422.
    send_at: str | None = None


def send_alert(editor: EditorIdentity, req: AlertRequest, send_at) -> int:
    return alerts.send_alert(editor_id=editor.id, article_url=req.article_url, headline=req.headline, url=req.url,
                             summary=req.summary, idempotency_key=req.idempotency_key,
                             override_quiet_hours=req.override_quiet_hours, send_at=send_at,
                             newsletter=req.newsletter)


@router.post("/alerts")
async def post_alert(request: Request, editor: EditorIdentity = EDITOR):
    body = await request.body()
    if len(body) > MAX_BODY:
        return JSONResponse({"error": "request body too large"}, status_code=413)
    try:
        req = AlertRequest.model_validate_json(body or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ())) or "body"
        return JSONResponse({"error": f"{where}: {first.get('msg')}"}, status_code=422)
    try:
        send_at = scheduled.parse_send_at(req.send_at, blank_is_now=False)
    except scheduled.ScheduleError as exc:
        return JSONResponse({"error": f"send_at: {exc}"}, status_code=422)
    when = {"send_at": send_at.isoformat()} if send_at else {}

    if req.dry_run:
        try:
            preview = await run_in_threadpool(lambda: alerts.dry_run(
                editor_id=editor.id, article_url=req.article_url, headline=req.headline, url=req.url,
                summary=req.summary, newsletter=req.newsletter))
        except (AlertError, alerts.PreviewError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        return JSONResponse({"audience": preview.audience, "subject": preview.subject, **when}, status_code=200)
    try:
        edition_id = await run_in_threadpool(send_alert, editor, req, send_at)
    except AlertError as exc:
        return JSONResponse({"error": str(exc)}, status_code=422)
    return JSONResponse({"edition_id": edition_id, **when}, status_code=202)


CONTROL_ACTIONS = ("cancel", "pause", "resume")


@router.get("/editions/{edition_id}")
def get_edition(edition_id: int, editor: EditorIdentity = EDITOR):
    data = editions.progress(edition_id)
    if data is None:
        return JSONResponse({"error": "no such edition"}, status_code=404)
    return data


@router.post("/editions/{edition_id}/{action}")
def post_control(edition_id: int, action: str, editor: EditorIdentity = EDITOR):
    if action not in CONTROL_ACTIONS:
        return JSONResponse({"error": f"unknown action; use one of {', '.join(CONTROL_ACTIONS)}"}, status_code=404)
    try:
        return editions.steer(edition_id, action, editor.actor, role=editor.role)
    except editions.NoSuchEdition:
        return JSONResponse({"error": "no such edition"}, status_code=404)
    except editions.NotAllowed as exc:
        return JSONResponse({"error": str(exc)}, status_code=403)
    except editions.ControlRefused as exc:
        return JSONResponse({"error": str(exc)}, status_code=409)
