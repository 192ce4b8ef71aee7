"""Watch and steer an edition: progress, pause, resume, cancel, resend the unknown."""

from __future__ import annotations

from service.db import session_scope
from service.delivery import control
from service.delivery.progress import progress as ledger_progress
from service.dispatch import Dispatcher, current
from service.editions import scheduled, web_copy
from service.logs import get_logger
from service.models import Edition, EditionKind, fits_id
from service.staff.editors import has_role

log = get_logger(__name__)

ACTIONS = ("cancel", "pause", "resume", "resend_unknown")


class ControlRefused(ValueError):
    """The edition's state does not allow the action (e.g. cancelling a finished one)."""


class NoSuchEdition(LookupError):
    pass


class NotAllowed(PermissionError):
    """The person's role does not allow this action on this edition."""


# Who may steer what (the newsroom's roles): an editor any alert or correction (one
# story), a catch-up (the alerts quiet hours held) and a special edition (editors put
# it together on their page); a digest (every reader's morning mail) only an admin.
STEER_ROLE = {EditionKind.alert: "editor", EditionKind.correction: "editor", EditionKind.catchup: "editor",
              EditionKind.special: "editor", EditionKind.digest: "admin"}


def _edition(session, edition_id: int) -> Edition | None:
    # An id past the column's range is no edition (not a NumericValueOutOfRange).
    return session.get(Edition, edition_id) if fits_id(Edition, edition_id) else None


def steerable(session, edition_id: int, role: str) -> Edition:
    """The edition `role` may steer (pause, cancel, move…): raises NoSuchEdition, or
    NotAllowed for a role below its kind's STEER_ROLE."""
    edition = _edition(session, edition_id)
    if edition is None:
        raise NoSuchEdition(edition_id)
    if not has_role(role, STEER_ROLE[edition.kind]):
        raise NotAllowed(f"a {edition.kind.value} is steered by an {STEER_ROLE[edition.kind]}")
    return edition


def progress(edition_id: int) -> dict | None:
    """Counts, rate and ETA from the ledger, and the web copy to share; None if there is
    no such edition."""
    with session_scope() as s:
        edition = _edition(s, edition_id)
        if edition is None:
            return None
        # send_at: when a scheduled edition leaves (UTC; null once it is not waiting for a time).
        waiting = edition.send_at if scheduled.is_scheduled(edition) else None
        return {**ledger_progress(s, edition_id), "web_copy_url": web_copy.share_url(edition),
                "send_at": waiting.isoformat() if waiting else None}


def steer(edition_id: int, action: str, actor: str, dispatcher: Dispatcher | None = None, *,
          role: str) -> dict:
    """Cancel, pause, resume or resend-unknown; returns the progress afterwards (and, for
    resend_unknown, how many rows went back to work under "requeued").  Batches a resume
    asks for leave after the commit.  `role` is the asker's (`editor`
    or `admin`; the CLI is an operator's and says `admin`).

    Raises NoSuchEdition, NotAllowed for a role that may not steer this kind of edition,
    or ControlRefused when the edition's state does not allow it.
    """
    if action not in ACTIONS:
        raise ValueError(action)
    dispatcher = dispatcher or current()
    with session_scope() as s:
        steerable(s, edition_id, role)
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
