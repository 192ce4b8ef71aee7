"""What an SMTP answer means for the ledger.

One table of rules, kept apart from the socket code so that it can be read and tested
on its own:

* 2xx (354 to DATA)                       → go on; 250 after the final dot = sent
* 4xx anywhere                            → retry later (421 also closes the connection)
* 5xx to MAIL FROM, or 5.7.x anywhere,
  or refused / TLS / AUTH at connect time → the *sender* is refused: pause the edition,
                                            raise an operator error, blame no reader
* 5xx to RCPT or after DATA with 5.1.x
  (or 550/551/553 with no enhanced code)  → the address is bad: failed + suppressed
* any other 5xx for one recipient         → failed (not suppressed: e.g. 5.2.2 mailbox full)
* the final dot sent, no reply (timeout,
  or the peer closed without a word)      → unknown (RFC 1047), never re-sent automatically
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from service.logs import redact


class Verdict(enum.StrEnum):
    sent = "sent"
    retry = "retry"
    failed = "failed"
    bounced = "bounced"  # failed, and the address goes on the suppression list
    sender_refused = "sender_refused"  # pause the edition; nobody's fault but ours
    unknown = "unknown"


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    code: int | None
    reply: str
    stage: str  # connect | mail | rcpt | data | dot


_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_HARD_BOUNCE_BARE_CODES = {550, 551, 553}


def enhanced_status(reply: str) -> tuple[int, int, int] | None:
    m = _ENHANCED.match(reply or "")
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def judge(stage: str, code: int, reply: str) -> Outcome:
    """Turn one SMTP reply at one stage of the dialogue into a verdict."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else (reply or "")
    text = " ".join(text.split())[:500]
    enh = enhanced_status(text)

    def out(v: Verdict) -> Outcome:
        return Outcome(v, code, text, stage)

    ok = 354 if stage == "data" else 250
    if code == ok or (stage == "rcpt" and code == 251):
        return out(Verdict.sent)
    if 400 <= code < 500:
        return out(Verdict.retry)
    if not 500 <= code < 600:
        # A reply outside the protocol (e.g. 250 to DATA) — treat it as the server
        # being confused; try again later rather than guess.
        return out(Verdict.retry)
    if stage in ("connect", "mail") or (enh and enh[1] == 7) or code in (530, 535):
        return out(Verdict.sender_refused)
    if stage == "data":
        return out(Verdict.failed)
    if enh:
        return out(Verdict.bounced if enh[1] == 1 else Verdict.failed)
    return out(Verdict.bounced if code in _HARD_BOUNCE_BARE_CODES else Verdict.failed)


_ADDRESS = re.compile(r"[^\s<>\"'(),;:]+@[^\s<>\"'(),;:]+")


def scrub(text: str) -> str:
    """A server reply fit for a log line or an operator message: addresses hashed."""
    return _ADDRESS.sub(lambda m: redact(m.group(0)), text or "")
