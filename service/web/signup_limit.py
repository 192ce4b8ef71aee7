"""The signup form's limit per client address (service.limits keeps the count: Redis
when REDIS_URL is set, else — and whenever Redis does not answer — the database; it
never fails open).

Fixed windows: simple, one round trip, and good enough to stop a script from using our
form to mail strangers.  The client address is the peer's, or a trusted proxy's
X-Forwarded-For (FORWARDED_ALLOW_IPS): a client cannot choose its own.
"""

from __future__ import annotations

from service import limits

SIGNUP_LIMIT = 5  # POST /subscribe per client address …
SIGNUP_WINDOW = 600  # … per this many seconds


def allow(bucket: str, key: str, limit: int = SIGNUP_LIMIT, window: int = SIGNUP_WINDOW) -> limits.Verdict:
    """Count this request; the verdict is truthy when it is within the limit."""
    return limits.hit(bucket, key, limit, window)


def retry_after(verdict: object, window: int = SIGNUP_WINDOW) -> int:
    """Seconds to the end of the window, for Retry-After."""
    return getattr(verdict, "retry_after", None) or window
