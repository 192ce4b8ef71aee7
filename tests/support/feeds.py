"""Small feed documents built in tests (served by tests.support.feed_server)."""

from __future__ import annotations

import json

JSON_FEED = "application/feed+json"


def json_feed(*items: dict) -> bytes:
    """A JSON Feed 1.1 document with these items."""
    return json.dumps(
        {"version": "https://jsonfeed.org/version/1.1", "title": "أخبار", "items": list(items)}, ensure_ascii=False
    ).encode()


def json_item(n: int, **extra) -> dict:
    """Item number n of a JSON Feed, Arabic text, with `extra` fields added or replaced."""
    return {
        "id": f"j-{n}",
        "url": f"https://news.example/ar/{n}",
        "title": f"خبر رقم {n}",
        "content_html": f"<p>نص الخبر رقم {n}.</p>",
        "date_published": "2025-11-22T09:00:00+03:00",
        **extra,
    }
