"""One classifier for every path: what a bounce's status and words say happened.

Every reader hands its findings here: a DSN's Action/Status/Diagnostic-Code
(service/inbound/reports.py), a plain-text bounce's codes and sentences
(service/inbound/plain_bounces.py), a provider's bounce event.

The receiver's words decide first, because real MTAs put the wrong code on them all the
time (5.1.1 on "message size exceeded", 5.7.1 on "No such user", 5.0.0 on everything);
RFC 3463's enhanced status codes decide when the words say nothing we know:

* `refusal`   the receiver refused *us*: our sender address (5.1.7, 5.1.8, "sender
              rejected"), SPF, DKIM, DMARC (5.7.23–5.7.27), a blocklist or our
              reputation — never the reader's fault
* `soft`      try again: 4.x.x, a delay, a full mailbox (5.2.2 is full *for now*), a
              message that expired in the queue after temporary failures
* `hard`      the address does not work: no such user, mailbox or domain; disabled
              (5.1.x except the sender's, 5.2.1, 5.4.4)
* `failed`    any other permanent failure: too big, content or spam filter, a loop,
              relaying refused, or no reason given

A word list only says `hard` on words about the *address*: a permanent failure with no
reason is `failed` (the row fails, the reader stays).
"""

from __future__ import annotations

import re

# Words about our sender address: a refusal of us even beside words about "the address".
_OUR_SENDER = re.compile(
    r"sender (address )?(rejected|refused|denied|blocked|verify failed|domain)|"
    r"policy rejection on (the )?sender|sending address (not accepted|rejected|refused)|"
    r"\bspf\b|sender policy framework|\bdkim\b|\bdmarc\b|"
    r"(envelope sender|return.?path|mail from)\W.{0,30}(reject|refus|denied|invalid|not allowed|blocked)",
    re.IGNORECASE)
# The receiver's words that say the refusal is about us, not the reader's address.
_ABOUT_US = re.compile(
    r"not authori[sz]ed to send|"
    r"unauthenticated (email|mail|sender)|"
    r"reputation|blacklist|blocklist|block ?list|black ?list|spamhaus|spamcop|\bsorbs\b|\brbl\b|\bdnsbl\b|"
    r"barracuda|spam ?list|"
    r"(\bip\b|client host|sending (ip|host|server|address)|your (ip|server|domain|host|mail server)).{0,40}"
    r"(block|reject|refus|deny|denied|listed|not accepted)|"
    r"not allowed to send|not accepting (mail|e-?mail|messages) from|(your|this) (mail )?server requires|"
    r"sending (quota|limit|rate)|rate limit",
    re.IGNORECASE)
_ABOUT_ADDRESS = re.compile(
    r"(user|mailbox|mail box|recipient|rcpt|address|addressee|account|e-?mail account)\b.{0,60}\b("
    r"unknown|not exist|nonexistent|non-existent|doesn.?t exist|does not exist|no such|not found|invalid|"
    r"disabled|inactive|suspended|deactivated|discontinued|not valid|not available|not known|"
    r"not recogni[sz]ed|not listed|no longer|not an active|not a known|not a valid)|"
    r"no such (user|mailbox|recipient|address|account|domain|person)|(mail ?box|user|account) (is )?unavailable|"
    r"did not (exactly )?match an? [\w.-]{0,20} ?e-?mail address|no user by that name|"
    r"unknown (or \w+ )?(user|recipient|mailbox|address|addressee|account|local.part)|"
    r"not a (valid|known) (user|mailbox|recipient|address)|is a deactivated|no mail ?box|no mailbox here|"
    r"no account by that name|badrcptto|bad_recipient|recipnotfound|invalid (final delivery )?userid|"
    r"not our customer|doesn.?t have an? [\w.-]{1,60} account|does not have a final (e-?mail )?delivery point|"
    r"no matches to nameserver query|not listed in (the )?(domino|public name|directory|address book)|"
    r"\brecipient rejected\b|user doesn.?t have|nie istnieje|non recens|n.existe pas|existiert nicht|no existe|"
    r"non esiste|inexistente|"
    r"(host|domain)( name)? (not found|unknown)(?!, try again)|host or domain name not found|"
    r"unknown host|no such domain|domain (does not|doesn.?t) exist|unrouteable (mail )?domain|"
    r"name or service not known|name service error for name",
    re.IGNORECASE)
_FULL = re.compile(
    r"mail ?box (is )?full|full mail ?box|mailfolder is full|\bquota\b|over ?quota|exceeded (the )?(storage|quota)|"
    r"insufficient (system )?storage|mailbox size limit|not enough (storage )?space|does not have enough space|"
    r"(mail ?box|mailfolder|maildir|inbox|account|disk) .{0,30}\b(is full|exceeds? (its|the)? ?(allowed|disk|storage)|"
    r"exceeded its disk)|too many messages|account is full|zu ?viele mails",
    re.IGNORECASE)
# Temporary trouble that outlasted the sender's patience (or still may not).
_TEMPORARY = re.compile(
    r"try again later|temporar(y|ily)|\bdelayed\b|will (be )?retr(y|ied)|still (being )?(retried|trying)|"
    r"not yet been delivered|will continue to attempt|timed? ?out|connection (refused|dropped|reset|timed out|lost)|"
    r"dropped by remote host|could not (initiate|establish) (an? )?smtp|not (responding|reachable)|"
    r"(in|been in) the queue too long|max(imum)? (number of )?delivery attempts|failed \d+ attempts|"
    r"not been collected|all hosts have been failing|could not find a gateway|no route to host|"
    r"host not found, try again|did not accept our requests to connect|delivery time expired|"
    r"time(out)? (expired|exceeded)|maximum.time.expired|aborted after",
    re.IGNORECASE)
# What is wrong with the message (or the receiving system), not with the address.
_ABOUT_MESSAGE = re.compile(
    r"message (size|length)|too (large|big)|exceeds? (the )?(maximum )?(incoming |inbound )?(message )?size|"
    r"size limit|\bspam|unsolicited|bulk|content|virus|loop|too many hops|relay(ing)? (access )?(denied|not permitted)|"
    r"as a relay|rcpthosts|attachment",
    re.IGNORECASE)


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
    if _OUR_SENDER.search(words):
        return "refusal"
    about_address = _ABOUT_ADDRESS.search(words)
    if _ABOUT_US.search(words) and not about_address:
        return "refusal"
    if _FULL.search(words):
        return "soft"  # full now; the soft-bounce policy decides when it is for good
    if about_address:
        return "hard"
    if _TEMPORARY.search(words):
        return "soft"  # given up after temporary failures: counted, never suppressed at once
    if _ABOUT_MESSAGE.search(words):
        return "failed"
    if subject == "1":
        return "hard"
    if subject == "2" and detail == "1":
        return "hard"  # mailbox disabled, not accepting messages
    if subject == "2" and detail == "2":
        return "soft"
    if subject == "4" and detail == "4":
        return "hard"  # unable to route: the domain has no mail server
    if subject == "4" and detail == "7":
        return "soft"  # delivery time expired
    return "failed"


def has_failure_words(text: str) -> bool:
    """Whether `text` holds any of the words a bounce is judged by (plain_bounces.py asks,
    to tell a mail system's terse notice from other mail)."""
    return any(p.search(text) for p in (_OUR_SENDER, _ABOUT_US, _ABOUT_ADDRESS, _FULL, _TEMPORARY))
