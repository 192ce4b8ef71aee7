"""What an SMTP answer means: one rule per class of failure (the README's failure table).

Kept apart from the socket code so that it can be read and tested on its own.  Every
answer falls in one class, and each class has one owner:

| class                | what the relay did                                   | who acts |
| -------------------- | ---------------------------------------------------- | -------- |
| `sent`               | 250 after the final dot                              | the batch records it |
| `unavailable`        | refused, reset, timeout, no greeting, DNS, 421 (any  | the sender: this relay is set aside with a growing |
|                      | stage), 4xx to MAIL, the line lost before the dot    | back-off and the next one carries the message; none |
|                      |                                                      | left → the rows wait as `retry` (never a pause) |
| `sender_refused`     | auth, TLS, 5xx at the greeting, EHLO or MAIL         | the batch: the edition pauses with the reason |
| `retry`              | 4xx to RCPT, DATA or the dot: this reader, later     | the batch: the row retries with back-off |
| `failed` / `bounced` | 5xx to RCPT, DATA or the dot: this reader, for good  | the batch: the row fails (`bounced`: 5.1.x, or a bare |
|                      | (5.7.1 "blocked" for one address included)           | 550/551/553, at RCPT or the dot: also suppressed) |
| `unknown`            | the final dot may have left and no answer came       | the batch: SMTP_AMBIGUOUS (`resend` once with the |
|                      | (RFC 1047: timeout, reset, write error after it)     | same Message-ID, or `hold` for a person) |

A 5.7.x at RCPT is the reader's (RFC 3463: X.7.1 is also a per-recipient policy answer,
Gmail's "550 5.7.1 … blocked"); only the same 5.7.x for many readers in a row means the
relay refuses *us*, and the batch watches for that (batch.REFUSAL_STREAK).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from service.logs import redact


class Verdict(enum.StrEnum):
    sent = "sent"
    unavailable = "unavailable"  # the relay: another session or relay takes the message
    sender_refused = "sender_refused"  # pause the edition; nobody's fault but ours
    retry = "retry"  # this reader, later
    failed = "failed"
    bounced = "bounced"  # failed, and the address goes on the suppression list
    unknown = "unknown"  # the dot may have left: ambiguous


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    code: int | None
    reply: str
    stage: str  # connect | mail | rcpt | data | dot

    def __post_init__(self):
        # A reply is stored in the ledger and shown to operators: no NUL or other
        # control character (psycopg refuses NUL in text), folded to one line, bounded.
        object.__setattr__(self, "reply", clean(self.reply))


_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_HARD_BOUNCE_BARE_CODES = {550, 551, 553}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
MAX_REPLY = 500


def clean(text: str | bytes | None) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(_CONTROL.sub(" ", text or "").split())[:MAX_REPLY]


def enhanced_status(reply: str) -> tuple[int, int, int] | None:
    m = _ENHANCED.match(reply or "")
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def judge(stage: str, code: int, reply: str | bytes) -> Outcome:
    """Turn one SMTP reply at one stage of the dialogue into a verdict."""
    text = clean(reply)
    enh = enhanced_status(text)

    def out(v: Verdict) -> Outcome:
        return Outcome(v, code, text, stage)

    ok = 354 if stage == "data" else 250
    if code == ok or (stage == "rcpt" and code == 251):
        return out(Verdict.sent)
    if code == 421 or (400 <= code < 500 and stage in ("connect", "mail")):
        return out(Verdict.unavailable)  # the relay closes or cannot take mail now
    if code in (530, 534, 535, 538) or (500 <= code < 600 and stage in ("connect", "mail")):
        return out(Verdict.sender_refused)
    if 400 <= code < 500:
        return out(Verdict.retry)
    if not 500 <= code < 600:
        # A reply outside the protocol (e.g. 250 to DATA): the server is confused.
        # Nothing was accepted; another session or relay takes the message.
        return out(Verdict.unavailable)
    if stage in ("rcpt", "dot") and (enh[1] == 1 if enh else code in _HARD_BOUNCE_BARE_CODES):
        return out(Verdict.bounced)
    return out(Verdict.failed)


def refusal_key(outcome: Outcome) -> str | None:
    """The enhanced code of a 5.7.x refusal of one reader ("5.7.1"), for the batch's
    watch on the same policy answer for many readers in a row; None for anything else."""
    if outcome.verdict not in (Verdict.failed, Verdict.bounced):
        return None
    enh = enhanced_status(outcome.reply)
    return ".".join(map(str, enh)) if enh and enh[1] == 7 else None


_ADDRESS = re.compile(r"[^\s<>\"'(),;:]+@[^\s<>\"'(),;:]+")


def scrub(text: str) -> str:
    """A server reply fit for a log line or an operator message: addresses hashed."""
    return _ADDRESS.sub(lambda m: redact(m.group(0)), text or "")
