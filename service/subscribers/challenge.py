"""The optional proof-of-work on the signup form and POST /api/subscribe
(SIGNUP_CHALLENGE, SIGNUP_CHALLENGE_BITS): no third party, no cookie, no stored state
until a solution is spent.

A challenge is `1.<issued>.<bits>.<nonce>.<mac>`: the issue time (epoch seconds), the
difficulty, 16 random bytes (hex) and an HMAC of the rest under a key derived from
SECRET_KEY, so the server needs to remember nothing to know it issued it.  The browser
looks for a counter (decimal digits) such that SHA-256(challenge ‖ counter) starts with
`bits` zero bits (templates/web/signup_challenge.js, Web Crypto) — about 2^bits hashes,
cheap for one reader and costly for a flood.  A solution is refused when it is missing,
forged, for a weaker difficulty than the current setting, older than TTL, or spent:
each nonce is claimed once (`limits.claim_once`: Redis SET NX EX, else one insert in the
database) for the challenge's remaining life.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from service import limits
from service.config import get_settings
from service.logs import get_logger
from service.subscribers.errors import InvalidInput

log = get_logger(__name__)

VERSION = "1"
TTL = 1800  # seconds a challenge may be solved and spent in (a reader filling in the form)
SKEW = 60  # an issue time this far in the future is still ours (several web machines' clocks)
MAX_CHALLENGE = 120
MAX_SOLUTION = 16  # digits: far beyond the 2^28 hashes of the hardest setting
SPENT_BUCKET = "signup-pow"

MSG_MISSING = "لم يكتمل التحقق من أنك لست برنامجاً آلياً. فعّل JavaScript في متصفحك ثم أعد المحاولة."
MSG_EXPIRED = "انتهت مهلة التحقق من أنك لست برنامجاً آلياً. أعد المحاولة."
MSG_BAD = "تعذّر التحقق من أنك لست برنامجاً آلياً. أعد تحميل الصفحة ثم حاول مرة أخرى."


@dataclass(frozen=True)
class Challenge:
    value: str
    bits: int
    issued: int
    expires_in: int = TTL


def _mac(body: str) -> str:
    key = hashlib.sha256(b"nashra-signup-challenge:" + get_settings().secret_key.encode()).digest()
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()[:32]


def issue(now: float | None = None) -> Challenge:
    bits = get_settings().signup_challenge_bits
    issued = int(time.time() if now is None else now)
    body = f"{VERSION}.{issued}.{bits}.{secrets.token_hex(16)}"
    return Challenge(f"{body}.{_mac(body)}", bits, issued)


def leading_zero_bits(digest: bytes) -> int:
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def solves(challenge: str, solution: str, bits: int) -> bool:
    return leading_zero_bits(hashlib.sha256((challenge + solution).encode()).digest()) >= bits


def _solution(raw: object) -> str | None:
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < 10**MAX_SOLUTION:
        return str(raw)
    if isinstance(raw, str) and 0 < len(raw) <= MAX_SOLUTION and raw.isascii() and raw.isdigit():
        return raw
    return None


def verify(challenge: object, solution: object, *, now: float | None = None) -> None:
    """Accept a solved, genuine, current, unspent challenge (and spend it), or raise
    InvalidInput("challenge", …) with nothing else changed."""
    now = time.time() if now is None else now
    if not challenge or solution in (None, ""):
        log.info("signup_challenge_missing")
        raise InvalidInput("challenge", MSG_MISSING)
    answer = _solution(solution)
    if not isinstance(challenge, str) or len(challenge) > MAX_CHALLENGE or not challenge.isascii() or answer is None:
        log.info("signup_challenge_malformed")
        raise InvalidInput("challenge", MSG_BAD)
    parts = challenge.split(".")
    if len(parts) != 5 or parts[0] != VERSION or not hmac.compare_digest(_mac(".".join(parts[:4])), parts[4]):
        log.info("signup_challenge_forged")
        raise InvalidInput("challenge", MSG_BAD)
    # Genuine: its fields are ours.
    issued, bits, nonce = int(parts[1]), int(parts[2]), parts[3]
    if not (now - TTL <= issued <= now + SKEW):
        log.info("signup_challenge_expired")
        raise InvalidInput("challenge", MSG_EXPIRED)
    if bits < get_settings().signup_challenge_bits or not solves(challenge, answer, bits):
        log.info("signup_challenge_unsolved")
        raise InvalidInput("challenge", MSG_BAD)
    if not limits.claim_once(SPENT_BUCKET, nonce, int(issued + TTL - now) + 1, now=now):
        log.info("signup_challenge_replayed")
        raise InvalidInput("challenge", MSG_BAD)
