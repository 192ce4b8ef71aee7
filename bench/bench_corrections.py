"""The corrections check on a week of real-sized history, against what it must do anyway.

    .venv/bin/python bench/bench_corrections.py [--readers 20000] [--articles 600] [--updates 200]

A scratch PostgreSQL database (created and dropped here), migrated, filled with a
week of history: `--articles` articles, seven daily digests to `--readers` readers and
ten alerts to all of them (the ledger: ~17 × readers `sent` rows), then `--updates`
major versions in the last 48 hours (half with the site's update note, half a new
headline only).  Under CORRECTIONS=major every update the readers saw becomes a
correction.

It prints:
  1. `create_corrections` on that history: the first run (creates the editions) and a
     re-run (the idempotent no-op that beat and retried tasks cause), medians of 3;
  2. the reference, in the same run: `major_updates_since` alone, the one query any
     such check has to make, and the ratios to it;
  3. what the check hands on: planning one correction (its audience into the ledger
     and one render), per correction, and the check's cost as a share of that.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.support import insert_readers, scratch_database  # noqa: E402


def fill(url: str, readers: int, n_articles: int, updates: int, now: dt.datetime) -> None:
    """Bulk history straight into the tables (INSERT … SELECT generate_series)."""
    from service.articles.sections import ensure_sections
    from service.db import get_engine, session_scope
    from service.editions.corrections import NOTE_SIGNAL

    with session_scope() as s:
        ensure_sections(s)
    engine = get_engine()
    week = now - dt.timedelta(days=7)
    with engine.begin() as c:
        c.execute(sa.text("""
            INSERT INTO articles (guid, url, title, summary, body_html, read_also, related, first_seen_at,
                                  last_major_at, version, content_hash)
            SELECT 'g' || i, 'https://news.example/a/' || i, 'عنوان الخبر ' || i, 'ملخص',
                   '<p>نص الخبر ' || i || '</p>', '[]', '[]', :week + (i * interval '1 minute') * 16,
                   :week + (i * interval '1 minute') * 16, 1, md5(i::text)
            FROM generate_series(1, :n) i"""), {"n": n_articles, "week": week})
        c.execute(sa.text("""
            INSERT INTO article_versions (article_id, version, kind, content_hash, title, summary, body_html,
                                          created_at)
            SELECT id, 1, 'new', content_hash, title, summary, body_html, first_seen_at FROM articles"""))
        insert_readers(c, readers, email="'r' || i || '@example.com'", created=":week", params={"week": week})
        per_day = n_articles // 7 + 1
        for day in range(7):  # seven daily digests, each carrying that day's articles at version 1
            at = week + dt.timedelta(days=day + 1)
            eid = c.execute(sa.text("""
                INSERT INTO editions (newsletter_id, kind, frequency, status, title, params, created_at, recipients)
                VALUES ((SELECT id FROM newsletters WHERE slug = 'daily'), 'digest', 'daily', 'done', 'digest', '{}',
                        :at, :r) RETURNING id"""),
                {"at": at, "r": readers}).scalar()
            c.execute(sa.text("""
                INSERT INTO edition_articles (edition_id, article_id, version, position, updated)
                SELECT :e, id, 1, id, false FROM articles ORDER BY id OFFSET :o LIMIT :l"""),
                {"e": eid, "o": day * per_day, "l": per_day})
            _ledger(c, eid, at)
        for k in range(10):  # ten alerts, one article each, to everyone
            at = week + dt.timedelta(hours=12 + 15 * k)
            eid = c.execute(sa.text("""
                INSERT INTO editions (newsletter_id, kind, status, title, params, created_at, recipients)
                VALUES ((SELECT id FROM newsletters WHERE slug = 'alerts'), 'alert', 'done', 'alert',
                        '{"headline": "h", "url": "https://news.example/x"}', :at, :r)
                RETURNING id"""), {"at": at, "r": readers}).scalar()
            c.execute(sa.text("INSERT INTO edition_articles (edition_id, article_id, version, position, updated) "
                              "VALUES (:e, :a, 1, 0, false)"), {"e": eid, "a": 1 + (k * 37) % n_articles})
            _ledger(c, eid, at)
        # Major updates in the last 48 h, spread over the week's articles.
        step = max(1, n_articles // updates)
        c.execute(sa.text("""
            INSERT INTO article_versions (article_id, version, kind, content_hash, title, summary, body_html,
                                          change_note, created_at)
            SELECT a.id, 2, 'major', md5(a.id::text || 'v2'), a.title || ' (محدث)', a.summary,
                   a.body_html || '<p>تحديث: تفاصيل جديدة.</p>',
                   CASE WHEN a.id % 2 = 0 THEN 'title changed; ' || :sig || ' (تحديث:)' ELSE 'title changed' END,
                   :now - (a.id % 47) * interval '1 hour'
            FROM articles a WHERE a.id % :step = 0 AND a.id / :step <= :u"""),
            {"sig": NOTE_SIGNAL, "now": now, "step": step, "u": updates})
        c.execute(sa.text("""
            UPDATE articles a SET version = 2, title = v.title, body_html = v.body_html
            FROM article_versions v WHERE v.article_id = a.id AND v.version = 2"""))
    with engine.begin() as c:
        c.execute(sa.text("ANALYZE"))


def _ledger(c, edition_id: int, at: dt.datetime) -> None:
    c.execute(sa.text("""
        INSERT INTO deliveries (edition_id, subscriber_id, variant, status, attempts, sent_at, updated_at)
        SELECT :e, id, 'all', 'sent', 1, :at, :at FROM subscribers"""), {"e": edition_id, "at": at})


def timed(fn, repeat: int = 3) -> float:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def run(url: str, readers: int, n_articles: int, updates: int) -> None:
    import logging

    from service.articles.queries import major_updates_since
    from service.config import reset_settings
    from service.db import session_factory
    from service.delivery.planner import plan
    from service.editions.corrections import LOOKBACK, create_corrections
    from service.logs import setup_logging

    reset_settings()
    setup_logging(fmt="json", level="WARNING")
    logging.getLogger().setLevel(logging.WARNING)
    now = dt.datetime.now(dt.UTC)
    t = time.perf_counter()
    fill(url, readers, n_articles, updates, now)
    rows = _count(session_factory(), "SELECT count(*) FROM deliveries")
    majors = _count(session_factory(), "SELECT count(*) FROM article_versions WHERE kind = 'major'")
    print(f"history: {n_articles} articles, {majors} major updates, {readers} readers, "
          f"{rows} ledger rows (filled in {time.perf_counter() - t:.1f}s)")

    factory = session_factory()
    made: list[int] = []

    def first():  # rolled back each time so every repeat is a first run
        with factory() as s:
            made[:] = [e.id for e in create_corrections(s, now=now)]
            s.rollback()

    def reference():
        with factory() as s, s.begin():
            major_updates_since(s, now - LOOKBACK)

    t_ref = timed(reference)
    t_first = timed(first)
    created = len(made)
    with factory() as s, s.begin():  # keep them this time, for the re-run and planning
        ids = [e.id for e in create_corrections(s, now=now)]

    def again():
        with factory() as s, s.begin():
            assert create_corrections(s, now=now) == []

    t_again = timed(again)
    sample = ids[:3]
    plan_times = []
    audience = 0
    for eid in sample:
        with factory() as s:
            t = time.perf_counter()
            audience = plan(s, eid)
            plan_times.append(time.perf_counter() - t)
            s.rollback()
    t_plan = statistics.median(plan_times)

    print(f"corrections created (CORRECTIONS=major)  : {created}")
    print(f"reference: major_updates_since(48 h)     : {t_ref * 1000:9.1f} ms")
    print(f"create_corrections, first run            : {t_first * 1000:9.1f} ms   "
          f"({t_first / created * 1000:.2f} ms per correction)")
    print(f"create_corrections, re-run (no-op)       : {t_again * 1000:9.1f} ms")
    print(f"planning one correction ({audience} readers)  : {t_plan * 1000:9.1f} ms")
    print(f"ratio first run / reference: {t_first / t_ref:.1f}x   re-run / reference: {t_again / t_ref:.1f}x")
    print(f"check per correction / planning it: {t_first / created / t_plan:.1%}")


def _count(factory, sql: str) -> int:
    with factory() as s:
        return s.scalar(sa.text(sql))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readers", type=int, default=20_000)
    parser.add_argument("--articles", type=int, default=600)
    parser.add_argument("--updates", type=int, default=200)
    args = parser.parse_args()

    with scratch_database("corrections") as url:
        os.environ.update(
            DATABASE_URL=url,
            NASHRA_VAR_DIR=tempfile.mkdtemp(prefix="nashra-bench-"),
            SECRET_KEY="bench-secret-key-0123456789",
            LOG_LEVEL="WARNING",
            CORRECTIONS="major",
        )
        run(url, args.readers, args.articles, args.updates)


if __name__ == "__main__":
    main()
