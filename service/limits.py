"""Fixed-window limits against abuse: signups per client, failed logins per client and
per name, confirmation mails per address.

One INCR per request, in Redis when REDIS_URL is set (every web process shares it),
otherwise — and whenever Redis does not answer — in the database's `rate_counters`
(an upsert per request; every process shares that too).  A limit never fails open:
the embedded demo without Redis is limited like production.

Keys are keyed hashes (`service.logs.redact`): neither store holds an address or an IP.

Redis gets INCRBY and EXPIRE NX in one pipeline without MULTI/EXEC: another client's
command between the two changes no count (EXPIRE NX only sets the first expiry), and
MULTI, EXEC and a QUEUED reply per command were a third of the pipeline's CPU.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import random
import time
from dataclasses import dataclass

import redis
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.config import get_settings
from service.db import session_scope
from service.logs import get_logger, redact
from service.models import RateCounter

log = get_logger(__name__)

BUCKET_MAX = 40  # rate_counters.bucket is VARCHAR(40)
# On about one request in this many, expired counters of every bucket are deleted.
PURGE_ONE_IN = 200


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    count: int
    retry_after: int  # seconds until the window ends (the Retry-After header)

    def __bool__(self) -> bool:
        return self.allowed


@functools.lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)


def _window(window: int, now: float) -> tuple[int, int]:
    """(window number, seconds until it ends)."""
    number = int(now // window)
    return number, max(1, math.ceil((number + 1) * window - now))


def _verdict(count: int, limit: int, retry_after: int) -> Verdict:
    return Verdict(count <= limit, count, retry_after)


def hit(bucket: str, key: str, limit: int, window: int, *, now: float | None = None) -> Verdict:
    """Count one event for (bucket, key) and say whether it is within `limit` per `window` s."""
    return _count(bucket, key, limit, window, now=now, add=1)


def peek(bucket: str, key: str, limit: int, window: int, *, now: float | None = None) -> Verdict:
    """Whether one more event would still be allowed, without counting one."""
    verdict = _count(bucket, key, limit, window, now=now, add=0)
    return Verdict(verdict.count < limit, verdict.count, verdict.retry_after)


def _count(bucket: str, key: str, limit: int, window: int, *, now: float | None, add: int) -> Verdict:
    assert len(bucket) <= BUCKET_MAX
    now = time.time() if now is None else now
    number, retry_after = _window(window, now)
    tag = redact(key)
    settings = get_settings()
    if settings.redis_url:
        name = f"{settings.redis_key_prefix}nashra:rl:{bucket}:{tag}:{number}"
        try:
            client = _client(settings.redis_url)
            if add:
                pipe = client.pipeline(transaction=False)
                pipe.incrby(name, add)
                pipe.expire(name, window + 1, nx=True)
                count, _ = pipe.execute()
            else:
                count = client.get(name) or 0
            return _verdict(int(count), limit, retry_after)
        except redis.RedisError as exc:
            # Not a reason to let everyone through: the database keeps the count instead.
            log.warning("rate_limit_redis_unavailable", bucket=bucket, error=type(exc).__name__)
    with session_scope() as session:
        count = count_in(session, bucket, tag, window, number, add=add)
    return _verdict(count, limit, retry_after)


def hit_in(session: Session, bucket: str, key: str, limit: int, window: int, *,
           now: float | None = None) -> Verdict:
    """`hit`, in the caller's transaction and always in the database: for a limit that
    must roll back with the work it limits (a confirmation mail not queued is not counted)."""
    now = time.time() if now is None else now
    number, retry_after = _window(window, now)
    return _verdict(count_in(session, bucket, redact(key), window, number, add=1), limit, retry_after)


def peek_in(session: Session, bucket: str, key: str, limit: int, window: int, *,
            now: float | None = None) -> Verdict:
    now = time.time() if now is None else now
    number, retry_after = _window(window, now)
    count = count_in(session, bucket, redact(key), window, number, add=0)
    return Verdict(count < limit, count, retry_after)


def count_in(session: Session, bucket: str, tag: str, window: int, number: int, *, add: int) -> int:
    """The counter of (bucket, tag) in window `number`, after adding `add` (an upsert)."""
    table = RateCounter.__table__
    if not add:
        found = session.scalar(sa.select(table.c.count).where(
            table.c.bucket == bucket, table.c.key == tag, table.c.window == number))
        return int(found or 0)
    expires = dt.datetime.fromtimestamp((number + 1) * window, dt.UTC)
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(table).values(bucket=bucket, key=tag, window=number, count=add, expires_at=expires)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.bucket, table.c.key, table.c.window],
        set_={"count": table.c.count + add},
    ).returning(table.c.count)
    count = session.execute(stmt).scalar_one()
    if random.randrange(PURGE_ONE_IN) == 0:
        purge_expired(session, dt.datetime.fromtimestamp(number * window, dt.UTC))
    return int(count)


def purge_expired(session: Session, before: dt.datetime) -> None:
    """Delete the counters of every bucket whose window ended before `before` (done now
    and then by a request that counts, so that the table keeps only the live windows).
    `before` is the counting request's own time, not the clock: a caller that counts at
    a given `now` (a test at a fixed hour) never has its live counters purged."""
    table = RateCounter.__table__
    session.execute(sa.delete(table).where(table.c.expires_at < before))


def hit_many(events: list[tuple[str, str, int]], window: int, *, now: float | None = None,
             session: Session | None = None) -> list[Verdict]:
    """Count one event for each (bucket, key, limit) of the same window length, in one
    round trip (a Redis pipeline, or one upsert statement in the database — in `session`'s
    transaction when one is given): the signup budget counts an address's domain and the
    whole site at once, on the signup's path."""
    if not events:
        return []
    now = time.time() if now is None else now
    number, retry_after = _window(window, now)
    tags = [(bucket, redact(key), limit) for bucket, key, limit in events]
    settings = get_settings()
    if settings.redis_url:
        try:
            pipe = _client(settings.redis_url).pipeline(transaction=False)
            for bucket, tag, _ in tags:
                assert len(bucket) <= BUCKET_MAX
                name = f"{settings.redis_key_prefix}nashra:rl:{bucket}:{tag}:{number}"
                pipe.incrby(name, 1)
                pipe.expire(name, window + 1, nx=True)
            counts = pipe.execute()[::2]
            return [_verdict(int(c), limit, retry_after) for c, (_, _, limit) in zip(counts, tags, strict=True)]
        except redis.RedisError as exc:
            log.warning("rate_limit_redis_unavailable", bucket=tags[0][0], error=type(exc).__name__)
    keys = [(bucket, tag) for bucket, tag, _ in tags]
    if session is not None:
        counts = _upsert_many(session, keys, window, number)
    else:
        with session_scope() as own:
            counts = _upsert_many(own, keys, window, number)
    return [_verdict(counts[(bucket, tag)], limit, retry_after) for bucket, tag, limit in tags]


def _upsert_many(session: Session, keys: list[tuple[str, str]], window: int, number: int) -> dict:
    table = RateCounter.__table__
    expires = dt.datetime.fromtimestamp((number + 1) * window, dt.UTC)
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(table).values([dict(bucket=b, key=k, window=number, count=1, expires_at=expires) for b, k in keys])
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.bucket, table.c.key, table.c.window],
        set_={"count": table.c.count + 1},
    ).returning(table.c.bucket, table.c.key, table.c.count)
    return {(b, k): int(c) for b, k, c in session.execute(stmt).all()}


def claim_once(bucket: str, key: str, ttl: int, *, now: float | None = None) -> bool:
    """True the first time (bucket, key) is claimed within `ttl` seconds, False after:
    a proof of work must not be spent twice.  Redis SET NX EX, else (and whenever Redis
    does not answer) one INSERT … ON CONFLICT DO NOTHING in `rate_counters`."""
    assert len(bucket) <= BUCKET_MAX
    now = time.time() if now is None else now
    tag = redact(key)
    settings = get_settings()
    if settings.redis_url:
        try:
            name = f"{settings.redis_key_prefix}nashra:once:{bucket}:{tag}"
            return bool(_client(settings.redis_url).set(name, 1, nx=True, ex=max(1, ttl)))
        except redis.RedisError as exc:
            log.warning("rate_limit_redis_unavailable", bucket=bucket, error=type(exc).__name__)
    table = RateCounter.__table__
    expires = dt.datetime.fromtimestamp(now + ttl, dt.UTC)
    with session_scope() as session:
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        stmt = insert(table).values(bucket=bucket, key=tag, window=0, count=1, expires_at=expires)
        stmt = stmt.on_conflict_do_nothing(index_elements=[table.c.bucket, table.c.key, table.c.window])
        return bool(session.execute(stmt.returning(table.c.count)).first())
