"""Ingest benchmark: a 500-article Arabic feed over loopback HTTP into PostgreSQL.

Runs, each through the real poll_feed path (httpx → defusedxml → feedparser → nh3 → store):

  first      every article new
  304        unchanged feed, conditional GET (the server answers 304)
  unchanged  unchanged feed re-read in full (force=True: no validators): must write no article
  updated    the same feed with 10% of the articles changed (half major, half minor)

For each: articles/s and the database writes (INSERT/UPDATE/DELETE statements, and rows)
per table, counted with a SQLAlchemy event listener.  The reference, measured in the
same run on the same bytes, is feedparser.parse alone (no safety, no sanitising, no
database): the ratio says what the rest of the pipeline costs on top of parsing.

    .venv/bin/python bench/bench_ingest.py [--articles 500]

Needs PostgreSQL (TEST_PG_ADMIN_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/postgres);
creates and drops a scratch database.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402

from bench.support import scratch_database  # noqa: E402

ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
SECTIONS = ["محليات", "عربي دولي", "اقتصاد", "رياضة", "تكنولوجيا", "ثقافة وفنون", "بيئة"]


# ------------------------------------------------------------------ the feed


def _paragraphs() -> list[str]:
    text = (REPO / "service" / "demo" / "article-ar-morocco-security-2021.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.split("\n") if len(line.strip()) > 80]


def build_feed(n: int, updated: set[int] = frozenset()) -> bytes:
    paras = _paragraphs()
    items = []
    for i in range(n):
        body = [f"<p>{escape(paras[(i + k) % len(paras)])}</p>" for k in range(8)]
        body.insert(3, f'<p><strong>اقرأ أيضاً :</strong> <a href="https://news.example/ar/a/{i + 1000}">خبر ذو صلة رقم {i}</a></p>')
        body.append(f'<h3>أخبار ذات صلة</h3><ul><li><a href="https://news.example/ar/a/{i + 2000}">خبر آخر {i}</a></li></ul>')
        title = f"خبر رقم {i}: {paras[i % len(paras)][:60]}"
        if i in updated:
            if (i // 10) % 2:  # major: a new headline and an update note
                title = f"محدّث — خبر رقم {i}: تطورات جديدة"
                body.insert(0, "<p><strong>تحديث:</strong> أضيفت تفاصيل جديدة إلى هذا الخبر.</p>")
            else:  # minor: one word added
                body[0] = body[0].replace("</p>", " أيضاً</p>", 1)
        items.append(
            f"<item><title>{escape(title)}</title>"
            f"<link>https://news.example/ar/articles/{i}</link>"
            f'<guid isPermaLink="false">bench:{i}</guid>'
            f"<pubDate>Sun, 23 Nov 2025 {i % 24:02d}:{i % 60:02d}:00 +0300</pubDate>"
            f"<category>{SECTIONS[i % len(SECTIONS)]}</category>"
            f'<media:content url="https://picsum.photos/seed/{i}/1200/675" medium="image">'
            f"<media:description>صورة الخبر {i}</media:description></media:content>"
            f"<description>{escape(paras[i % len(paras)][:200])}</description>"
            f"<content:encoded><![CDATA[{''.join(body)}]]></content:encoded></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" '
        'xmlns:media="http://search.yahoo.com/mrss/"><channel><title>bench</title>'
        "<link>https://news.example/</link><description>bench</description>" + "".join(items) + "</channel></rss>"
    ).encode("utf-8")


class Server:
    """Serves one body with an ETag; answers 304 when the client's validator matches."""

    def __init__(self):
        self.body, self.etag = b"", '"0"'
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.headers.get("If-None-Match") == server.etag:
                    self.send_response(304)
                    self.send_header("ETag", server.etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
                self.send_header("ETag", server.etag)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/feed.xml"

    def set(self, body: bytes, etag: str) -> None:
        self.body, self.etag = body, etag


# ------------------------------------------------------------------ counting writes


class Writes:
    def __init__(self):
        self.statements = collections.Counter()
        self.rows = collections.Counter()

    def __call__(self, conn, cursor, statement, parameters, context, executemany):
        # after_cursor_execute: the statement has run, so rowcount is known.
        verb = statement.lstrip().split(None, 1)[0].upper()
        if verb not in ("INSERT", "UPDATE", "DELETE"):
            return
        match = re.search(r"(?:INTO|UPDATE|FROM)\s+\"?(\w+)", statement, re.I)
        table = match.group(1) if match else "?"
        self.statements[table] += 1
        self.rows[table] += max(cursor.rowcount, 0)

    def reset(self):
        self.statements.clear()
        self.rows.clear()


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--articles", type=int, default=500)
    args = parser.parse_args()
    n = args.articles

    with scratch_database("ingest", ADMIN_URL) as url:
        os.environ.update(
            DATABASE_URL=url,
            FEED_ALLOW_PRIVATE="true",
            NASHRA_VAR_DIR=tempfile.mkdtemp(prefix="nashra-bench-"),
            SECRET_KEY="bench-secret-key-0123456789",
            LOG_LEVEL="WARNING",
            FEED_MAX_BYTES="50000000",
        )
        run(n)


def run(n: int) -> None:
    import logging

    import feedparser

    from service.articles.feeds import add_feed
    from service.articles.ingest import poll_feed
    from service.articles.sections import ensure_sections
    from service.config import reset_settings
    from service.db import get_engine, session_scope
    from service.logs import setup_logging

    reset_settings()
    setup_logging(fmt="json", level="WARNING")
    logging.getLogger().setLevel(logging.WARNING)
    server = Server()
    original = build_feed(n)
    changed = set(range(0, n, 10))  # every tenth article: 10%
    updated = build_feed(n, changed)
    with session_scope() as s:
        ensure_sections(s)
        feed_id = add_feed(s, server.url).id

    writes = Writes()
    sa.event.listen(get_engine(), "after_cursor_execute", writes)

    def poll(label: str, body: bytes, etag: str, force: bool = False) -> dict:
        server.set(body, etag)
        writes.reset()
        started = time.perf_counter()
        with session_scope() as s:
            report = poll_feed(s, feed_id, force=force)
        seconds = time.perf_counter() - started
        assert report.error is None, report.summary()
        return {"label": label, "seconds": seconds, "report": report, "statements": dict(writes.statements), "rows": dict(writes.rows)}

    runs = [
        poll("first", original, '"v1"'),
        poll("304", original, '"v1"'),
        poll("unchanged", original, '"v1"', force=True),
        poll("updated 10%", updated, '"v2"'),
    ]

    # Reference: feedparser alone on the same bytes, best of 3.
    ref = min(_timed(lambda: feedparser.parse(original)) for _ in range(3))

    print(f"bench_ingest: {n} articles, feed {len(original) / 1e6:.2f} MB, PostgreSQL, loopback HTTP")
    print(f"reference: feedparser.parse alone {ref:.3f}s = {n / ref:,.0f} articles/s (best of 3)")
    print(f"{'run':<12} {'seconds':>8} {'articles/s':>11} {'vs ref':>7}  {'new/major/minor/same':>21}  writes (statements; rows) per table")
    for r in runs:
        rep = r["report"]
        rate = n / r["seconds"]
        counts = "304" if rep.not_modified else f"{rep.new}/{rep.major}/{rep.minor}/{rep.unchanged}"
        per_table = ", ".join(
            f"{t}={r['statements'][t]};{r['rows'].get(t, 0)}" for t in sorted(r["statements"])
        ) or "none"
        print(f"{r['label']:<12} {r['seconds']:>8.3f} {rate:>11,.0f} {r['seconds'] / ref:>6.1f}x  {counts:>21}  {per_table}")
    unchanged = runs[2]
    article_writes = sum(unchanged["statements"].get(t, 0) for t in ("articles", "article_versions", "categories"))
    print(f"unchanged re-ingest article writes: {article_writes} (must be 0)")
    if article_writes:
        sys.exit(1)


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
