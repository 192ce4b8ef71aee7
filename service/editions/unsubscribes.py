"""How many readers an edition made leave (`editions.unsubscribes`, read by the
edition's report).

The unsubscribe links a ledger mail carries — the body's and List-Unsubscribe's — name
their edition (`?e=<edition id>`, delivery/compose.py); when a reader follows one and
actually moves from subscribed to unsubscribed, that edition's counter goes up by one.
Nothing records who: the counter is a number on the edition.

The `e=` is not signed.  The token beside it is, and it is the reader's own; all that a
changed `e=` could do is move that one reader's one departure to another edition — and
not even that, because it counts only for an edition the ledger says the reader was
sent.  A value that is not an edition id is ignored (the reader is still unsubscribed).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.logs import get_logger
from service.models import Delivery, Edition

log = get_logger(__name__)

MAX_ID = 2**31 - 1  # editions.id is an INTEGER


def edition_ref(raw: object) -> int | None:
    """The edition id an unsubscribe link names (`e=`), or None for anything else."""
    if not isinstance(raw, str) or not (0 < len(raw) <= 10) or not (raw.isascii() and raw.isdigit()):
        return None
    value = int(raw)
    return value if 0 < value <= MAX_ID else None


def count(session: Session, edition_id: int, subscriber_id: int) -> bool:
    """One more reader left from this edition, if the ledger says they were sent it.
    The caller has just moved them out (lifecycle.leave_by_token), in this transaction."""
    sent = sa.exists().where(Delivery.edition_id == edition_id, Delivery.subscriber_id == subscriber_id)
    counted = session.execute(
        sa.update(Edition).where(Edition.id == edition_id, sent)
        .values(unsubscribes=Edition.unsubscribes + 1)
        .execution_options(synchronize_session=False)
    ).rowcount == 1
    if counted:
        log.info("edition_unsubscribe_counted", edition_id=edition_id)  # who it was: not here
    return counted
