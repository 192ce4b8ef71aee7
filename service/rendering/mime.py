"""MIME for Arabic mail, built by hand because it runs once per recipient.

multipart/alternative (text first, HTML last = preferred), UTF-8, both parts base64:
quoted-printable spends up to six bytes on one Arabic letter (=D8=A7 plus soft breaks),
base64 spends 1.33.  The subject and display names are RFC 2047 encoded words.  Any
header value holding CR or LF is refused: that is how header injection starts.

`PreparedVariant` is the one place header lines and bodies are assembled: the static
stretches of each body are base64-encoded once (three times, one per byte alignment),
and per recipient only the few bytes around the personal links are encoded and the
pieces joined.  base64 of a concatenation equals the concatenation of the base64 of
pieces whose lengths are multiples of 3; lines may be shorter than 76 characters, so the
pieces need not line up with line ends.  `build_message()` is a PreparedVariant for an
audience of one, kept for tools and tests: it has no header code of its own.

Which headers a message carries (List-Id, List-Unsubscribe, VERP, DKIM, …) is decided
in one place, `service.delivery.compose`; this module only encodes and assembles them.
"""

from __future__ import annotations

import binascii
import email.utils
import re
import secrets
import time
import uuid
from collections.abc import Mapping

from markupsafe import escape

from service.rendering.personalise import check_link
from service.rendering.viewmodels import (
    CLICK_FILLER,
    CLICK_TOKEN,
    CLICK_TOKEN_SIZE,
    PREFERENCES_URL,
    UNSUBSCRIBE_URL,
    RenderedVariant,
)

CRLF = b"\r\n"
LINE = 76  # base64 characters per line (RFC 2045)
_CHUNK = LINE // 4 * 3  # 57 input bytes make one full line
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # printable ASCII without ':' (RFC 5322 ftext)
_SIMPLE_ADDR = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+$")
_RESERVED = {
    "from", "to", "subject", "date", "message-id", "mime-version",
    "content-type", "content-transfer-encoding",
}
MAX_HEADER_LINE = 998  # RFC 5322 hard limit
_CLICK_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_-]+$")  # goes into a URL as it is


# ------------------------------------------------------------------ headers


def _check_value(name: str, value: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"header {name}: value must be str, got {type(value).__name__}")
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError(f"header {name}: CR, LF or NUL in the value is refused")
    return value


def _encoded_words(text: str) -> str:
    """RFC 2047 'B' encoded words, each ≤ 75 characters, split between characters."""
    words = []
    chunk = bytearray()
    for ch in text:
        b = ch.encode("utf-8")
        if len(chunk) + len(b) > 45:  # 45 bytes → 60 base64 chars + 12 of wrapper
            words.append(chunk)
            chunk = bytearray()
        chunk += b
    if chunk:
        words.append(chunk)
    return "\r\n ".join(
        "=?utf-8?b?" + binascii.b2a_base64(bytes(w), newline=False).decode("ascii") + "?=" for w in words
    )


def encode_unstructured(value: str) -> str:
    """A header value as is when plain ASCII, else as encoded words."""
    if value.isascii() and "=?" not in value:
        return value
    return _encoded_words(value)


def _encode_domain(domain: str) -> str:
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError("address: the domain is not a valid internationalised domain name") from None


def format_address(value: str, what: str = "address") -> str:
    """`name <local@domain>` or `local@domain`, encoded for a header; ValueError if bad."""
    _check_value(what, value)
    if _SIMPLE_ADDR.match(value):
        return value  # the per-recipient fast path: a plain ASCII address
    name, addr = email.utils.parseaddr(value)
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"{what}: not an email address")
    if not local.isascii():
        raise ValueError(f"{what}: a non-ASCII local part needs SMTPUTF8, which we do not send")
    addr = f"{local}@{_encode_domain(domain)}"
    if not _SIMPLE_ADDR.match(addr):
        raise ValueError(f"{what}: not an email address")
    if not name:
        return addr
    if name.isascii() and not re.search(r'[()<>\[\]:;@\\,."]', name):
        return f"{name} <{addr}>"
    if not name.isascii():
        return f"{_encoded_words(name)} <{addr}>"
    # A name holding specials must be a quoted-string: email.utils.quote() only escapes
    # backslashes and double quotes, it does not add the surrounding quotes.
    return f'"{email.utils.quote(name)}" <{addr}>'


def _header_lines(headers: Mapping[str, str] | None) -> list[bytes]:
    """The caller's extra headers, checked: a valid name, not one this module writes
    itself, no CR/LF/NUL in the value, encoded words for non-ASCII, ≤ 998 characters."""
    lines = []
    for name, value in (headers or {}).items():
        if not _HEADER_NAME.match(name):
            raise ValueError(f"header name {name!r} is not a valid field name")
        if name.lower() in _RESERVED:
            raise ValueError(f"header {name} is set by build_message/PreparedVariant itself")
        line = f"{name}: {encode_unstructured(_check_value(name, value))}".encode("ascii")
        if len(line) > MAX_HEADER_LINE:
            raise ValueError(f"header {name} is longer than {MAX_HEADER_LINE} characters")
        lines.append(line)
    return lines


def _message_id(message_id: str) -> str:
    _check_value("Message-ID", message_id)
    if not (message_id.startswith("<") and message_id.endswith(">") and message_id.isascii() and " " not in message_id):
        raise ValueError("Message-ID must look like <id@domain>")
    return message_id


# ------------------------------------------------------------------ base64 bodies


def b64_lines(data: bytes) -> bytes:
    """base64 in lines of 76 characters joined by CRLF (no trailing CRLF)."""
    enc = binascii.b2a_base64(data, newline=False)
    if len(enc) <= LINE:
        return enc
    return CRLF.join([enc[i : i + LINE] for i in range(0, len(enc), LINE)])


class Base64Template:
    """A body with named holes, base64-encoded ahead of time except around the holes."""

    def __init__(self, text: str, slots: tuple[str, ...]):
        pattern = "(" + "|".join(re.escape(s) for s in slots) + ")" if slots else None
        pieces = re.split(pattern, text) if pattern else [text]
        self.statics = [p.encode("utf-8") for p in pieces[0::2]]
        self.slots = pieces[1::2]
        # For each static piece and each count h of bytes it must lend to complete a
        # pending 3-byte group: (head, pre-encoded middle, tail left pending).  The first
        # piece never has anything pending before it, so only h = 0 is ever used there
        # (which makes a body without holes cost one base64 pass, not three).
        self.pre = [
            [self._split(s, h) if (i or not h) else None for h in range(3)] for i, s in enumerate(self.statics)
        ]

    @staticmethod
    def _split(static: bytes, h: int) -> tuple[bytes, bytes, bytes] | None:
        if len(static) < h:
            return None
        usable = (len(static) - h) // 3 * 3
        return static[:h], b64_lines(memoryview(static)[h : h + usable]), static[h + usable :]

    def render(self, values: Mapping[str, bytes]) -> bytes:
        return CRLF.join(self.lines(values))

    def lines(self, values: Mapping[str, bytes]) -> list[bytes]:
        """The body's base64 as pieces to be joined by CRLF (joined once, with the rest
        of the message, by `_assemble`: a 100 KB body is not copied three times)."""
        out: list[bytes] = []
        pending = b""
        for i, static in enumerate(self.statics):
            if i:
                pending += values[self.slots[i - 1]]
                n = len(pending) // 3 * 3
                if n:
                    out.append(b64_lines(pending[:n]))
                    pending = pending[n:]
            h = (3 - len(pending)) % 3
            split = self.pre[i][h]
            if split is None:  # a static piece shorter than the gap: just carry it
                pending += static
                continue
            head, middle, tail = split
            if h:
                out.append(binascii.b2a_base64(pending + head, newline=False))
            if middle:
                out.append(middle)
            pending = tail
        if pending:
            out.append(binascii.b2a_base64(pending, newline=False))
        return out


class _FixedRun:
    """One stretch of a body between two variable holes (or an end), holding any number
    of holes of one fixed length, for one count h of pending bytes carried in.

    The stretch is X = pending + s0 + T + s1 + T + … + sk.  The bytes of X that base64
    encodes differently per recipient are the 3-byte groups touching the pending bytes or
    a T; those groups, merged where they touch, are the regions.  Everything between
    regions is static and encoded here, once.

    The fast path, which FixedSlotTemplate arranges with its fillers: every T starts on
    a group boundary and is a whole number of groups long, so each region is T alone and
    encodes the same for every hole — per recipient, T is encoded once and the run is one
    `join` of the static stretches around it (plus the group of pending bytes, if any).
    Otherwise: D = pending + T.join(seps) holds every region's bytes, one b2a_base64 in
    C encodes them, and each region is cut out at an offset known in advance.
    """

    def __init__(self, statics: list[bytes], h: int, size: int):
        spans: list[tuple[int, int, bytes | None]] = []  # (start, end, static bytes or None for T/pending)
        pos = 0
        if h:
            spans.append((0, h, None))
            pos = h
        for j, s in enumerate(statics):
            spans.append((pos, pos + len(s), s))
            pos += len(s)
            if j < len(statics) - 1:
                spans.append((pos, pos + size, None))
                pos += size
        n = pos
        regions: list[list[int]] = []
        for start, end, static in spans:
            if static is not None:
                continue
            a, b = start // 3 * 3, min(-(-end // 3) * 3, n)
            if regions and a <= regions[-1][1]:  # touching or overlapping: one region
                regions[-1][1] = max(regions[-1][1], b)
            else:
                regions.append([a, b])

        def static_bytes(a: int, b: int) -> bytes:
            return b"".join(s[max(a, st) - st : min(b, en) - st] for st, en, s in spans
                            if s is not None and st < b and en > a)

        # seps: the static bytes between consecutive T's inside the regions, in order.
        seps: list[bytes] = [b""]
        for a, b in regions:
            for st, en, s in spans:
                if en <= a or st >= b or (st == en and s is not None):
                    continue
                if s is not None:
                    seps[-1] += s[max(a, st) - st : min(b, en) - st]
                elif st or not h:  # a T (the pending bytes are put in front of D instead)
                    seps.append(b"")
        self.seps = seps
        self.h = h
        n3 = n // 3 * 3
        # A last region cut short by the end: its bytes past the last whole group stay
        # pending for what follows (the next variable hole, or the final padding).
        self.dynamic_tail = bool(regions) and regions[-1][1] > n3
        self.static_tail = b"" if self.dynamic_tail else static_bytes(max(n3, regions[-1][1] if regions else 0), n)
        mids: list[bytes] = []
        cuts: list[tuple[int, int]] = []
        prev, offset = 0, 0
        for a, b in regions:
            mids.append(b64_lines(static_bytes(prev, a)) if a > prev else b"")
            whole = min(b, n3) - a
            cuts.append((offset // 3 * 4, (offset + whole) // 3 * 4))
            offset += b - a
            prev = b
        mids.append(b64_lines(static_bytes(prev, n3)) if n3 > prev else b"")
        self.aligned = offset - (n - n3 if self.dynamic_tail else 0)  # bytes of D encoded here
        if cuts and cuts[-1][0] == cuts[-1][1]:  # a last region with no whole group
            cuts.pop()
            mids[-2:] = [mids[-2]]
        self.cuts = cuts
        self.long = [i for i, (a, b) in enumerate(cuts) if b - a > LINE]
        # The output is mids and encoded regions alternating; an empty mid (at either end)
        # is left out, never written as an empty line.
        self.mids = mids
        self.first = 0 if mids[0] else 1
        self.last = 2 * len(cuts) + 1 if mids[-1] else 2 * len(cuts)
        # The fast path: the pending bytes' region (if any) is its own, and every other
        # region is exactly one T, with a static stretch on both sides.
        t_regions = regions[1:] if h else regions
        lead_ok = not h or (regions and regions[0][1] <= 3 and not mids[0])
        self.fast = (size % 3 == 0 and bool(t_regions) and lead_ok and not self.dynamic_tail
                     and all(b - a == size and a % 3 == 0 for a, b in t_regions)
                     and all(mids[2 if h else 1 : -1]) and len(cuts) == len(regions))
        # A run with no fixed hole (after the unsubscribe link, say): as Base64Template
        # does it, the pending group completed, then the middle encoded here.
        self.plain = len(statics) == 1 and n >= 3 and not self.dynamic_tail
        if self.plain:
            self.lead = seps[0] if h else b""
            self.plain_mid = b64_lines(static_bytes(3 if h else 0, n3)) if n3 > (3 if h else 0) else b""
        if self.fast:
            self.lead = seps[0] if h else b""  # the static bytes completing the pending group
            self.fast_mids = mids[1:] if h else mids
            # The run's base64 cut where each encoded token goes (at a mark of '!', which
            # is outside the base64 alphabet, so nothing else is cut); a token at the very
            # start or end of the run has no static stretch there.
            self.mark = b"!" * (size // 3 * 4)
            pieces = [self.mark] * (2 * len(self.fast_mids) - 1)
            pieces[0::2] = self.fast_mids
            first = 0 if self.fast_mids[0] else 1
            last = len(pieces) - (0 if self.fast_mids[-1] else 1)
            self.fast_parts = CRLF.join(pieces[first:last]).split(self.mark)

    def emit(self, out: list[bytes], pending: bytes, value: bytes) -> bytes:
        """Append this run's base64 pieces to `out`; return the bytes left pending."""
        if self.plain:
            if self.h:
                out.append(binascii.b2a_base64(pending + self.lead, newline=False))
            if self.plain_mid:
                out.append(self.plain_mid)
            return self.static_tail
        if self.fast:
            if self.h:
                out.append(binascii.b2a_base64(pending + self.lead, newline=False))
            # One join in C: the run as one piece (bytes.replace of the marks costs ten
            # times more, and a few hundred pieces cost the message's join more than
            # this copy does).
            out.append(binascii.b2a_base64(value, newline=False).join(self.fast_parts))
            return self.static_tail
        data = pending + value.join(self.seps)
        enc = binascii.b2a_base64(data[: self.aligned], newline=False)
        encs = [enc[a:b] for a, b in self.cuts]
        for i in self.long:
            e = encs[i]
            encs[i] = CRLF.join([e[j : j + LINE] for j in range(0, len(e), LINE)])
        pieces: list[bytes] = [b""] * (2 * len(encs) + 1)
        pieces[0::2] = self.mids
        pieces[1::2] = encs
        out += pieces[self.first : self.last]
        return data[self.aligned :] + self.static_tail


class FixedSlotTemplate:
    """A Base64Template whose body also holds one fixed-length hole, as often as it likes:
    the reader's click token in every tracked link of a digest (service/clicks).

    Holes of variable length (the unsubscribe and preferences links) cut the body into
    runs; within a run every fixed hole sits at a known offset, so a run is planned once
    per pending-byte count (`_FixedRun`).  With a `filler` (a byte the hole's reader
    ignores: `~` before a click token), up to two fillers go before each hole so that it
    starts on a base64 group boundary; a hole whose size is a multiple of 3 then encodes
    the same wherever it is, and a recipient's whole run costs one base64 call and one
    join — not the per-hole Python work of Base64Template, which for the 120 links of a
    40-article digest made each message several times dearer.
    """

    def __init__(self, text: str, slots: tuple[str, ...], fixed: str, size: int, filler: bytes | None = None):
        if size < 1:
            raise ValueError("a fixed hole holds at least one byte")
        if filler is not None and len(filler) != 1:
            raise ValueError("a filler is one byte")
        self.fixed, self.size = fixed, size
        pattern = "(" + "|".join(re.escape(s) for s in (*slots, fixed)) + ")"
        pieces = re.split(pattern, text)
        runs: list[list[bytes]] = [[pieces[0].encode("utf-8")]]
        self.slots: list[str] = []
        for name, static in zip(pieces[1::2], pieces[2::2], strict=True):
            if name == fixed:
                runs[-1].append(static.encode("utf-8"))
            else:
                self.slots.append(name)
                runs.append([static.encode("utf-8")])
        self.runs = [[_FixedRun(self._aligned(run, h, filler), h, size) if (i or not h) else None for h in range(3)]
                     for i, run in enumerate(runs)]

    def _aligned(self, statics: list[bytes], h: int, filler: bytes | None) -> list[bytes]:
        """The run's static pieces, each followed by the fillers that put the next hole on
        a group boundary (for h pending bytes carried in)."""
        if filler is None:
            return statics
        out, pos = [], h
        for j, static in enumerate(statics):
            pos += len(static)
            if j < len(statics) - 1:
                pad = -pos % 3
                static += filler * pad
                pos += pad + self.size
            out.append(static)
        return out

    def lines(self, values: Mapping[str, bytes]) -> list[bytes]:
        value = values[self.fixed]
        if len(value) != self.size:
            raise ValueError(f"the fixed hole takes exactly {self.size} bytes")
        out: list[bytes] = []
        pending = b""
        for i, plans in enumerate(self.runs):
            if i:
                pending += values[self.slots[i - 1]]
                n = len(pending) // 3 * 3
                if n:
                    out.append(b64_lines(pending[:n]))
                    pending = pending[n:]
            pending = plans[len(pending)].emit(out, pending, value)
            n = len(pending) // 3 * 3
            if n:  # a run shorter than a group can leave more than two bytes pending
                out.append(b64_lines(pending[:n]))
                pending = pending[n:]
        if pending:
            out.append(binascii.b2a_base64(pending, newline=False))
        return out

    def render(self, values: Mapping[str, bytes]) -> bytes:
        return CRLF.join(self.lines(values))


# ------------------------------------------------------------------ assembly


def _part_head(content_type: str) -> bytes:
    return b"Content-Type: " + content_type.encode("ascii") + b'; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'


_TEXT_HEAD = _part_head("text/plain")
_HTML_HEAD = _part_head("text/html")


_date_line: tuple[int, bytes] = (0, b"")


def _date_header() -> bytes:
    """`Date: …` for the current second, formatted once per second: formatdate costs
    ~2.5 µs, an eighth of a recipient's whole assembly."""
    global _date_line
    now = int(time.time())
    cached = _date_line
    if cached[0] != now:
        cached = _date_line = (now, b"Date: " + email.utils.formatdate(now, usegmt=True).encode("ascii"))
    return cached[1]


def _html_attr(url: str) -> bytes:
    """A link checked by check_link (no quote, no < or >) as it goes in an href: only & and
    ' can be left to escape, and our links have neither."""
    return (url if "&" not in url and "'" not in url else str(escape(url))).encode("utf-8")


def _new_boundary() -> bytes:
    # '_' and '.' are outside the base64 alphabet, so no body line can equal it.
    return b"=_nashra." + secrets.token_hex(12).encode("ascii")


def _each_then_crlf(pieces: list[bytes]) -> list[bytes]:
    """[p0, CRLF, p1, CRLF, …] built by list operations in C: a digest with tracked links
    has a few hundred pieces (service/clicks), and a Python loop over them costs more
    than the rest of the message."""
    out = [CRLF] * (2 * len(pieces))
    out[0::2] = pieces
    return out


def _assemble(head: list[bytes], boundary: bytes, text_lines: list[bytes], html_lines: list[bytes]) -> bytes:
    """The whole message in one join: headers, then text first and HTML last (preferred)."""
    out = [
        CRLF.join(head),
        CRLF,
        b'Content-Type: multipart/alternative; boundary="' + boundary + b'"\r\n\r\n',
        b"--" + boundary + CRLF,
        _TEXT_HEAD,
    ]
    out += _each_then_crlf(text_lines or [b""])  # an empty body is still one (empty) line
    out += (b"--" + boundary + CRLF, _HTML_HEAD)
    out += _each_then_crlf(html_lines or [b""])
    out.append(b"--" + boundary + b"--" + CRLF)
    return b"".join(out)


def build_message(
    *,
    subject: str,
    html: str,
    text: str,
    from_addr: str,
    to_addr: str,
    headers: dict[str, str] | None = None,
    message_id: str | None = None,
) -> bytes:
    """One complete message (CRLF line ends), ready for SMTP DATA, from bodies already
    personalised.  The same assembly as every other message (a PreparedVariant whose
    bodies have no holes), without any of the headers `service.delivery.compose` adds:
    service mail goes through that composer, this is for tools and tests."""
    prepared = PreparedVariant(RenderedVariant(subject=subject, html=html, text=text), from_addr=from_addr, slots=())
    return prepared.build(to_addr=to_addr, headers=headers, message_id=message_id)


class PreparedVariant:
    """A rendered variant made ready for fast per-recipient messages.

    Everything that is the same for the whole audience (From, Subject, the static
    headers, the boundary, most of both bodies' base64) is computed here, once.  Per
    recipient `build()` adds To, Date, Message-ID and the caller's per-recipient headers.
    """

    def __init__(
        self,
        variant: RenderedVariant,
        *,
        from_addr: str,
        headers: Mapping[str, str] | None = None,
        slots: tuple[str, ...] = (UNSUBSCRIBE_URL, PREFERENCES_URL),
    ):
        self.from_addr = from_addr
        self._static_head = [
            b"From: " + format_address(from_addr, "from_addr").encode("ascii"),
            b"Subject: " + encode_unstructured(_check_value("Subject", variant.subject)).encode("ascii"),
            b"MIME-Version: 1.0",
            *_header_lines(headers),
        ]
        self._static_names = {k.lower() for k in (headers or {})}
        # Tracked links (service/clicks) carry the reader's click token: a fixed-length
        # hole planned once here, so that a digest's 80 links cost a recipient little.
        self._clicks = CLICK_TOKEN in variant.html or CLICK_TOKEN in variant.text
        if self._clicks:
            self._html = FixedSlotTemplate(variant.html, slots, CLICK_TOKEN, CLICK_TOKEN_SIZE, CLICK_FILLER)
            self._text = FixedSlotTemplate(variant.text, slots, CLICK_TOKEN, CLICK_TOKEN_SIZE, CLICK_FILLER)
        else:
            self._html = Base64Template(variant.html, slots)
            self._text = Base64Template(variant.text, slots)
        self._has_links = bool(self._html.slots or self._text.slots)
        self._boundary = _new_boundary()
        self._domain = _encode_domain(
            email.utils.parseaddr(from_addr)[1].rpartition("@")[2] or "nashra.invalid"
        )

    @property
    def tracks_clicks(self) -> bool:
        """Whether the bodies hold tracked links, which need the reader's click token."""
        return self._clicks

    def build(
        self,
        *,
        to_addr: str,
        unsubscribe_url: str | None = None,
        preferences_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        message_id: str | None = None,
        click_token: str | None = None,
    ) -> bytes:
        if unsubscribe_url is None or preferences_url is None:
            if self._has_links:
                raise ValueError("this body holds personal links: unsubscribe_url and preferences_url are required")
            html_values = text_values = {}
        else:
            unsub = check_link(unsubscribe_url, "unsubscribe_url")
            prefs = check_link(preferences_url, "preferences_url")
            html_values = {UNSUBSCRIBE_URL: _html_attr(unsub), PREFERENCES_URL: _html_attr(prefs)}
            text_values = {UNSUBSCRIBE_URL: unsub.encode("utf-8"), PREFERENCES_URL: prefs.encode("utf-8")}
        if self._clicks:
            if click_token is None or len(click_token) != CLICK_TOKEN_SIZE or not _CLICK_TOKEN_CHARS.match(click_token):
                raise ValueError(
                    f"this body holds tracked links: click_token must be {CLICK_TOKEN_SIZE} URL-safe characters")
            token = click_token.encode("ascii")
            html_values = {**html_values, CLICK_TOKEN: token}
            text_values = {**text_values, CLICK_TOKEN: token}
        if headers and self._static_names.intersection(k.lower() for k in headers):
            raise ValueError("a per-recipient header repeats one given to PreparedVariant")
        if message_id is None:
            message_id = f"<{uuid.uuid4().hex}@{self._domain}>"
        head = [
            *self._static_head,
            b"To: " + format_address(to_addr, "to_addr").encode("ascii"),
            _date_header(),
            b"Message-ID: " + _message_id(message_id).encode("ascii"),
            *_header_lines(headers),
        ]
        return _assemble(head, self._boundary, self._text.lines(text_values), self._html.lines(html_values))
