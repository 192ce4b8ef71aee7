"""Bytes from the network → well-formed UTF-8 XML without a DTD, or a clear refusal.

Two jobs before feedparser may look at a feed:

* Encoding.  Arabic feeds still come in Windows-1256, often with a wrong or missing
  declaration.  Valid UTF-8 with multi-byte sequences is almost never an accident, so
  bytes that decode as UTF-8 are UTF-8 whatever the declaration says; otherwise the
  declaration, then the HTTP charset, then Windows-1256 (the region's legacy encoding).
  The text is re-encoded as UTF-8 and the declaration rewritten to match, so that
  nothing downstream second-guesses it.
* Safety.  defusedxml parses the document with DTDs, entity declarations and external
  references forbidden: a billion-laughs or XXE payload is refused before any parser
  that would expand it sees the bytes.  A feed that is not well-formed is refused too;
  a lenient parser's guess at a broken feed is not something to mail to readers.
"""

from __future__ import annotations

import codecs
import re
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as safe_fromstring

from service.articles.fetch import FeedError

LEGACY_DEFAULT = "windows-1256"
_DECL_RE = re.compile(rb"^\s*<\?xml[^>]*?\?>", re.S)
_DECL_ENCODING_RE = re.compile(rb"""encoding\s*=\s*["']([A-Za-z0-9._\-]+)["']""")
_CHARSET_RE = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9._\-]+)", re.I)
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


class FeedFormatError(FeedError):
    """The body is not a feed we will parse (malformed, hostile, HTML, unknown format)."""


def _codec(name: str | None) -> str | None:
    if not name:
        return None
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def declared_encoding(body: bytes) -> str | None:
    """The codec named by the XML declaration, if there is one and Python knows it."""
    decl = _DECL_RE.match(body[:300])
    found = _DECL_ENCODING_RE.search(decl.group(0)) if decl else None
    return _codec(found.group(1).decode("ascii")) if found else None


def decode_feed(body: bytes, content_type: str = "") -> tuple[str, str]:
    """(text, encoding used).  Raises FeedFormatError if no candidate decodes the bytes."""
    for bom, encoding in _BOMS:
        if body.startswith(bom):
            try:
                return body[len(bom) :].decode(encoding), encoding
            except UnicodeDecodeError:
                raise FeedFormatError(f"byte order mark says {encoding} but the body is not") from None
    declared = declared_encoding(body)
    http_match = _CHARSET_RE.search(content_type or "")
    from_http = _codec(http_match.group(1)) if http_match else None
    candidates = ["utf-8", declared, from_http, _codec(LEGACY_DEFAULT)]
    for encoding in dict.fromkeys(c for c in candidates if c):
        if encoding.startswith("utf-16") or encoding.startswith("utf-32"):
            continue  # only with a BOM; otherwise a declaration lying about UTF-16 garbles everything
        try:
            return body.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise FeedFormatError("cannot decode the feed: not UTF-8, the declared encoding, or Windows-1256")


def as_utf8_xml(text: str) -> bytes:
    """The document as UTF-8, its declaration (if any) saying so; line numbers unchanged."""
    data = text.encode("utf-8")
    match = _DECL_RE.match(data)
    if match:
        return b'<?xml version="1.0" encoding="utf-8"?>' + data[match.end() :]
    return data  # no declaration: XML's default is UTF-8


def looks_like_html(text: str) -> bool:
    """A web page where a feed should be (a moved feed, a login wall, a CDN error page)."""
    head = re.sub(r"^(\s|<\?xml[^>]*\?>|<!--.*?-->)*", "", text[:4000], flags=re.S).lower()
    return head.startswith(("<!doctype html", "<html"))


def parse_safely(data: bytes) -> Element:
    """The root element, or FeedFormatError: DTDs, entities and malformed XML are refused."""
    try:
        return safe_fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        kind = type(exc).__name__  # DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
        raise FeedFormatError(f"refused: the feed declares a DTD or entities ({kind})") from None
    except ParseError as exc:
        line, column = getattr(exc, "position", (0, 0))
        reason = str(exc).split(":", 1)[0]
        raise FeedFormatError(f"not well-formed XML: {reason} at line {line}, column {column}") from None
