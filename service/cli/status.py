"""`nashra status`: editions' progress and feed health, read from the database."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from service.db import session_scope
from service.delivery.progress import progress
from service.editions import web_copy
from service.models import Edition, Feed, fits_id
from service.usecases import scheduled


def _fmt_eta(seconds) -> str:
    if seconds in (None, 0):
        return "—"
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def print_status(edition_id: int | None = None, console: Console | None = None) -> int:
    # Piped into a script or a log: do not squeeze columns to 80 characters.
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    with session_scope() as session:
        if edition_id is not None:
            edition = session.get(Edition, edition_id) if fits_id(Edition, edition_id) else None
            if edition is None:
                console.print(f"no edition {edition_id}")
                return 1
            editions = [edition]
        else:
            editions = session.scalars(select(Edition).order_by(Edition.id.desc()).limit(10)).all()
        table = Table(title="editions")
        # "unknown": the dot's answer never came and SMTP_AMBIGUOUS=hold keeps them for a person;
        # "resent?": sent once more after such an answer (=resend): possible duplicates.
        for col in ("id", "kind", "status", "recipients", "sent", "failed", "remaining", "unknown", "resent?",
                    "rate/s", "ETA", "title"):
            table.add_column(col)
        for ed in editions:
            p = progress(session, ed.id)
            table.add_row(
                str(ed.id),
                ed.kind.value,
                # A scheduled draft says when it leaves (TIMEZONE's clock).
                f"scheduled {scheduled.local_text(ed.send_at)}" if scheduled.is_scheduled(ed) else ed.status.value,
                str(p.get("total", ed.recipients)),
                str(p.get("sent", 0)),
                str(p.get("failed", 0)),
                str(p.get("remaining", 0)),
                str(p.get("unknown", 0)),
                str(p.get("possible_duplicates", 0)),
                f"{p.get('rate') or 0:.1f}",
                _fmt_eta(p.get("eta_seconds")),
                (ed.title or "")[:40],
            )
            if edition_id is not None and ed.pause_reason:
                console.print(f"paused: {ed.pause_reason}")
        console.print(table)
        shared = web_copy.share_url(editions[0]) if edition_id is not None else None
        if shared:
            console.print(f"web copy: {shared}", soft_wrap=True)  # one line, for copying
        if edition_id is None:
            feeds = Table(title="feeds")
            for col in ("id", "url", "last success", "failures", "last error"):
                feeds.add_column(col)
            for f in session.scalars(select(Feed).order_by(Feed.id)).all():
                feeds.add_row(
                    str(f.id),
                    f.url[:60],
                    f.last_success_at.strftime("%Y-%m-%d %H:%M:%S") if f.last_success_at else "never",
                    str(f.consecutive_failures),
                    (f.last_error or "")[:60],
                )
            console.print(feeds)
    return 0
