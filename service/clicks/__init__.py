"""Clicks, counted privately (issue 18): which links of an edition readers followed,
per edition, variant, article and section — and never which reader followed them.

- `signing`: the `/r/<link>.<sig>` path (HMAC, so nothing else can be redirected) and
  the reader's click token (a keyed hash for unique counting, never stored);
- `links`: an edition variant's links registered once per variant and rewritten;
- `scanners`: what is not counted (HEAD, prefetches, link scanners);
- `record`: clicks per link and UTC hour (`click_counts`);
- `unique`: unique clicks as HyperLogLog sketches (Redis, or `click_sketches`);
- `follow`: one click, from the `/r/` path to the redirect target;
- `retention`: what the hourly purge deletes after CLICK_DAYS.
"""
