"""Queueing the one-off mails (confirmation, welcome) for after the caller commits.

The task is named, not imported, so that this module does not pull the rendering and
SMTP stack into the web process; Celery resolves the name when it sends.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from service.logging import get_logger

log = get_logger(__name__)
TRANSACTIONAL_TASK = "nashra.send_transactional"


class _LoggedOnFailure:
    """A signature whose send failure is logged, not raised.

    It is sent after the commit: the reader's row is already saved, so raising would
    only turn their page into a 500 for a change that happened.  The log line (with
    the subscriber id) is what an operator needs to resend.
    """

    def __init__(self, signature, kind: str, subscriber_id: int):
        self.signature = signature
        self.kind = kind
        self.subscriber_id = subscriber_id

    def apply_async(self, *args, **kwargs):
        try:
            return self.signature.apply_async(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 — any broker failure, see above
            log.error("transactional_enqueue_failed", kind=self.kind, subscriber_id=self.subscriber_id,
                      error=type(exc).__name__)
            return None


def queue_transactional(session: Session, kind: str, subscriber_id: int) -> None:
    from service.celery_app import app, send_after_commit

    signature = app.signature(TRANSACTIONAL_TASK, args=(kind, subscriber_id), immutable=True)
    send_after_commit(session, _LoggedOnFailure(signature, kind, subscriber_id))
