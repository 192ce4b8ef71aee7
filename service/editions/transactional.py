"""One-off mails to one reader: the double-opt-in confirmation, the welcome, and
«إدارة اشتراكك» (the preferences link of a reader already subscribed, when their address
is typed into a signup form again).

They skip the ledger's fan-out (there is one recipient and the reader is waiting for
it), but not its rules: a confirmation only goes to a pending reader, a welcome (or a
preferences link) only to an active one, and nothing goes to a suppressed address.  Nor
do they skip the composer: this module decides and renders (`build_transactional`, the domain's part),
and `service.delivery.compose` builds the message like every digest's (its headers, its
VERP envelope sender, its DKIM signature; the welcome with its one-click
List-Unsubscribe) and `service.delivery.one_off` hands it to a `Sender`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.config import get_settings
from service.editions import schedule
from service.logs import get_logger
from service.models import (
    Frequency,
    Newsletter,
    NewsletterKind,
    Section,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Suppression,
    utcnow,
)
from service.rendering import contexts
from service.rendering.render import render_variant
from service.rendering.viewmodels import RenderedVariant
from service.subscribers import clocks, hours
from service.subscribers.tokens import link

log = get_logger(__name__)
KINDS = ("confirm", "welcome", "manage")


@dataclass(frozen=True)
class OneOff:
    """A one-off mail that must go: to whom, and its variant rendered with the link
    placeholders left in (the composer fills them from the same tokens as its
    List-Unsubscribe header)."""

    kind: str
    to_addr: str
    subscriber_id: int
    token_version: int
    variant: RenderedVariant


def build_transactional(session: Session, kind: str, subscriber_id: int) -> OneOff | None:
    """The mail to send, rendered, or None when it must not go."""
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
    elif kind == "manage":  # the link itself is the composer's, from the reader's tokens
        ctx = contexts.manage_context(site)
    else:
        # Each newsletter with its own choices (the one-subscription arguments are unused).
        zone = clocks.name_of(sub.time_zone, settings)
        ctx = contexts.welcome_context(site, sections=[], frequency="none", time_zone=zone,
                                       newsletters=_chosen(session, sub, settings))
    return OneOff(kind, sub.email, sub.id, sub.token_version, render_variant(kind, ctx))


def _chosen(session: Session, sub: Subscriber, settings) -> list[dict]:
    """The newsletters the reader is on, in the site's order, as welcome_context lists them."""
    mine = session.execute(
        select(Subscription, Newsletter).join(Newsletter, Newsletter.id == Subscription.newsletter_id)
        .where(Subscription.subscriber_id == sub.id).order_by(Newsletter.position, Newsletter.id)).all()
    ids = {i for subscription, _ in mine for i in (subscription.sections or []) if isinstance(i, int)}
    names = dict(session.execute(select(Section.id, Section.name).where(Section.id.in_(ids))).all()) if ids else {}
    out = []
    for subscription, newsletter in mine:
        if newsletter.kind is not NewsletterKind.digest:
            out.append({"name": newsletter.name, "kind": "alerts"})
            continue
        leaves = _digest_leaves(sub, subscription, newsletter, settings)
        weekly = newsletter.frequency is Frequency.weekly
        out.append({"name": newsletter.name, "kind": "digest", "frequency": "weekly" if weekly else "daily",
                    "sections": [names[i] for i in subscription.sections or [] if i in names],
                    "digest_hour": leaves.hour, "digest_weekday": leaves.weekday(), "digest_minute": leaves.minute})
    return out


def _digest_leaves(sub: Subscriber, subscription: Subscription, newsletter: Newsletter, settings) -> dt.datetime:
    """When the reader's digest really arrives, on their clock: their hour (and day), but
    in a zone not a whole number of hours from UTC it leaves in the slot before (Kolkata's
    07:00 at 06:30: service/editions/schedule.py), and the welcome mail says so."""
    tz = clocks.zone(sub.time_zone, settings)
    hour = hours.effective_hour(subscription.digest_hour, settings, newsletter)
    weekday = hours.effective_weekday(subscription.digest_weekday, settings, newsletter)
    today = utcnow().astimezone(tz).date() + dt.timedelta(days=1)  # a day away from any DST change today
    date = today + dt.timedelta(days=(weekday - today.weekday()) % 7)
    return schedule.slot_of("daily", date, hour, settings, tz).at.astimezone(tz)
