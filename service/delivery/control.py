"""Pause, resume and cancel an edition (the CLI and the editors' API call these).

Each is a conditional UPDATE on the edition plus an audit line; the caller commits.
Workers read the edition's status before every group of ten messages (and every second
while they wait), so a pause or a cancel takes effect within a group per batch, plus
the messages already on the wire; their claimed rows go back to `queued`
(pause) or to `cancelled` (cancel).  Resume re-dispatches only rows that are still to
send: nothing already sent (or `unknown`) is sent again.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.delivery import fanout
from service.dispatch import Dispatcher
from service.logs import get_logger
from service.models import Delivery, DeliveryStatus, Edition, EditionStatus, audit, utcnow

log = get_logger(__name__)


class ControlError(ValueError):
    """The edition is not in a state that allows this; nothing changed."""


def _edition(session: Session, edition_id: int) -> Edition:
    edition = session.scalar(sa.select(Edition).where(Edition.id == edition_id).with_for_update())
    if edition is None:
        raise ControlError(f"no edition {edition_id}")
    return edition


def pause(session: Session, edition_id: int, actor: str, reason: str | None = None) -> Edition:
    edition = _edition(session, edition_id)
    if edition.status not in (EditionStatus.planned, EditionStatus.sending):
        raise ControlError(f"edition {edition_id} is {edition.status.value}; only a planned or sending edition can be paused")
    edition.status = EditionStatus.paused
    edition.pause_reason = reason or f"paused by {actor}"
    audit(session, actor, "edition.pause", f"edition:{edition_id}", reason=edition.pause_reason)
    session.flush()
    log.info("delivery.edition.paused", edition_id=edition_id, actor=actor)
    return edition


def resume(session: Session, edition_id: int, actor: str, dispatcher: Dispatcher | None = None) -> Edition:
    """Send what is not yet sent; the batches leave when the caller commits."""
    edition = _edition(session, edition_id)
    if edition.status != EditionStatus.paused:
        raise ControlError(f"edition {edition_id} is {edition.status.value}; only a paused edition can be resumed")
    # Retry rows whose time has not come stay as they are: the sweeper sends them later.
    edition.status = EditionStatus.sending if edition.started_at else EditionStatus.planned
    edition.pause_reason = None
    audit(session, actor, "edition.resume", f"edition:{edition_id}")
    session.flush()
    batches = fanout.dispatch(session, edition, dispatcher=dispatcher)
    log.info("delivery.edition.resumed", edition_id=edition_id, actor=actor, batches=batches)
    return edition


def cancel(session: Session, edition_id: int, actor: str) -> Edition:
    edition = _edition(session, edition_id)
    # A done alert may still have rows held for readers' quiet hours: those can be stopped.
    held = edition.status == EditionStatus.done and session.scalar(sa.select(sa.exists().where(
        Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.held)))
    if edition.status == EditionStatus.cancelled or (edition.status == EditionStatus.done and not held):
        raise ControlError(f"edition {edition_id} is already {edition.status.value}")
    edition.status = EditionStatus.cancelled
    edition.finished_at = utcnow()
    n = session.execute(
        sa.update(Delivery)
        # Held rows too: a cancelled alert never reaches a reader in their catch-up mail either.
        .where(Delivery.edition_id == edition_id,
               Delivery.status.in_([DeliveryStatus.queued, DeliveryStatus.retry, DeliveryStatus.held]))
        .values(status=DeliveryStatus.cancelled, smtp_reply="edition cancelled", updated_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    audit(session, actor, "edition.cancel", f"edition:{edition_id}", rows=n)
    session.flush()
    log.info("delivery.edition.cancelled", edition_id=edition_id, actor=actor, rows=n)
    return edition


def resend_unknown(session: Session, edition_id: int, actor: str, dispatcher: Dispatcher | None = None) -> int:
    """The operator's decision for RFC 1047 rows: queue them again (some may duplicate)."""
    edition = _edition(session, edition_id)
    if edition.status == EditionStatus.cancelled:
        raise ControlError(f"edition {edition_id} is cancelled")
    n = session.execute(
        sa.update(Delivery)
        .where(Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.unknown)
        .values(status=DeliveryStatus.queued, claimed_by=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    if n:
        if edition.status == EditionStatus.done:
            edition.status = EditionStatus.sending
            edition.finished_at = None
        audit(session, actor, "edition.resend_unknown", f"edition:{edition_id}", rows=n)
        session.flush()
        if edition.status in (EditionStatus.planned, EditionStatus.sending):
            fanout.dispatch(session, edition, dispatcher=dispatcher)
    return n
