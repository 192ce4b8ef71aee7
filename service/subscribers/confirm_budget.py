"""The confirmation budget: how many double-opt-in mails may go, per hour, to one
address domain (CONFIRM_BUDGET_PER_DOMAIN) and overall (CONFIRM_BUDGET_TOTAL).

A signup flood from many addresses passes the per-client limit and the per-address cap,
and without this would mail every victim.  Beyond a budget the signup is still accepted
exactly like any other (the same page, the same API answer: a bot learns nothing) but
its confirmation is held: `subscribers.confirmation_due_at` says when it may go.  Held
confirmations are spread out at half the budget's pace from the next hour on, and beat's
trickle (`release_due`, every minute) sends those that are due while the hour's budget
has room — the budget it shares with fresh signups, so that no hour mails a domain more
than its budget, however long the flood goes on.  A held reader who signs up again keeps
their place (a re-signup never jumps the queue), and a held reader nobody confirms is
deleted after PENDING_DAYS like any other pending one (privacy.purge_batch).

Counting is `service.limits`: keyed hashes (no domain or address is stored), Redis when
it is set, the database otherwise, and never open when Redis fails.  One round trip per
signup (`limits.hit_many`: the domain and the total in one pipeline or one upsert).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service import limits
from service.config import Settings, get_settings
from service.logs import get_logger
from service.models import Subscriber, SubscriberStatus
from service.subscribers.mail import queue_transactional

log = get_logger(__name__)

WINDOW = 3600  # the budgets are per hour
# Held confirmations go out at most at half a budget per hour: a flood's backlog never
# takes a whole hour's budget from the real readers who sign up during it.
HELD_PACE = 2
DOMAIN_BUCKET, TOTAL_BUCKET = "confirm-domain", "confirm-total"
TOTAL_KEY = "*"
RELEASE_BATCH = 500
OVERDUE = dt.timedelta(minutes=10)

# Second-level labels under which a country registry sells names (example.co.uk,
# example.com.sa, example.gov.jo): there the registrable domain is three labels.
# Without the Public Suffix List (a dependency and a file to keep fresh) this groups a
# little too much at worst (blogspot.com's users share a budget), never too little:
# a.victim.com and b.victim.com are one domain, as they are one victim.
_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go", "gob", "mil",
                           "nic", "sch", "ltd", "plc", "info", "biz", "nom", "gen", "web", "med"})


def domain_key(email: str) -> str:
    """The registrable domain of an address (lowercased; an IDN as it was given)."""
    host = email.rpartition("@")[2].strip().strip(".").lower()
    labels = [label for label in host.split(".") if label]
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def _next_window(now: dt.datetime) -> dt.datetime:
    start = (int(now.timestamp()) // WINDOW + 1) * WINDOW
    return dt.datetime.fromtimestamp(start, dt.UTC)


def _budgets(settings: Settings, email: str) -> list[tuple[str, str, int]]:
    out = []
    if settings.confirm_budget_per_domain:
        out.append((DOMAIN_BUCKET, domain_key(email), settings.confirm_budget_per_domain))
    if settings.confirm_budget_total:
        out.append((TOTAL_BUCKET, TOTAL_KEY, settings.confirm_budget_total))
    return out


def due_time(email: str, now: dt.datetime, settings: Settings | None = None, *,
             session: Session | None = None) -> dt.datetime | None:
    """Count one confirmation for `email` against the budgets of `now`'s hour: None if it
    may go now, else when it should (the k-th held one of the hour at its place in the
    slow lane: the next hour's start plus k-1 paces).  Without Redis the count is kept in
    `session`'s transaction: a signup rolled back has used no budget."""
    settings = settings or get_settings()
    budgets = _budgets(settings, email)
    if not budgets:
        return None
    verdicts = limits.hit_many(budgets, WINDOW, now=now.timestamp(), session=session)
    due = None
    for (_, _, limit), verdict in zip(budgets, verdicts, strict=True):
        if verdict.allowed:
            continue
        place = _next_window(now) + dt.timedelta(seconds=(verdict.count - limit - 1) * HELD_PACE * WINDOW / limit)
        due = place if due is None else max(due, place)
    return due


def hold(session: Session, sub: Subscriber, *, was_held: bool, now: dt.datetime) -> bool:
    """After a signup that wants a confirmation: True if it must wait (its due time is
    set), False if the caller queues it now.  A reader already held keeps their place
    and is not counted again."""
    if was_held and sub.confirmation_due_at is not None:
        log.info("confirmation_still_held", subscriber_id=sub.id)
        return True
    sub.confirmation_due_at = due_time(sub.email, now, session=session)
    if sub.confirmation_due_at is None:
        return False
    log.info("confirmation_held", subscriber_id=sub.id, due_at=sub.confirmation_due_at.isoformat())
    return True


_SET_DUE = (sa.update(Subscriber.__table__).where(Subscriber.__table__.c.id == sa.bindparam("sub_id"))
            .values(confirmation_due_at=sa.bindparam("due", type_=Subscriber.__table__.c.confirmation_due_at.type)))


def hold_new(session: Session, subscriber_id: int, email: str, *, now: dt.datetime) -> bool:
    """`hold` for a reader just inserted (signup_rows.py: no ORM object is loaded): True,
    and their due time set by one UPDATE, if their confirmation must wait."""
    due = due_time(email, now, session=session)
    if due is None:
        return False
    session.connection().execute(_SET_DUE, {"sub_id": subscriber_id, "due": due})
    log.info("confirmation_held", subscriber_id=subscriber_id, due_at=due.isoformat())
    return True


@dataclass
class Release:
    sent: int = 0
    deferred: int = 0
    domains: set[str] = field(default_factory=set)

    def as_dict(self) -> dict:
        return {"sent": self.sent, "deferred": self.deferred, "domains": len(self.domains)}


def release_due(session: Session, now: dt.datetime, *, batch: int = RELEASE_BATCH) -> Release:
    """Beat's trickle: send the held confirmations that are due, oldest place first,
    while this hour's budgets have room; the rest wait for the next hour, in order.

    Rows are taken with SKIP LOCKED: two trickles at once share the work.  Each one sent
    is counted like a signup's (one round trip), so fresh signups and the trickle share
    the hour's budget; a count that comes back over it stops that domain (or everything,
    for the total) for this hour."""
    settings = get_settings()
    query = (sa.select(Subscriber)
             .where(Subscriber.status == SubscriberStatus.pending, Subscriber.confirmation_due_at <= now)
             .order_by(Subscriber.confirmation_due_at, Subscriber.id).limit(batch))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    report = Release()
    full: set[str] = set()
    total_full = False
    next_window = _next_window(now)
    deferred_places: dict[str, int] = {}
    for sub in session.scalars(query):
        domain = domain_key(sub.email)
        if not total_full and domain not in full:
            budgets = _budgets(settings, sub.email)
            verdicts = limits.hit_many(budgets, WINDOW, now=now.timestamp(), session=session) if budgets else []
            refused = [bucket for (bucket, _, _), v in zip(budgets, verdicts, strict=True) if not v.allowed]
            if not refused:
                sub.confirmation_due_at = None
                queue_transactional(session, "confirm", sub.id)
                report.sent += 1
                report.domains.add(domain)
                continue
            if TOTAL_BUCKET in refused:
                total_full = True
            if DOMAIN_BUCKET in refused:
                full.add(domain)
        # Next hour, in the same order and at the same slow pace as before.
        place = deferred_places.get(domain, 0)
        deferred_places[domain] = place + 1
        limit = settings.confirm_budget_per_domain or settings.confirm_budget_total or 1
        sub.confirmation_due_at = next_window + dt.timedelta(seconds=place * HELD_PACE * WINDOW / limit)
        report.deferred += 1
    session.flush()
    if report.sent or report.deferred:
        log.info("held_confirmations_released", sent=report.sent, deferred=report.deferred,
                 domains=len(report.domains))
    return report


def held_count(session: Session) -> int:
    return held_counts(session, dt.datetime.now(dt.UTC))[0]


def held_counts(session: Session, now: dt.datetime) -> tuple[int, int]:
    """(confirmations waiting for the budget, those of them overdue by more than
    OVERDUE): the /metrics gauges.  The trickle moves every due one each minute, sent or
    to the next hour, so an overdue one means beat's trickle is not running."""
    held = (Subscriber.status == SubscriberStatus.pending) & Subscriber.confirmation_due_at.is_not(None)
    row = session.execute(sa.select(
        sa.func.count().filter(held),
        sa.func.count().filter(held & (Subscriber.confirmation_due_at < now - OVERDUE)),
    ).select_from(Subscriber).where(Subscriber.confirmation_due_at.is_not(None))).one()
    return int(row[0] or 0), int(row[1] or 0)
