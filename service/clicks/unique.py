"""Unique clicks, estimated without keeping identities: HyperLogLog sketches.

Each click adds the reader's `uid` (a keyed hash of edition and subscriber made by
`signing.reader_token`, different for every edition) to a sketch per scope: the whole
edition (`edition`), the article (`article:ID`) and its section (`section:ID`).  A
sketch holds register maxima, not the values added: it answers "about how many
different" (Redis: 0.81 % standard error; the database's: 1.6 %) and cannot be turned
back into readers.

With REDIS_URL: Redis's own HyperLogLog (PFADD/PFCOUNT), each key expiring CLICK_DAYS
after its last click.  Without: a DataSketches HLL per (edition, scope) in the
`click_sketches` table, locked while it is updated, deleted by the hourly purge after
CLICK_DAYS.  Redis unreachable: the click is still counted, only its uniqueness is lost
(logged).
"""

from __future__ import annotations

import functools

import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.config import Settings, get_settings
from service.db import insert_ignoring
from service.logs import get_logger
from service.models import ClickSketch, utcnow

log = get_logger(__name__)

LG_K = 12  # 4096 registers: 1.04 / sqrt(4096) = 1.6 % standard error


def scopes(article_id: int | None, section_id: int | None) -> list[str]:
    out = ["edition"]
    if article_id is not None:
        out.append(f"article:{article_id}")
    if section_id is not None:
        out.append(f"section:{section_id}")
    return out


@functools.lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)


def _key(settings: Settings, edition_id: int, scope: str) -> str:
    return f"{settings.redis_key_prefix}nashra:clicks:{edition_id}:{scope}"


def _sketch(data: bytes | None):
    # Imported here: DataSketches (and numpy under it) only for installs without Redis.
    import datasketches

    if data:
        return datasketches.hll_sketch.deserialize(data)
    return datasketches.hll_sketch(LG_K, datasketches.tgt_hll_type.HLL_8)


def add(session: Session, edition_id: int, scope_names: list[str], uid: bytes,
        settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    if settings.redis_url:
        add_to_redis(edition_id, scope_names, uid, settings)
        return
    add_to_database(session, edition_id, scope_names, uid)


def add_to_redis(edition_id: int, scope_names: list[str], uid: bytes, settings: Settings | None = None) -> None:
    """PFADD to each scope's key (and its expiry), in one round trip; called after the
    click's transaction, so that no row lock waits on Redis."""
    settings = settings or get_settings()
    if settings.redis_url:
        try:
            pipe = _client(settings.redis_url).pipeline(transaction=False)
            for scope in scope_names:
                key = _key(settings, edition_id, scope)
                pipe.pfadd(key, uid)
                pipe.expire(key, settings.click_days * 86_400)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("clicks.unique_unavailable", edition_id=edition_id, error=type(exc).__name__)


def add_to_database(session: Session, edition_id: int, scope_names: list[str], uid: bytes) -> None:
    """The sketches in `click_sketches`, each locked while it is read, updated and written."""
    table = ClickSketch.__table__
    for scope in scope_names:
        session.execute(insert_ignoring(session, table, ["edition_id", "scope"]).values(
            edition_id=edition_id, scope=scope, sketch=b"", updated_at=utcnow()))
        current = session.scalar(sa.select(table.c.sketch).where(
            table.c.edition_id == edition_id, table.c.scope == scope).with_for_update())
        sketch = _sketch(current)
        sketch.update(uid.hex())  # (DataSketches takes str, int or float)
        session.execute(sa.update(table).where(table.c.edition_id == edition_id, table.c.scope == scope)
                        .values(sketch=sketch.serialize_compact(), updated_at=utcnow()))


def estimate(session: Session, edition_id: int, scope_names: list[str],
             settings: Settings | None = None) -> dict[str, int]:
    """scope → estimated unique clicks (0 for a scope nobody clicked)."""
    settings = settings or get_settings()
    if not scope_names:
        return {}
    if settings.redis_url:
        try:
            pipe = _client(settings.redis_url).pipeline(transaction=False)
            for scope in scope_names:
                pipe.pfcount(_key(settings, edition_id, scope))
            return dict(zip(scope_names, (int(n) for n in pipe.execute()), strict=True))
        except redis.RedisError as exc:
            log.warning("clicks.unique_unavailable", edition_id=edition_id, error=type(exc).__name__)
            return dict.fromkeys(scope_names, 0)
    table = ClickSketch.__table__
    rows = dict(session.execute(sa.select(table.c.scope, table.c.sketch).where(
        table.c.edition_id == edition_id, table.c.scope.in_(scope_names))).all())
    return {scope: (round(_sketch(rows[scope]).get_estimate()) if rows.get(scope) else 0) for scope in scope_names}
