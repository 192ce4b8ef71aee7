"""An Atom feed (RFC 4287), written with the standard library's XML writer so that every
title is escaped as XML wants, whatever a headline holds."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass

ATOM = "http://www.w3.org/2005/Atom"
# Characters XML 1.0 does not allow at all (a stray control character in a headline
# would make the whole feed unreadable), and lone surrogates (UTF-8 cannot write them).
_NOT_XML = dict.fromkeys([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0xD800, 0xE000),
                          0xFFFE, 0xFFFF])


@dataclass(frozen=True)
class AtomCategory:
    """One more <category> of an entry: `term` the machine's word (a slug), `label` the
    reader's, `scheme` the IRI whose terms they are."""

    term: str
    label: str = ""
    scheme: str = ""


@dataclass(frozen=True)
class AtomEntry:
    id: str  # a permanent IRI (we use the web copy's URL)
    title: str
    url: str
    updated: dt.datetime
    category: str = ""
    more_categories: tuple[AtomCategory, ...] = ()


def _when(d: dt.datetime) -> str:
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    return d.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _clean(text: str) -> str:
    return text.translate(_NOT_XML)


def atom_feed(*, feed_id: str, title: str, self_url: str, page_url: str, entries: Iterable[AtomEntry],
              updated: dt.datetime, language: str = "ar") -> bytes:
    ET.register_namespace("", ATOM)

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        el = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        if text is not None:
            el.text = _clean(text)
        return el

    feed = ET.Element(f"{{{ATOM}}}feed", {"{http://www.w3.org/XML/1998/namespace}lang": language})
    sub(feed, "id", feed_id)
    sub(feed, "title", title)
    sub(feed, "updated", _when(updated))
    sub(feed, "link", rel="self", type="application/atom+xml", href=self_url)
    sub(feed, "link", rel="alternate", type="text/html", href=page_url)
    author = sub(feed, "author")
    sub(author, "name", title)
    for e in entries:
        entry = sub(feed, "entry")
        sub(entry, "id", e.id)
        sub(entry, "title", e.title)
        sub(entry, "updated", _when(e.updated))
        sub(entry, "published", _when(e.updated))
        sub(entry, "link", rel="alternate", type="text/html", href=e.url)
        if e.category:
            sub(entry, "category", term=_clean(e.category))
        for c in e.more_categories:
            attrs = {"term": _clean(c.term)} | ({"label": _clean(c.label)} if c.label else {}) \
                | ({"scheme": c.scheme} if c.scheme else {})
            sub(entry, "category", **attrs)
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)
