"""Bounces and complaints that arrive by mail, after the relay said 250.

A relay that accepted a message may still fail to deliver it; the failure comes back
later as a delivery status notification (RFC 3464) to the message's VERP envelope
sender, `newsletter+b.<delivery id>.<hmac>@domain`.  A reader who presses "spam" at a
mailbox provider with a feedback loop produces an abuse report (ARF, RFC 5965).  Both
are `multipart/report` messages.  Many MTAs send neither: Exchange, qmail, old Yahoo and
AOL, Postfix's plain notices, GroupWise write a bounce of their own, and real MTAs write
broken MIME.  Such a message (or a report too broken to read field by field) is read by
service/inbound/plain_bounces.py as plain text — its codes and words, never the returned
message — and judged by the same classifier.  `handle_inbound()` reads one (from the bounce server,
source `smtp`, or a bounce mailbox, `imap`), finds the ledger row it names, and hands
what it says to the rules every source shares (service/inbound/actions.py): the status
and the receiver's words are judged by service/inbound/classify.py — a bad address is
`hard`, a delay or a full mailbox `soft`, a refusal of our sender never the reader's
fault — and an ARF `abuse`/`fraud` report is a complaint, `opt-out` an unsubscribe.

The one-off mails (the confirmation and the welcome; an editor's test copy) have no
ledger row: they go out from a signed `newsletter+s.<subscriber id>.<hmac>` (`+e.<editor
id>` for a test copy, service/delivery/compose.py), and a report addressed there acts on
the reader it names instead of a row:

the same rules, with no row to mark (a confirmation that bounces is an address nobody
will confirm; a welcome that bounces, one the next digest would bounce from too); a
report about an editor's test copy is ignored (no reader's address to act on).

The envelope recipient is the authority: its HMAC proves we minted it, so a report
can only ever touch the row (or the one-off's reader) it was addressed to.  Addresses printed inside a report
(Final-Recipient, Original-Rcpt-To) are never acted upon.  The original message's
headers, when the report carries them, must agree with that row — a report whose
embedded Return-Path or Message-ID names another row is refused.  An ARF report sent
to a plain feedback address (no VERP) is mapped through those embedded headers, which
are HMAC-signed too.

Broken structure is tolerated — a missing boundary, a truncated report, a missing or
malformed Status, no delivery-status part: the message is read as plain text instead.
What is refused (554) is a report that *contradicts itself*, so that two readers could
disagree about its verdict or its row: a field given twice, a CR or LF inside a field, an
Action that is no action, two status parts, embedded headers or quoted Message-IDs that
name another row; and bytes with no header block at all.

Hostile input changes nothing and leaves one log line saying why.  Running
the same report twice changes nothing more: every write is conditional.  The caller
owns the transaction (service/inbound/smtp_server.py opens one `session_scope()` per message).
"""

from __future__ import annotations

import email
import email.errors
import email.policy
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.config import Settings, get_settings
from service.delivery.compose import delivery_for_bounce, one_off_for_bounce
from service.delivery.verdicts import scrub
from service.inbound import actions, classify, plain_bounces
from service.inbound.actions import Feedback, InboundResult
from service.logs import get_logger, redact
from service.models import Delivery, Subscriber

log = get_logger(__name__)

# Our messages stay under ~300 KB even base64-encoded, and a DSN returns at most one
# of them; anything much larger is not a report about our mail.
MAX_INBOUND_BYTES = 2_000_000
ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})

_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")
_DIAG_CODE = re.compile(r"^\s*smtp\s*;\s*([245]\d\d)\b", re.IGNORECASE)
_VERP_SHAPE = re.compile(r"^<?[^@+<>\s]+\+b\.", re.IGNORECASE)
_ONE_OFF_SHAPE = re.compile(r"^<?[^@+<>\s]+\+[se]\.", re.IGNORECASE)
# A one-off's Message-ID (compose.one_off_message_id) says which mail it was, for the audit.
_ONE_OFF_MESSAGE_ID = re.compile(r"^<nashra\.(confirm|welcome|test)\.[0-9a-f]{1,64}@[^<>\s]+>$", re.IGNORECASE)
_FOLD = re.compile(r"\r?\n[ \t]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Non-standard Action words real MTAs write ("Action: failure", "Action: error").
_ACTION_SYNONYMS = {"failure": "failed", "fail": "failed", "error": "failed", "delay": "delayed"}
_BASIC_STATUS = re.compile(r"^([245])\d\d\b")
# Our own ids quoted anywhere in a plain bounce's text (the returned message inline).
_OUR_MESSAGE_ID_TEXT = re.compile(r"<nashra\.\d{1,18}\.\d{1,18}\.[0-9a-f]{10}@[^<>\s]{1,255}>", re.IGNORECASE)
_OUR_VERP_TEXT = re.compile(r"[A-Za-z0-9._%-]{1,64}\+[bse]\.\d{1,18}\.[0-9A-Za-z]{1,64}@[A-Za-z0-9.-]{1,255}")


class BadReport(ValueError):
    """The message contradicts itself (or is no mail at all): it is not read."""


class _Broken(Exception):
    """The report's structure is broken, not contradictory: read it as plain text."""


@dataclass(frozen=True)
class RecipientStatus:
    action: str  # failed | delayed | delivered | relayed | expanded
    status: str  # e.g. "5.1.1"
    diagnostic: str  # scrubbed of addresses, one line


@dataclass(frozen=True)
class Report:
    kind: str  # dsn | arf | plain (a bounce read as text) | none
    recipients: tuple[RecipientStatus, ...] = ()
    feedback_type: str | None = None
    original_return_paths: tuple[str, ...] = ()
    original_message_ids: tuple[str, ...] = ()
    auto_reply: bool = False
    report_type: str | None = None
    notice: str = ""  # the MTA's own words beside a DSN's fields (plain_bounces.notice_text)
    broken: str | None = None  # why a report was read as plain text
    smtp_code: int | None = None  # a plain bounce's basic reply code


# ---------------------------------------------------------------- reading a report


def _field(block: Message, name: str, *, required: bool = False) -> str | None:
    """One header of a report block, unfolded; refuses repeats and embedded CR/LF.

    A field given twice, or a value still holding CR or LF after unfolding (a bare CR
    splits a line for one parser and not for another), is how a crafted report makes
    two readers see two different verdicts: such a report is not read at all.
    """
    values = block.get_all(name) or []
    if len(values) > 1:
        raise BadReport(f"{name} given {len(values)} times in one block")
    if not values:
        if required:
            raise BadReport(f"{name} missing")
        return None
    raw = values[0]
    if not isinstance(raw, str):  # an undecodable header object from compat32
        raw = str(raw)
    value = _FOLD.sub(" ", raw)
    if "\r" in value or "\n" in value or "\x00" in value:
        raise BadReport(f"{name} holds a line break or NUL")
    return value.strip()


def _one_line(text: str, limit: int = 400) -> str:
    return " ".join(scrub(_CONTROL.sub(" ", text)).split())[:limit]


def _recipient(block: Message) -> RecipientStatus:
    raw_action = _field(block, "Action")
    raw_status = _field(block, "Status")
    for name in ("Final-Recipient", "Original-Recipient", "Remote-MTA"):
        _field(block, name)  # validated for repeats and line breaks, never acted upon
    diagnostic = _field(block, "Diagnostic-Code") or ""
    if raw_action is None:
        raise _Broken("Action missing")
    # "failed (Bad destination mailbox address)", "failure": the word, not the comment.
    action = raw_action.lower().split("(", 1)[0].strip()
    action = _ACTION_SYNONYMS.get(action, action)
    if action not in ACTIONS:
        raise BadReport(f"unknown Action {scrub(action[:60])!r}")
    if raw_status is None:
        raise _Broken("Status missing")
    # RFC 3464 allows a trailing comment: "5.1.1 (bad destination mailbox)"; its words count.
    status, _, comment = raw_status.partition("(")
    status, _, rest = status.strip().partition(" ")
    if re.search(r"\d\.\d", rest):  # "5.1.1 2.0.0": two verdicts in one field
        raise BadReport(f"Status holds more than one code: {scrub(raw_status[:60])!r}")
    comment = f"{rest} {comment}"
    if not _STATUS.match(status):
        basic = _BASIC_STATUS.match(status)
        if not basic:
            raise _Broken(f"bad Status {scrub(status[:60])!r}")
        comment = f"{status} {comment}"  # "553 Exceeded maximum inbound message size"
        status = f"{basic[1]}.0.0"
    words = " ".join(w for w in (diagnostic, comment.rstrip(")")) if w.strip())
    return RecipientStatus(action, status, _one_line(words))


def _original_headers(part: Message) -> Message | None:
    ctype = part.get_content_type()
    if ctype == "message/rfc822":
        inner = part.get_payload()
        return inner[0] if isinstance(inner, list) and inner else None
    if ctype == "text/rfc822-headers":
        text = part.get_payload(decode=True) or b""
        return HeaderParser(policy=email.policy.compat32).parsestr(text.decode("utf-8", "replace"))
    return None


def _embedded_ids(original: Message | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if original is None:
        return (), ()
    paths = tuple(_FOLD.sub(" ", str(v)).strip() for v in original.get_all("Return-Path") or [])
    mids = tuple(_FOLD.sub(" ", str(v)).strip() for v in original.get_all("Message-ID") or [])
    return paths, mids


def _defects(msg: Message) -> str | None:
    return ", ".join(sorted({type(d).__name__ for d in msg.defects})) or None


def _first_original(msg: Message) -> Message | None:
    """The returned original's headers, wherever the bounce put them (first one found)."""
    stack, seen = [msg], 0
    while stack and seen < 60:
        part = stack.pop(0)
        seen += 1
        if part is not msg:
            found = _original_headers(part)
            if found is not None:
                return found
        payload = part.get_payload()
        if isinstance(payload, list) and part.get_content_type() not in ("message/rfc822", "message/delivery-status"):
            stack[0:0] = [p for p in payload if isinstance(p, Message)]
    return None


def _strict(msg: Message, auto_reply: bool, paths: tuple[str, ...], mids: tuple[str, ...]) -> Report | None:
    """A DSN or an ARF report read field by field; None when the message claims neither.

    Raises BadReport for a contradiction, _Broken for a structure too broken to read so.
    """
    if msg.get_content_type() != "multipart/report":
        return None
    report_type = (msg.get_param("report-type") or "").lower()
    if report_type not in ("delivery-status", "feedback-report"):
        return None
    parts = msg.get_payload()
    if not isinstance(parts, list) or not parts:
        raise _Broken(f"multipart/report without parts ({_defects(msg) or 'no defect reported'})")

    if report_type == "delivery-status":
        status_parts = [p for p in parts if p.get_content_type() == "message/delivery-status"]
        if len(status_parts) > 1:
            raise BadReport(f"{len(status_parts)} message/delivery-status parts (want one)")
        if not status_parts:
            raise _Broken("no message/delivery-status part")
        blocks = status_parts[0].get_payload()
        if not isinstance(blocks, list) or len(blocks) < 2:
            raise _Broken("delivery-status has no per-recipient fields")
        recipients = tuple(_recipient(b) for b in blocks[1:] if len(b.keys()))
        if not recipients:
            raise _Broken("delivery-status has no per-recipient fields")
        return Report("dsn", recipients, None, paths, mids, auto_reply, report_type,
                      notice=plain_bounces.notice_text(msg)[:4000])

    fb_parts = [p for p in parts if p.get_content_type() == "message/feedback-report"]
    if len(fb_parts) > 1:
        raise BadReport(f"{len(fb_parts)} message/feedback-report parts (want one)")
    if not fb_parts:
        raise _Broken("no message/feedback-report part")
    inner = fb_parts[0].get_payload()
    if not isinstance(inner, list) or not inner:
        raise _Broken("feedback-report is empty")
    ftype = (_field(inner[0], "Feedback-Type") or "").lower()
    if not re.fullmatch(r"[a-z0-9-]{1,40}", ftype):
        raise _Broken(f"bad Feedback-Type {scrub(ftype[:60])!r}")
    return Report("arf", (), ftype, paths, mids, auto_reply, report_type)


def _quoted_ids(message: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Our VERP addresses and Message-IDs anywhere in a plain bounce's text (a returned
    message quoted inline has no MIME part to find them in)."""
    text = message[:MAX_INBOUND_BYTES].decode("latin-1")
    paths = tuple(dict.fromkeys(m.group(0) for m in _OUR_VERP_TEXT.finditer(text)))
    mids = tuple(dict.fromkeys(m.group(0) for m in _OUR_MESSAGE_ID_TEXT.finditer(text)))
    return paths[:20], mids[:20]


def parse_report(message: bytes) -> Report:
    """Read a DSN, an ARF report or a plain-text bounce (no database).

    Raises BadReport for a report that contradicts itself, or bytes that are no mail.
    """
    msg = email.message_from_bytes(message, policy=email.policy.compat32)
    if not msg.keys() and any(isinstance(d, email.errors.MissingHeaderBodySeparatorDefect) for d in msg.defects):
        raise BadReport("no header block: not a mail message")
    auto = (msg.get("Auto-Submitted") or "no").strip().lower()
    auto_reply = auto != "no" or msg.get("X-Autoreply") is not None
    report_type = (msg.get_param("report-type") or "").lower() or None \
        if msg.get_content_type() == "multipart/report" else None
    paths, mids = _embedded_ids(_first_original(msg))
    broken = None
    try:
        report = _strict(msg, auto_reply, paths, mids)
        if report is not None:
            return report
    except _Broken as exc:
        broken = str(exc)
    bounce = plain_bounces.read(msg)
    if bounce is None:
        return Report("none", auto_reply=auto_reply, report_type=report_type, broken=broken)
    quoted_paths, quoted_mids = _quoted_ids(message)
    return Report("plain", (RecipientStatus(bounce.action, bounce.status, _one_line(bounce.diagnostic, 1500)),), None,
                  tuple(dict.fromkeys(paths + quoted_paths)), tuple(dict.fromkeys(mids + quoted_mids)),
                  auto_reply, report_type, broken=broken, smtp_code=bounce.smtp_code)


# ---------------------------------------------------------------- which row


class _Refused(Exception):
    pass


def _message_id_pair(mid: str, settings: Settings) -> tuple[int, int] | None:
    try:
        return actions.message_id_pair(mid, settings)
    except actions.Forged:
        raise _Refused("forged Message-ID in the original headers") from None


def _resolve(session: Session, rcpt_to: str, report: Report, settings: Settings) -> tuple[int | None, Delivery | None]:
    """The one ledger row this report may touch, as (id, row); row None when it is gone.

    Raises _Refused when the report cannot be trusted to name one row of ours.
    """
    addressed = delivery_for_bounce(rcpt_to, settings)  # a forged one was refused before parsing
    path_ids: set[int] = set()
    for path in report.original_return_paths:
        if _VERP_SHAPE.match(path):
            found = delivery_for_bounce(path, settings)
            if found is None:
                raise _Refused("forged Return-Path in the original headers")
            path_ids.add(found)
    pairs = {p for p in (_message_id_pair(mid, settings) for mid in report.original_message_ids) if p}

    if addressed is None:
        if report.kind != "arf":
            raise _Refused("not addressed to a VERP bounce address")
        if len(path_ids) > 1 or len(pairs) > 1:
            raise _Refused("the original headers name several deliveries")
        if path_ids:
            addressed = path_ids.pop()
        elif pairs:
            edition_id, subscriber_id = pairs.pop()
            row = actions.locked_row(session, Delivery.edition_id == edition_id, Delivery.subscriber_id == subscriber_id)
            return (row.id if row else None), row
        else:
            raise _Refused("cannot tell which delivery this report is about")
    elif path_ids - {addressed}:
        raise _Refused("the original headers name another delivery")
    row = actions.locked_row(session, Delivery.id == addressed)
    if row is not None and pairs - {(row.edition_id, row.subscriber_id)}:
        raise _Refused("the original Message-ID names another delivery")
    return addressed, row


def _one_off_target(rcpt_to: str, report: Report, settings: Settings) -> tuple[str, int] | None:
    """("subscriber" | "editor", id) when the report is about a one-off mail; None when it
    is about a ledger row (or about nothing of ours: `_resolve` says so).

    Addressed to a one-off's VERP address, its embedded headers must not name anything
    else; an ARF report to a plain feedback address is a one-off's when its original
    Return-Path is a signed one-off address, and nothing else is named.
    Raises _Refused for a forged or contradictory report.
    """
    addressed = one_off_for_bounce(rcpt_to, settings)
    embedded: set[tuple[str, int]] = set()
    names_a_row = False
    for path in report.original_return_paths:
        if _VERP_SHAPE.match(path):
            names_a_row = True
        elif _ONE_OFF_SHAPE.match(path):
            found = one_off_for_bounce(path, settings)
            if found is None:
                raise _Refused("forged one-off Return-Path in the original headers")
            embedded.add(found)
    names_a_row = names_a_row or any(_message_id_pair(mid, settings) for mid in report.original_message_ids)
    if addressed is not None:
        if names_a_row or embedded - {addressed}:
            raise _Refused("the original headers name another message")
        return addressed
    if report.kind != "arf" or delivery_for_bounce(rcpt_to, settings) is not None or not embedded:
        return None
    if names_a_row or len(embedded) > 1:
        raise _Refused("the original headers name several messages")
    return embedded.pop()


def _one_off_kind(report: Report) -> str | None:
    for mid in report.original_message_ids:
        m = _ONE_OFF_MESSAGE_ID.match(mid)
        if m:
            return m[1].lower()
    return None


# ---------------------------------------------------------------- what it says


# The order reports are weighed in when a DSN names several recipients (one of ours):
# the most final answer wins.
_WEIGHT = {None: 0, "delivered": 1, "soft": 2, "failed": 3, "refusal": 4, "hard": 5}


def feedback_of(report: Report, source: str) -> Feedback | None:
    """What a parsed report says, as one Feedback (None: nothing to act on)."""
    if report.kind == "arf":
        if report.feedback_type not in actions.COMPLAINT_TYPES:
            return None
        return Feedback("complaint", source, feedback_type=report.feedback_type)
    judged = [(_judge(r, report.notice), r) for r in report.recipients]
    kind, worst = max(judged, key=lambda pair: _WEIGHT[pair[0]])
    if kind is None:
        return None
    m = _DIAG_CODE.match(worst.diagnostic)
    code = int(m[1]) if m else report.smtp_code
    what = "DSN" if report.kind == "dsn" else "bounce"
    return Feedback(kind, source, status=worst.status, diagnostic=f"{what} {worst.action} {worst.status} {worst.diagnostic}",
                    smtp_code=code)


def _judge(r: RecipientStatus, notice: str) -> str | None:
    """A DSN's fields first; when they say only "failed, 5.0.0", the MTA's own words."""
    kind = classify.kind_of(r.action, r.status, r.diagnostic)
    if kind == "failed" and r.status.endswith(".0.0") and notice:
        kind = classify.kind_of(r.action, r.status, f"{r.diagnostic} {notice}")
    return kind


def handle_inbound(session: Session, rcpt_to: str, message: bytes, settings: Settings | None = None, *,
                   source: str = "smtp") -> InboundResult:
    """Read one inbound report addressed to `rcpt_to` and apply it to the ledger.

    Never commits; writes nothing unless the report is genuine and new.  Logs exactly
    one line of its own (ids, never an address).
    """
    settings = settings or get_settings()
    result = _handle(session, rcpt_to, message, settings, source)
    fields = {"delivery_id": result.delivery_id, "changed": result.changed, "source": source, **result.details}
    if result.status:
        fields["status"] = result.status
    if result.outcome == "rejected":
        log.warning("bounce.rejected", reason=result.reason, rcpt=redact(rcpt_to), size=len(message), **fields)
    elif result.outcome == "ignored":
        log.info("bounce.ignored", reason=result.reason, **fields)
    else:
        log.info(f"bounce.{result.outcome}", **fields)
    return result


def _handle(session: Session, rcpt_to: str, message: bytes, settings: Settings, source: str) -> InboundResult:
    if len(message) > MAX_INBOUND_BYTES:
        return InboundResult("rejected", reason=f"message of {len(message)} bytes is over {MAX_INBOUND_BYTES}")
    if len(rcpt_to) > 320 or any(c in rcpt_to for c in "\r\n\x00"):
        return InboundResult("rejected", reason="unusable recipient address")
    if delivery_for_bounce(rcpt_to, settings) is None and _VERP_SHAPE.match(rcpt_to.strip()):
        return InboundResult("rejected", reason="forged VERP address (bad signature)")
    if one_off_for_bounce(rcpt_to, settings) is None and _ONE_OFF_SHAPE.match(rcpt_to.strip()):
        return InboundResult("rejected", reason="forged one-off VERP address (bad signature)")
    try:
        report = parse_report(message)
    except BadReport as exc:
        return InboundResult("rejected", reason=str(exc))
    except Exception as exc:  # noqa: BLE001 — the stdlib parser on hostile bytes
        return InboundResult("rejected", reason=f"unreadable message ({type(exc).__name__})")

    if report.kind == "none":
        why = "auto-reply" if report.auto_reply else f"not a bounce or complaint report ({report.report_type or 'no report'})"
        return InboundResult("ignored", delivery_id=delivery_for_bounce(rcpt_to, settings), reason=why)

    try:
        one_off = _one_off_target(rcpt_to, report, settings)
        if one_off is None:
            delivery_id, row = _resolve(session, rcpt_to, report, settings)
    except _Refused as exc:
        return InboundResult("rejected", reason=str(exc))

    fb = feedback_of(report, source)
    if one_off is not None:
        return _one_off(session, one_off, report, fb, settings)
    if row is None:
        return InboundResult("ignored", delivery_id,
                             reason="no such delivery: the reader or the edition no longer exists")
    ids = {"edition_id": row.edition_id, "subscriber_id": row.subscriber_id}
    if report.kind == "plain":
        ids["format"] = "plain"  # not an RFC 3464 report: read as text (plain_bounces.py)
    if fb is None:
        return InboundResult("ignored", row.id, reason=_why_ignored(report), details=ids)
    sub = session.scalar(sa.select(Subscriber).where(Subscriber.id == row.subscriber_id).with_for_update())
    if sub is None:  # cannot happen while the foreign key cascades; kept for clarity
        return InboundResult("ignored", row.id, reason="the reader no longer exists")
    return actions.apply(session, fb, sub, row, ids=ids, settings=settings)


def _why_ignored(report: Report) -> str:
    if report.kind == "arf":
        return f"feedback type {report.feedback_type}"
    what = "DSN" if report.kind == "dsn" else "bounce"
    return f"{what} action " + ", ".join(sorted({r.action for r in report.recipients}))


def _one_off(session: Session, target: tuple[str, int], report: Report, fb: Feedback | None,
             settings: Settings) -> InboundResult:
    """A report about a confirmation or welcome (or an editor's test copy): it acts on
    the reader the signed address names, since there is no ledger row."""
    who, ident = target
    kind = _one_off_kind(report)
    ids: dict = {f"{who}_id": ident, "one_off": kind or "unknown"}
    if who != "subscriber":
        return InboundResult("ignored", reason="a report about an editor's test copy", details=ids)
    if fb is None:
        return InboundResult("ignored", reason=_why_ignored(report), details=ids)
    sub = session.scalar(sa.select(Subscriber).where(Subscriber.id == ident).with_for_update())
    if sub is None:
        return InboundResult("ignored", reason="the reader no longer exists", details=ids)
    return actions.apply(session, fb, sub, None, target=f"subscriber:{sub.id}", ids=ids, settings=settings)
