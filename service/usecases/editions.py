"""Watch and steer an edition: progress, pause, resume, cancel, resend the unknown."""

from __future__ import annotations

from service.db import session_scope
from service.delivery import control
from service.delivery.progress import progress as ledger_progress
from service.dispatch import Dispatcher, current
from service.logs import get_logger
from service.models import Edition

log = get_logger(__name__)

ACTIONS = ("cancel", "pause", "resume", "resend_unknown")


class ControlRefused(ValueError):
    """The edition's state does not allow the action (e.g. cancelling a finished one)."""


class NoSuchEdition(LookupError):
    pass


def progress(edition_id: int) -> dict | None:
    """Counts, rate and ETA from the ledger; None if there is no such edition."""
    with session_scope() as s:
        if s.get(Edition, edition_id) is None:
            return None
        return ledger_progress(s, edition_id)


def steer(edition_id: int, action: str, actor: str, dispatcher: Dispatcher | None = None) -> dict:
    """Cancel, pause, resume or resend-unknown; returns the progress afterwards (and, for
    resend_unknown, how many rows went back to work under "requeued").  Batches a resume
    asks for leave after the commit.

    Raises NoSuchEdition, or ControlRefused when the edition's state does not allow it.
    """
    if action not in ACTIONS:
        raise ValueError(action)
    dispatcher = dispatcher or current()
    with session_scope() as s:
        if s.get(Edition, edition_id) is None:
            raise NoSuchEdition(edition_id)
        try:
            if action in ("resume", "resend_unknown"):
                result = getattr(control, action)(s, edition_id, actor, dispatcher=dispatcher)
            else:
                result = getattr(control, action)(s, edition_id, actor)
        except control.ControlError as exc:
            raise ControlRefused(str(exc)) from None
        out = ledger_progress(s, edition_id)
        if action == "resend_unknown":
            out["requeued"] = result
    log.info("edition_control", action=action, edition_id=edition_id, actor=actor)
    return out
