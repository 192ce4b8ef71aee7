"""Alerts first on a shared machine: while an alert sends anywhere, digests step down.

An alert batch raises a flag (a Redis key with a short TTL, renewed by its heartbeat;
process-local without Redis) and every digest batch that sees it keeps at most
STEPPED_DOWN_WINDOW messages in flight instead of its lane's window: fewer sessions
busy, less CPU for composing and recording digests, so the alert has the machine's CPU
as well as its own connections.  The flag lapses FLAG_SECONDS after the last alert
batch's last renewal, and the digests take their full window again.
"""

from __future__ import annotations

import threading
import time

from service.config import Settings, on_reset
from service.delivery.shared_redis import SharedRedis

KEY = "nashra:alert:sending"
CHECK_EVERY = 0.5  # seconds a digest batch keeps its answer to "is an alert sending?"
STEPPED_DOWN_WINDOW = 4  # digest messages in flight per batch while an alert sends


class AlertFlag:
    def __init__(self, settings: Settings):
        self.seconds = max(2.0, settings.lease_seconds / 3 + 2.0)  # a heartbeat renews it
        self._key = settings.redis_key_prefix + KEY
        self._shared = SharedRedis(settings, down_event="priority.redis_unavailable",
                                   back_event="priority.redis_back")
        self._local_until = 0.0
        self._cached, self._cached_until = False, 0.0
        self._lock = threading.Lock()

    def raise_(self) -> None:
        """An alert batch is sending (call at its start and at each heartbeat)."""
        with self._lock:
            self._local_until = time.monotonic() + self.seconds
        if self._shared.usable():
            try:
                self._shared.client.set(self._key, "1", px=int(self.seconds * 1000))
                self._shared.ok()
            except Exception as exc:  # noqa: BLE001 — this process's flag meanwhile
                self._shared.failed(exc)

    def up(self) -> bool:
        """Whether an alert sends somewhere (asked at most every CHECK_EVERY)."""
        now = time.monotonic()
        if now < self._cached_until:
            return self._cached
        up = now < self._local_until
        if not up and self._shared.usable():
            try:
                up = bool(self._shared.client.exists(self._key))
                self._shared.ok()
            except Exception as exc:  # noqa: BLE001
                self._shared.failed(exc)
        self._cached, self._cached_until = up, now + CHECK_EVERY
        return up


_flags: dict[tuple, AlertFlag] = {}
_flags_lock = threading.Lock()


def flag(settings: Settings) -> AlertFlag:
    """This process's flag for these settings."""
    key = (settings.redis_url, settings.redis_key_prefix, settings.lease_seconds)
    with _flags_lock:
        found = _flags.get(key)
        if found is None:
            found = _flags[key] = AlertFlag(settings)
        return found


def forget_flags() -> None:
    """Drop this process's flags (tests: each starts with no alert sending here)."""
    with _flags_lock:
        _flags.clear()


on_reset(forget_flags)
