"""Helpers shared by the delivery tests.

Readers are inserted in bulk with plain INSERTs; editions are created the way the
lead's code does (status draft, articles optional) and planned with a small renderer
passed in, so these tests do not depend on the rendering templates.  `planned_edition`,
`run_all_batches` and `ledger` drive a whole edition through the service's own
session (PostgreSQL under `pg_env`, SQLite under `sqlite_env`).
"""

from __future__ import annotations

import json

import sqlalchemy as sa

from service.db import session_scope
from service.delivery import fanout
from service.delivery.batch import send_batch
from service.delivery.planner import plan
from service.models import (
    AuditLog,
    Delivery,
    Edition,
    EditionKind,
    EditionStatus,
    Frequency,
    Subscriber,
    Suppression,
    utcnow,
)
from service.newsletters import catalogue
from service.rendering.viewmodels import PREFERENCES_URL, UNSUBSCRIBE_URL, RenderedVariant
from tests.support.readers import subscribe_all

ARABIC_TITLE = "نشرة الصباح: المغرب يعزّز الأمن"


def email_for(i: int, prefix: str = "reader") -> str:
    return f"{prefix}{i}@example.com"


def add_subscribers(conn, n: int, *, start: int = 0, prefix: str = "reader", status: str = "active",
                    frequency: str = "daily", alerts: bool = True, sections: list | None = None) -> None:
    """n readers in one executemany (conn: a Connection or Session)."""
    now = utcnow()
    rows = [
        {
            "email": email_for(i, prefix),
            "status": status,
            "token_version": 1,
            "created_at": now,
            "updated_at": now,
        }
        for i in range(start, start + n)
    ]
    if rows:
        conn.execute(sa.insert(Subscriber.__table__), rows)
        ids = list(conn.execute(sa.select(Subscriber.id).where(Subscriber.email.in_([r["email"] for r in rows])))
                   .scalars())
        subscribe_all(conn, ids, frequency=frequency, alerts=alerts, sections=sections)


def add_suppression(conn, email: str, reason: str = "manual") -> None:
    conn.execute(sa.insert(Suppression.__table__).values(email=email, reason=reason, created_at=utcnow()))


def make_edition(session, kind: str = "digest", frequency: str | None = "daily", **params) -> int:
    """A draft of the site's own newsletters: a digest of `frequency`'s, an alert `alerts`'."""
    if kind in ("digest", "special"):
        newsletter = catalogue.digest_for(session, frequency or "daily")
    elif kind == "alert":
        newsletter = catalogue.default_alerts(session)
    else:
        newsletter = None
    edition = Edition(
        newsletter_id=newsletter.id if newsletter else None,
        kind=EditionKind(kind),
        frequency=Frequency(frequency) if frequency else None,
        status=EditionStatus.draft,
        title=ARABIC_TITLE,
        params=params,
    )
    session.add(edition)
    session.flush()
    return edition.id


def renderer(html_bytes: int = 2000, empty: frozenset[str] = frozenset()):
    """A renderer hook like the lead's: one small RTL page per variant, with link placeholders."""
    calls: list[str] = []

    def render(session, edition, variant):
        calls.append(variant)
        if variant in empty:
            return None
        filler = "<p>" + ("الأمن المغربي يعلن تفكيك خلية. " * 40) + "</p>\n"
        body = ""
        while len(body.encode()) < html_bytes:
            body += filler
        html = (
            f'<html lang="ar" dir="rtl"><body><div dir="rtl" lang="ar" style="direction:rtl;text-align:right">'
            f"<h1>{ARABIC_TITLE}</h1><p>variant {variant}</p>{body}"
            f'<a href="{UNSUBSCRIBE_URL}">إلغاء الاشتراك</a> <a href="{PREFERENCES_URL}">التفضيلات</a>'
            f"</div></body></html>"
        )
        text = f"{ARABIC_TITLE}\n\u200fvariant {variant}\n{UNSUBSCRIBE_URL}\n{PREFERENCES_URL}\n"
        return RenderedVariant(subject=f"{ARABIC_TITLE} ({edition.id})", html=html, text=text)

    render.calls = calls
    return render


def sections_json(ids: list[int]) -> str:
    return json.dumps(ids)


def planned_edition(n: int, kind: str = "digest", **kw) -> int:
    """n readers (add_subscribers' keywords), one edition of `kind`, planned."""
    with session_scope() as s:
        add_subscribers(s, n, **kw)
        eid = make_edition(s, kind, "daily" if kind == "digest" else None, headline="h", url="https://x.example/")
        plan(s, eid, renderer=renderer())
    return eid


def run_all_batches(eid: int):
    """Send every batch of the edition in this process, as the Celery tasks would."""
    with session_scope() as s:
        ranges = fanout.batch_ranges(s, eid, 50)
    return [send_batch(eid, a, b) for a, b in ranges]


def ledger(eid: int) -> dict[str, str]:
    """The edition's ledger: each reader's address → the status of their row."""
    with session_scope() as s:
        return {
            e: st.value
            for e, st in s.execute(
                sa.select(Subscriber.email, Delivery.status)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(Delivery.edition_id == eid)
            )
        }


def snapshot():
    """Everything a report could change."""
    with session_scope() as s:
        return (
            s.execute(sa.select(Delivery.id, Delivery.status, Delivery.smtp_code, Delivery.smtp_reply,
                                Delivery.updated_at).order_by(Delivery.id)).all(),
            s.execute(sa.select(Suppression.email, Suppression.reason).order_by(Suppression.email)).all(),
            s.execute(sa.select(Subscriber.id, Subscriber.status, Subscriber.token_version)
                      .order_by(Subscriber.id)).all(),
            s.scalar(sa.select(sa.func.count()).select_from(AuditLog)),
        )
