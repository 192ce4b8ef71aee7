"""Send a one-off mail (confirmation, welcome) now: decided and rendered by
`service.editions.transactional`, composed like every other message, handed to a Sender."""

from __future__ import annotations

from sqlalchemy.orm import Session

from service.delivery.compose import Sender, compose_one, send_composed
from service.editions.transactional import build_transactional
from service.logs import get_logger

log = get_logger(__name__)


def send_transactional(session: Session, kind: str, subscriber_id: int, sender: Sender | None = None) -> bool:
    """Build, compose and send one now, through `sender` (SMTP by default).  Raises what
    `Sender.send` raises (a transient failure is an OSError, which the Celery task retries)."""
    one_off = build_transactional(session, kind, subscriber_id)
    if one_off is None:
        log.info("transactional.skipped", kind=kind, subscriber_id=subscriber_id)
        return False
    message = compose_one(one_off.kind, one_off.variant, to_addr=one_off.to_addr,
                          subscriber_id=one_off.subscriber_id, token_version=one_off.token_version)
    send_composed(message, one_off.to_addr, sender)
    log.info("transactional.sent", kind=kind, subscriber_id=subscriber_id)
    return True
