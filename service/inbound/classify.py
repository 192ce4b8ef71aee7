"""One classifier for every path: what a bounce's status and words say happened.

RFC 3463's enhanced status codes decide first; the receiver's words (the diagnostic)
break the ties the codes leave: 5.7.1 is both "this address is blocked" and "your
server is blocked", 5.1.x is usually a bad address and sometimes our sender.

* `hard`      the address does not work (5.1.x except the sender's, 5.2.1 disabled)
* `soft`      try again: 4.x.x, a delay, a full mailbox (5.2.2 is full *for now*)
* `refusal`   the receiver refused *us*: our sender address (5.1.7, 5.1.8), SPF, DKIM,
              DMARC (5.7.23–5.7.27), our IP's or domain's reputation — never the reader's
* `failed`    any other permanent failure: too big, content, a policy about this message
"""

from __future__ import annotations

import re

# The receiver's words that say the refusal is about us, not the reader's address.
_ABOUT_US = re.compile(
    r"sender (address )?(rejected|refused|denied|blocked|verify failed|domain)|"
    r"\bspf\b|\bdkim\b|\bdmarc\b|not authori[sz]ed to send|unauthenticated (email|mail|sender)|"
    r"reputation|blacklist|blocklist|block ?list|black ?list|spamhaus|\bsorbs\b|\brbl\b|barracuda|"
    r"(ip|client host|sending (ip|host|server)|your (ip|server|domain|host)).{0,40}(block|reject|refus|deny|denied|listed)|"
    r"policy rejection on (the )?sender|envelope sender|return.?path",
    re.IGNORECASE)
_ABOUT_ADDRESS = re.compile(
    r"(user|mailbox|recipient|address|account)\b.{0,40}\b(unknown|not exist|doesn.?t exist|does not exist|"
    r"no such|not found|invalid|disabled|unavailable|inactive|suspended|deactivated)|"
    r"no such (user|mailbox|recipient|address)|unknown (user|recipient|mailbox)|user doesn.?t have",
    re.IGNORECASE)
_FULL = re.compile(r"mailbox (is )?full|over ?quota|quota exceeded|exceeded (the )?(storage|quota)|"
                   r"insufficient (system )?storage|mailbox size limit", re.IGNORECASE)


def kind_of(action: str, status: str, diagnostic: str = "") -> str | None:
    """hard | soft | refusal | failed | delivered, or None when it says nothing (expanded)."""
    action = (action or "").lower()
    if action in ("delivered", "relayed"):
        return "delivered"
    if action == "expanded":
        return None
    klass, _, rest = (status or "").partition(".")
    subject, _, detail = rest.partition(".")
    words = diagnostic or ""
    if action == "delayed" or klass == "4":
        return "soft"
    if klass != "5":
        return None
    if subject == "1" and detail in ("7", "8"):
        return "refusal"
    if subject == "7" and detail in ("23", "24", "25", "26", "27"):
        return "refusal"  # SPF, DKIM, DMARC, reverse DNS: how we send, not who we send to
    if _ABOUT_US.search(words) and not _ABOUT_ADDRESS.search(words):
        return "refusal"
    if subject == "1":
        return "hard"
    if subject == "2" and detail == "1":
        return "hard"  # mailbox disabled, not accepting messages
    if subject == "2" and detail == "2" or _FULL.search(words):
        return "soft"  # full now; the soft-bounce policy decides when it is for good
    if _ABOUT_ADDRESS.search(words):
        return "hard"
    return "failed"
