"""The one composer: every message Nashra sends is built here, and handed to a Sender.

Digests, alerts and corrections (one ledger row each, thousands per variant), and the
one-off mails — the double-opt-in confirmation, the welcome, an editor's test copy of
an alert, «إدارة اشتراكك» — take the same two steps:

* `prepare()`, once per edition variant (once per message for a one-off): everything
  the audience shares — From, Subject, List-Id, List-Unsubscribe-Post, Feedback-ID,
  the MIME boundary and most of both bodies' base64 — through the rendering package's
  `PreparedVariant`, the only code that writes header lines;
* `compose()`, once per recipient: their two links (a ledger mail's unsubscribe link
  names its edition, `?e=<id>`, for the edition's unsubscribe count), To, Date, their
  Message-ID, their List-Unsubscribe, the VERP envelope sender, their click token when the variant's links
  are tracked (service/clicks), and a DKIM signature when configured.

Which headers each kind carries is the table `KINDS` below, and nowhere else:

| kind                        | List-Unsubscribe (+ -Post) | Precedence | envelope sender (VERP)    |
| --------------------------- | -------------------------- | ---------- | ------------------------- |
| digest, alert, correction,  | yes                        | bulk       | `+b.<delivery id>` (row)  |
| catchup, special            |                            |            |                           |
| welcome, manage             | yes                        | —          | `+s.<subscriber id>`      |
| confirm                     | no (see below)             | —          | `+s.<subscriber id>`      |
| test (an editor's copy)     | no; `X-Nashra-Test`, and   | —          | `+e.<editor id>`          |
|                             | the subject marked         |            |                           |

All of them: From, To, Subject, Date, Message-ID on our domain, MIME-Version, List-Id,
Feedback-ID, and DKIM-Signature when DKIM_SELECTOR and DKIM_PRIVATE_KEY_PATH are set.

An edition of a newsletter (every edition but corrections, catch-ups and the one-offs) is
prepared with its `Newsletter`: then the List-Id is the newsletter's own
(`catalogue.list_id`: readers filter each list apart), the From display name its own
(`catalogue.from_header`; the address stays MAIL_FROM's: one domain, one DKIM key), and a
reader's List-Unsubscribe URL names it beside the edition (`?e=<edition>&n=<newsletter>`),
so the one-click POST takes them off that newsletter only, not off everything.  Without
one (transactional mail, corrections) the table's List-Id and MAIL_FROM are used as before.

* The welcome is subscribed mail (the reader has just confirmed), so it carries the
  RFC 8058 one-click pair, as Gmail and Yahoo require of subscribed mail.
* «إدارة اشتراكك» (manage: the preferences link, sent when someone signs up with the
  address of a reader already subscribed) goes to a subscribed reader too, so it carries
  the same pair: the reader it reaches can leave in one click.
* The confirmation carries no List-Unsubscribe: the reader is not subscribed to
  anything yet — this message asks whether they want to be — so there is nothing to
  unsubscribe from, and a mailbox provider's "unsubscribe" button on it would promise
  an action that has no meaning.  Ignoring it is the way out: a pending reader gets no
  other mail and is forgotten after PENDING_DAYS.  It is a transactional message the
  reader asked for by submitting the form, which the bulk-sender rules exempt.
* A test copy goes to an editor's address, not a subscriber's: no unsubscribe, but it
  is marked (`X-Nashra-Test: editor-copy` and the `[تجربة]` subject prefix) so nobody
  takes it for the real send.

Message-ID: a ledger row's is stable (`<nashra.<edition>.<subscriber>.<hmac>@domain>`),
so a message re-sent after a crash carries the same id and mail clients fold the
duplicate.  A one-off's is unique per message (`<nashra.<kind>.<random>@domain>`): a
reader who asks for the confirmation twice must see the second one, not have it folded
away.  The bounce reader only acts on the first shape (digits, HMAC-checked), and a
one-off's id cannot be mistaken for it.

The Return-Path header is written by the receiving MTA from the envelope sender (MAIL
FROM); we set the envelope sender and never write a Return-Path of our own.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Protocol

import sqlalchemy as sa

from service.clicks.signing import reader_token
from service.config import Settings, ascii_mail_from, get_settings, parse_smtp_urls
from service.delivery import smtp_pool
from service.delivery.verdicts import Outcome
from service.models import Edition, Newsletter
from service.newsletters import catalogue
from service.rendering.mime import PreparedVariant
from service.rendering.viewmodels import RenderedVariant
from service.subscribers.tokens import link

CRLF = "\r\n"
# Headers DKIM signs; the List-Unsubscribe pair must be covered (RFC 8058 §4).  A listed
# header a message lacks (a confirmation's List-Unsubscribe) is signed as absent, so
# nobody can add one on the way without breaking the signature.
DKIM_HEADERS = [
    b"From", b"To", b"Subject", b"Date", b"Message-ID", b"MIME-Version", b"Content-Type",
    b"List-Id", b"List-Unsubscribe", b"List-Unsubscribe-Post", b"Feedback-ID", b"X-Nashra-Test",
]
TEST_SUBJECT_PREFIX = "[تجربة] "


@dataclass(frozen=True)
class Kind:
    """What a kind of message carries (the table in the module docstring)."""

    subscribed: bool  # List-Unsubscribe + List-Unsubscribe-Post, links from the reader's tokens
    bulk: bool  # Precedence: bulk
    list_of: str  # whose List-Id: "digest" (settings.list_id) or "alert" (alerts.…)
    test: bool = False  # an editor's copy: X-Nashra-Test, subject prefix


KINDS: dict[str, Kind] = {
    "digest": Kind(subscribed=True, bulk=True, list_of="digest"),
    "alert": Kind(subscribed=True, bulk=True, list_of="alert"),
    "correction": Kind(subscribed=True, bulk=True, list_of="digest"),
    "catchup": Kind(subscribed=True, bulk=True, list_of="alert"),  # the alerts quiet hours held
    "special": Kind(subscribed=True, bulk=True, list_of="digest"),  # an editor's own edition, to the digest's readers
    "welcome": Kind(subscribed=True, bulk=False, list_of="digest"),
    "manage": Kind(subscribed=True, bulk=False, list_of="digest"),  # the preferences link, asked for again
    "confirm": Kind(subscribed=False, bulk=False, list_of="digest"),
    "test": Kind(subscribed=False, bulk=False, list_of="alert", test=True),
}


@dataclass(frozen=True)
class VariantTemplate:
    """One edition × variant (or one one-off message), ready to be personalised."""

    edition_id: int | None  # None for a one-off
    kind: str
    variant: str
    prepared: PreparedVariant
    subscribed: bool = True
    newsletter_id: int | None = None  # whose one-click leave the List-Unsubscribe URL asks for


@dataclass(frozen=True)
class Composed:
    envelope_from: str
    message_id: str
    data: bytes


def _kind(kind: str) -> Kind:
    try:
        return KINDS[kind]
    except KeyError:
        # A typo must not quietly make subscribed mail without its unsubscribe headers.
        raise ValueError(f"unknown kind of message {kind!r}") from None


def prepare(edition_id: int | None, kind: str, variant: str, subject: str, html: str, text: str,
            settings: Settings | None = None, newsletter: Newsletter | None = None) -> VariantTemplate:
    """Everything the whole audience of a variant shares, computed once; with the edition's
    `newsletter`, its List-Id and From name (and its id for the one-click leave)."""
    settings = settings or get_settings()
    spec = _kind(kind)
    domain = _from_address(settings.mail_from).rpartition("@")[2]
    subject = " ".join(subject.split())  # no CR/LF can reach a header
    if spec.test and not subject.startswith(TEST_SUBJECT_PREFIX.strip()):
        subject = TEST_SUBJECT_PREFIX + subject
    static_headers = {"List-Id": catalogue.list_id(newsletter, settings) if newsletter is not None
                      else list_id(settings, kind)}
    if spec.subscribed:
        static_headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    campaign = edition_id if edition_id is not None else "tx"
    static_headers["Feedback-ID"] = f"{campaign}:{kind}:nashra:{domain}"
    if spec.bulk:
        static_headers["Precedence"] = "bulk"
    if spec.test:
        static_headers["X-Nashra-Test"] = "editor-copy"
    prepared = PreparedVariant(
        RenderedVariant(subject=subject, html=html, text=text),
        from_addr=_from_header(catalogue.from_header(newsletter, settings) if newsletter is not None
                               else settings.mail_from),
        headers=static_headers,
    )
    return VariantTemplate(edition_id, kind, variant, prepared, spec.subscribed,
                           newsletter.id if newsletter is not None else None)


def newsletter_of_edition(conn, edition_id: int) -> Newsletter | None:
    """The edition's newsletter, read on `conn` (a Connection or Session) as a copy bound to
    nothing (the batch caches prepared variants past its transactions); None for an
    edition of none (a correction, a catch-up)."""
    E, N = Edition.__table__, Newsletter.__table__
    row = conn.execute(sa.select(N.c.id, N.c.slug, N.c.name, N.c.kind, N.c.from_name, N.c.list_id)
                       .join_from(E, N, E.c.newsletter_id == N.c.id).where(E.c.id == edition_id)).first()
    if row is None:
        return None
    return Newsletter(id=row.id, slug=row.slug, name=row.name, kind=row.kind, from_name=row.from_name,
                      list_id=row.list_id)


@functools.lru_cache(maxsize=8)
def _from_header(mail_from: str) -> str:
    """MAIL_FROM with its domain as A-labels.  Settings already hold it so (their
    validator); this also covers settings built without validation."""
    return ascii_mail_from(mail_from)


@functools.lru_cache(maxsize=8)
def _through_postmark(smtp_url: str) -> bool:
    """Whether a relay of SMTP_URL is Postmark's: Postmark replaces our Message-ID with its
    own, so its webhooks can find the ledger row only through a metadata header
    (`X-PM-Metadata-nashra_message_id`, service/inbound/webhooks/postmark.py)."""
    return any(t.host.lower().rstrip(".").endswith("postmarkapp.com") for t in parse_smtp_urls(smtp_url))


@functools.lru_cache(maxsize=8)
def _from_address(mail_from: str) -> str:
    """MAIL_FROM's bare address, its domain as A-labels (`xn--…`), parsed once:
    email.utils.parseaddr costs ~40 µs, and every message needs the domain three times
    (VERP envelope sender, Message-ID, List-Unsubscribe's mailto)."""
    return parseaddr(_from_header(mail_from))[1]


@functools.lru_cache(maxsize=8)
def _verp_mac(secret_key: str) -> hmac.HMAC:
    """HMAC-SHA256 under SECRET_KEY with the "nashra.verp." prefix already fed in: each
    signature costs a copy of it, not a new HMAC (two per message: the VERP address, the Message-ID)."""
    return hmac.new(secret_key.encode(), b"nashra.verp.", hashlib.sha256)


def _sig(settings: Settings, *parts: object) -> str:
    mac = _verp_mac(settings.secret_key).copy()
    mac.update(".".join(str(p) for p in parts).encode())
    return mac.hexdigest()[:10]


def _verp(settings: Settings, tag: str, ident: int, *signed: object) -> str:
    local, _, domain = _from_address(settings.mail_from).rpartition("@")
    local = local.split("+", 1)[0]
    return f"{local}+{tag}.{ident}.{_sig(settings, *signed)}@{domain}"


def bounce_address(settings: Settings, delivery_id: int) -> str:
    """VERP: newsletter+b.<delivery id>.<hmac>@domain — no reader address in it."""
    return _verp(settings, "b", delivery_id, delivery_id)


# One-off mails have no ledger row, so no delivery id to put in a `+b.` address.  They
# get a signed VERP address of their own instead, keyed on who it went to:
# `+s.<subscriber id>` (confirmation, welcome) and `+e.<editor id>` (a test copy).  The
# tag is part of what is signed, so no form can be turned into another, and neither
# looks like `+b.` to the bounce reader (which would call it forged).  The bounce server
# verifies them with `one_off_for_bounce()`: a hard bounce of a confirmation or welcome
# suppresses that reader (delivery/bounces.py).  Why not the plain address: it names
# nobody, and its bounces land in a mailbox nobody reads.
_ONE_OFF_TAGS = {"s": "subscriber", "e": "editor"}


def one_off_bounce_address(settings: Settings, *, subscriber_id: int | None = None,
                           editor_id: int | None = None) -> str:
    """VERP for a one-off mail: newsletter+s.<subscriber id>.<hmac>@domain, or +e. for an editor."""
    if (subscriber_id is None) == (editor_id is None):
        raise ValueError("a one-off bounce address names exactly one subscriber or one editor")
    tag, ident = ("s", subscriber_id) if subscriber_id is not None else ("e", editor_id)
    return _verp(settings, tag, ident, tag, ident)


_VERP = re.compile(r"^[^@+]+\+b\.(\d+)\.([0-9a-f]{10})@", re.IGNORECASE)
_ONE_OFF_VERP = re.compile(r"^[^@+]+\+([se])\.(\d{1,18})\.([0-9a-f]{10})@", re.IGNORECASE)


def delivery_for_bounce(address: str, settings: Settings | None = None) -> int | None:
    """The ledger row a bounce was addressed to, or None for a forged/foreign address."""
    settings = settings or get_settings()
    m = _VERP.match(parseaddr(address)[1] or address)
    if not m:
        return None
    delivery_id = int(m[1])
    if not hmac.compare_digest(m[2].lower(), _sig(settings, delivery_id)):
        return None
    return delivery_id


def one_off_for_bounce(address: str, settings: Settings | None = None) -> tuple[str, int] | None:
    """("subscriber", id) or ("editor", id) for a one-off's VERP address; None if forged/foreign."""
    settings = settings or get_settings()
    m = _ONE_OFF_VERP.match(parseaddr(address)[1] or address)
    if not m:
        return None
    tag, ident = m[1].lower(), int(m[2])
    if not hmac.compare_digest(m[3].lower(), _sig(settings, tag, ident)):
        return None
    return _ONE_OFF_TAGS[tag], ident


def message_id(settings: Settings, edition_id: int, subscriber_id: int) -> str:
    domain = _from_address(settings.mail_from).rpartition("@")[2]
    tag = _sig(settings, "mid", edition_id, subscriber_id)
    return f"<nashra.{edition_id}.{subscriber_id}.{tag}@{domain}>"


def one_off_message_id(settings: Settings, kind: str) -> str:
    """`<nashra.welcome.<random>@domain>`: unique per message, and never of the ledger's shape."""
    domain = _from_address(settings.mail_from).rpartition("@")[2]
    return f"<nashra.{kind}.{secrets.token_hex(10)}@{domain}>"


def list_id(settings: Settings, kind: str) -> str:
    """`<digest.nashra.example>`; alerts (and their test copies) are their own list, so
    readers can filter them."""
    ident = settings.list_id
    if _kind(kind).list_of == "alert" and ident.startswith("digest."):
        ident = "alerts." + ident.removeprefix("digest.")
    return f"<{ident}>"


@functools.lru_cache(maxsize=4)
def _dkim_key(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def dkim_sign(data: bytes, settings: Settings) -> bytes:
    if not (settings.dkim_selector and settings.dkim_private_key_path):
        return data
    # Only when DKIM is configured: dkimpy pulls in dnspython, ~0.2-0.3 s of imports
    # that every process importing compose (web, bounce server, workers) would pay.
    import dkim

    domain = _from_address(settings.mail_from).rpartition("@")[2]
    signature = dkim.sign(
        data,
        settings.dkim_selector.encode(),
        domain.encode(),
        _dkim_key(str(settings.dkim_private_key_path)),
        include_headers=DKIM_HEADERS,
        canonicalize=(b"relaxed", b"relaxed"),
    )
    return signature + data


def _leave_query(tpl: VariantTemplate) -> str:
    """`?e=<edition>&n=<newsletter>` (either may be missing): the edition the reader leaves
    from, for its unsubscribe count (issue 18), and the newsletter the one-click POST takes
    them off.  Unsigned, and why that is enough, in service/editions/unsubscribes.py: the
    token alone says who; these only narrow what is counted and what is left."""
    params = [f"e={tpl.edition_id}"] if tpl.edition_id is not None else []
    if tpl.newsletter_id is not None:
        params.append(f"n={tpl.newsletter_id}")
    return "?" + "&".join(params) if params else ""


def compose(
    tpl: VariantTemplate,
    *,
    to_addr: str,
    delivery_id: int | None = None,
    subscriber_id: int | None = None,
    token_version: int | None = None,
    editor_id: int | None = None,
    settings: Settings | None = None,
) -> Composed:
    """One recipient's message: their links, their Message-ID, their List-Unsubscribe,
    their envelope sender, signed.

    A ledger row passes delivery_id (its VERP address, its stable Message-ID); a one-off
    passes none, and is addressed back by subscriber_id, or editor_id for a test copy.
    """
    settings = settings or get_settings()
    domain = _from_address(settings.mail_from).rpartition("@")[2]
    headers = None
    if subscriber_id is not None and token_version is not None:
        unsubscribe_url = link("unsubscribe", subscriber_id, token_version, settings)
        preferences_url = link("preferences", subscriber_id, token_version, settings)
        if tpl.subscribed:
            token = unsubscribe_url.rsplit("/", 1)[1]
            unsubscribe_url += _leave_query(tpl)
            headers = {
                "List-Unsubscribe": f"<{unsubscribe_url}>, <mailto:unsubscribe@{domain}?subject=unsubscribe%20{token}>",
            }
    elif tpl.subscribed:
        raise ValueError(f"{tpl.kind} is subscribed mail: it needs the reader's subscriber_id and token_version")
    else:  # an editor's copy: the links lead to the front page, as in the preview
        unsubscribe_url = preferences_url = settings.public_url + "/"
    if delivery_id is not None:
        if tpl.edition_id is None or subscriber_id is None:
            raise ValueError("a ledger row's message needs its edition and its subscriber")
        envelope_from = bounce_address(settings, delivery_id)
        mid = message_id(settings, tpl.edition_id, subscriber_id)
        if _through_postmark(settings.smtp_url):
            headers = {**(headers or {}), "X-PM-Metadata-nashra_message_id": mid}
    else:
        envelope_from = one_off_bounce_address(settings, subscriber_id=subscriber_id, editor_id=editor_id)
        mid = one_off_message_id(settings, tpl.kind)
    click_token = None
    if tpl.prepared.tracks_clicks:
        if tpl.edition_id is None or subscriber_id is None:
            raise ValueError("tracked links need the edition and the reader (for their click token)")
        # The one personal value unique clicks need, made here and never stored (clicks/signing.py).
        click_token = reader_token(tpl.edition_id, subscriber_id, settings)
    data = tpl.prepared.build(
        to_addr=to_addr,
        unsubscribe_url=unsubscribe_url,
        preferences_url=preferences_url,
        message_id=mid,
        headers=headers,
        click_token=click_token,
    )
    return Composed(envelope_from, mid, dkim_sign(data, settings))


def compose_one(kind: str, variant: RenderedVariant, *, to_addr: str, subscriber_id: int | None = None,
                token_version: int | None = None, editor_id: int | None = None,
                settings: Settings | None = None, newsletter: Newsletter | None = None) -> Composed:
    """A one-off message (confirm, welcome, test): `prepare()` and `compose()` for an
    audience of one, the same path a digest takes (a test copy of a newsletter's edition
    with that newsletter's List-Id and From name)."""
    settings = settings or get_settings()
    tpl = prepare(None, kind, "one-off", variant.subject, variant.html, variant.text, settings=settings,
                  newsletter=newsletter)
    return compose(tpl, to_addr=to_addr, subscriber_id=subscriber_id, token_version=token_version,
                   editor_id=editor_id, settings=settings)


# ---------------------------------------------------------------------- sending


class Sender(Protocol):
    """Hands one composed message to a mail server.

    Returns the Outcome of a message the server took (or may have taken: no reply
    after DATA, RFC 1047, is sent once more under SMTP_AMBIGUOUS=resend).  Raises `smtp.SmtpTransientError` (an
    OSError: try again later — 4xx, server down, TLS/AUTH/policy refusal) or
    `smtp.SmtpError` (final for this recipient: 5xx to RCPT or DATA).
    """

    def send(self, envelope_from: str, recipient: str, data: bytes, /) -> Outcome: ...


class SmtpSender:
    """The relays of SMTP_URL (a relay, Mailpit, the demo's capture server), through the
    same engine as every edition (`smtp_pool.send_now`)."""

    def send(self, envelope_from: str, recipient: str, data: bytes, /) -> Outcome:
        return smtp_pool.send_now(get_settings(), envelope_from, recipient, data)


def send_composed(message: Composed, recipient: str, sender: Sender | None = None) -> Outcome:
    """Send a one-off message now, through `sender` (SMTP by default)."""
    return (sender or SmtpSender()).send(message.envelope_from, recipient, message.data)
