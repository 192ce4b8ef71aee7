"""An edition's progress, read from the ledger (never from the broker)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.models import Delivery, DeliveryStatus, Edition, EditionStatus, utcnow

RATE_WINDOW = dt.timedelta(seconds=60)


def progress(session: Session, edition_id: int) -> dict:
    """Counts by status, plus sent/failed/remaining, the recent send rate and an ETA.

    rate = messages per second over the last minute; ETA = remaining / rate, in seconds,
    only while the edition is sending and has sent in that minute (None otherwise: paused,
    finished, not started, or waiting for a relay — no rate, no honest guess).
    """
    edition = session.get(Edition, edition_id)
    if edition is None:
        raise LookupError(f"no edition {edition_id}")
    by_status = {s.value: 0 for s in DeliveryStatus}
    for status, n in session.execute(
        sa.select(Delivery.status, sa.func.count()).where(Delivery.edition_id == edition_id).group_by(Delivery.status)
    ):
        by_status[DeliveryStatus(status).value] = n
    now = utcnow()
    recent = session.scalar(
        sa.select(sa.func.count()).where(
            Delivery.edition_id == edition_id,
            Delivery.status == DeliveryStatus.sent,
            Delivery.sent_at >= now - RATE_WINDOW,
        )
    ) or 0
    # Messages sent once more after an ambiguous end (SMTP_AMBIGUOUS=resend): each a
    # possible duplicate in that reader's mailbox (mail clients fold it: same Message-ID).
    possible_duplicates = session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(Delivery.ambiguous), 0)).where(Delivery.edition_id == edition_id)
    ) or 0
    first_sent = session.scalar(
        sa.select(sa.func.min(Delivery.sent_at)).where(Delivery.edition_id == edition_id, Delivery.sent_at.is_not(None))
    )
    # Over less than a full minute of sending, divide by the time actually spent.
    window = RATE_WINDOW.total_seconds()
    if first_sent is not None:
        window = max(1.0, min(window, (now - first_sent).total_seconds()))
    rate = recent / window if recent else 0.0
    remaining = by_status["queued"] + by_status["claimed"] + by_status["retry"]
    return {
        "edition_id": edition_id,
        "kind": edition.kind.value,
        "status": edition.status.value,
        "pause_reason": edition.pause_reason,
        "total": sum(by_status.values()),
        "sent": by_status["sent"],
        "failed": by_status["failed"],
        "unknown": by_status["unknown"],
        "possible_duplicates": int(possible_duplicates),
        "remaining": remaining,
        "by_status": by_status,
        "rate": round(rate, 2),
        "eta_seconds": eta_seconds(edition.status, remaining, rate),
        "started_at": edition.started_at.isoformat() if edition.started_at else None,
        "finished_at": edition.finished_at.isoformat() if edition.finished_at else None,
    }


def eta_seconds(status: EditionStatus, remaining: int, rate: float) -> int | None:
    """Seconds left at the recent rate, or None when there is no such guess to make."""
    if status != EditionStatus.sending or not remaining or rate <= 0:
        return None
    return max(1, round(remaining / rate))
