"""Asking for the one-off mails (confirmation, welcome) once the caller commits.

The mail itself is built and sent by a worker (`service.editions.transactional`); here
we only say that it must go, through the dispatcher the edge installed.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from service import dispatch


def queue_transactional(session: Session, kind: str, subscriber_id: int,
                        dispatcher: dispatch.Dispatcher | None = None) -> None:
    (dispatcher or dispatch.current()).send_transactional(kind, subscriber_id, session=session)
