"""What every provider's reader shares: the events it returns, the refusal it raises, and
careful readers of untrusted JSON.

A provider module turns (headers, raw body, settings, now) into a verified `Parsed` or
raises `Refused`; nothing here touches the database.  JSON comes from the network
before or after its signature is checked, so every getter accepts any type and answers
"nothing" for the wrong one: a field of the wrong type is a field that is absent.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field

from service.inbound import classify
from service.inbound.actions import Feedback

# A provider batch (SendGrid) holds hundreds of events; anything far beyond is not theirs.
MAX_EVENTS = 5000
_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_SMTP_CODE = re.compile(r"^\s*([245]\d\d)\b")
_NAME = re.compile(r"[A-Za-z][A-Za-z_ -]{0,39}")


class Refused(Exception):  # noqa: N818 — the name the webhooks' callers read
    """The request is not taken: `status` is the 4xx answered, `reason` says why (no secret)."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers or {}


@dataclass(frozen=True)
class Event:
    """One provider event: the Message-ID it echoes and what it says (None: nothing to do)."""

    provider_event: str  # the provider's own name for it ("Bounce", "failed", "dropped" …)
    message_id: str | None
    feedback: Feedback | None
    note: str = ""  # why there is nothing to do, for the log

    def __post_init__(self) -> None:
        object.__setattr__(self, "provider_event", name(self.provider_event))


def name(value: str) -> str:
    """A provider's name for something (an event type, a bounce type), fit for a log line:
    letters only, so that no address or token a payload carries there is ever logged."""
    return value if _NAME.fullmatch(value or "") else "(other)"


@dataclass(frozen=True)
class Parsed:
    """A verified request: its events, and what it answered by itself (an SNS confirmation)."""

    events: list[Event] = field(default_factory=list)
    # A one-time value the request must be the first to present (Mailgun's token), claimed
    # in the same transaction as the events: (kind, value, seconds it must be remembered).
    nonce: tuple[str, str, int] | None = None
    answer: dict | None = None  # said instead of applying events (subscription confirmed …)


# ---------------------------------------------------------------- untrusted JSON


def load_json(body: bytes) -> object:
    """The body as JSON, or Refused(400).  Huge numbers, deep nesting and bad UTF-8 are
    all just "not JSON we read"."""
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Refused(400, "the body is not JSON") from None


def obj(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def seq(value: object) -> list:
    return value if isinstance(value, list) else []


def text(value: object, limit: int = 1000) -> str:
    """A string field, cut to `limit`; "" for any other type."""
    return value[:limit] if isinstance(value, str) else ""


def number(value: object) -> int | None:
    """An integer field (a JSON number or a string of digits), None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and abs(value) < 10**15:
        return value
    if isinstance(value, float) and value == value and abs(value) < 1e15:
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\d{1,15}", value.strip()):
        return int(value.strip())
    return None


def event_id(*parts: object) -> str | None:
    """A provider event id from its parts; None when one is missing (the caller then
    falls back on another: an event without an id could count twice)."""
    if not parts or any(p is None or p == "" for p in parts):
        return None
    out = ":".join(str(p)[:200] for p in parts)
    return out if len(out) <= 600 and "\x00" not in out else None


# ---------------------------------------------------------------- time


def check_age(when: dt.datetime | None, now: dt.datetime, max_age: int, what: str) -> None:
    """Refuse an event signed longer ago (or further ahead) than WEBHOOK_MAX_AGE_SECONDS:
    a captured request replayed later is stale by then."""
    if when is None:
        raise Refused(400, f"{what} has no readable timestamp")
    if abs((now - when).total_seconds()) > max_age:
        raise Refused(403, f"{what} is stale (signed more than {max_age} s from now)")


def from_epoch(value: object) -> dt.datetime | None:
    seconds = number(value)
    if seconds is None or seconds > 10**11:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def from_iso(value: object) -> dt.datetime | None:
    raw = text(value, 64).strip()
    if not raw:
        return None
    try:
        when = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


# ---------------------------------------------------------------- what a bounce says


def enhanced_status(*candidates: str) -> str | None:
    """The first RFC 3463 status among the fields, or written inside their words."""
    for candidate in candidates:
        m = _ENHANCED.search(candidate or "")
        if m:
            return f"{m[1]}.{m[2]}.{m[3]}"
    return None


def smtp_code(*candidates: object) -> int | None:
    for candidate in candidates:
        code = number(candidate)
        if code is not None and 200 <= code <= 599:
            return code
        m = _SMTP_CODE.match(candidate) if isinstance(candidate, str) else None
        if m:
            return int(m[1])
    return None


def judge(status: str | None, words: str, *, temporary: bool, default: str | None) -> str | None:
    """hard | soft | failed | refusal for a bounce, by the one classifier (classify.py).

    The provider's own verdict (`default`) counts only when the event carries neither a
    status nor words to judge: a "permanent" failure whose words say the receiver refused
    *our sender* is a refusal, and one about content is `failed` — never the reader's
    address.  (The provider puts a really dead address on its own suppression list, and
    its next event about it says so plainly: a `default` hard.)

    A temporary failure is `soft`, except one whose status or words say it is about us
    (4.1.8, "sender blocked", a blocklist): None, so that our own trouble never counts
    towards a reader's soft-bounce limit.
    """
    if not status and not words.strip():
        return default
    if temporary:
        as_permanent = "5" + status[1:] if status else "5.0.0"
        if classify.kind_of("failed", as_permanent, words) == "refusal":
            return None
        return "soft"
    judged = classify.kind_of("failed", status or "5.0.0", words)
    return judged if judged in ("hard", "soft", "failed", "refusal") else default
