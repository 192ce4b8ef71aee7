"""How many SMTP connections Nashra holds to one relay, across every worker on every host.

A relay limits how many connections one sender may hold (SMTP_MAX_CONNECTIONS); each
worker process drives up to SMTP_CONNECTIONS sessions, and there are as many processes
as operators start.  Before a worker opens a session to a relay it takes a *slot* here,
keeps it while the session is open, and gives it back when the session closes:

    cap = ConnectionCap(settings)
    slot = cap.acquire(relay_key, "digest", wait_seconds=1.0)   # None: no slot free
    ...  # every cap.renew_every seconds: if not cap.renew(relay_key, slot): close it
    cap.release(relay_key, slot)

**The alert share.**  SMTP_ALERT_CONNECTIONS of the SMTP_MAX_CONNECTIONS slots are kept
for alerts.  The rule, checked atomically at every acquire:

* every lane other than ``"alert"`` (digests, corrections, …) shares the general pool and
  gets a slot only while the general lane holds fewer than max − alert share *and* the
  relay has fewer than max slots taken in all;
* the ``"alert"`` lane gets a slot while the relay has fewer than max slots taken in all:
  its own share (which digests can never fill) plus any free general slot.

So, while alerts hold fewer than their share, at least one slot is always free for the
next alert, however busy the digests are; an alert may borrow the free part of the
general pool (never more than max in all), and digests wait until it gives them back.

**Expiry.**  A slot is held for ``ttl_seconds`` (30 s) from its last acquire or renew:
a holder that died (SIGKILL, a lost host) frees it within that time.  Holders renew every
``renew_every`` seconds (a third of the TTL).  ``renew`` returns True while the holder may
keep its connection: its slot was live, or it was lost (it expired, or Redis restarted
empty) and there was room to take it again under the same rule; False means the cap is
full without it, and the holder should close its session.

**Where the count lives.**  With REDIS_URL: one sorted set per relay and pool (member =
slot id, score = expiry in Redis' own ms clock), changed only by one Lua script, under the
settings' redis_key_prefix.  Without REDIS_URL (the embedded demo): a cap in this process,
with the same rule.  If Redis is unreachable the cap fails open to that process-local cap
(logged once per outage, never with Redis' address) and tries Redis again a few seconds
later: a relay's own limit is then the backstop, as it is for a sender that ignores it.
Each process passes its own settings' max and share to the script: give every worker the
same SMTP_MAX_CONNECTIONS and SMTP_ALERT_CONNECTIONS.
"""

from __future__ import annotations

import random
import threading
import time
import uuid

from service.config import Settings
from service.delivery.shared_redis import SharedRedis
from service.logs import get_logger

log = get_logger(__name__)

KEY_PREFIX = "nashra:smtpcap:"
DEFAULT_TTL_SECONDS = 30.0
_POLL_FIRST = 0.01  # acquire(wait_seconds=…) polls Redis from 10 ms …
_POLL_MAX = 0.2  # … backing off to 200 ms (a release in this process wakes it at once)

ALERT_LANE = "alert"
_ALERT, _GENERAL = "a", "g"  # the pool a slot id belongs to, its first letter

# KEYS = alert pool, general pool (sorted sets: member = slot id, score = expiry ms),
# and the "wanted" flag: set for a second whenever a slot is refused, so that holders of
# idle sessions give theirs back at once (`ConnectionCap.wanted`).
# ARGV = slot id, pool ('a' | 'g'), max, alert share, ttl ms.
# Takes the slot (or extends it, if it is still held) and returns 1, or returns 0 when
# the rule leaves no room for it.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local slot, pool = ARGV[1], ARGV[2]
local max, share, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local key = KEYS[2]
if pool == 'a' then key = KEYS[1] end
if not redis.call('ZSCORE', key, slot) then
  local alerts = redis.call('ZCARD', KEYS[1])
  local general = redis.call('ZCARD', KEYS[2])
  if alerts + general >= max or (pool ~= 'a' and general >= max - share) then
    redis.call('SET', KEYS[3], '1', 'PX', 1000)
    return 0
  end
end
redis.call('ZADD', key, now + ttl, slot)
redis.call('PEXPIRE', key, 2 * ttl)
return 1
"""


def _pool_of(slot: str) -> str | None:
    pool, dot, rest = slot.partition(".")
    if dot and rest and pool in (_ALERT, _GENERAL):
        return pool
    return None


class _LocalCaps:
    """The same rule over this process's own slots (the demo, and Redis outages)."""

    def __init__(self):
        self.cond = threading.Condition()
        # relay key → {slot id: expiry (monotonic seconds)}, one dict per pool
        self.pools: dict[str, dict[str, dict[str, float]]] = {}
        self.wanted_until: dict[str, float] = {}  # relay key → until when a slot was refused

    def _purged(self, relay: str) -> dict[str, dict[str, float]]:
        pools = self.pools.setdefault(relay, {_ALERT: {}, _GENERAL: {}})
        now = time.monotonic()
        for held in pools.values():
            for slot in [s for s, expiry in held.items() if expiry <= now]:
                del held[slot]
        return pools

    def take(self, relay: str, slot: str, pool: str, maximum: int, share: int, ttl: float) -> bool:
        with self.cond:
            pools = self._purged(relay)
            held = pools[pool]
            if slot not in held:
                alerts, general = len(pools[_ALERT]), len(pools[_GENERAL])
                if alerts + general >= maximum or (pool != _ALERT and general >= maximum - share):
                    self.wanted_until[relay] = time.monotonic() + 1.0
                    return False
            held[slot] = time.monotonic() + ttl
            return True

    def drop(self, relay: str, slot: str, *, wake: bool = True) -> None:
        with self.cond:
            pools = self.pools.get(relay)
            dropped = False
            if pools is not None:
                for held in pools.values():
                    dropped = held.pop(slot, None) is not None or dropped
                if not any(pools.values()):
                    del self.pools[relay]
            # A release wakes this process's waiters (they poll Redis, or take this slot).
            if wake or dropped:
                self.cond.notify_all()

    def counts(self, relay: str) -> dict[str, int]:
        with self.cond:
            pools = self._purged(relay)
            return {"alert": len(pools[_ALERT]), "general": len(pools[_GENERAL])}

    def wait(self, seconds: float) -> None:
        with self.cond:
            self.cond.wait(seconds)


# One per process and key prefix: every ConnectionCap of this process shares it.
_local_caps: dict[str, _LocalCaps] = {}
_local_lock = threading.Lock()


def _local_for(prefix: str) -> _LocalCaps:
    with _local_lock:
        caps = _local_caps.get(prefix)
        if caps is None:
            caps = _local_caps[prefix] = _LocalCaps()
        return caps


class ConnectionCap:
    """Slots for SMTP connections to a relay, shared by every worker (see the module doc)."""

    def __init__(self, settings: Settings, *, ttl_seconds: float = DEFAULT_TTL_SECONDS):
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self.max_connections = settings.smtp_max_connections
        self.alert_connections = settings.smtp_alert_connections
        self.ttl_seconds = float(ttl_seconds)
        self.renew_every = self.ttl_seconds / 3
        self._ttl_ms = max(1, int(self.ttl_seconds * 1000))
        self._prefix = settings.redis_key_prefix + KEY_PREFIX
        self._local = _local_for(settings.redis_key_prefix)
        self._shared = SharedRedis(settings, _TAKE, down_event="smtp_cap.redis_unavailable", back_event="smtp_cap.redis_back")

    # ------------------------------------------------------------------ the interface

    def acquire(self, relay_key: str, lane: str, wait_seconds: float = 0) -> str | None:
        """A slot id for one connection to the relay, or None if none is free in time.

        `lane` "alert" is the alert lane; any other (digest, correction) is the general
        pool.  With wait_seconds > 0 this blocks the calling thread, polling.
        """
        pool = _ALERT if lane == ALERT_LANE else _GENERAL
        slot = f"{pool}.{uuid.uuid4().hex}"
        deadline = time.monotonic() + max(0.0, wait_seconds)
        pause = _POLL_FIRST
        while True:
            if self._take(relay_key, slot, pool):
                return slot
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            # Sleep on the local condition: a release in this process wakes us at once;
            # one elsewhere is seen at the next poll.
            self._local.wait(min(left, pause * random.uniform(0.5, 1.0)))
            pause = min(pause * 2, _POLL_MAX)

    def renew(self, relay_key: str, slot: str) -> bool:
        """Keep the slot for another TTL; False: close the connection (the cap is full)."""
        pool = _pool_of(slot)
        if pool is None:
            return False
        return self._take(relay_key, slot, pool)

    def release(self, relay_key: str, slot: str) -> None:
        """Give the slot back (harmless if it expired or was released already)."""
        if self._shared.usable():
            try:
                self._shared.client.zrem(self._key(relay_key, _pool_of(slot) or _GENERAL), slot)
                self._shared.ok()
            except Exception as exc:  # noqa: BLE001 — it expires by itself within the TTL
                self._shared.failed(exc)
        self._local.drop(relay_key, slot)

    def wanted(self, relay_key: str) -> bool:
        """True if a slot of this relay was refused in the last second (another process,
        or lane, waits for one): a session with nothing to send should give its slot back."""
        if self._shared.usable():
            try:
                flag = self._shared.client.exists(self._prefix + f"{{{relay_key}}}:wanted")
                self._shared.ok()
                return bool(flag)
            except Exception as exc:  # noqa: BLE001
                self._shared.failed(exc)
        with self._local.cond:
            return self._local.wanted_until.get(relay_key, 0.0) > time.monotonic()

    # ------------------------------------------------------------------ for status and tests

    def counts(self, relay_key: str) -> dict[str, int]:
        """Live slots per pool: {"alert": n, "general": m} (Redis', or this process's)."""
        if self._shared.usable():
            try:
                now_s, now_us = self._shared.client.time()
                now = now_s * 1000 + now_us // 1000
                out = {
                    name: int(self._shared.client.zcount(self._key(relay_key, pool), f"({now}", "+inf"))
                    for name, pool in (("alert", _ALERT), ("general", _GENERAL))
                }
                self._shared.ok()
                return out
            except Exception as exc:  # noqa: BLE001
                self._shared.failed(exc)
        return self._local.counts(relay_key)

    @property
    def shared(self) -> bool:
        """True while the count lives in Redis (False: this process only)."""
        return self._shared.usable()

    # ------------------------------------------------------------------ internals

    def _key(self, relay_key: str, pool: str) -> str:
        # The braces are a Redis Cluster hash tag: both pools of a relay in one slot,
        # as a script touching two keys requires.
        return f"{self._prefix}{{{relay_key}}}:{pool}"

    def _take(self, relay_key: str, slot: str, pool: str) -> bool:
        if self._shared.usable():
            try:
                got = self._shared.script(
                    keys=[self._key(relay_key, _ALERT), self._key(relay_key, _GENERAL),
                          self._prefix + f"{{{relay_key}}}:wanted"],
                    args=[slot, pool, self.max_connections, self.alert_connections, self._ttl_ms],
                )
                self._shared.ok()
                if got:
                    # Held in Redis now: drop a process-local copy from an outage.
                    self._local.drop(relay_key, slot, wake=False)
                return bool(got)
            except Exception as exc:  # noqa: BLE001 — fail open to the process-local cap
                self._shared.failed(exc)
        return self._local.take(
            relay_key, slot, pool, self.max_connections, self.alert_connections, self.ttl_seconds
        )


__all__ = ["ConnectionCap", "ALERT_LANE", "DEFAULT_TTL_SECONDS"]
