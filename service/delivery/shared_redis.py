"""A Redis that state shared by every worker lives in, with a process-local fallback.

The connection cap and the relays' set-asides are shared through Redis, and both fail
open when it is down: the caller then uses what this process knows, and Redis is tried
again after REDIS_RETRY_AFTER seconds (not at every call, which would make each of them
wait for a connect timeout).  An outage is logged once when it starts and once when it
ends, with the error's type only (a message may carry an address).
"""

from __future__ import annotations

import threading
import time

import redis

from service.config import Settings
from service.logs import get_logger

log = get_logger(__name__)

REDIS_RETRY_AFTER = 5.0  # after a Redis failure, use the process-local state this long


class SharedRedis:
    """`client` and a registered Lua `script` (both None without REDIS_URL), and the
    bookkeeping of an outage: ask `usable()` first, then report `ok()` or `failed(exc)`."""

    def __init__(self, settings: Settings, script: str | None = None, *, down_event: str, back_event: str):
        self.client = None
        self.script = None
        self._down_event, self._back_event = down_event, back_event
        self._down_until = 0.0
        self._down_logged = False
        self._lock = threading.Lock()
        if settings.redis_url:
            self.client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
            self.script = self.client.register_script(script) if script else None

    def usable(self) -> bool:
        return self.client is not None and time.monotonic() >= self._down_until

    def failed(self, exc: Exception) -> None:
        with self._lock:
            self._down_until = time.monotonic() + REDIS_RETRY_AFTER
            first = not self._down_logged
            self._down_logged = True
        if first:
            log.warning(self._down_event, error=type(exc).__name__, fallback="process-local")

    def ok(self) -> None:
        if self._down_logged:
            with self._lock:
                back = self._down_logged
                self._down_logged = False
            if back:
                log.info(self._back_event)
