"""Every bad input from the issue, served over real HTTP, polled into PostgreSQL.

A bad feed leaves the articles as they were, records the error on the feed's health
columns and logs one clear line; a bad item is skipped or repaired, with one line each.
"""

from __future__ import annotations

import datetime as dt
import gzip
import socket
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from service.articles import ingest
from service.articles.feeds import add_feed
from service.articles.ingest import poll_feed
from service.config import reset_settings
from service.models import Article, ArticleVersion, Category, Feed
from tests.support.feeds import JSON_FEED, json_feed, json_item

DATA = Path(__file__).resolve().parent / "data" / "feeds"
NOW = dt.datetime(2025, 11, 23, 12, 0, tzinfo=dt.UTC)
DEMO = Path(__file__).resolve().parent.parent / "service" / "demo" / "sample_feed.xml"


def _counts(session) -> tuple[int, int, int]:
    return tuple(
        session.scalar(sa.select(sa.func.count()).select_from(model)) for model in (Article, ArticleVersion, Category)
    )


def _poll_bad(session, url: str, *, now=NOW):
    """Poll a feed that must fail; return (report, the one failure log line)."""
    feed = add_feed(session, url)
    before = _counts(session)
    with capture_logs() as logs:
        report = poll_feed(session, feed.id, now=now)
    assert report.error, report.summary()
    assert _counts(session) == before, "a bad feed must not change the articles"
    failures = [entry for entry in logs if entry["event"] == "feed_poll_failed"]
    assert len(failures) == 1, logs
    assert failures[0]["feed_id"] == feed.id and failures[0]["error"] == report.error
    session.refresh(feed)
    assert feed.last_error == report.error
    assert feed.consecutive_failures == 1
    assert feed.next_poll_at == now + dt.timedelta(minutes=1)
    assert feed.last_success_at is None
    return report, failures[0]


def _guids(session) -> set[str]:
    return set(session.scalars(sa.select(Article.guid)))


def _rss(*items: str) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>أخبار</title>'
        "<link>https://news.example/</link><description>موجز</description>" + "".join(items) + "</channel></rss>"
    )


def _rss_item(guid: str, link: str, title: str = "خبر") -> str:
    return (
        f'<item><title>{title}</title><link>{link}</link><guid isPermaLink="false">{guid}</guid>'
        "<pubDate>Sat, 22 Nov 2025 09:00:00 +0300</pubDate><description>نص الخبر.</description></item>"
    )


@pytest.fixture
def short_timeouts(monkeypatch):
    monkeypatch.setenv("FEED_TIMEOUT", "0.5")
    reset_settings()


# ------------------------------------------------------------------ hostile XML


def test_malformed_xml_is_refused_with_its_position(db_session, feed_server):
    url = feed_server.serve("/m.xml", (DATA / "malformed.xml").read_bytes())
    report, _ = _poll_bad(db_session, url)
    assert report.error.startswith("not well-formed XML: mismatched tag at line 4, column 35")


@pytest.mark.parametrize("name", ["billion_laughs.xml", "xxe.xml", "xxe_parameter_entity.xml"])
def test_entity_expansion_and_external_entities_are_refused_before_parsing(db_session, feed_server, name):
    url = feed_server.serve(f"/{name}", (DATA / name).read_bytes())
    report, _ = _poll_bad(db_session, url)
    assert report.error.startswith("refused: the feed declares a DTD or entities")
    # The parameter entity would have fetched a DTD from our side of the network.
    assert [path for path, _ in feed_server.requests] == [f"/{name}"]


def test_an_html_page_instead_of_a_feed(db_session, feed_server):
    url = feed_server.serve("/home", (DATA / "html_page.html").read_bytes(), content_type="text/html; charset=utf-8")
    report, _ = _poll_bad(db_session, url)
    assert report.error == "got an HTML page, not a feed (text/html)"


def test_xml_that_is_not_a_feed(db_session, feed_server):
    url = feed_server.serve("/sitemap.xml", (DATA / "not_a_feed.xml").read_bytes(), content_type="application/xml")
    report, _ = _poll_bad(db_session, url)
    assert report.error == "not an RSS or Atom feed (root element <sitemap>)"


def test_json_that_is_not_a_json_feed(db_session, feed_server):
    url = feed_server.serve("/api", b'{"status": "ok", "items": []}', content_type="application/json")
    report, _ = _poll_bad(db_session, url)
    assert "not a JSON Feed" in report.error


# ------------------------------------------------------------------ odd JSON Feed values, parser crashes


@pytest.mark.parametrize("odd", [{"authors": 5}, {"tags": 7}, {"authors": 5, "tags": 7}, {"authors": "x", "tags": "abc"}])
def test_json_feed_odd_authors_or_tags_do_not_lose_the_feed(db_session, feed_server, odd):
    body = json_feed(json_item(1), json_item(2, **odd), json_item(3, tags=["محليات"], authors=[{"name": "سارة"}]))
    feed = add_feed(db_session, feed_server.serve("/odd.json", body, content_type=JSON_FEED))
    report = poll_feed(db_session, feed.id, now=NOW)
    assert report.error is None and report.new == 3, report.summary()
    assert _guids(db_session) == {"j-1", "j-2", "j-3"}
    odd_article = db_session.scalar(sa.select(Article).where(Article.guid == "j-2"))
    assert odd_article.author is None  # the odd value is ignored, not turned into text
    good = db_session.scalar(sa.select(Article).where(Article.guid == "j-3"))
    assert good.author == "سارة"
    db_session.refresh(feed)
    assert feed.last_error is None and feed.consecutive_failures == 0


def test_a_parser_crash_is_recorded_on_the_feed(db_session, feed_server, monkeypatch):
    def broken_parser(*args, **kwargs):
        raise TypeError("'int' object is not iterable")

    monkeypatch.setattr(ingest, "parse_feed", broken_parser)
    feed = add_feed(db_session, feed_server.serve("/crash.json", json_feed(json_item(1)), content_type=JSON_FEED))
    with capture_logs() as logs:
        report = poll_feed(db_session, feed.id, now=NOW)  # must not raise
    # the innermost frame: broken_parser, in this file
    assert report.error.startswith(f"could not parse the feed: TypeError at {Path(__file__).name}:")
    assert _guids(db_session) == set()
    failures = [entry for entry in logs if entry["event"] == "feed_poll_failed"]
    assert len(failures) == 1 and failures[0]["feed_id"] == feed.id
    assert all("exc_info" not in entry for entry in logs)
    db_session.refresh(feed)
    assert feed.last_error == report.error
    assert feed.consecutive_failures == 1
    assert feed.next_poll_at == NOW + dt.timedelta(minutes=1)
    assert db_session.get(Feed, feed.id).last_success_at is None


# ------------------------------------------------------------------ encodings


def _win1256_feed(declaration: str | None) -> bytes:
    decl = f'<?xml version="1.0" encoding="{declaration}"?>\n' if declaration else ""
    text = (
        '<rss version="2.0"><channel><title>أخبار</title><link>https://news.example/</link>'
        "<description>موجز بترميز ويندوز</description><item><title>الأمطار تعود إلى المملكة نهاية الأسبوع</title>"
        "<link>https://news.example/ar/local/rain</link><guid>w-1</guid>"
        "<pubDate>Sat, 22 Nov 2025 09:00:00 +0300</pubDate><category>محليات</category>"
        "<description>توقعت دائرة الأرصاد الجوية عودة الأمطار.</description></item></channel></rss>"
    )
    return (decl + text).encode("cp1256")


@pytest.mark.parametrize(
    "declaration, content_type, note",
    [
        ("windows-1256", "application/rss+xml", None),  # declared correctly
        (None, "application/rss+xml", "no encoding declared, but the bytes are cp1256"),
        ("utf-8", "application/rss+xml; charset=utf-8", "declared utf-8, but the bytes are cp1256"),
        (None, "application/rss+xml; charset=windows-1256", "no encoding declared, but the bytes are cp1256"),
    ],
)
def test_windows_1256_feeds_read_right_whatever_they_declare(db_session, feed_server, declaration, content_type, note):
    url = feed_server.serve("/w.xml", _win1256_feed(declaration), content_type=content_type)
    feed = add_feed(db_session, url)
    with capture_logs() as logs:
        report = poll_feed(db_session, feed.id, now=NOW)
    assert report.error is None and report.new == 1
    art = db_session.scalar(sa.select(Article).where(Article.guid == "w-1"))
    assert art.title == "الأمطار تعود إلى المملكة نهاية الأسبوع"
    assert art.summary == "توقعت دائرة الأرصاد الجوية عودة الأمطار."
    problems = [e["problem"] for e in logs if e["event"] == "feed_item_problem"]
    assert problems == ([f"{note}; decoded as cp1256"] if note else [])


def test_utf8_bytes_under_a_latin1_declaration_are_read_as_utf8(db_session, feed_server):
    body = _win1256_feed(None).decode("cp1256").encode("utf-8")
    url = feed_server.serve("/u.xml", b'<?xml version="1.0" encoding="ISO-8859-1"?>\n' + body)
    report = poll_feed(db_session, add_feed(db_session, url).id, now=NOW)
    assert report.error is None
    assert db_session.scalar(sa.select(Article.title).where(Article.guid == "w-1")).startswith("الأمطار")
    assert report.problems == ["declared iso8859-1, but the bytes are valid UTF-8; decoded as UTF-8"]


# ------------------------------------------------------------------ hostile servers


def test_a_100_mb_body_is_refused_unread(db_session, feed_server):
    big = b"<rss>" + b" " * 100_000_000
    url = feed_server.serve("/big.xml", big)
    started = time.monotonic()
    report, _ = _poll_bad(db_session, url)
    assert report.error == "feed is 100 MB, over the 5 MB limit (FEED_MAX_BYTES)"
    assert time.monotonic() - started < 5


class _RawServer:
    """A loopback server whose replies a test writes byte by byte (chunked, lying, slow)."""

    def __init__(self, handler):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                try:
                    self.handler(conn)
                except OSError:
                    pass

    def url(self, path="/feed"):
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self):
        self.sock.close()


def test_an_endless_chunked_body_is_cut_at_the_size_cap(db_session, monkeypatch):
    monkeypatch.setenv("FEED_MAX_BYTES", "200000")
    reset_settings()

    def endless(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"<item>" + b"x" * 8000 + b"</item>"
        while True:
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))

    server = _RawServer(endless)
    try:
        report, _ = _poll_bad(db_session, server.url())
    finally:
        server.close()
    assert report.error == "feed body exceeds the 0.2 MB limit (FEED_MAX_BYTES)"


def test_a_gzip_bomb_is_capped_on_what_it_expands_to(db_session, monkeypatch):
    monkeypatch.setenv("FEED_MAX_BYTES", "1000000")
    reset_settings()
    bomb = gzip.compress(b"<rss>" + b" " * 50_000_000)  # about 50 KB on the wire

    def send(conn):
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(bomb), bomb)
        )

    server = _RawServer(send)
    try:
        report, _ = _poll_bad(db_session, server.url())
    finally:
        server.close()
    assert report.error == "feed body exceeds the 1 MB limit (FEED_MAX_BYTES)"


def test_a_server_that_never_answers_times_out(db_session, feed_server, short_timeouts):
    url = feed_server.serve("/silent.xml", DEMO.read_bytes(), delay=3)
    started = time.monotonic()
    report, _ = _poll_bad(db_session, url)
    assert report.error == "timed out after 0.5s (ReadTimeout)"
    assert time.monotonic() - started < 2


def test_a_server_that_trickles_bytes_hits_the_deadline(db_session, feed_server, short_timeouts):
    # One byte every 50 ms never trips a per-read timeout; the whole-fetch deadline does.
    url = feed_server.serve("/slow.xml", DEMO.read_bytes()[:400], trickle=0.05)
    started = time.monotonic()
    report, _ = _poll_bad(db_session, url)
    assert report.error == "server too slow: body still arriving at the 0.5s deadline (FEED_TIMEOUT)"
    assert time.monotonic() - started < 2


def test_a_redirect_loop_is_detected(db_session, feed_server):
    feed_server.serve("/a", b"", status=302, headers={"Location": "/b"})
    feed_server.serve("/b", b"", status=301, headers={"Location": "/a"})
    report, _ = _poll_bad(db_session, feed_server.url("/a"))
    assert report.error == f"redirect loop: {feed_server.url('/a')} was already visited"
    assert [path for path, _ in feed_server.requests] == ["/a", "/b"]


def test_redirects_are_bounded(db_session, feed_server):
    for i in range(10):
        feed_server.serve(f"/r{i}", b"", status=307, headers={"Location": f"/r{i + 1}"})
    report, _ = _poll_bad(db_session, feed_server.url("/r0"))
    assert report.error == "more than 5 redirects"
    assert len(feed_server.requests) == 6


def test_a_redirect_to_another_scheme_is_refused(db_session, feed_server):
    feed_server.serve("/to-file", b"", status=302, headers={"Location": "file:///etc/passwd"})
    report, _ = _poll_bad(db_session, feed_server.url("/to-file"))
    assert report.error == "redirect to a non-http(s) or missing location: 'file:///etc/passwd'"


def test_a_redirect_is_followed_to_the_feed(db_session, feed_server):
    target = feed_server.serve("/new-home.xml", DEMO.read_bytes())
    feed_server.serve("/old.xml", b"", status=301, headers={"Location": target})
    report = poll_feed(db_session, add_feed(db_session, feed_server.url("/old.xml")).id, now=NOW)
    assert report.error is None and report.new == 9


def test_http_errors_are_recorded(db_session, feed_server):
    url = feed_server.serve("/gone.xml", b"", status=503)
    report, _ = _poll_bad(db_session, url)
    assert report.error == "HTTP 503 Service Unavailable"


def test_loopback_feeds_are_refused_unless_allowed(db_session, feed_server, monkeypatch):
    monkeypatch.setenv("FEED_ALLOW_PRIVATE", "false")
    reset_settings()
    url = feed_server.serve("/feed.xml", DEMO.read_bytes())
    report, _ = _poll_bad(db_session, url)
    assert report.error == (
        "refused: 127.0.0.1 resolves to 127.0.0.1, a loopback or private address "
        "(set FEED_ALLOW_PRIVATE=true to allow it)"
    )
    assert feed_server.requests == []  # not even one request went out


def test_a_304_caps_its_validators_like_a_200(feed_server):
    from service.articles.fetch import fetch_feed
    from service.config import get_settings

    etag = '"' + "e" * 600 + '"'
    url = feed_server.serve("/etag.xml", _rss(_rss_item("e-1", "/ar/1")), headers={"ETag": etag})
    result = fetch_feed(url, get_settings(), etag=etag, last_modified="x" * 150)
    assert result.not_modified
    assert result.etag is None and result.last_modified is None


# ------------------------------------------------------------------ hostile items


@pytest.fixture
def hostile(db_session, feed_server):
    url = feed_server.serve("/hostile.xml", (DATA / "hostile_items.xml").read_bytes())
    feed = add_feed(db_session, url)
    with capture_logs() as logs:
        report = poll_feed(db_session, feed.id, now=NOW)
    articles = {a.guid: a for a in db_session.scalars(sa.select(Article))}
    return report, articles, logs


def test_the_body_loses_scripts_handlers_styles_frames_and_pixels(hostile):
    report, articles, _ = hostile
    body = articles["hostile-1"].body_html
    assert body == (
        "<p>فقرة أولى رابط خبيث و"
        '<a href="https://news.example/ar/local/ok" rel="noopener noreferrer">رابط سليم</a>.</p>\n'
        '<p><img src="https://cdn.news.example/photo.jpg" alt="صورة"></p>\n'
        "<p>فقرة ثانية</p>\n"
        "<p>بيانات في بي</p>"
    )
    for bad in ("script", "onerror", "onclick", "javascript:", "style", "iframe", "evil.example", "tracker", "pixel",
                "data:", "vbscript", "password", "object", "نص بديل"):  # fmt: skip
        assert bad not in body
    assert articles["hostile-1"].summary == "ملخص قصير"


def test_a_title_with_line_breaks_and_bidi_overrides_is_one_clean_line(hostile):
    _, articles, _ = hostile
    assert articles["hostile-1"].title == "عنوان بسطرين lanigiro وعزل"


def test_an_item_without_a_guid_is_keyed_by_its_canonical_url(hostile):
    _, articles, _ = hostile
    key = "https://news.example/ar/local/2025/11/20/no-guid"
    assert articles[key].url == "https://news.example/ar/local/2025/11/20/no-guid?utm_source=rss&utm_medium=feed#top"


def test_items_that_cannot_be_linked_are_skipped_with_one_line_each(hostile):
    report, articles, logs = hostile
    assert report.error is None
    assert report.new == 4 and set(articles) == {
        "hostile-1", "https://news.example/ar/local/2025/11/20/no-guid", "hostile-3", "hostile-4",
    }  # fmt: skip
    problems = [e["problem"] for e in logs if e["event"] == "feed_item_problem"]
    assert problems == [
        "item 3: neither a guid nor an http(s) link; skipped",
        "item 4 (hostile-3): no readable date; first-seen time used",
        "item 5 (hostile-4): date in the future; clamped to the fetch time",
        "item 6 (hostile-5): no http(s) link to send readers to; skipped",
    ]


def test_an_item_without_a_date_is_kept_undated(hostile):
    _, articles, _ = hostile
    assert articles["hostile-3"].published_at is None
    assert articles["hostile-3"].first_seen_at == NOW


def test_a_date_in_the_future_is_clamped_once(hostile, db_session, feed_server):
    _, articles, _ = hostile
    assert articles["hostile-4"].published_at == NOW
    feed_id = db_session.scalar(sa.select(Feed.id))
    later = NOW + dt.timedelta(hours=1)
    report = poll_feed(db_session, feed_id, now=later, force=True)
    # Still in the future an hour later, but the clamp is not re-applied: nothing changes.
    assert (report.new, report.major, report.minor, report.metadata, report.unchanged) == (0, 0, 0, 0, 4)
    db_session.refresh(articles["hostile-4"])
    assert articles["hostile-4"].published_at == NOW


def test_a_relative_link_too_long_once_joined_skips_only_that_item(db_session, feed_server):
    long_path = "/ar/" + "a" * 1986  # 1990 characters: under the limit as written, over it once joined
    url = feed_server.serve(
        "/long.xml",
        _rss(
            _rss_item("ok-1", "https://news.example/ar/1"),
            _rss_item("long-1", long_path),
            _rss_item("ok-2", "/ar/2"),
        ),
    )
    assert len(url.rsplit("/", 1)[0] + long_path) > 2000
    feed = add_feed(db_session, url)
    with capture_logs() as logs:
        report = poll_feed(db_session, feed.id, now=NOW)
    assert report.error is None and report.new == 2, report.summary()
    assert _guids(db_session) == {"ok-1", "ok-2"}
    assert all(len(u) <= 2000 for u in db_session.scalars(sa.select(Article.url)))
    problems = [e["problem"] for e in logs if e["event"] == "feed_item_problem"]
    assert problems == ["item 2 (long-1): link over 2000 characters once resolved; skipped"]
    db_session.refresh(feed)
    assert feed.last_error is None


def test_an_access_key_in_a_feed_url_stays_out_of_logs_and_errors(db_session, feed_server):
    feed_server.serve("/private/a?key=s3cr3t-token", b"", status=302, headers={"Location": "/private/b?key=s3cr3t-token"})
    feed_server.serve("/private/b?key=s3cr3t-token", b"", status=302, headers={"Location": "/private/a?key=s3cr3t-token"})
    feed = add_feed(db_session, feed_server.url("/private/a?key=s3cr3t-token"))
    with capture_logs() as logs:
        report = poll_feed(db_session, feed.id, now=NOW)
    assert report.error == f"redirect loop: {feed_server.url('/private/a')}?… was already visited"
    assert "s3cr3t" not in report.summary() and "s3cr3t" not in repr(logs) and "s3cr3t" not in feed.last_error


def test_a_server_that_trickles_its_headers_hits_the_deadline(db_session, short_timeouts):
    def trickle(conn):
        for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nX-Padding: " + b"x" * 200:
            conn.sendall(bytes([byte]))
            time.sleep(0.05)

    server = _RawServer(trickle)
    started = time.monotonic()
    try:
        report, _ = _poll_bad(db_session, server.url())
    finally:
        server.close()
    assert report.error == "timed out after 0.5s (ReadTimeout)"
    assert time.monotonic() - started < 2
