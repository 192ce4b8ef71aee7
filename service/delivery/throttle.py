"""Sending rate limits shared by every worker (Redis), with alerts ahead of digests.

Budgets:

* ``global``  — RATE_PER_SECOND and RATE_PER_HOUR, what the SMTP provider allows us;
* ``alerts``  — ALERT_RATE_PER_SECOND (default: RATE_PER_SECOND), the alerts' own budget;
* ``domain:<d>`` — DOMAIN_RATES (e.g. gmail.com=20), for every kind of mail, and
  ``alerts:domain:<d>``, the alerts' share of it.

Each per-second budget is two buckets, both of which a message must conform to:

* a GCRA (a token bucket kept as one timestamp, the "theoretical arrival time") paces
  the messages evenly, with a tenth of a second's burst so that workers do not wait on
  each other's jitter;
* a count: at most RATE messages in any window of one second plus PACING_MARGIN.  The
  relay counts arrivals, and they reach it with the jitter of the network and of our
  own threads; with the margin no second, as the relay counts it, holds more than RATE
  (as long as that jitter stays under PACING_MARGIN).  It costs up to PACING_MARGIN of
  throughput at the limit (5 %).

RATE_PER_HOUR is a count: at most that many messages in any hour (a GCRA would let a
burst of the hour's budget go and then keep pacing, up to twice the budget in the
first hour).

Priority: per second, an alert waits only for its own budgets (``alerts``,
``alerts:domain:<d>``); it still *charges* the global and domain budgets, pushing them
forward, so digests (which must conform to those) slow down while an alert goes out.
Alerts never queue behind digest traffic, and two kinds together stay within a
domain's rate.

RATE_PER_HOUR is the exception: it is the provider's quota, past which the provider
defers or refuses everything we send (alerts included) or suspends the account, so
alerts count against it *and wait for it* like digests.  They still go first within
it: an alert the hour's budget holds back raises a flag (``global:hour:alert``, for
FLAG_MS, renewed while it waits), and while the flag is up digests leave every slot
that frees to the alerts.  An alert therefore never waits behind a digest for the hour,
only for the hour's count of what was already sent.

With REDIS_URL the buckets live in Redis, checked and charged atomically by one Lua
script per message, so any number of workers on any number of machines — and any
number of sender threads in each — share them.  Without Redis (the embedded demo) each
process keeps its own buckets.  If Redis is unreachable mid-edition (restart,
failover) the process falls back to its own buckets for a few seconds rather than
stall or crash the batch.
"""

from __future__ import annotations

import collections
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from service.config import Settings
from service.delivery.shared_redis import SharedRedis
from service.logs import get_logger

log = get_logger(__name__)

KEY_PREFIX = "nashra:rate:"
MAX_SLEEP = 0.5  # sleep in short slices so the caller can heartbeat its lease


PACING_MARGIN = 0.05  # seconds of arrival jitter a per-second budget allows for (see above)
HOUR_MS = 3_600_000.0  # RATE_PER_HOUR's window
# How long an alert the hour holds back keeps digests off the freed slots: longer than
# a waiting alert's poll (MAX_SLEEP), so the flag stays up while any alert waits.
FLAG_MS = 3 * MAX_SLEEP * 1000.0


@dataclass(frozen=True)
class Bucket:
    key: str
    interval_ms: float = 0.0  # GCRA: one message per interval …
    tolerance_ms: float = 0.0  # … at most this far ahead of schedule (a burst)
    window_ms: float = 0.0  # a count instead: at most `limit` messages in any window_ms
    limit: int = 0
    force: bool = False  # charge without waiting (an alert charging the global budget)
    # A priority flag instead (see the module docstring): `flag_ms` > 0.  Raised for
    # flag_ms when the bucket just before it (the alerts' count of the hour) holds the
    # message back; with `yields`, a digest's: it waits while the flag is up.
    flag_ms: float = 0.0
    yields: bool = False

    @property
    def counts(self) -> bool:
        return self.window_ms > 0

    @property
    def flag(self) -> bool:
        return self.flag_ms > 0


def _per_second(key: str, rate: float, force: bool = False) -> list[Bucket]:
    interval = 1000.0 / rate
    if rate >= 1:
        limit, window = math.floor(rate), 1000.0
    else:  # slower than one a second: one per 1/rate seconds
        limit, window = 1, interval
    return [
        # A tenth of a second's burst: smooth, yet workers do not wait on each other's jitter.
        Bucket(key, interval, interval * max(rate / 10.0 - 1.0, 0.0), force=force),
        Bucket(key + ":n", window_ms=window + PACING_MARGIN * 1000.0, limit=limit, force=force),
    ]


def _per_hour(key: str, per_hour: int, alert: bool) -> list[Bucket]:
    """The hour's count, which alerts too must conform to, and its priority flag: an
    alert held back raises it, a digest yields to it."""
    return [
        Bucket(key, window_ms=HOUR_MS, limit=per_hour),
        Bucket(key + ":alert", flag_ms=FLAG_MS, yields=not alert),
    ]


def buckets_for(settings: Settings, kind: str, domain: str) -> list[Bucket]:
    alert = kind == "alert"
    out: list[Bucket] = []
    if settings.rate_per_second > 0:
        out += _per_second("global:s", settings.rate_per_second, force=alert)
    if settings.rate_per_hour > 0:
        # The provider's quota: alerts wait for it too, ahead of digests (module docstring).
        out += _per_hour("global:hour", settings.rate_per_hour, alert)
    # Unset, the alerts' own ceiling is the provider's rate: they may take all of it
    # (digests step aside) but never more than the provider allows.
    alert_rate = settings.alert_rate_per_second or settings.rate_per_second
    if alert and alert_rate > 0:
        out += _per_second("alerts:s", alert_rate)
    rate = settings.domain_rates.get(domain)
    if rate:
        # The same priority per domain: an alert conforms to its own bucket at the
        # domain's rate and pushes the shared one forward, so digests to that domain
        # step aside instead of splitting its rate with the alert.
        out += _per_second(f"domain:{domain}", rate, force=alert)
        if alert:
            out += _per_second(f"alerts:domain:{domain}", rate)
    return out


# KEYS = bucket keys; ARGV[1] = a token unique to this call, then per key: kind
# ('g' GCRA | 'n' count | 'f' priority flag), interval, window or flag time (ms),
# tolerance, limit or yields (1/0), force (1/0).
# Returns 0 when every bucket conforms (and charges them all), else ms to wait.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local wait = 0
local last = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local kind, a, b = ARGV[4*i-2], tonumber(ARGV[4*i-1]), tonumber(ARGV[4*i])
  local force = ARGV[4*i+1] == '1'
  local w = 0
  if kind == 'g' then
    local tat = tonumber(redis.call('GET', key) or now)
    if tat < now then tat = now end
    tats[i] = tat
    if not force then
      local allow_at = tat - b
      if allow_at > now then w = allow_at - now end
    end
  elseif kind == 'n' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - a)
    local n = redis.call('ZCARD', key)
    if not force and n >= b then
      local oldest = redis.call('ZRANGE', key, n - b, n - b, 'WITHSCORES')
      w = tonumber(oldest[2]) + a - now
    end
  elseif b == 1 then
    local left = redis.call('PTTL', key)
    if left > 0 then w = left end
  elseif last > 0 then
    redis.call('SET', key, '1', 'PX', math.ceil(a))
  end
  if w > wait then wait = w end
  last = w
end
if wait > 0 then return tostring(wait) end
for i, key in ipairs(KEYS) do
  local kind, a, b = ARGV[4*i-2], tonumber(ARGV[4*i-1]), tonumber(ARGV[4*i])
  if kind == 'g' then
    local new_tat = tats[i] + a
    redis.call('SET', key, tostring(new_tat), 'PX', math.ceil(new_tat - now + b) + 1000)
  elseif kind == 'n' then
    redis.call('ZADD', key, now, ARGV[1] .. ':' .. i)
    redis.call('PEXPIRE', key, math.ceil(a) + 1000)
  end
end
return '0'
"""


class LocalBuckets:
    """The same buckets, in this process only."""

    def __init__(self):
        self._tat: dict[str, float] = {}
        self._sent: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._flags: dict[str, float] = {}  # key → raised until (ms, monotonic)
        self._lock = threading.Lock()

    def try_take(self, buckets: list[Bucket]) -> float:
        with self._lock:
            now = time.monotonic() * 1000.0
            wait = last = 0.0
            tats = []
            for b in buckets:
                w = 0.0
                tat = 0.0
                if b.flag:
                    if b.yields:
                        w = self._flags.get(b.key, now) - now
                    elif last > 0:
                        self._flags[b.key] = now + b.flag_ms
                elif b.counts:
                    sent = self._sent[b.key]
                    while sent and sent[0] <= now - b.window_ms:
                        sent.popleft()
                    if not b.force and len(sent) >= b.limit:
                        w = sent[len(sent) - b.limit] + b.window_ms - now
                else:
                    tat = max(self._tat.get(b.key, now), now)
                    if not b.force:
                        w = tat - b.tolerance_ms - now
                tats.append(tat)
                wait = max(wait, w)
                last = w
            if wait > 0:
                return wait / 1000.0
            for b, tat in zip(buckets, tats, strict=True):
                if b.flag:
                    continue
                if b.counts:
                    self._sent[b.key].append(now)
                else:
                    self._tat[b.key] = tat + b.interval_ms
            return 0.0


def _redis_args(buckets: list[Bucket]) -> list:
    """The script's ARGV for these buckets."""
    args: list = [uuid.uuid4().hex]
    for b in buckets:
        if b.flag:
            args += ["f", repr(b.flag_ms), "1" if b.yields else "0"]
        elif b.counts:
            args += ["n", repr(b.window_ms), str(b.limit)]
        else:
            args += ["g", repr(b.interval_ms), repr(b.tolerance_ms)]
        args.append("1" if b.force else "0")
    return args


class Limiter:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.local = LocalBuckets()
        # Shared through Redis by every worker; fails open to this process's buckets
        # (the one Redis helper of the cap and the relays).
        self.shared = SharedRedis(settings, _SCRIPT, down_event="ratelimit.redis_unavailable",
                                  back_event="ratelimit.redis_back")
        self.prefix = settings.redis_key_prefix + KEY_PREFIX
        self.enabled = bool(
            settings.rate_per_second or settings.rate_per_hour or settings.alert_rate_per_second or settings.domain_rates
        )

    def _try(self, buckets: list[Bucket]) -> float:
        if self.shared.usable():
            try:
                wait = float(self.shared.script(keys=[self.prefix + b.key for b in buckets],
                                                args=_redis_args(buckets))) / 1000.0
                self.shared.ok()
                return wait
            except Exception as exc:  # noqa: BLE001 — any Redis trouble: fall back, do not stall
                self.shared.failed(exc)
        return self.local.try_take(buckets)

    def take(self, kind: str, domain: str, wait: bool = True, on_wait: Callable[[], None] | None = None) -> bool:
        """One message's permission: `wait` for it, or (wait=False) only if it is there now."""
        if wait:
            self.wait(kind, domain, on_wait)
            return True
        if not self.enabled:
            return True
        buckets = buckets_for(self.settings, kind, domain)
        return not buckets or self._try(buckets) <= 0

    def wait(self, kind: str, domain: str, on_wait: Callable[[], None] | None = None) -> float:
        """Block until one message of `kind` to `domain` may go; return seconds waited."""
        if not self.enabled:
            return 0.0
        buckets = buckets_for(self.settings, kind, domain)
        if not buckets:
            return 0.0
        waited = 0.0
        while True:
            delay = self._try(buckets)
            if delay <= 0:
                return waited
            step = min(delay, MAX_SLEEP)
            time.sleep(step)
            waited += step
            if on_wait is not None:
                on_wait()


_limiters: dict[tuple, Limiter] = {}
_limiters_lock = threading.Lock()


def limiter(settings: Settings) -> Limiter:
    key = (
        settings.redis_url, settings.redis_key_prefix, settings.rate_per_second, settings.rate_per_hour,
        settings.alert_rate_per_second, tuple(sorted(settings.domain_rates.items())),
    )
    with _limiters_lock:
        lim = _limiters.get(key)
        if lim is None:
            lim = _limiters[key] = Limiter(settings)
        return lim
