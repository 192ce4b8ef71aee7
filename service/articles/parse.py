"""A feed's bytes → a list of clean article records (no database here).

RSS 2.0/1.0 and Atom 1.0 go through xmlsafe (encoding, no DTDs) and then feedparser for
what it does well: titles, links, ids, authors, categories, raw dates.  feedparser
folds `media:description` into the entry summary and has no notion of a lead-image
caption, so descriptions, bodies and Media RSS elements are read from the (already
defused) element tree.  JSON Feed 1.1 — which feedparser 6 does not read — is parsed here.

Times: a time with a zone is that instant; a time without one (the site writes local
times) is read in TIMEZONE.  A time more than FUTURE_SKEW ahead of the fetch is
clamped to the fetch time: a future date would sort an article above real news forever.
"""

from __future__ import annotations

import copy
import datetime as dt
import email.utils
import html as htmllib
import json
import re
import zoneinfo
from dataclasses import dataclass, field
from urllib.parse import urljoin
from xml.etree.ElementTree import Element, tostring

import feedparser

from service.articles.sanitise import (
    html_to_text,
    is_lead_image_url,
    is_tracker_image,
    markup_to_text,
    sanitise_body,
)
from service.articles.text import clean_text, clean_title, truncate
from service.articles.urls import MAX_URL_LENGTH, absolute_http_url, canonical_url
from service.articles.xmlsafe import (
    FeedFormatError,
    as_utf8_xml,
    declared_encoding,
    decode_feed,
    looks_like_html,
    parse_safely,
)

MRSS = "{http://search.yahoo.com/mrss/}"
ATOM = "{http://www.w3.org/2005/Atom}"
CONTENT_ENCODED = "{http://purl.org/rss/1.0/modules/content/}encoded"
RSS1 = "{http://purl.org/rss/1.0/}"
XHTML = "{http://www.w3.org/1999/xhtml}"
FUTURE_SKEW = dt.timedelta(minutes=5)
MAX_ITEMS = 2000
SUMMARY_LIMIT = 600
TITLE_LIMIT = 500
_IMAGE_EXT_RE = re.compile(r"\.(jpe?g|png|gif|webp|avif)(\?|$)", re.I)


@dataclass
class ParsedItem:
    guid: str
    url: str
    title: str
    summary: str = ""
    body_html: str = ""
    categories: list[str] = field(default_factory=list)
    author: str | None = None
    published_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    date_clamped: bool = False  # the feed gave a time in the future
    lead_image_url: str | None = None
    lead_image_caption: str | None = None
    lead_image_alt: str | None = None
    read_also: list[dict] = field(default_factory=list)
    related: list[dict] = field(default_factory=list)


@dataclass
class ParsedFeed:
    format: str  # rss20, atom10, json11 …
    items: list[ParsedItem]
    encoding: str = "utf-8"
    problems: list[str] = field(default_factory=list)  # items skipped or repaired, one line each


# ------------------------------------------------------------------ dates


def parse_time(raw: str | None, tz: zoneinfo.ZoneInfo, fallback=None) -> dt.datetime | None:
    """RFC 822 or ISO 8601; zone-less times are local to `tz`; None if unreadable."""
    raw = (raw or "").strip()
    if raw:
        value = None
        try:
            value = email.utils.parsedate_to_datetime(raw)
            if value.tzinfo is None and re.search(r"-0000\s*$", raw):
                value = value.replace(tzinfo=dt.UTC)  # RFC 2822: UTC, local zone unknown
        except (TypeError, ValueError, IndexError):
            try:
                value = dt.datetime.fromisoformat(raw.replace(" ", "T", 1) if re.match(r"\d{4}-\d\d-\d\d \d", raw) else raw)
            except ValueError:
                value = None
        if value is not None:
            return value.replace(tzinfo=tz) if value.tzinfo is None else value.astimezone(dt.UTC)
    if fallback is not None:  # feedparser understood a format we do not; it reads it as UTC
        try:
            return dt.datetime(*fallback[:6], tzinfo=dt.UTC)
        except (TypeError, ValueError):
            return None
    return None


def _clamp(value: dt.datetime | None, now: dt.datetime) -> tuple[dt.datetime | None, bool]:
    if value is not None and value > now + FUTURE_SKEW:
        return now, True
    return value, False


# ------------------------------------------------------------------ entry point


def parse_feed(body: bytes, content_type: str, base_url: str, tz: zoneinfo.ZoneInfo, now: dt.datetime) -> ParsedFeed:
    """Raises FeedFormatError for a body that is not a usable feed."""
    text, encoding = decode_feed(body, content_type)
    declared = declared_encoding(body)
    stripped = text.lstrip()
    if not stripped:
        raise FeedFormatError("empty response body")
    if looks_like_html(stripped):
        kind = content_type.split(";")[0].strip() or "no Content-Type"
        raise FeedFormatError(f"got an HTML page, not a feed ({kind})")
    if stripped.startswith(("{", "[")):
        feed = _parse_json_feed(stripped, base_url, tz, now)
    else:
        feed = _parse_xml_feed(as_utf8_xml(text), base_url, tz, now)
    feed.encoding = encoding
    if encoding != "utf-8" and declared != encoding and not stripped.startswith(("{", "[")):
        said = f"declared {declared}" if declared else "no encoding declared"
        feed.problems.insert(0, f"{said}, but the bytes are {encoding}; decoded as {encoding}")
    elif declared and declared != encoding and encoding == "utf-8" and not body.isascii():
        feed.problems.insert(0, f"declared {declared}, but the bytes are valid UTF-8; decoded as UTF-8")
    return feed


# ------------------------------------------------------------------ RSS and Atom


def _item_elements(root: Element) -> tuple[str, list[Element]]:
    tag = root.tag
    if tag == "rss":
        channel = root.find("channel")
        return "rss", channel.findall("item") if channel is not None else []
    if tag == f"{ATOM}feed":
        return "atom", root.findall(f"{ATOM}entry")
    if tag.endswith("}RDF"):
        return "rss1", root.findall(f"{RSS1}item")
    raise FeedFormatError(f"not an RSS or Atom feed (root element <{tag.split('}')[-1]}>)")


def _parse_xml_feed(data: bytes, base_url: str, tz: zoneinfo.ZoneInfo, now: dt.datetime) -> ParsedFeed:
    root = parse_safely(data)
    kind, elements = _item_elements(root)
    parsed = feedparser.parse(
        data,
        sanitize_html=False,  # nh3 does this, with an allow-list made for email
        resolve_relative_uris=False,  # done per attribute in sanitise, against the article URL
        response_headers={"content-location": base_url, "content-type": "application/xml; charset=utf-8"},
    )
    entries = parsed.entries
    if len(elements) != len(entries):  # never seen; then feedparser's view alone
        elements = [None] * len(entries)
    feed = ParsedFeed(format=parsed.get("version") or kind, items=[])
    seen: set[str] = set()
    for index, (entry, element) in enumerate(zip(entries, elements, strict=True), start=1):
        if index > MAX_ITEMS:
            feed.problems.append(f"feed has more than {MAX_ITEMS} items; the rest were ignored")
            break
        raw = _raw_from_xml(kind, element, entry)
        _build(feed, seen, index, raw, base_url, tz, now)
    return feed


def _text(el: Element | None) -> str:
    return (el.text or "") if el is not None else ""


def _raw_from_xml(kind: str, el: Element | None, entry) -> dict:
    title = entry.get("title", "")
    if entry.get("title_detail", {}).get("type") in ("text/html", "application/xhtml+xml"):
        title = html_to_text(title)
    raw = {
        "guid": entry.get("id"),
        "link": entry.get("link"),
        "title": title,
        "author": entry.get("author"),
        "categories": [t.get("term") or t.get("label") or "" for t in entry.get("tags", [])],
        "published": entry.get("published"),
        "published_parsed": entry.get("published_parsed"),
        "updated": entry.get("updated"),
        "updated_parsed": entry.get("updated_parsed"),
        "description": "",
        "content": "",
        "image": None,
        "caption": None,
        "alt": None,
    }
    if el is None:
        content = entry.get("content") or []
        raw["content"] = content[0].get("value", "") if content else ""
        raw["description"] = entry.get("summary", "")
    else:
        raw["guid"] = _guid_as_written(kind, el)
        if kind == "atom":
            raw["description"] = _atom_text(el.find(f"{ATOM}summary"))
            raw["content"] = _atom_text(el.find(f"{ATOM}content"))
        else:
            raw["description"] = _text(el.find("description")) or _text(el.find(f"{RSS1}description"))
            raw["content"] = _text(el.find(CONTENT_ENCODED))
        raw["image"], raw["caption"], raw["alt"] = _media_image(el)
    if not raw["image"]:
        for enclosure in entry.get("enclosures", []):
            href = enclosure.get("href") or enclosure.get("url")
            if (enclosure.get("type") or "").startswith("image/") or (href and _IMAGE_EXT_RE.search(href)):
                raw["image"] = href
                break
    return raw


def _guid_as_written(kind: str, el: Element) -> str | None:
    """The id as the feed wrote it (feedparser resolves an RSS guid against the feed URL).

    None when the item has no id: the caller then keys it by its canonical link.
    """
    if kind == "rss":
        return _text(el.find("guid")) or None
    if kind == "atom":
        return _text(el.find(f"{ATOM}id")) or None
    return el.get("{http://www.w3.org/1999/02/22-rdf-syntax-ns#}about") or None


def _atom_text(el: Element | None) -> str:
    if el is None:
        return ""
    kind = el.get("type", "text")
    if kind == "xhtml":
        # The content is the children of one XHTML <div> (RFC 4287 §4.1.3.3), namespaced.
        container = next(iter(el), None)
        if container is None:
            return htmllib.escape(el.text or "", quote=False)
        container = copy.deepcopy(container)
        for node in container.iter():
            if isinstance(node.tag, str) and node.tag.startswith(XHTML):
                node.tag = node.tag[len(XHTML) :]
        inner = htmllib.escape(container.text or "", quote=False)
        return inner + "".join(tostring(child, encoding="unicode", method="html") for child in container)
    if kind == "text":
        return htmllib.escape(el.text or "", quote=False)
    return el.text or ""


def _media_image(el: Element) -> tuple[str | None, str | None, str | None]:
    """Media RSS: <media:content medium="image"> (maybe in <media:group>), then thumbnails."""
    candidates = el.findall(f"{MRSS}content") + el.findall(f"{MRSS}group/{MRSS}content")
    for media in candidates:
        url = media.get("url")
        if is_tracker_image(url, media.get("width"), media.get("height")):
            continue  # no URL, a 1×1 pixel or a tracker: try the next one
        is_image = media.get("medium") == "image" or (media.get("type") or "").startswith("image/")
        if url and (is_image or (not media.get("medium") and not media.get("type") and _IMAGE_EXT_RE.search(url))):
            caption = _text(media.find(f"{MRSS}description")) or _text(el.find(f"{MRSS}description"))
            alt = _text(media.find(f"{MRSS}title")) or _text(media.find(f"{MRSS}text"))
            return url, caption or None, alt or None
    for thumb in el.findall(f"{MRSS}thumbnail") + el.findall(f"{MRSS}group/{MRSS}thumbnail"):
        if not is_tracker_image(thumb.get("url"), thumb.get("width"), thumb.get("height")):
            return thumb.get("url"), _text(el.find(f"{MRSS}description")) or None, None
    return None, None, None


# ------------------------------------------------------------------ JSON Feed


def _parse_json_feed(text: str, base_url: str, tz: zoneinfo.ZoneInfo, now: dt.datetime) -> ParsedFeed:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FeedFormatError(f"not valid JSON: {str(exc)[:120]}") from None
    if not isinstance(doc, dict) or not str(doc.get("version", "")).startswith("https://jsonfeed.org/version/1"):
        raise FeedFormatError("JSON, but not a JSON Feed (no https://jsonfeed.org/version/1.x version)")
    items = doc.get("items")
    if not isinstance(items, list):
        raise FeedFormatError("JSON Feed without an items list")
    feed = ParsedFeed(format="json" + str(doc["version"]).rsplit("/", 1)[-1].replace(".", ""), items=[])
    seen: set[str] = set()
    for index, item in enumerate(items, start=1):
        if index > MAX_ITEMS:
            feed.problems.append(f"feed has more than {MAX_ITEMS} items; the rest were ignored")
            break
        if not isinstance(item, dict):
            feed.problems.append(f"item {index}: not an object; skipped")
            continue
        # A feed may write any JSON value anywhere: only a list is iterated, anything
        # else (a number, a string, an object) is ignored, never a crash for the feed.
        authors = item.get("authors")
        if not isinstance(authors, list) or not authors:
            authors = [item["author"]] if isinstance(item.get("author"), dict) else []
        tags = item.get("tags")
        if not isinstance(tags, list):
            tags = []
        content = _str(item.get("content_html"))
        if not content and _str(item.get("content_text")):
            content = "".join(
                f"<p>{htmllib.escape(p.strip(), quote=False)}</p>"
                for p in _str(item.get("content_text")).split("\n\n")
                if p.strip()
            )
        raw = {
            "guid": _str(item.get("id")) if item.get("id") not in (None, "") else None,
            "link": _str(item.get("url")) or _str(item.get("external_url")),
            "title": _str(item.get("title")),
            "author": next((_str(a.get("name")) for a in authors if isinstance(a, dict) and a.get("name")), None),
            "categories": [_str(t) for t in tags if isinstance(t, str | int)],
            "published": _str(item.get("date_published")),
            "published_parsed": None,
            "updated": _str(item.get("date_modified")),
            "updated_parsed": None,
            "description": htmllib.escape(_str(item.get("summary")), quote=False),
            "content": content,
            "image": _str(item.get("image")) or _str(item.get("banner_image")) or None,
            "caption": None,
            "alt": None,
        }
        _build(feed, seen, index, raw, base_url, tz, now)
    return feed


def _str(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


# ------------------------------------------------------------------ one item


def _build(feed: ParsedFeed, seen: set[str], index: int, raw: dict, base_url: str, tz, now: dt.datetime) -> None:
    link = absolute_http_url(raw["link"], base=base_url)
    too_long = not link and _too_long(raw["link"], base_url)
    guid = clean_title(raw["guid"] or "")[:MAX_URL_LENGTH] or (canonical_url(link) if link else "")
    if len(guid) > MAX_URL_LENGTH:  # the canonical form re-encodes the query: it can grow
        feed.problems.append(f"item {index}: link over {MAX_URL_LENGTH} characters; skipped")
        return
    if not guid:
        why = f"link over {MAX_URL_LENGTH} characters once resolved" if too_long else "neither a guid nor an http(s) link"
        feed.problems.append(f"item {index}: {why}; skipped")
        return
    if not link:
        # A guid that is itself the permalink is the link (RSS isPermaLink).
        link = absolute_http_url(guid)
        if not link:
            why = f"link over {MAX_URL_LENGTH} characters once resolved" if too_long else "no http(s) link to send readers to"
            feed.problems.append(f"item {index} ({guid[:80]}): {why}; skipped")
            return
    if guid in seen:
        feed.problems.append(f"item {index} ({guid[:80]}): repeats an earlier item's id; skipped")
        return
    # The feed's own lead image (media:content, media:thumbnail, an enclosure, JSON Feed
    # `image`) obeys the body's rules: https only, and no tracking pixel.
    feed_image = absolute_http_url(raw["image"], base=link)
    if not is_lead_image_url(feed_image):
        feed_image = raw["caption"] = raw["alt"] = None
    body = sanitise_body(raw["content"] or raw["description"], link, want_lead_image=not feed_image)
    summary_source = raw["description"] if raw["content"] else ""
    summary = html_to_text(summary_source) or _first_paragraph(body.html)
    # A title (and a category, an author) is text: markup in one is reduced to its text here,
    # at ingestion, so the text part of a mail never shows a literal <script>.
    title = truncate(clean_title(markup_to_text(raw["title"])), TITLE_LIMIT) or truncate(summary, 120)
    if not title:
        feed.problems.append(f"item {index} ({guid[:80]}): no title and no text; skipped")
        return
    published = parse_time(raw["published"], tz, raw["published_parsed"])
    updated = parse_time(raw["updated"], tz, raw["updated_parsed"])
    if published is None and updated is not None:
        published, updated = updated, None  # Atom: <updated> is required, <published> is not
    if updated is not None and published is not None and updated <= published:
        updated = None
    if published is None:
        feed.problems.append(f"item {index} ({guid[:80]}): no readable date; first-seen time used")
    published, clamped_p = _clamp(published, now)
    updated, clamped_u = _clamp(updated, now)
    if clamped_p or clamped_u:
        feed.problems.append(f"item {index} ({guid[:80]}): date in the future; clamped to the fetch time")
    image = feed_image or body.lead_image_url
    seen.add(guid)
    feed.items.append(
        ParsedItem(
            guid=guid,
            url=link,
            title=title,
            summary=truncate(summary, SUMMARY_LIMIT),
            body_html=body.html,
            categories=[c for c in (clean_title(markup_to_text(c))[:200] for c in raw["categories"]) if c],
            author=clean_text(markup_to_text(raw["author"]))[:300] or None,
            published_at=published,
            updated_at=updated,
            date_clamped=clamped_p or clamped_u,
            lead_image_url=image,
            lead_image_caption=clean_text(markup_to_text(raw["caption"])) or (body.lead_image_caption if image == body.lead_image_url else None) or None,
            lead_image_alt=clean_text(markup_to_text(raw["alt"])) or (body.lead_image_alt if image == body.lead_image_url else None) or clean_text(markup_to_text(raw["caption"])) or None,
            read_also=body.read_also,
            related=body.related,
        )
    )


def _too_long(value: str | None, base: str) -> bool:
    """Whether `value` was refused only for its length once joined to `base`."""
    if not value or not value.strip():
        return False
    try:
        return len(urljoin(base, value.strip())) > MAX_URL_LENGTH
    except ValueError:
        return False


def _first_paragraph(body_html: str) -> str:
    match = re.search(r"<p\b[^>]*>(.*?)</p>", body_html, re.S)
    return html_to_text(match.group(1) if match else body_html)
