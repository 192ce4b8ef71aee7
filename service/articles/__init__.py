"""Articles: feeds → fetch (httpx) → parse (feedparser) → sanitise (nh3) → store (versions).

Entry points others call:
  sections.DEFAULT_SECTIONS, sections.ensure_sections(session)
  feeds.add_feed(session, url, section_slug=None) -> Feed         (FeedConfigError on bad input)
  ingest.poll_feed(session, feed_id, *, force=False) -> PollReport
  ingest.poll_feed_sqlite(feed_id, *, force=False) -> PollReport       (its own transactions; SQLite)
  ingest.ingest_all(force=False, *, all_feeds=False) -> list[PollReport]
  ingest.due_feed_ids(session, now) -> list[int]
  queries.articles_for_window / major_updates_since / major_updates_since_edition / article_by_url
  demo_data.SAMPLE_FEED, demo_data.SAMPLE_FEED_UPDATED (paths of the bundled sample feeds)
"""
