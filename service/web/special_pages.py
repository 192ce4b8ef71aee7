"""The editors' special edition page (/editor/special) and the scheduled sends' controls.

One plain form holds the whole composition — title, introduction, the chosen stories in
order (hidden inputs), the audience (a digest newsletter, with its readers, and maybe
some sections), the search, the send time — and every
button posts it back with `action` saying what to do: search, add/remove/move a story,
preview (with the audience count), test copy, send now or at the time.  No script is
needed; nothing is kept before "send".  Scheduled alerts and special editions are listed
with their local time, to move, send now, or cancel (cancel is the editions table's).

Every POST carries the session's CSRF token (editor_pages.csrf_purpose); a hidden
idempotency key minted with the form makes a double click on "send" one edition.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from service.config import get_settings
from service.db import session_scope
from service.logs import get_logger
from service.models import Edition, EditionStatus
from service.usecases import editions, scheduled, special_editions
from service.usecases.special_editions import Composition, SpecialError
from service.web import csrf
from service.web.access import Role, page
from service.web.auth import EditorIdentity
from service.web.editor_pages import MSG_CSRF, csrf_purpose, desk

log = get_logger(__name__)
router = APIRouter(prefix="/editor")
EDITOR = page(Role.editor)
MAX_CHOSEN = 60  # more hidden ids than an edition may carry is not a form of ours
MOVES = ("add", "remove", "up", "down")


def _text(form, key: str, limit: int = 5000) -> str:
    value = form.get(key)
    return value.strip()[:limit] if isinstance(value, str) else ""


def _int(value, limit: int = 2**31 - 1) -> int | None:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 11 and 0 < int(value) <= limit:
        return int(value)
    return None


def _ids(form, key: str) -> list[int]:
    out: list[int] = []
    values = form.getlist(key) if hasattr(form, "getlist") else []  # {} : the empty form of a GET
    for value in values[:MAX_CHOSEN]:
        n = _int(value)
        if n is not None and n not in out:
            out.append(n)
    return out


def _state(form) -> dict:
    days = _int(_text(form, "days")) or 3
    return {
        "title": _text(form, "title", 400),
        "intro": form.get("intro")[:8000] if isinstance(form.get("intro"), str) else "",
        "chosen": _ids(form, "article"),
        "sections": _ids(form, "section"),
        "q": _text(form, "q", 200),
        "in_section": _int(_text(form, "in_section")),
        "days": days if days in special_editions.SEARCH_DAYS else 3,
        "send_at": _text(form, "send_at", 40),
        "test_to": _text(form, "test_to", 320),
        "newsletter": _text(form, "newsletter", 100) or None,  # checked by the use-case
    }


def _move(chosen: list[int], action: str) -> list[int]:
    """add:ID, remove:ID, up:ID, down:ID on the editor's list."""
    verb, _, raw = action.partition(":")
    n = _int(raw)
    if n is None or verb not in MOVES:
        return chosen
    out = list(chosen)
    if verb == "add" and n not in out:
        out.append(n)
    elif verb == "remove" and n in out:
        out.remove(n)
    elif verb in ("up", "down") and n in out:
        i = out.index(n)
        j = i - 1 if verb == "up" else i + 1
        if 0 <= j < len(out):
            out[i], out[j] = out[j], out[i]
    return out


def _composition(state: dict) -> Composition:
    return Composition(title=state["title"], intro=state["intro"], article_ids=tuple(state["chosen"]),
                       section_ids=tuple(state["sections"]), newsletter=state["newsletter"])


def scheduled_editions() -> list[dict]:
    """Alerts and special editions waiting for their time, soonest first."""
    with session_scope() as s:
        rows = s.scalars(select(Edition).where(Edition.status == EditionStatus.draft, Edition.send_at.is_not(None))
                         .order_by(Edition.send_at, Edition.id).limit(50))
        return [{"id": e.id, "kind": e.kind.value, "title": e.title, "send_at": scheduled.local_text(e.send_at),
                 "value": scheduled.local_text(e.send_at).split(" (")[0].replace(" ", "T")} for e in rows]


def _page(request: Request, editor: EditorIdentity, state: dict | None = None, status_code: int = 200, **ctx):
    state = state or _state({})
    ctx.setdefault("idempotency_key", uuid.uuid4().hex)
    results = ctx.pop("results", None)
    if results is None:
        results = special_editions.search(state["q"], state["in_section"], state["days"])
    return desk(request, editor, "editor_special.html", status_code, state=state, results=results,
                chosen=special_editions.chosen(state["chosen"]), sections=special_editions.sections(),
                newsletters=special_editions.newsletters(),
                days_choices=special_editions.SEARCH_DAYS, waiting=scheduled_editions(),
                zone=get_settings().timezone, **ctx)


@router.get("/special")
def special_page(request: Request, editor: EditorIdentity = EDITOR):
    query = request.query_params
    ctx = {}
    for key in ("sent", "scheduled", "moved"):
        if _int(query.get(key) or "") is not None:
            ctx[key] = int(query[key])
    return _page(request, editor, **ctx)


@router.post("/special")
async def special_action(request: Request, editor: EditorIdentity = EDITOR):
    form = await request.form()
    state = _state(form)
    key = _text(form, "idempotency_key", 100) or None
    if not csrf.valid(form.get(csrf.FIELD), csrf_purpose(editor)):
        return await run_in_threadpool(lambda: _page(request, editor, state, 400, error=MSG_CSRF))
    action = _text(form, "action", 40)

    def work():
        if action.partition(":")[0] in MOVES:
            state["chosen"] = _move(state["chosen"], action)
            return _page(request, editor, state, idempotency_key=key)
        if action not in ("preview", "test", "send"):
            return _page(request, editor, state, idempotency_key=key)  # search, or nothing known
        comp = _composition(state)
        try:
            send_at = scheduled.parse_send_at(state["send_at"])
            if action == "send":
                edition_id = special_editions.compose(comp, editor_id=editor.id, actor=editor.actor,
                                                      send_at=send_at, idempotency_key=key)
                return RedirectResponse(f"/editor/special?{'scheduled' if send_at else 'sent'}={edition_id}",
                                        status_code=303)
            if action == "test":
                shown = special_editions.send_test(comp, state["test_to"], editor)
                notice = "أُرسلت نسخة تجريبية إلى العنوان المحدد."
            else:
                shown, notice = special_editions.preview(comp, editor.id), None
        except scheduled.ScheduleError as exc:
            return _page(request, editor, state, 422, error=exc.arabic, idempotency_key=key, field="send_at")
        except SpecialError as exc:
            return _page(request, editor, state, 422, error=str(exc), idempotency_key=key)
        return _page(request, editor, state, preview=shown, notice=notice, idempotency_key=key,
                     send_at_text=scheduled.local_text(send_at) if send_at else "")

    return await run_in_threadpool(work)


@router.post("/editions/{edition_id}/reschedule")
async def reschedule(request: Request, edition_id: int, editor: EditorIdentity = EDITOR):
    """Move a scheduled edition (`send_at`), or send it now (`now`)."""
    form = await request.form()
    if not csrf.valid(form.get(csrf.FIELD), csrf_purpose(editor)):
        return await run_in_threadpool(lambda: _page(request, editor, None, 400, error=MSG_CSRF))
    now = _text(form, "now") == "yes"
    when = None if now else _text(form, "send_at", 40)

    def work():
        if not now and not when:
            return _page(request, editor, None, 422, error="اختر وقتاً جديداً، أو «أرسل الآن».")
        try:
            scheduled.reschedule(edition_id, when, actor=editor.actor, role=editor.role)
        except scheduled.ScheduleError as exc:
            return _page(request, editor, None, 422, error=exc.arabic)
        except (scheduled.NotScheduled, editions.NoSuchEdition):
            return _page(request, editor, None, 409, error="هذه النشرة لم تعد تنتظر وقتاً: أُرسلت أو أُلغيت.")
        except editions.NotAllowed:
            return _page(request, editor, None, 403, error="نقل هذه النشرة لمن له دور المدير.")
        return RedirectResponse(f"/editor/special?{'sent' if now else 'moved'}={edition_id}", status_code=303)

    return await run_in_threadpool(work)
