"""One-off mails to one reader: the double-opt-in confirmation and the welcome.

They skip the ledger's fan-out (there is one recipient and the reader is waiting for
it), but not its rules: a confirmation only goes to a pending reader, a welcome only
to an active one, and nothing goes to a suppressed address.
"""

from __future__ import annotations

import email.utils

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.config import get_settings
from service.logs import get_logger
from service.models import Section, Subscriber, SubscriberStatus, Suppression
from service.rendering import contexts
from service.rendering.mime import build_message
from service.rendering.personalise import personalise
from service.rendering.render import render_variant
from service.subscribers.tokens import link

log = get_logger(__name__)
KINDS = ("confirm", "welcome")


def build_transactional(session: Session, kind: str, subscriber_id: int) -> tuple[str, bytes] | None:
    """Return (recipient, message bytes), or None when the mail must not go."""
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
    variant = render_variant(kind, ctx)
    html, text = personalise(
        variant,
        unsubscribe_url=link("unsubscribe", sub.id, sub.token_version),
        preferences_url=link("preferences", sub.id, sub.token_version),
    )
    domain = settings.mail_from_address.rpartition("@")[2]
    data = build_message(
        subject=variant.subject,
        html=html,
        text=text,
        from_addr=settings.mail_from,
        to_addr=sub.email,
        message_id=email.utils.make_msgid(idstring=f"{kind}.{sub.id}", domain=domain),
    )
    return sub.email, data


def send_transactional(session: Session, kind: str, subscriber_id: int) -> bool:
    from service.delivery.smtp import send_one

    built = build_transactional(session, kind, subscriber_id)
    if built is None:
        log.info("transactional.skipped", kind=kind, subscriber_id=subscriber_id)
        return False
    rcpt, data = built
    send_one(rcpt, data)
    log.info("transactional.sent", kind=kind, subscriber_id=subscriber_id)
    return True
