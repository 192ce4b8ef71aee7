"""`receive(provider, headers, body)`: one provider POST, verified, mapped and applied.

The provider's module verifies the request and reads its events (no database: the SNS
certificate is fetched before any transaction opens).  Every Message-ID an event acts
on is checked against our HMAC before anything is written — one forged id refuses the
whole request, which then changes nothing.  Then one transaction applies every event
through the rules all sources share (service/inbound/actions.py) and commits; a
provider's event id is taken once, so a retried POST changes nothing more.

The answer is what the provider needs: 200 for every verified request, even when it
names no message of ours ("ignored": a provider retries anything else for days); 4xx
for a request that is refused (bad signature, stale, replayed, malformed); 404 for a
provider that is not configured; 503 only when our database fails (the provider
retries).  One log line per event (ids, never an address or a token).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections import Counter
from dataclasses import replace
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from service.config import Settings, get_settings
from service.db import insert_ignoring, session_scope
from service.inbound import actions
from service.inbound.actions import InboundResult
from service.inbound.webhooks import mailgun, postmark, sendgrid, ses
from service.inbound.webhooks.common import Event, Refused
from service.logs import get_logger
from service.models import Delivery, RateCounter, Subscriber

log = get_logger(__name__)

PROVIDERS = {module.NAME: module for module in (ses, mailgun, postmark, sendgrid)}
# One-time values (Mailgun's tokens) live in rate_counters under this bucket.
NONCE_BUCKET = "webhook-nonce"
PURGE_ONE_IN = 50


class Answer(NamedTuple):
    status: int
    body: dict
    headers: dict


def receive(provider: str, headers, body: bytes, *, settings: Settings | None = None,
            now: dt.datetime | None = None) -> Answer:
    settings = settings or get_settings()
    module = PROVIDERS.get(provider)
    if module is None or not module.configured(settings):
        return Answer(404, {"error": "no such webhook"}, {})
    headers = {str(k).lower(): str(v) for k, v in dict(headers).items()}
    now = now or dt.datetime.now(dt.UTC)
    try:
        parsed = module.parse(headers, body, settings, now)
        if parsed.answer is not None:
            log.info("webhook.answered", provider=provider, **parsed.answer)
            return Answer(200, parsed.answer, {})
        pairs = [_pair(event, settings) for event in parsed.events]
        with session_scope(write=True) as session:
            if parsed.nonce is not None:
                _claim(session, *parsed.nonce, now)
            results = _apply_all(session, parsed.events, pairs, settings)
    except Refused as refused:
        log.warning("webhook.refused", provider=provider, status=refused.status, reason=refused.reason,
                    size=len(body))
        return Answer(refused.status, {"error": refused.reason}, refused.headers)
    except SQLAlchemyError as exc:
        log.error("webhook.database_error", provider=provider, error=type(exc).__name__)
        return Answer(503, {"error": "try again later"}, {"Retry-After": "60"})
    for event, result in zip(parsed.events, results, strict=True):
        _log(provider, event, result)
    outcomes = Counter(result.outcome for result in results)
    applied = sum(result.changed for result in results)
    status = "ok" if set(outcomes) - {"ignored"} else "ignored"
    return Answer(200, {"status": status, "events": len(results), "changed": applied,
                        "outcomes": dict(sorted(outcomes.items()))}, {})


def _pair(event: Event, settings: Settings) -> tuple[int, int] | None:
    """(edition, subscriber) the event's Message-ID names, HMAC-checked; Refused if forged."""
    if event.feedback is None or not event.message_id:
        return None
    try:
        return actions.message_id_pair(event.message_id, settings)
    except actions.Forged:
        raise Refused(400, f"a forged Message-ID in a {event.provider_event} event") from None


def _claim(session: Session, kind: str, value: str, seconds: int, now: dt.datetime) -> None:
    """Take a one-time value, or Refused(403) when another request took it first."""
    table = RateCounter.__table__
    key = hashlib.sha256(f"{kind}\x00{value}".encode()).hexdigest()
    taken = session.execute(
        insert_ignoring(session, table, ["bucket", "key", "window"])
        .values(bucket=NONCE_BUCKET, key=key, window=0, count=1, expires_at=now + dt.timedelta(seconds=seconds))
        .returning(table.c.key)
    ).scalar()
    if taken is None:
        raise Refused(403, f"a replayed {kind}")
    if random.randrange(PURGE_ONE_IN) == 0:
        session.execute(sa.delete(table).where(table.c.bucket == NONCE_BUCKET, table.c.expires_at < now))


def _apply_all(session: Session, events: list[Event], pairs: list, settings: Settings) -> list[InboundResult]:
    results: list[InboundResult | None] = [None] * len(events)
    # Rows are locked in one order (edition, subscriber) so that two batches naming the
    # same rows cannot deadlock; the sort is stable, so one message's events keep theirs.
    order = sorted(range(len(events)), key=lambda i: pairs[i] or (0, 0))
    for i in order:
        results[i] = _apply(session, events[i], pairs[i], settings)
    return results


def _apply(session: Session, event: Event, pair: tuple[int, int] | None, settings: Settings) -> InboundResult:
    if event.feedback is None:
        return InboundResult("ignored", reason=event.note or "nothing to act on")
    if pair is None:
        return InboundResult("ignored", reason="no Message-ID of ours")
    ids = {"edition_id": pair[0], "subscriber_id": pair[1]}
    row = actions.locked_row(session, Delivery.edition_id == pair[0], Delivery.subscriber_id == pair[1])
    if row is None:
        return InboundResult("ignored", reason="no such delivery: the reader or the edition no longer exists",
                             details=ids)
    sub = session.scalar(sa.select(Subscriber).where(Subscriber.id == row.subscriber_id).with_for_update())
    if sub is None:  # cannot happen while the foreign key cascades; kept for clarity
        return InboundResult("ignored", row.id, reason="the reader no longer exists", details=ids)
    fb = event.feedback
    if not fb.event_id:
        # Every event needs an id to be taken once: this message, this kind of news.
        fb = replace(fb, event_id=f"{event.provider_event}:{pair[0]}.{pair[1]}:{fb.kind}")
    return actions.apply(session, fb, sub, row, ids=ids, settings=settings)


def _log(provider: str, event: Event, result: InboundResult) -> None:
    fields = {"provider": provider, "provider_event": event.provider_event, "delivery_id": result.delivery_id,
              "changed": result.changed, **result.details}
    fields["source"] = provider
    if result.status:
        fields["status"] = result.status
    if result.outcome == "ignored":
        log.info("webhook.ignored", reason=result.reason, **fields)
    else:
        log.info(f"webhook.{result.outcome}", **fields)
