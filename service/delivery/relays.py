"""The relays of SMTP_URL, tried in order, and the ones set aside for a while.

SMTP_URL may list several relays, comma-separated (`smtp+starttls://u:p@a:587,
smtp://b:25`).  `pick()` gives the first one that is not set aside.  Two classes of
failure set a relay aside (verdicts.py):

* *unavailable* (refused, reset, timeout, no greeting, 421, DNS): for a growing back-off
  — 1 s, 2 s, 4 s … up to UNAVAILABLE_MAX_SECONDS — counted across workers and ended by
  the next connection that works (`back`); the messages wait as `retry` rows until
  `soonest()`, and go on by themselves;
* *refuses us* (authentication, TLS, 5xx at the greeting or MAIL): for
  SMTP_RELAY_SET_ASIDE_SECONDS (60 s).

Either way the others carry the edition; when every relay is set aside `pick()` returns
None (`all_set_aside()`).

With REDIS_URL a set-aside is a key with a TTL under the settings' redis_key_prefix, so
every worker on every host stops using the relay at once; without it (the embedded demo)
it lives in this process.  A process also remembers the set-asides it made itself, so a
Redis outage or restart does not send it straight back to a relay it just saw refuse; if
Redis is unreachable the set-asides are process-local (logged once per outage, never with
Redis' address) until it answers again.

`key(target)` is the relay's stable name for the connection cap and for logs:
`host:port`, plus a hash of the user name when there is one (one relay, two accounts,
two caps).  A password is never in a key, a log line or a repr.
"""

from __future__ import annotations

import re
import threading
import time

from service.config import Settings, SmtpTarget
from service.delivery.shared_redis import SharedRedis
from service.logs import get_logger, redact

log = get_logger(__name__)

KEY_PREFIX = "nashra:relay:aside:"
FAILS_PREFIX = "nashra:relay:fails:"
MAX_REASON = 120
UNAVAILABLE_FIRST_SECONDS = 1.0
UNAVAILABLE_MAX_SECONDS = 10.0  # a relay back from a restart carries mail within this
FAILS_MEMORY_SECONDS = 300  # failures further apart than this start the back-off over

# Set aside for ARGV[2] ms unless it already is for longer; ARGV[1] is the reason.
_SET_ASIDE = """
local ms = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < ms then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ms)
  return 1
end
return 0
"""

_ADDRESS = re.compile(r"\S+@\S+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def relay_key(target: SmtpTarget) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    key = f"{host.lower()}:{target.port}"
    if target.username:
        # A keyed tag, not a bare sha256: the key is logged, and a user name is often an address.
        key += "~" + redact(target.username)[2:10]
    return key


def _clean_reason(reason: str) -> str:
    """A reason fit for a log line: no address (a server's reply may quote one), short."""
    text = _ADDRESS.sub("[address]", _CONTROL.sub(" ", str(reason))).strip()
    return text[:MAX_REASON] or "unspecified"


class _LocalAside:
    """Set-asides made by (or, during a Redis outage, known to) this process."""

    def __init__(self):
        self.lock = threading.Lock()
        self.until: dict[str, tuple[float, str]] = {}  # relay key → (monotonic deadline, reason)
        self.fails: dict[str, int] = {}  # relay key → unavailable in a row (the back-off's step)

    def failed(self, key: str) -> int:
        with self.lock:
            self.fails[key] = self.fails.get(key, 0) + 1
            return self.fails[key]

    def back(self, key: str) -> bool:
        with self.lock:
            return self.fails.pop(key, None) is not None

    def set(self, key: str, reason: str, seconds: float) -> bool:
        """Record it; True if the relay was not set aside here already."""
        with self.lock:
            now = time.monotonic()
            old = self.until.get(key)
            fresh = old is None or old[0] <= now
            if fresh or old[0] < now + seconds:
                self.until[key] = (now + seconds, reason)
            return fresh

    def left(self, key: str) -> float:
        with self.lock:
            entry = self.until.get(key)
            if entry is None:
                return 0.0
            left = entry[0] - time.monotonic()
            if left <= 0:
                del self.until[key]
                return 0.0
            return left


_local: dict[str, _LocalAside] = {}
_local_lock = threading.Lock()


def _local_for(prefix: str) -> _LocalAside:
    with _local_lock:
        aside = _local.get(prefix)
        if aside is None:
            aside = _local[prefix] = _LocalAside()
        return aside


class Relays:
    """SMTP_URL's relays in order, minus those set aside (see the module doc)."""

    def __init__(self, settings: Settings):
        self.targets: list[SmtpTarget] = settings.smtp_targets
        self.default_seconds = settings.smtp_relay_set_aside_seconds
        self._prefix = settings.redis_key_prefix + KEY_PREFIX
        self._fails_prefix = settings.redis_key_prefix + FAILS_PREFIX
        self._local = _local_for(settings.redis_key_prefix)
        self._shared = SharedRedis(settings, _SET_ASIDE, down_event="smtp.relays_redis_unavailable", back_event="smtp.relays_redis_back")

    def __repr__(self) -> str:
        return f"Relays({', '.join(self.key(t) for t in self.targets)})"

    # ------------------------------------------------------------------ the interface

    @staticmethod
    def key(target: SmtpTarget) -> str:
        """A stable name for the relay (for the connection cap and logs); no password."""
        return relay_key(target)

    def pick(self) -> SmtpTarget | None:
        """The first relay, in SMTP_URL's order, that is not set aside (None: all are)."""
        left = self._left_all()
        for target, seconds in zip(self.targets, left, strict=True):
            if seconds <= 0:
                return target
        return None

    def set_aside(self, target: SmtpTarget, reason: str, seconds: float | None = None, *,
                  unavailable: bool = False) -> None:
        """Stop using `target` for a while, everywhere: `unavailable` for the growing
        back-off (see the module doc), else `seconds` (default SMTP_RELAY_SET_ASIDE_SECONDS).

        `reason` is a short category for the log ("auth", "tls", "5.7.1", "refused");
        anything address-like in it is masked.  A longer set-aside already in force stays.
        """
        key = self.key(target)
        if unavailable:
            seconds = min(UNAVAILABLE_MAX_SECONDS, UNAVAILABLE_FIRST_SECONDS * 2 ** (self._count_failure(key) - 1))
        seconds = self.default_seconds if seconds is None else float(seconds)
        if not seconds > 0:
            return
        why = _clean_reason(reason)
        fresh = self._local.set(key, why, seconds)
        if self._shared.usable():
            try:
                self._shared.script(keys=[self._prefix + key], args=[why, max(1, int(seconds * 1000))])
                self._shared.ok()
            except Exception as exc:  # noqa: BLE001 — remembered in this process meanwhile
                self._shared.failed(exc)
        if fresh:
            others = sum(1 for s in self._left_all() if s <= 0)
            log.warning("smtp.relay_set_aside", relay=key, reason=why, seconds=seconds, relays_left=others,
                        unavailable=unavailable)

    def back(self, target: SmtpTarget) -> None:
        """A connection to `target` worked: its next unavailability starts the back-off over."""
        key = self.key(target)
        self._local.back(key)
        if self._shared.usable():  # (once per new session: another worker may have counted)
            try:
                self._shared.client.delete(self._fails_prefix + key)
                self._shared.ok()
            except Exception as exc:  # noqa: BLE001
                self._shared.failed(exc)

    def soonest(self) -> float:
        """Seconds until the first relay is usable again (0: one is now)."""
        return min(self._left_all(), default=0.0)

    def _count_failure(self, key: str) -> int:
        n = self._local.failed(key)
        if self._shared.usable():
            try:
                pipe = self._shared.client.pipeline(transaction=False)
                pipe.incr(self._fails_prefix + key)
                pipe.expire(self._fails_prefix + key, FAILS_MEMORY_SECONDS)
                n = max(n, int(pipe.execute()[0]))
                self._shared.ok()
            except Exception as exc:  # noqa: BLE001 — this process's count meanwhile
                self._shared.failed(exc)
        return n

    def all_set_aside(self) -> bool:
        """True when every relay is set aside: time to pause the edition."""
        return all(seconds > 0 for seconds in self._left_all())

    # ------------------------------------------------------------------ for status and tests

    def set_aside_for(self) -> dict[str, float]:
        """Relay key → seconds it stays set aside, for those that are."""
        return {
            self.key(t): seconds
            for t, seconds in zip(self.targets, self._left_all(), strict=True)
            if seconds > 0
        }

    # ------------------------------------------------------------------ internals

    def _left_all(self) -> list[float]:
        """Seconds each relay stays set aside (0: usable), the longer of Redis' and ours."""
        keys = [self.key(t) for t in self.targets]
        left = [self._local.left(k) for k in keys]
        if self._shared.usable():
            try:
                pipe = self._shared.client.pipeline(transaction=False)
                for k in keys:
                    pipe.pttl(self._prefix + k)
                shared = pipe.execute()
                self._shared.ok()
                left = [max(mine, ms / 1000.0 if ms > 0 else 0.0) for mine, ms in zip(left, shared, strict=True)]
            except Exception as exc:  # noqa: BLE001 — fail open to what this process knows
                self._shared.failed(exc)
        return left


__all__ = ["Relays", "relay_key"]
