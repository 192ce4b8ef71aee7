"""A new address's signup, written in one round trip.

Most signups are new addresses.  For them the signup writes the reader (pending), their
subscriptions (one row per newsletter chosen), the audit line, the consent record and
the per-address confirmation counter, and needs nothing back but the reader's id.  Through the ORM that was an INSERT, a
SELECT … FOR UPDATE loading the whole row, two flushed objects and an upsert: seven
statements with the suppression check and the sections, and SQLAlchemy's unit of work
was ~45 % of a signup's CPU (bench/profile_signup.py).

On PostgreSQL they are one statement: `INSERT … ON CONFLICT (email) DO
NOTHING RETURNING id` as a CTE, and the other INSERTs select from it, so they
write nothing when the address already exists (the caller then takes the existing
reader's path, which locks and loads the row).  ON CONFLICT waits for a concurrent
signup of the same address to end, as `insert_ignoring` did.  The statement is text
built once: no SQL expression is built or compiled per signup.  SQLite (the embedded
demo; one writer) cannot put an INSERT in a WITH: the same rows go as plain
statements, prebuilt too.

Every statement runs on the session's Connection, in its transaction: a signup rolled
back has written nothing and counted nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from service import limits
from service.logs import redact
from service.models import (
    AUDIT_ORIGIN,
    AuditLog,
    Consent,
    RateCounter,
    Subscriber,
    SubscriberStatus,
    Subscription,
    utcnow,
)
from service.subscribers import consent
from service.subscribers.consent import Evidence


@dataclass(frozen=True)
class Pick:
    """One newsletter a signup chose: its id, whether it is a digest (the sections, hour
    and day apply to digests only), and the reader's sections for it (empty: all)."""

    newsletter_id: int
    digest: bool
    sections: tuple[int, ...] = ()


@dataclass(frozen=True)
class NewReader:
    """What a signup form asked for, validated (validation.py, choices.py, clocks.py)."""

    email: str
    picks: tuple[Pick, ...]
    consent_source: str
    digest_hour: int | None
    digest_weekday: int | None
    time_zone: str | None


def subscription_rows(reader: NewReader, subscriber_id: int, wall: dt.datetime) -> list[dict]:
    """The reader's `subscriptions` rows, as the ORM's defaults would fill them."""
    return [dict(newsletter_id=p.newsletter_id, subscriber_id=subscriber_id, sections=list(p.sections),
                 digest_hour=reader.digest_hour if p.digest else None,
                 digest_weekday=reader.digest_weekday if p.digest else None,
                 quiet_mode="hold", alerts_today=0, created_at=wall) for p in reader.picks]


# The subscriber's columns the ORM would fill from its Python-side defaults, given here
# because a plain statement does not run them.  The subscriptions come as three arrays
# unnested side by side (id, sections as JSON text, digest or not): one statement however
# many newsletters were chosen, and none written when the address exists.
_PG_SQL = """
WITH s AS (
  INSERT INTO subscribers (email, status, consent_source, consented_at, time_zone, token_version,
                           created_at, updated_at)
  VALUES (:email, :status, :source, :now, :time_zone, 1, :wall, :wall)
  ON CONFLICT (email) DO NOTHING
  RETURNING id
), n AS (
  INSERT INTO subscriptions (newsletter_id, subscriber_id, sections, digest_hour, digest_weekday, quiet_mode,
                             alerts_today, created_at)
  SELECT x.nid, s.id, CAST(x.secs AS JSON),
         CASE WHEN x.digest THEN CAST(:digest_hour AS SMALLINT) END,
         CASE WHEN x.digest THEN CAST(:digest_weekday AS SMALLINT) END, 'hold', 0, :wall
  FROM s, unnest(CAST(:nids AS INTEGER[]), CAST(:nsecs AS TEXT[]), CAST(:ndigest AS BOOLEAN[]))
          AS x(nid, secs, digest)
), a AS (
  INSERT INTO audit_log (at, actor, action, target, details, origin)
  SELECT :wall, 'subscriber:' || s.id, 'signup', 'subscriber:' || s.id, CAST(:details AS JSON), :origin FROM s
), c AS (
  INSERT INTO consents (subscriber_id, event, at, source, ip, user_agent, form_url, text_version, text)
  SELECT s.id, 'signup', :now, :consent_source, :ip, :user_agent, :form_url, :text_version, :text FROM s
), r AS (
  INSERT INTO rate_counters (bucket, key, "window", count, expires_at)
  SELECT :bucket, :key, :number, 1, :expires FROM s
  ON CONFLICT (bucket, key, "window") DO UPDATE SET count = rate_counters.count + 1
  RETURNING count
)
SELECT s.id, (SELECT count FROM r) FROM s
"""
_PG = sa.text(_PG_SQL)

_SUB, _AUDIT, _CONSENT, _RATE = (Subscriber.__table__, AuditLog.__table__, Consent.__table__,
                                 RateCounter.__table__)
_SQLITE_SUB = (sqlite.insert(_SUB).on_conflict_do_nothing(index_elements=[_SUB.c.email]).returning(_SUB.c.id))
INSERT_SUBSCRIPTIONS = sa.insert(Subscription.__table__)
_SQLITE_AUDIT = sa.insert(_AUDIT)
_SQLITE_CONSENT = sa.insert(_CONSENT)
_SQLITE_COUNT = (sqlite.insert(_RATE)
                 .on_conflict_do_update(index_elements=[_RATE.c.bucket, _RATE.c.key, _RATE.c.window],
                                        set_={"count": _RATE.c.count + 1})
                 .returning(_RATE.c.count))


def insert_new(session: Session, reader: NewReader, evidence: Evidence | None, *, now: dt.datetime,
               counter: tuple[str, int]) -> tuple[int, int] | None:
    """Write a new pending reader with their subscriptions, audit line, consent row and one count on the
    per-address confirmation counter (`counter`: its bucket and window length, seconds).
    (id, the counter's value) — or None, and nothing written, if the address exists."""
    bucket, window = counter
    number = int(now.timestamp() // window)
    origin = AUDIT_ORIGIN.get()
    evidence = evidence or Evidence()
    version = evidence.text_version if consent.known(evidence.text_version) else None
    wall = utcnow()
    source = reader.consent_source[:200]
    consent_row = dict(
        source=source or None, ip=consent.ip_for_record(evidence.ip),
        user_agent=consent._printable(evidence.user_agent, consent.USER_AGENT_MAX),
        form_url=consent.clean_url(evidence.form_url), text_version=version,
        text=consent.text_of(version) if version else None,
    )
    key = redact(reader.email)
    expires = dt.datetime.fromtimestamp((number + 1) * window, dt.UTC)
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        row = conn.execute(_PG, dict(
            email=reader.email, status=SubscriberStatus.pending.value, source=source, now=now,
            digest_hour=reader.digest_hour, digest_weekday=reader.digest_weekday, time_zone=reader.time_zone,
            nids=[p.newsletter_id for p in reader.picks], nsecs=[json.dumps(list(p.sections)) for p in reader.picks],
            ndigest=[p.digest for p in reader.picks],
            wall=wall, details=json.dumps({"source": source}), origin=origin[:200] if origin else None,
            consent_source=consent_row["source"], ip=consent_row["ip"], user_agent=consent_row["user_agent"],
            form_url=consent_row["form_url"], text_version=version, text=consent_row["text"],
            bucket=bucket, key=key, number=number, expires=expires,
        )).first()
        if row is None:
            return None
        new_id, count = int(row[0]), int(row[1])
    else:
        new_id = conn.execute(_SQLITE_SUB, dict(
            email=reader.email, status=SubscriberStatus.pending, consent_source=source, consented_at=now,
            time_zone=reader.time_zone, token_version=1, created_at=wall, updated_at=wall,
        )).scalar()
        if new_id is None:
            return None
        if reader.picks:
            conn.execute(INSERT_SUBSCRIPTIONS, subscription_rows(reader, new_id, wall))
        target = f"subscriber:{new_id}"
        conn.execute(_SQLITE_AUDIT, dict(at=wall, actor=target, action="signup", target=target,
                                         details={"source": source}, origin=origin[:200] if origin else None))
        conn.execute(_SQLITE_CONSENT, dict(subscriber_id=new_id, event="signup", at=now, **consent_row))
        count = int(conn.execute(_SQLITE_COUNT, dict(bucket=bucket, key=key, window=number, count=1,
                                                     expires_at=expires)).scalar_one())
    if random.randrange(limits.PURGE_ONE_IN) == 0:  # as limits.count_in does: expired counters go now and then
        limits.purge_expired(session, now)
    return new_id, count
