"""The admins' pages: editors (add, revoke, rotate a token), sections (add, rename, hide,
order; file a feed's category under one), newsletters (add, change, hide; on the sections
page too, «النشرات»), feeds (add, pause, resume, remove, with their
health), suppressions (lift one, with a reason), the settings (read only) and the audit
log.  Each route calls one use-case (service/usecases/) and states `page(Role.admin)`:
an editor is refused (403), nobody without a session gets the login form (401).

A token is shown once, on the page that answers the POST that made it (no redirect:
the answer is `no-store` like every other); every change is an audit line.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from service.logs import get_logger
from service.subscribers.hours import WEEKDAYS_AR, offered_hours
from service.usecases import feeds, newsletters, sections, settings_view, staff, suppressions
from service.web import csrf
from service.web.access import Role, page
from service.web.auth import EditorIdentity
from service.web.editor_pages import MSG_CSRF, csrf_purpose, desk

log = get_logger(__name__)
router = APIRouter(prefix="/editor")
ADMIN = page(Role.admin)
AUDIT_PAGE = 100


def _text(form, key: str, limit: int = 2000) -> str:
    value = form.get(key)
    return value.strip()[:limit] if isinstance(value, str) else ""


async def _form(request: Request, editor: EditorIdentity):
    """The form, or None when its CSRF token is not this session's."""
    form = await request.form()
    return form if csrf.valid(form.get(csrf.FIELD), csrf_purpose(editor)) else None


async def _checked(request: Request, editor: EditorIdentity, page, work):
    """`work(form)` off the event loop (it touches the database) once the form's CSRF token
    is this session's; otherwise `page` again, with a 400 that says why."""
    form = await _form(request, editor)
    if form is None:
        return await run_in_threadpool(page, request, editor, 400, error=MSG_CSRF)
    return await run_in_threadpool(work, form)


# ---------------------------------------------------------------- editors


def _editors_page(request, editor, status_code=200, **ctx):
    return desk(request, editor, "admin_editors.html", status_code, rows=staff.list_editors(), **ctx)


@router.get("/editors")
def editors_page(request: Request, editor: EditorIdentity = ADMIN):
    return _editors_page(request, editor)


@router.post("/editors")
async def editors_add(request: Request, editor: EditorIdentity = ADMIN):
    def work(form):
        role = _text(form, "role") or "editor"
        try:
            row, token = staff.add_editor(_text(form, "name", 300), role, actor=editor.actor)
        except ValueError as exc:
            return _editors_page(request, editor, 422, error=f"لم يُضف المحرر: {exc}")
        return _editors_page(request, editor, token=token, token_for=row,
                             notice=f"أُضيف {row.name} ({row.role}).")
    return await _checked(request, editor, _editors_page, work)


@router.post("/editors/{editor_id}/revoke")
async def editors_revoke(request: Request, editor_id: int, editor: EditorIdentity = ADMIN):
    def work(form):
        try:
            row, changed = staff.revoke_editor(editor_id, actor=editor.actor, refuse_self=editor.id)
        except staff.NoSuchEditor:
            return _editors_page(request, editor, 404, error="لا يوجد محرر بهذا الرقم.")
        except staff.RefusedForSelf:
            return _editors_page(request, editor, 409, error="لا يمكنك إيقاف حسابك أنت.")
        return _editors_page(request, editor, notice=f"أُوقف حساب {row.name}: رمزه وجلساته لم تعد تفتح شيئاً."
                             if changed else f"حساب {row.name} موقوف من قبل.")
    return await _checked(request, editor, _editors_page, work)


@router.post("/editors/{editor_id}/rotate")
async def editors_rotate(request: Request, editor_id: int, editor: EditorIdentity = ADMIN):
    def work(form):
        try:
            row, token, reinstated = staff.rotate_token(editor_id, actor=editor.actor)
        except staff.NoSuchEditor:
            return _editors_page(request, editor, 404, error="لا يوجد محرر بهذا الرقم.")
        note = " وأُعيد تفعيل حسابه" if reinstated else ""
        # Rotating one's own token ends one's own sessions too: this page is the last one.
        return _editors_page(request, editor, token=token, token_for=row,
                             notice=f"رمز جديد لـ{row.name}{note}؛ القديم وجلساته لم تعد تعمل.")
    return await _checked(request, editor, _editors_page, work)


# ---------------------------------------------------------------- sections


def _sections_page(request, editor, status_code=200, **ctx):
    return desk(request, editor, "admin_sections.html", status_code, view=sections.overview(),
                **_newsletters_ctx(), **ctx)


@router.get("/sections")
def sections_page(request: Request, editor: EditorIdentity = ADMIN):
    return _sections_page(request, editor)


@router.post("/sections")
async def sections_add(request: Request, editor: EditorIdentity = ADMIN):
    def work(form):
        try:
            row = sections.add(_text(form, "name", 300), _text(form, "slug", 100) or None, actor=editor.actor)
        except sections.SectionError as exc:
            return _sections_page(request, editor, 422, error=f"لم يُضف القسم: {exc}")
        return _sections_page(request, editor, notice=f"أُضيف قسم {row.name} ({row.slug}).")
    return await _checked(request, editor, _sections_page, work)


SECTION_ACTIONS = ("rename", "hide", "unhide", "up", "down")


@router.post("/sections/{section_id}")
async def sections_change(request: Request, section_id: int, editor: EditorIdentity = ADMIN):
    def work(form):
        action = _text(form, "action")
        if action not in SECTION_ACTIONS:
            return _sections_page(request, editor, 422, error="اختر ما تريد فعله بالقسم.")
        try:
            if action == "rename":
                name, slug = sections.rename(section_id, _text(form, "name", 300), _text(form, "slug", 100) or None,
                                             actor=editor.actor)
                notice = f"صار اسم القسم {name} ({slug})."
            elif action in ("hide", "unhide"):
                name, changed = sections.hide(section_id, action == "hide", actor=editor.actor)
                notice = (f"لم يعد {name} معروضاً على القراء؛ من اختاره يبقى عليه." if action == "hide"
                          else f"عاد {name} معروضاً على القراء.") if changed else "لا تغيير."
            else:
                sections.move(section_id, -1 if action == "up" else 1, actor=editor.actor)
                notice = "تغيّر ترتيب الأقسام."
        except sections.SectionError as exc:
            status = 404 if str(exc).startswith("no section") else 422
            return _sections_page(request, editor, status, error=str(exc))
        return _sections_page(request, editor, notice=notice)
    return await _checked(request, editor, _sections_page, work)


@router.post("/categories/{category_id}")
async def category_map(request: Request, category_id: int, editor: EditorIdentity = ADMIN):
    def work(form):
        section = _text(form, "section", 20)
        if not (section.isascii() and section.isdigit() and len(section) < 10):
            return _sections_page(request, editor, 422, error="اختر القسم الذي يُضمّ إليه التصنيف.")
        try:
            category, name, moved = sections.map_category(category_id, int(section), actor=editor.actor)
        except sections.SectionError as exc:
            status = 404 if str(exc).startswith("no ") else 422
            return _sections_page(request, editor, status, error=str(exc))
        return _sections_page(request, editor, notice=f"ضُمّ تصنيف {category} إلى {name}، ومعه {moved} مقال.")
    return await _checked(request, editor, _sections_page, work)


# ---------------------------------------------------------------- newsletters


def _newsletters_ctx() -> dict:
    """What the «النشرات» block needs (the sections page and its own page show it)."""
    return {"newsletters": newsletters.listing(), "all_sections": newsletters.section_choices(), "hours": offered_hours(),
            "weekdays": list(enumerate(WEEKDAYS_AR))}


def _newsletters_page(request, editor, status_code=200, **ctx):
    return desk(request, editor, "admin_newsletters.html", status_code, **_newsletters_ctx(), **ctx)


@router.get("/newsletters")
def newsletters_page(request: Request, editor: EditorIdentity = ADMIN):
    return _newsletters_page(request, editor)


def _shape(form, kind: str) -> dict:
    """The form's fields as usecases.newsletters takes them (it checks every one)."""
    values = {"name": _text(form, "name", 300), "description": _text(form, "description", 2000),
              "from_name": _text(form, "from_name", 300), "list_id": _text(form, "list_id", 300),
              "offered": _text(form, "offered") == "yes"}
    if kind == "digest":
        values |= {"frequency": _text(form, "frequency", 20) or "daily", "hour": _text(form, "hour", 20),
                   "day": _text(form, "day", 20) if _text(form, "frequency", 20) == "weekly" else None,
                   "sections": [v for v in form.getlist("section")[:200] if isinstance(v, str)]}
    return values


@router.post("/newsletters")
async def newsletters_add(request: Request, editor: EditorIdentity = ADMIN):
    def work(form):
        kind = _text(form, "kind", 20)
        try:
            row = newsletters.add(slug=_text(form, "slug", 100), kind=kind, actor=editor.actor, **_shape(form, kind))
        except newsletters.NewsletterError as exc:
            return _newsletters_page(request, editor, 422, error=f"لم تُضف النشرة: {exc}")
        return _newsletters_page(request, editor, notice=f"أُضيفت نشرة {row.name} ({row.slug}).")
    return await _checked(request, editor, _newsletters_page, work)


NEWSLETTER_ACTIONS = ("edit", "hide", "show")


@router.post("/newsletters/{newsletter_id}")
async def newsletters_change(request: Request, newsletter_id: int, editor: EditorIdentity = ADMIN):
    def work(form):
        action = _text(form, "action")
        if action not in NEWSLETTER_ACTIONS:
            return _newsletters_page(request, editor, 422, error="اختر ما تريد فعله بالنشرة.")
        if not 0 < newsletter_id < 2**31:
            return _newsletters_page(request, editor, 404, error="لا توجد نشرة بهذا الرقم.")
        try:
            if action == "edit":
                current = newsletters.get(newsletter_id)
                row, changed = newsletters.edit(newsletter_id, actor=editor.actor, slug=_text(form, "slug", 100),
                                                **_shape(form, current.kind))
                notice = f"حُفظت نشرة {row.name}." if changed else "لا تغيير."
            else:
                row, changed = newsletters.hide(newsletter_id, action == "hide", actor=editor.actor)
                notice = (f"أُخفيت {row.name}: لا تُعرض ولا يُصنع لها جديد، ومن عليها يبقى عليها." if action == "hide"
                          else f"عادت {row.name}.") if changed else "لا تغيير."
                if changed and action == "hide" and row.scheduled:
                    notice += (f" أعدادها المجدولة ({'، '.join(str(i) for i in row.scheduled)}) تُرسل في موعدها؛"
                               " ألغِ ما لا تريده من صفحة العدد الخاص.")
        except newsletters.NewsletterError as exc:
            status = 404 if str(exc).startswith("لا توجد نشرة") else 422
            return _newsletters_page(request, editor, status, error=str(exc))
        return _newsletters_page(request, editor, notice=notice)
    return await _checked(request, editor, _newsletters_page, work)


# ---------------------------------------------------------------- feeds


def _feeds_page(request, editor, status_code=200, **ctx):
    view = sections.overview()
    return desk(request, editor, "admin_feeds.html", status_code, rows=feeds.health(), sections=view.sections,
                unmapped=view.unmapped, **ctx)


@router.get("/feeds")
def feeds_page(request: Request, editor: EditorIdentity = ADMIN):
    return _feeds_page(request, editor)


@router.post("/feeds")
async def feeds_add(request: Request, editor: EditorIdentity = ADMIN):
    def work(form):
        try:
            feed_id, shown = feeds.add(_text(form, "url"), _text(form, "section", 200) or None, actor=editor.actor)
        except feeds.FeedConfigError as exc:
            return _feeds_page(request, editor, 422, error=f"لم يُضف المصدر: {exc}")
        return _feeds_page(request, editor, notice=f"أُضيف المصدر {feed_id}: {shown}؛ يُقرأ في الدقيقة القادمة.")
    return await _checked(request, editor, _feeds_page, work)


@router.post("/feeds/{feed_id}/{action}")
async def feeds_steer(request: Request, feed_id: int, action: str, editor: EditorIdentity = ADMIN):
    def work(form):
        if action not in feeds.ACTIONS:
            return _feeds_page(request, editor, 404, error="لا يُفعل هذا بمصدر.")
        if not 0 < feed_id < 2**31:
            return _feeds_page(request, editor, 404, error="لا يوجد مصدر بهذا الرقم.")
        try:
            _, shown, outcome = feeds.steer(feed_id, action, actor=editor.actor)
        except feeds.FeedConfigError:
            return _feeds_page(request, editor, 404, error="لا يوجد مصدر بهذا الرقم.")
        return _feeds_page(request, editor, notice=f"{shown}: {outcome}")
    return await _checked(request, editor, _feeds_page, work)


# ---------------------------------------------------------------- suppressions


def _suppressions_page(request, editor, status_code=200, **ctx):
    search = request.query_params.get("q", "")[:320]
    reason = request.query_params.get("reason", "")
    reason = reason if reason in suppressions.REASONS else ""  # anything else: every reason
    return desk(request, editor, "admin_suppressions.html", status_code,
                rows=suppressions.listing(search or None, reason=reason or None), search=search, reason=reason,
                reasons=suppressions.REASONS, **ctx)


@router.get("/suppressions")
def suppressions_page(request: Request, editor: EditorIdentity = ADMIN):
    return _suppressions_page(request, editor)


@router.post("/suppressions/{suppression_id}/lift")
async def suppressions_lift(request: Request, suppression_id: int, editor: EditorIdentity = ADMIN):
    def work(form):
        try:
            lifted = suppressions.lift(suppression_id, _text(form, "reason", 1000), actor=editor.actor,
                                       by_admin=editor.may(Role.admin))
        except suppressions.AdminOnly:
            return _suppressions_page(request, editor, 403, error="لا يرفع الحظر عن شكوى إلا مدير.")
        except suppressions.LiftRefused:
            return _suppressions_page(request, editor, 422, error="اكتب سبب رفع الحظر: يُحفظ في السجل.")
        if not lifted:
            return _suppressions_page(request, editor, 404, error="لا يوجد حظر بهذا الرقم (رُفع من قبل؟).")
        return _suppressions_page(request, editor, notice="رُفع الحظر عن العنوان، وحُفظ السبب في السجل.")
    return await _checked(request, editor, _suppressions_page, work)


# ---------------------------------------------------------------- settings, audit


@router.get("/settings")
def settings_page(request: Request, editor: EditorIdentity = ADMIN):
    return desk(request, editor, "admin_settings.html", rows=settings_view.settings_rows())


@router.get("/audit")
def audit_page(request: Request, editor: EditorIdentity = ADMIN):
    query = request.query_params
    before = query.get("before", "")
    before_id = int(before) if before.isascii() and before.isdigit() and len(before) < 19 else None
    action = query.get("action", "")[:100] or None
    rows = staff.audit_entries(limit=AUDIT_PAGE, before=before_id, action=action)
    older = rows[-1].id if len(rows) == AUDIT_PAGE else None
    return desk(request, editor, "admin_audit.html", rows=rows, action=action or "", older=older)
