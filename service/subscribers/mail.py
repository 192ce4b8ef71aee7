"""Queueing the one-off mails (confirmation, welcome) for after the caller commits.

The task is named, not imported, so that this module does not pull the rendering and
SMTP stack into the web process; Celery resolves the name when it sends.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

TRANSACTIONAL_TASK = "nashra.send_transactional"


def queue_transactional(session: Session, kind: str, subscriber_id: int) -> None:
    from service.celery_app import app, send_after_commit

    send_after_commit(session, app.signature(TRANSACTIONAL_TASK, args=(kind, subscriber_id), immutable=True))
