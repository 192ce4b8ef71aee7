"""The suppression list: addresses we must never mail, whatever their subscription says.

The delivery workers re-check it when they claim a row; signup and import check it so
that a suppressed address is not sent a confirmation either.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db import insert_ignoring
from service.logs import get_logger
from service.models import (
    AUDIT_ORIGIN,
    AuditLog,
    FeedbackEvent,
    Subscriber,
    SuppressedHash,
    Suppression,
    audit,
    utcnow,
)
from service.subscribers import hashes

log = get_logger(__name__)
REASONS = ("hard_bounce", "soft_bounce", "complaint", "manual")
LIFT_REASON_MAX = 500
# The mark a lift leaves among the reader's feedback events: the soft-bounce count
# (service/inbound/actions.py) starts again after it, as after a delivery report.
LIFTED = ("suppressions", "lifted")  # (source, kind)


# Both questions in one statement, built once: every signup asks it, and on that path
# a second round trip and building the statement anew cost more than the lookups.
_SUPPRESSED = sa.select(
    sa.exists().where(Suppression.email == sa.bindparam("email"))
    | sa.exists().where(SuppressedHash.hash == sa.bindparam("digest"),
                        SuppressedHash.reason.not_in(hashes.SELF_SERVICE))
)


def is_suppressed(session: Session, email: str) -> bool:
    """On the list, or kept as a keyed hash for a reason that blocks every mail (a bounce
    or a complaint of a reader since forgotten: service/subscribers/hashes.py)."""
    return bool(session.scalar(_SUPPRESSED, {"email": email.lower(), "digest": hashes.address_hash(email)}))


def suppress(session, email: str, reason: str, detail: str | None = None, actor: str = "system") -> bool:
    """Add an address; returns False if it was already there (the first reason stays).

    `session` is a Session or a Connection (the delivery workers write through a bare
    Connection): only Core statements, so both work, and the caller commits."""
    if reason not in REASONS:
        raise ValueError(f"reason must be one of {', '.join(REASONS)}")
    email = email.strip().lower()
    # INSERT … ON CONFLICT DO NOTHING: two bounces for one address handled at the same
    # moment (two workers, the bounce server) must not fail one of them.
    table = Suppression.__table__
    new_id = session.execute(
        insert_ignoring(session, table, ["email"])
        .values(email=email, reason=reason, detail=(detail or "")[:1000] or None, created_at=utcnow())
        .returning(table.c.id)
    ).scalar()
    if new_id is None:
        return False  # already there: the first reason stays
    session.execute(sa.insert(AuditLog.__table__).values(
        at=utcnow(), actor=actor, action="suppress", target=f"suppression:{new_id}", details={"reason": reason},
        origin=AUDIT_ORIGIN.get()))
    log.info("address_suppressed", suppression_id=new_id, reason=reason)
    return True


class LiftRefused(ValueError):
    """A suppression is lifted only with a reason someone can read later."""


class AdminOnly(LiftRefused):
    """A complaint is lifted only by an admin: the reader told their mailbox provider
    that our mail was unwanted."""


def listing(session, *, search: str | None = None, reason: str | None = None, limit: int = 100) -> list[Suppression]:
    """The newest suppressions (for one reason, those whose address contains `search`),
    for the admins and operators."""
    query = sa.select(Suppression).order_by(Suppression.id.desc()).limit(max(1, min(limit, 1000)))
    if reason:
        if reason not in REASONS:
            raise ValueError(f"reason must be one of {', '.join(REASONS)}")
        query = query.where(Suppression.reason == reason)
    if search:
        query = query.where(Suppression.email.contains(search.strip().lower(), autoescape=True))
    return list(session.scalars(query))


def find(session, email: str) -> Suppression | None:
    """The suppression of this address (as `suppress` stores it), locked, or None."""
    return session.scalar(sa.select(Suppression).where(Suppression.email == email.strip().lower()).with_for_update())


def _why(reason: str) -> str:
    reason = " ".join((reason or "").split())
    if not reason:
        raise LiftRefused("say why the address may be mailed again")
    if len(reason) > LIFT_REASON_MAX or any(c == "\x00" or "\ud800" <= c <= "\udfff" for c in reason):
        raise LiftRefused(f"the reason must be plain text of at most {LIFT_REASON_MAX} characters")
    return reason


def _may_lift(was: str, by_admin: bool) -> None:
    if was == "complaint" and not by_admin:
        raise AdminOnly("a complaint can be lifted only by an admin")


def lift(session, suppression_id: int, reason: str, actor: str, *, by_admin: bool) -> Suppression | None:
    """Take one address off the list (an admin's decision, e.g. a bounce that was the
    relay's fault); the reason and what the suppression was are kept in the audit log,
    never the address.  None when there is no such suppression.  Raises LiftRefused
    without a reason, AdminOnly for a complaint when `by_admin` is false."""
    reason = _why(reason)
    row = session.scalar(sa.select(Suppression).where(Suppression.id == suppression_id).with_for_update()
                         ) if 0 < suppression_id < 2**31 else None
    if row is None:
        return None
    _may_lift(row.reason, by_admin)
    session.delete(row)
    reader = session.scalar(sa.select(Subscriber.id).where(Subscriber.email == row.email))
    if reader is not None:
        # Lifted, the address starts afresh: the soft bounces that put it on the list
        # must not put it back at the next one.
        session.execute(sa.insert(FeedbackEvent.__table__).values(
            received_at=utcnow(), source=LIFTED[0], kind=LIFTED[1], subscriber_id=reader))
    audit(session, actor, "suppression.lift", f"suppression:{row.id}", was=row.reason, since=row.created_at.isoformat(),
          reason=reason)
    session.flush()
    log.info("suppression_lifted", suppression_id=row.id, was=row.reason)
    return row


def lift_hashed(session, email: str, reason: str, actor: str, *, by_admin: bool) -> str | None:
    """The address of a reader since forgotten, kept only as a keyed hash that blocks all
    mail (it had bounced or complained): the block goes, the hash stays as a forgotten
    reader's (an old list still cannot import it; the person may sign up again).  Returns
    what the block was, or None when the address is not blocked that way."""
    reason = _why(reason)
    was = hashes.reason_for(session, email)
    if was is None or was in hashes.SELF_SERVICE:
        return None
    _may_lift(was, by_admin)
    hashes.unblock(session, email)
    audit(session, actor, "suppression.lift", None, was=was, hashed=True, reason=reason)
    log.info("suppression_lifted", hashed=True, was=was)
    return was
