"""A per-client-IP limit on signups, kept in Redis so that every web process shares it.

Fixed windows (INCR + EXPIRE): simple, one round trip, and good enough to stop a
script from using our form to mail strangers.  Without REDIS_URL (the embedded demo)
there is no shared store, so there is no limit; if Redis is down we let the request
through and log it, because refusing every reader is worse than a burst of signups.
"""

from __future__ import annotations

import functools

import redis

from service.config import get_settings
from service.logs import get_logger, redact

log = get_logger(__name__)

SIGNUP_LIMIT = 5  # POST /subscribe per client IP …
SIGNUP_WINDOW = 600  # … per this many seconds


@functools.lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)


def allow(bucket: str, key: str, limit: int = SIGNUP_LIMIT, window: int = SIGNUP_WINDOW) -> bool:
    settings = get_settings()
    url = settings.redis_url
    if not url:
        return True
    # Same prefix as Celery's keys, so deployments sharing a Redis count apart.
    prefix = getattr(settings, "redis_key_prefix", "") or ""
    name = f"{prefix}nashra:rl:{bucket}:{redact(key)}"
    try:
        pipe = _client(url).pipeline()
        pipe.incr(name)
        pipe.expire(name, window, nx=True)
        count, _ = pipe.execute()
    except redis.RedisError as exc:
        log.warning("rate_limit_unavailable", bucket=bucket, error=type(exc).__name__)
        return True
    return int(count) <= limit
