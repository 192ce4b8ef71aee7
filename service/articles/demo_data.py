"""Where the bundled sample data lives (for `nashra demo` and tests)."""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
SAMPLE_FEED = DEMO_DIR / "sample_feed.xml"  # RSS 2.0, UTF-8: the fixture article + 8 more
SAMPLE_FEED_UPDATED = DEMO_DIR / "sample_feed_updated.xml"  # one major update, one minor
