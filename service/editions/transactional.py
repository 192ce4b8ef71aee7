"""One-off mails to one reader: the double-opt-in confirmation and the welcome.

They skip the ledger's fan-out (there is one recipient and the reader is waiting for
it), but not its rules: a confirmation only goes to a pending reader, a welcome only
to an active one, and nothing goes to a suppressed address.  Nor do they skip the
composer: they are built by `service.delivery.compose` like every digest (its headers,
its VERP envelope sender, its DKIM signature; the welcome with its one-click
List-Unsubscribe) and handed to a `Sender`.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.config import get_settings
from service.delivery.compose import Composed, Sender, compose_one, send_composed
from service.logs import get_logger
from service.models import Section, Subscriber, SubscriberStatus, Suppression
from service.rendering import contexts
from service.rendering.render import render_variant
from service.subscribers.tokens import link

log = get_logger(__name__)
KINDS = ("confirm", "welcome")


def build_transactional(session: Session, kind: str, subscriber_id: int) -> tuple[str, Composed] | None:
    """Return (recipient, composed message), or None when the mail must not go."""
    if kind not in KINDS:
        raise ValueError(f"unknown transactional kind {kind!r}")
    settings = get_settings()
    sub = session.get(Subscriber, subscriber_id)
    if sub is None:
        return None
    wanted = SubscriberStatus.pending if kind == "confirm" else SubscriberStatus.active
    if sub.status != wanted:
        return None
    if session.scalar(select(Suppression.id).where(Suppression.email == sub.email)):
        return None
    site = contexts.site_view(settings)
    if kind == "confirm":
        ctx = contexts.confirm_context(site, confirm_url=link("confirm", sub.id, sub.token_version))
    else:
        ids = [i for i in (sub.sections or []) if isinstance(i, int)]
        names = dict(session.execute(select(Section.id, Section.name).where(Section.id.in_(ids))).all()) if ids else {}
        ctx = contexts.welcome_context(site, sections=[names[i] for i in ids if i in names], frequency=sub.frequency.value)
    # Rendered with the link placeholders left in: the composer fills them in, from the
    # same tokens as the List-Unsubscribe header it writes.
    variant = render_variant(kind, ctx)
    message = compose_one(kind, variant, to_addr=sub.email, subscriber_id=sub.id,
                          token_version=sub.token_version, settings=settings)
    return sub.email, message


def send_transactional(session: Session, kind: str, subscriber_id: int, sender: Sender | None = None) -> bool:
    """Build and send one now.  Raises what `Sender.send` raises (a transient failure is
    an OSError, which the Celery task retries)."""
    built = build_transactional(session, kind, subscriber_id)
    if built is None:
        log.info("transactional.skipped", kind=kind, subscriber_id=subscriber_id)
        return False
    rcpt, message = built
    send_composed(message, rcpt, sender)
    log.info("transactional.sent", kind=kind, subscriber_id=subscriber_id)
    return True
