"""What the hourly purge deletes: click counts and unique-click sketches older than
CLICK_DAYS (Redis keys expire by themselves, CLICK_DAYS after their last click)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.config import get_settings
from service.models import ClickCount, ClickSketch, utcnow


def forget_old(session: Session, now: dt.datetime | None = None) -> int:
    """Rows deleted (counts and sketches); the caller commits."""
    before = (now or utcnow()) - dt.timedelta(days=get_settings().click_days)
    gone = session.execute(sa.delete(ClickCount).where(ClickCount.hour < before)
                           .execution_options(synchronize_session=False)).rowcount or 0
    gone += session.execute(sa.delete(ClickSketch).where(ClickSketch.updated_at < before)
                            .execution_options(synchronize_session=False)).rowcount or 0
    return gone
