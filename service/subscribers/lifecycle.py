"""A reader's life: sign up (pending) → confirm (active) → change preferences → leave
one newsletter, or all of them.

A reader is on newsletters through `subscriptions` rows (one per newsletter, with the
choices they made for it); the row is the subscription, so leaving one deletes it, and
leaving the last one is leaving: the reader's status goes to unsubscribed and every link
already sent stops working.  The newsletters themselves are looked up by the use-cases
(service.newsletters sits beside this package): what comes here is their ids.

Plain functions over a Session that the caller commits.  Mails are queued with
the dispatcher after the commit (`service.dispatch`), so a rolled-back request sends nothing.  Log lines carry the
subscriber id, never the address or a token.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from service import limits
from service.logs import get_logger
from service.models import Newsletter, Subscriber, SubscriberStatus, Subscription, audit, utcnow
from service.newsletters import membership
from service.subscribers import confirm_budget, consent, hashes, manage_link, signup_rows
from service.subscribers.consent import Evidence
from service.subscribers.mail import queue_transactional
from service.subscribers.suppression import is_suppressed
from service.subscribers.tokens import BadToken, read_token

log = get_logger(__name__)

# A pending reader who signs up again gets a fresh confirmation, but not more often
# than this: otherwise the form is a way to flood someone else's inbox.
RESEND_AFTER = dt.timedelta(minutes=10)
# … and never more than this many confirmations to one address a day, however the
# signups are spread over the hours (or over unsubscribe and sign up again).
CONFIRMATIONS_PER_DAY = 3
CONFIRMATIONS_WINDOW = 24 * 3600
CONFIRM_MAIL = "confirm-mail"  # the limits bucket of that count


@dataclass(frozen=True)
class SignupResult:
    subscriber_id: int | None
    outcome: str  # created | resent | refreshed | capped | already_active | suppressed | held
    confirmation_queued: bool


def signup(
    session: Session,
    *,
    email: str,
    picks: list[signup_rows.Pick],
    consent_source: str,
    now: dt.datetime | None = None,
    digest_hour: int | None = None,
    digest_weekday: int | None = None,
    evidence: Evidence | None = None,
    time_zone: str | None = None,
) -> SignupResult:
    """Record a signup and queue the double-opt-in mail.

    Arguments are already validated (see validation.py, choices.py); `picks` are the
    newsletters chosen (the use-case resolved them), each written as a subscription row
    now — a pending reader has them, and is sent nothing of them until confirmed.  Whatever the
    outcome, the caller shows the same page: the form must not tell a stranger who is
    subscribed.  An active reader is left exactly as they are and is sent only their
    preferences link («إدارة اشتراكك», at most once per MANAGE_LINK_MINUTES).  A
    signup that changes the row also adds to the reader's consent record (`evidence`:
    IP, user agent, form URL, consent text version — consent.py).
    """
    now = now or utcnow()
    consent_source = consent_source[:200]
    if is_suppressed(session.connection(), email):  # a Core lookup: no ORM execute path
        log.info("signup_suppressed_address")
        return SignupResult(None, "suppressed", False)
    reader = signup_rows.NewReader(
        email=email, picks=tuple(picks), consent_source=consent_source, digest_hour=digest_hour,
        digest_weekday=digest_weekday, time_zone=time_zone)
    # A new address (most signups): the reader, audit, consent and the per-address count
    # in one round trip, nothing loaded back.  An address already here: its row, locked.
    written = signup_rows.insert_new(session, reader, evidence, now=now,
                                     counter=(CONFIRM_MAIL, CONFIRMATIONS_WINDOW))
    if written is not None:
        sub_id = written[0]
        # Beyond the hour's budget for the domain (or the site) it waits: confirm_budget.py.
        if confirm_budget.hold_new(session, sub_id, email, now=now):
            outcome = "held"
        else:
            outcome = "created"
            queue_transactional(session, "confirm", sub_id)
        log.info("signup_recorded", subscriber_id=sub_id, outcome=outcome)
        return SignupResult(sub_id, outcome, outcome != "held")
    return _signup_again(session, reader, evidence, now)


_EXISTING = (select(Subscriber.id, Subscriber.status, Subscriber.consented_at, Subscriber.confirmation_due_at,
                    Subscriber.manage_link_at)
             .where(Subscriber.email == bindparam("email")).with_for_update())


def _signup_again(session: Session, reader: signup_rows.NewReader, evidence: Evidence | None,
                  now: dt.datetime) -> SignupResult:
    """The signup of an address already here: a pending reader (a fresh confirmation, at
    most every RESEND_AFTER and CONFIRMATIONS_PER_DAY), an active one (left as they are,
    sent their preferences link), one who left (pending again, as if new)."""
    # Ours or a concurrent request's row, committed (ON CONFLICT waited for it): lock it,
    # reading only what decides the answer (the whole ORM row only if it is to change).
    row = session.connection().execute(_EXISTING, {"email": reader.email}).first()
    if row is None:  # pragma: no cover — the row exists: ON CONFLICT found it
        raise RuntimeError("subscriber row vanished during signup")
    if row.status is SubscriberStatus.active:
        # Left exactly as they are; their preferences link goes to them (manage_link.py).
        log.info("signup_already_active", subscriber_id=row.id)
        manage_link.offer(session, row.id, row.manage_link_at, now, reader.email)
        return SignupResult(row.id, "already_active", False)
    if row.status is SubscriberStatus.pending and row.consented_at and now - row.consented_at < RESEND_AFTER:
        log.info("signup_resend_throttled", subscriber_id=row.id)
        return SignupResult(row.id, "refreshed", False)
    if not limits.peek_in(session, CONFIRM_MAIL, reader.email, CONFIRMATIONS_PER_DAY, CONFIRMATIONS_WINDOW,
                          now=now.timestamp()).allowed:
        # Checked before the row changes: a capped signup writes nothing at all.
        log.info("signup_confirmations_capped", subscriber_id=row.id)
        return SignupResult(row.id, "capped", False)
    # A confirmation held back by the budget keeps its place if they sign up again.
    was_held = row.status is SubscriberStatus.pending and row.confirmation_due_at is not None
    sub = session.get(Subscriber, row.id)  # locked above
    outcome = "resent" if sub.status is SubscriberStatus.pending else "created"
    sub.status = SubscriberStatus.pending
    sub.consent_source = reader.consent_source
    sub.consented_at = now
    sub.confirmed_at = None
    sub.unsubscribed_at = None
    sub.time_zone = reader.time_zone
    session.flush()
    # What they chose this time replaces what they chose before (not yet confirmed, or gone).
    _replace_subscriptions(session, reader, sub.id)
    audit(session, f"subscriber:{sub.id}", "signup", f"subscriber:{sub.id}", source=reader.consent_source)
    consent.record(session, sub.id, "signup", evidence, source=reader.consent_source, now=now)
    # Counted in this transaction: a signup rolled back has mailed nobody.
    limits.hit_in(session, CONFIRM_MAIL, reader.email, CONFIRMATIONS_PER_DAY, CONFIRMATIONS_WINDOW,
                  now=now.timestamp())
    # Beyond the hour's budget for the domain (or the site) it waits: confirm_budget.py.
    if confirm_budget.hold(session, sub, was_held=was_held, now=now):
        outcome = "held"
    else:
        queue_transactional(session, "confirm", sub.id)
    log.info("signup_recorded", subscriber_id=sub.id, outcome=outcome)
    return SignupResult(sub.id, outcome, outcome != "held")


def subscriber_for_token(session: Session, purpose: str, token: str, *, lock: bool = False) -> Subscriber:
    """The subscriber a link names, if the link is genuine and still current."""
    sub_id, version = read_token(purpose, token)
    query = select(Subscriber).where(Subscriber.id == sub_id)
    if lock:
        query = query.with_for_update()
    sub = session.scalar(query)
    if sub is None or sub.token_version != version:
        raise BadToken("this link is no longer valid")
    return sub


def subscriber_to_confirm(session: Session, token: str, *, lock: bool = False) -> Subscriber:
    """The pending (or already active) reader a confirmation link names; changes nothing."""
    sub = subscriber_for_token(session, "confirm", token, lock=lock)
    if sub.status not in (SubscriberStatus.pending, SubscriberStatus.active):
        raise BadToken("this link is no longer valid")
    return sub


def confirm(session: Session, token: str, now: dt.datetime | None = None, evidence: Evidence | None = None) -> Subscriber:
    """pending → active, once; a second click on the same link changes nothing.

    The confirmation goes on the consent record (time, IP, user agent), and a hash left
    by an earlier "forget me" or a long unsubscription goes: the reader is back."""
    sub = subscriber_to_confirm(session, token, lock=True)
    if sub.status is SubscriberStatus.active:
        return sub
    sub.status = SubscriberStatus.active
    sub.confirmed_at = now or utcnow()
    session.flush()
    audit(session, f"subscriber:{sub.id}", "confirm", f"subscriber:{sub.id}")
    consent.record(session, sub.id, "confirm", evidence, source=sub.consent_source, now=sub.confirmed_at)
    hashes.lift_self_service(session, sub.email)
    queue_transactional(session, "welcome", sub.id)
    log.info("subscriber_confirmed", subscriber_id=sub.id)
    return sub


def _replace_subscriptions(session: Session, reader: signup_rows.NewReader, subscriber_id: int) -> None:
    membership.leave_all(session, subscriber_id)
    rows = signup_rows.subscription_rows(reader, subscriber_id, utcnow())
    if rows:
        session.execute(signup_rows.INSERT_SUBSCRIPTIONS, rows)


def update_subscription(session: Session, sub: Subscriber, subscription: Subscription, changes: dict) -> bool:
    """Their choices for one newsletter (validated by choices.py and validation.py: only
    the fields its kind has).  True if anything changed; audited then."""
    changed = {k: v for k, v in changes.items() if getattr(subscription, k) != v}
    if not changed:
        return False
    for name, value in changed.items():
        setattr(subscription, name, value)
    session.flush()
    audit(session, f"subscriber:{sub.id}", "preferences", f"subscriber:{sub.id}",
          newsletter_id=subscription.newsletter_id, **changed)
    log.info("preferences_updated", subscriber_id=sub.id, newsletter_id=subscription.newsletter_id)
    return True


def join(session: Session, sub: Subscriber, newsletter_id: int) -> bool:
    """Put the reader on one more newsletter with its defaults.  False if already on it."""
    if membership.find(session, sub.id, newsletter_id) is not None:
        return False
    membership.join(session, sub.id, session.get(Newsletter, newsletter_id))
    audit(session, f"subscriber:{sub.id}", "join", f"subscriber:{sub.id}", newsletter_id=newsletter_id)
    log.info("newsletter_joined", subscriber_id=sub.id, newsletter_id=newsletter_id)
    return True


def update_reader(session: Session, sub: Subscriber, *, paused_until: dt.datetime | None,
                  time_zone: str | None) -> Subscriber:
    """What is the reader's whatever they read: their pause and their clock (validated by
    choices.py and clocks.py; None: no pause, TIMEZONE)."""
    before = (sub.paused_until, sub.time_zone)
    sub.paused_until, sub.time_zone = paused_until, time_zone
    if (paused_until, time_zone) != before:
        session.flush()
        audit(session, f"subscriber:{sub.id}", "schedule", f"subscriber:{sub.id}",
              paused_until=paused_until.isoformat() if paused_until else None, time_zone=time_zone)
        log.info("schedule_updated", subscriber_id=sub.id)
    return sub


def leave_newsletter(session: Session, sub: Subscriber, newsletter_id: int, *, actor: str,
                     now: dt.datetime | None = None) -> bool:
    """Take the reader off one newsletter; off the last one, they have left (`unsubscribe`).
    False if they were not on it (a second click changes nothing)."""
    left = membership.leave(session, sub.id, newsletter_id)
    if left is None:
        return False
    audit(session, actor, "leave", f"subscriber:{sub.id}", newsletter_id=newsletter_id)
    log.info("newsletter_left", subscriber_id=sub.id, newsletter_id=newsletter_id)
    if not left:
        unsubscribe(session, sub, actor=actor, now=now)
    return True


def unsubscribe(session: Session, sub: Subscriber, *, actor: str, now: dt.datetime | None = None) -> bool:
    """Stop all mail to this reader and kill every link already sent: they leave every
    newsletter (their subscription rows go).

    Returns False if they had already left (nothing changes then).
    """
    if sub.status is SubscriberStatus.unsubscribed:
        return False
    membership.leave_all(session, sub.id)
    sub.status = SubscriberStatus.unsubscribed
    sub.unsubscribed_at = now or utcnow()
    sub.token_version = sub.token_version + 1
    session.flush()
    audit(session, actor, "unsubscribe", f"subscriber:{sub.id}")
    log.info("subscriber_unsubscribed", subscriber_id=sub.id)
    return True


def unsubscribe_by_token(session: Session, token: str) -> Subscriber:
    """RFC 8058 one-click: idempotent, so a repeated POST (or a double click) succeeds.

    The first POST bumps token_version, so the link no longer matches; it is still
    honoured as "already unsubscribed" as long as the reader has not come back since.
    """
    return leave_by_token(session, token)[0]


def leave_by_token(session: Session, token: str, newsletter_id: int | None = None) -> tuple[Subscriber, bool]:
    """`unsubscribe_by_token`, and whether this call is the one that moved the reader out
    (False for the repeats): what the edition's unsubscribe count counts.  With
    `newsletter_id` (the link of one newsletter's mail, validated by the caller) only that
    one is left — all of them if it was their last."""
    sub_id, version = read_token("unsubscribe", token)
    sub = session.scalar(select(Subscriber).where(Subscriber.id == sub_id).with_for_update())
    if sub is None:
        raise BadToken("this link is no longer valid")
    if sub.token_version == version:
        actor = f"subscriber:{sub.id}"
        if newsletter_id is not None:
            return sub, leave_newsletter(session, sub, newsletter_id, actor=actor)
        return sub, unsubscribe(session, sub, actor=actor)
    if sub.status is SubscriberStatus.unsubscribed and version < sub.token_version:
        return sub, False
    raise BadToken("this link is no longer valid")
