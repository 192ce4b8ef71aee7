"""Demo-only pages: the captured outbox, read as a mail client would, and a sample feed.

`nashra demo` runs an SMTP capture server that writes each message it accepts as an
.eml file in settings.outbox_dir.  These routes exist only when settings.demo is true.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from service.config import get_settings
from service.web.access import ANYONE
from service.web.templating import error_page, render

router = APIRouter(dependencies=[ANYONE])  # demo only (settings.demo): the captured outbox
SAMPLE_FEED = Path(__file__).resolve().parent.parent / "demo" / "sample_feed.xml"
MAX_LISTED = 500
# A file name, nothing more: no separators, no leading dot, so no "..".
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:+@=-]{0,250}")
SHOWN_HEADERS = ("From", "To", "Subject", "Date", "Reply-To", "List-Unsubscribe", "List-Unsubscribe-Post",
                 "List-Id", "Message-ID")


def _outbox() -> Path:
    return get_settings().outbox_dir


def safe_eml_path(name: str) -> Path | None:
    """The .eml file `name` names inside the outbox, or None if the name reaches outside it."""
    if not _NAME.fullmatch(name) or ".." in name:
        return None
    if not name.endswith(".eml"):
        name += ".eml"
    root = _outbox().resolve()
    path = (root / name).resolve()
    if path.parent != root:
        return None
    return path


def _read(path: Path) -> EmailMessage:
    with path.open("rb") as fh:
        return email.message_from_binary_file(fh, policy=email.policy.default)


def _summary(path: Path) -> dict:
    try:
        msg = _read(path)
        date = msg["Date"]
        try:
            when = parsedate_to_datetime(date).isoformat(sep=" ", timespec="seconds") if date else ""
        except (TypeError, ValueError):
            when = str(date)
        return {"name": path.stem, "subject": str(msg["Subject"] or ""), "to": str(msg["To"] or ""), "date": when}
    except Exception:  # noqa: BLE001 — a half-written file must not break the list
        return {"name": path.stem, "subject": "(تعذّرت قراءة الرسالة)", "to": "", "date": ""}


@router.get("/outbox")
def outbox_list(request: Request):
    root = _outbox()
    files = sorted(root.glob("*.eml"), key=lambda p: p.stat().st_mtime, reverse=True) if root.is_dir() else []
    return render(request, "outbox_list.html", messages=[_summary(p) for p in files[:MAX_LISTED]],
                  total=len(files))


def _part(msg: EmailMessage, subtype: str) -> str | None:
    part = msg.get_body(preferencelist=(subtype,))
    if part is None:
        return None
    try:
        return part.get_content()
    except (LookupError, UnicodeDecodeError):
        return part.get_payload(decode=True).decode("utf-8", "replace")


@router.get("/outbox/{name}")
def outbox_message(request: Request, name: str):
    path = safe_eml_path(name)
    if path is None:
        return error_page(request, "اسم غير مقبول", "اسم الرسالة غير صالح.", status_code=400)
    if not path.is_file():
        return error_page(request, "غير موجودة", "لا توجد رسالة بهذا الاسم في صندوق الصادر.", status_code=404)
    if name.endswith(".eml"):
        return FileResponse(path, media_type="message/rfc822", filename=path.name)
    msg = _read(path)
    headers = [(h, str(msg[h])) for h in SHOWN_HEADERS if msg[h] is not None]
    return render(request, "outbox_message.html", name=path.stem, headers=headers,
                  subject=str(msg["Subject"] or ""), html=_part(msg, "html"), text=_part(msg, "plain"))


@router.get("/demo/feed.xml")
def demo_feed(request: Request):
    if not SAMPLE_FEED.is_file():
        return Response("sample feed not installed\n", status_code=404, media_type="text/plain")
    return FileResponse(SAMPLE_FEED, media_type="application/rss+xml; charset=utf-8")
