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

from sqlalchemy.orm import Session

from service.config import get_settings
from service.logs import get_logger
from service.models import Subscriber, SubscriberStatus, audit
from service.subscribers.mail import queue_transactional

log = get_logger(__name__)


def offer(session: Session, sub: Subscriber, now: dt.datetime) -> bool:
    """Queue the reader's preferences link unless one went within MANAGE_LINK_MINUTES.
    `sub` is locked by the caller (the signup's SELECT … FOR UPDATE).  True if queued."""
    if sub.status is not SubscriberStatus.active:
        return False
    every = dt.timedelta(minutes=get_settings().manage_link_minutes)
    if sub.manage_link_at is not None and now - sub.manage_link_at < every:
        log.info("manage_link_throttled", subscriber_id=sub.id)
        return False
    sub.manage_link_at = now
    session.flush()
    # On the audit log like a signup is: the reader's history says their link was asked
    # for (and a new address's signup writes as much, so the two answers cost alike).
    audit(session, f"subscriber:{sub.id}", "manage_link", f"subscriber:{sub.id}")
    queue_transactional(session, "manage", sub.id)
    log.info("manage_link_queued", subscriber_id=sub.id)
    return True
