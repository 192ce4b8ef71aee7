"""«إدارة اشتراكك»: the way back for a reader who lost their links.

A reader who deleted our mails and wants to change their choices types their address
into the signup form again.  The form answers the same for every address (it must not
tell a stranger who is subscribed), so for a reader already subscribed — active, or
active and paused — the answer comes by mail: their preferences link, saying that
nothing was changed.

At most one such mail per MANAGE_LINK_MINUTES per reader, counted on their own row
(`manage_link_at`, under the row lock the signup already holds), so a form submitted
in a loop cannot fill their inbox; the address itself is stored nowhere new.  The mail
is queued after the commit through the same dispatcher as a confirmation (never sent
inline), so the request that asked for it takes the same path and time as any other.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.config import get_settings
from service.logs import get_logger
from service.models import AUDIT_ORIGIN, AuditLog, Subscriber, utcnow
from service.subscribers import confirm_budget
from service.subscribers.mail import queue_transactional

log = get_logger(__name__)

# Built once, run on the session's Connection: on the signup's path, as a new address's
# rows are (signup_rows.py), so that the two answers cost about the same.
_SUB = Subscriber.__table__
_MARK = (sa.update(_SUB).where(_SUB.c.id == sa.bindparam("sub_id"))
         .values(manage_link_at=sa.bindparam("now", type_=_SUB.c.manage_link_at.type)))
_AUDIT = sa.insert(AuditLog.__table__)


def offer(session: Session, subscriber_id: int, last_sent: dt.datetime | None, now: dt.datetime,
          email: str | None = None) -> bool:
    """Queue an active reader's preferences link unless one went within
    MANAGE_LINK_MINUTES (`last_sent`: their row's manage_link_at, read under the lock the
    signup holds on the row), or the confirmation budget of their domain (or the site) is
    spent this hour (`email` given: confirm_budget.py).  True if queued."""
    every = dt.timedelta(minutes=get_settings().manage_link_minutes)
    if last_sent is not None and now - last_sent < every:
        log.info("manage_link_throttled", subscriber_id=subscriber_id)
        return False
    # A flood that names readers already here must not mail them faster than it could mail
    # new addresses: the link counts against the same budget.  Beyond it, it is dropped, not
    # held (the reader asked for a convenience and may ask again), and nothing is marked.
    if email is not None and confirm_budget.due_time(email, now, session=session) is not None:
        log.info("manage_link_over_budget", subscriber_id=subscriber_id)
        return False
    conn = session.connection()
    conn.execute(_MARK, {"sub_id": subscriber_id, "now": now})
    # On the audit log like a signup is: the reader's history says their link was asked
    # for (and a new address's signup writes as much, so the two answers cost alike).
    origin = AUDIT_ORIGIN.get()
    target = f"subscriber:{subscriber_id}"
    conn.execute(_AUDIT, {"at": utcnow(), "actor": target, "action": "manage_link", "target": target, "details": {},
                          "origin": origin[:200] if origin else None})
    queue_transactional(session, "manage", subscriber_id)
    log.info("manage_link_queued", subscriber_id=subscriber_id)
    return True
