"""Bounces that are not RFC 3464 reports: what Exchange, qmail, old Yahoo and AOL,
Postfix's plain notices, GroupWise, Domino, Sendmail transcripts … write instead.

`read(msg)` decides whether a message is a bounce at all (who sent it, its subject,
the sentences every MTA uses), keeps only the notice the MTA wrote (never the returned
message: our own newsletter's words must not judge the reader), and pulls out what a
DSN would have said: delayed or failed, a status code and the receiver's sentence.
service/inbound/classify.py turns those into a kind, as it does for every path.

It never says who bounced: addresses printed in a bounce are never acted upon — the
signed VERP envelope recipient alone names the row (service/inbound/reports.py).
Auto-replies (out of office, challenge-response) are not bounces.

Everything here is pure and bounded: at most `MAX_NOTICE` characters of text are read,
whatever the message holds, and no regular expression can backtrack badly on them.
"""

from __future__ import annotations

import email.header
import html
import re
from dataclasses import dataclass
from email.message import Message

from service.delivery.verdicts import scrub
from service.inbound import classify

MAX_NOTICE = 20_000  # characters of a bounce's own text that are read
_MAX_PARTS = 40

_DAEMON = re.compile(
    r"mailer-daemon|mailer_daemon|postmaster|mail delivery|delivery (subsystem|system|service)|mail ?administrator|"
    r"mail system|mdaemon|ndr@|^<?>?$|smtp.?(mail )?service|virus ?wall|antivirus|anti-virus|mailscanner",
    re.IGNORECASE)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (status|failure|failed|problem|report|notification|has failed)|returned mail|"
    r"mail delivery (failed|failure|problem|warning)|failure notice|failure delivery|failed mail|non.?delivery|"
    r"delayed mail|message delayed|delivery delayed|\bwarning:.{0,60}(delay|unknown|not yet been delivered)|"
    r"could not be delivered|not delivered|nicht zugestellt|unzustellbar|olevererbart|non remis|mail error|"
    r"processing error|rejected mail|mail system error|message status|delivery notification|returning message",
    re.IGNORECASE)
_BOUNCE_BODY = re.compile(
    r"could ?n.?o?t be (delivered|sent)|was not delivered|wasn.?t delivered|not be delivered|undeliverable|"
    r"failed permanently|permanent (fatal )?error|wasn.?t able to deliver|unable to deliver|delivery has failed|"
    r"has been delayed|did not reach the following|message delivery failure|had permanent fatal errors|"
    r"following address(\(?es\)?)? failed|delivery to the following recipients? (failed|was aborted)|"
    r"failed to (deliver|send)|encountered delivery problems|could not be reached|returned to you|"
    r"not yet been delivered|still being retried|will continue to attempt|message was not accepted|"
    r"delivery failed|was undeliverable|could not deliver|the recipient was unavailable|was automatically rejected|"
    r"not able to deliver|message not delivered|no valid recipients|\bhas failed\b|was aborted|"
    r"error was detected while processing|has been returned because|"
    r"无法发送|无法送达|невозможно доставить|nicht zugestellt werden|"
    r"^\s*action:\s*(failed|delayed|failure)|^\s*status:\s*[45]\.\d",
    re.IGNORECASE | re.MULTILINE)
_AUTO_REPLY_SUBJECT = re.compile(
    r"out of (the )?office|auto(matic|mated)?[ _-]?(reply|response|answer|antwort)|\bauto:|vacation|\baway\b|"
    r"abwesen|absence|fuera de la oficina|r.ponse automatique|atvalin|atva.in|thank you for (your|you) e-?mail|"
    r"\bautoreply\b|\bOOO\b",
    re.IGNORECASE)
_AUTO_REPLY_BODY = re.compile(
    r"out of (the )?office|on (annual )?(leave|vacation|holiday)|\bi (am|will be) away|i.?m away|will be back|"
    r"auto(matic(ally)?|mated)?[ -]?(generated )?(reply|response)|guest list|waitlisted|allowed list|"
    r"verification|confirm that you.?re|protected by",
    re.IGNORECASE)
# Where the MTA's own notice ends and the returned message begins.
_RETURNED = re.compile(
    r"^\s*(-+ ?(original message|below this line|this is a copy|start of returned|returned mail follows|"
    r"enclosed is a copy|unsent message below|original message follows)|"
    r"original message (follows|headers)|message headers follow|your message reads|"
    r"a summary of the undelivered message|the first \d+ lines of your original|---- ?header of the source mail|"
    r"ursprungshuvuden|original message headers|-----original message-----|"
    r"------ ?this is a copy of (the|your) message|--- ?below this line is a copy|"
    r">?(received|return-path|dkim-signature|delivered-to|x-original-to):\s)",
    re.IGNORECASE)
_ENHANCED = re.compile(r"(?<![\d.])([45])\.(\d{1,3})\.(\d{1,3})(?![\d]|\.\d)")
_BASIC = re.compile(
    r"(?:^|said:?|reason:|returned:?|replied:?|error(?: code)?:?|\(#?|smtp;?|\[|<<<|response:?|says:|reports:|"
    r"failed:?|#|\s-|\s)\s*(421|45[0-4]|5[0-5]\d)(?=[\s\-\]:.),;]|$)",
    re.IGNORECASE)
_DELAY = re.compile(
    r"\bdelayed\b|has been delayed|will (be )?retr(y|ied)|still (being )?(retried|trying)|not yet been delivered|"
    r"will continue to attempt|this is a warning|warning message only|do not need to resend|"
    r"delivery (attempts )?will continue|postponed",
    re.IGNORECASE)
_PERMANENT = re.compile(
    r"failed permanently|permanent (fatal )?error|permanently rejected|given up|giving up|"
    r"will not try|not going to try|had permanent fatal errors",
    re.IGNORECASE)
_FIELD = re.compile(r"^\s*(action|status|diagnostic-code)\s*:\s*(.*)$", re.IGNORECASE)
_SALIENT = re.compile(
    r"[45]\d\d|[45]\.\d|unknown|exist|invalid|not found|no such|no mail|full|quota|space|size|too (big|large)|"
    r"reject|refus|denied|block|listed|spam|virus|disabled|suspend|inactive|unavailable|not valid|not known|"
    r"not recogni|not listed|no longer|delay|retr(y|ied)|temporar|timed? ?out|connection|queue|attempt|loop|hops|"
    r"relay|not accept|not allowed|domain|host|sender|spf|dkim|dmarc|reason|error|because|does not|doesn.?t|"
    r"gateway|routing|aborted|expired|given up|giving up|wrong|exist",
    re.IGNORECASE)
_BOILERPLATE = re.compile(
    r"^(this is the|i'?m sorry|for further assistance|if you do so|delete your own|the mail system|"
    r"this message was created automatically|a message that you sent could not|it'?s attached below|"
    r"please include this problem report|this is an automatically generated)",
    re.IGNORECASE)
_TAGS = re.compile(r"<[^>]{0,2000}>")
_SPACE = re.compile(r"[ \t]+")


@dataclass(frozen=True)
class PlainBounce:
    """What a bounce that is no RFC 3464 report says, in a DSN's terms."""

    action: str  # failed | delayed
    status: str  # "5.1.1"; "5.0.0"/"4.0.0" when only a basic code or the words say it
    diagnostic: str  # the receiver's sentence(s), one line, addresses scrubbed
    smtp_code: int | None = None


def _header(msg: Message, name: str) -> str:
    value = msg.get(name)
    if value is None:
        return ""
    try:
        parts = email.header.decode_header(str(value))
        text = "".join(p.decode(c or "latin-1", "replace") if isinstance(p, bytes) else p for p, c in parts)
    except Exception:  # noqa: BLE001 — an undecodable header is read as it stands
        text = str(value)
    return " ".join(text.split())[:500]


def _decoded(part: Message) -> str:
    try:
        data = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001 — a broken transfer encoding: take the raw text
        data = None
    if data is None:
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    charset = part.get_content_charset() or "latin-1"
    try:
        return data.decode(charset, "replace")
    except LookupError:  # an unknown charset name
        return data.decode("latin-1", "replace")


def _texts(msg: Message) -> list[tuple[str, str]]:
    """(content type, text) of the MTA's own parts, in order; never a message/rfc822 part."""
    out: list[tuple[str, str]] = []
    stack = [msg]
    seen = 0
    while stack and seen < _MAX_PARTS:
        part = stack.pop(0)
        seen += 1
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            if ctype == "message/delivery-status":  # parsed into header blocks
                out.append((ctype, "\n".join(f"{k}: {v}" for block in payload if isinstance(block, Message)
                                             for k, v in block.items())))
            else:
                stack[0:0] = [p for p in payload if isinstance(p, Message)]
            continue
        if ctype.startswith(("image/", "audio/", "video/", "application/")):
            continue
        text = _decoded(part)
        if ctype == "text/html":
            text = html.unescape(_TAGS.sub(" ", re.sub(r"(?i)<br\s*/?>|</p>", "\n", text[:MAX_NOTICE * 2])))
        out.append((ctype, text))
    return out


_HEADER_LINE = re.compile(r"^(received|return-path|from|to|subject|date|message-id|mime-version|delivered-to|"
                          r"x-[\w-]+|dkim-signature|reply-to|content-type)\s*:", re.IGNORECASE)


def notice_text(msg: Message) -> str:
    """The bounce's own words: its text parts up to where the returned message begins.

    A text part that starts like a mail header block is the returned message sent as
    text, and is skipped; once the returned message has begun, only delivery-status
    parts are read further.
    """
    lines: list[str] = []
    size = 0
    returned = False
    for ctype, text in _texts(msg):
        if returned and ctype != "message/delivery-status":
            continue
        first = next((line for line in text[:2000].splitlines() if line.strip()), "")
        if ctype != "message/delivery-status" and lines and _HEADER_LINE.match(first):
            returned = True
            continue
        for line in text[:MAX_NOTICE].splitlines():
            if _RETURNED.match(line) and lines:
                returned = True
                break
            line = _SPACE.sub(" ", line).rstrip()
            if not line.strip():
                continue
            lines.append(line)
            size += len(line) + 1
            if size >= MAX_NOTICE:
                return "\n".join(lines)
    return "\n".join(lines)


def _logical_lines(text: str) -> list[str]:
    """Lines with their indented continuations joined (Postfix and Sendmail wrap replies)."""
    out: list[str] = []
    for line in text.splitlines():
        if out and line[:1] in (" ", "\t") and not line.strip().startswith(("<", "*", "-")) \
                and not _FIELD.match(line):
            out[-1] = out[-1] + " " + line.strip()
        else:
            out.append(line.strip())
    return [line for line in out if line]


def is_auto_reply(msg: Message, subject: str, text: str) -> bool:
    headers = " ".join(f"{k}:{v}" for k, v in msg.items()[:200]).lower()
    if "x-autoreply" in headers or "x-autorespond" in headers or "precedence:auto_reply" in headers.replace(" ", ""):
        return True
    return bool(_AUTO_REPLY_SUBJECT.search(subject) or _AUTO_REPLY_BODY.search(text[:3000]))


def is_bounce(msg: Message, subject: str, text: str) -> bool:
    """A mail system's notice that a message was not (yet) delivered; not an auto-reply.

    Any one of: the sentences every MTA writes; a mail system's sender *and* a bounce's
    subject; either of those and a status code or the words of a failure.
    """
    daemon = bool(_DAEMON.search(_header(msg, "From")))
    subject_says = bool(_BOUNCE_SUBJECT.search(subject))
    body = bool(_BOUNCE_BODY.search(text))
    if is_auto_reply(msg, subject, text) and not (daemon and (body or subject_says)):
        return False
    if body or (daemon and subject_says):
        return True
    return (daemon or subject_says) and bool(
        _ENHANCED.search(text) or _BASIC.search(text) or classify.has_failure_words(text))


def _status(lines: list[str]) -> tuple[str | None, int | None, int]:
    """(enhanced code, basic code, index of the line) of the first line that holds a code."""
    fields = {}
    for line in lines:
        m = _FIELD.match(line)
        if m:
            fields.setdefault(m[1].lower(), m[2])
    for i, line in enumerate(lines):
        if _FIELD.match(line) and not line.lower().lstrip().startswith(("status", "diagnostic")):
            continue
        enhanced = _ENHANCED.search(line)
        basic = _BASIC.search(line)
        if enhanced or basic:
            code = int(basic[1]) if basic else None
            status = ".".join(enhanced.groups()) if enhanced else None
            if status and code and str(code)[0] != status[0]:
                status = None  # "550 … 4.4.1 in the transcript": the reply's own class wins
            return status, code, i
    return None, None, -1


def read(msg: Message) -> PlainBounce | None:
    """The bounce `msg` is, in a DSN's terms; None when it is not a bounce."""
    subject = _header(msg, "Subject")
    text = notice_text(msg)
    if not is_bounce(msg, subject, text):
        return None
    lines = _logical_lines(text)
    status, code, at = _status(lines)
    fields = {}
    for line in lines:
        m = _FIELD.match(line)
        if m:
            fields.setdefault(m[1].lower(), m[2].strip())
    action_field = (fields.get("action") or "").split(" ", 1)[0].lower()
    delayed = action_field in ("delayed", "delay") or (
        not _PERMANENT.search(text) and bool(_DELAY.search(text) or _DELAY.search(subject)))
    if status is None:
        if code is not None:
            status = f"{str(code)[0]}.0.0"
        else:
            status = "4.0.0" if delayed else "5.0.0"
    action = "delayed" if delayed or status.startswith("4") else "failed"
    salient = [line for line in (lines[at:at + 4] if at >= 0 else []) if line]
    salient += [line for line in lines if _SALIENT.search(line) and not _BOILERPLATE.match(line)
                and line not in salient]
    if not salient:  # the subject last: "Undeliverable: <our headline>" is not the receiver's word
        salient = [line for line in lines if not _BOILERPLATE.match(line)][:6] or [subject]
    diagnostic = " ".join(" ".join(salient).split())[:1500]
    return PlainBounce(action, status, scrub(diagnostic), code)
