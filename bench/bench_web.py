"""Web benchmark: the signup path and the /metrics scrape, over real HTTP (uvicorn) on
PostgreSQL and Redis.

  signup   POST /subscribe, each a new address from a new client IP (sent as
           X-Forwarded-For, which uvicorn trusts from loopback, as behind a proxy):
           CSRF check, Redis rate limit, validation, one transaction, the confirmation
           task queued to Redis after commit.
  healthz  GET /healthz on the same server and connection: the reference, i.e. what
           uvicorn + FastAPI + our middleware cost with no work behind them.
  metrics  GET /metrics on a ledger of --deliveries rows; the reference is the same
           GROUP BY queries run directly on the database in the same run.

    .venv/bin/python bench/bench_web.py [--signups 300] [--deliveries 200000]

Needs PostgreSQL (TEST_PG_ADMIN_URL) and Redis (db 12 of TEST_REDIS_URL's server);
creates and drops a scratch database, flushes Redis db 12.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench.support import insert_readers, scratch_database, web_server  # noqa: E402

ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15").rsplit("/", 1)[0] + "/12"


def timed(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def describe(name: str, samples: list[float]) -> str:
    samples = sorted(samples)
    p50 = statistics.median(samples) * 1000
    p95 = samples[int(len(samples) * 0.95) - 1] * 1000
    rate = len(samples) / sum(samples)
    return f"{name:<9} n={len(samples):<6} p50 {p50:7.2f} ms   p95 {p95:7.2f} ms   {rate:8.1f} req/s"


def seed_ledger(url: str, deliveries: int) -> None:
    engine = sa.create_engine(url)
    subscribers = max(1, deliveries // 2)
    with engine.begin() as c:
        insert_readers(c, subscribers, email="'bench' || i || '@example.com'")
        for kind in ("digest", "alert"):
            eid = c.execute(sa.text(
                "INSERT INTO editions (newsletter_id, kind, status, title, params, created_at, recipients) "
                "VALUES ((SELECT id FROM newsletters WHERE slug = :n), :k, 'sending', 'bench', '{}', now(), 0)"
                " RETURNING id"), {"k": kind, "n": "daily" if kind == "digest" else "alerts"}).scalar()
            c.execute(sa.text(
                "INSERT INTO deliveries (edition_id, subscriber_id, variant, status, attempts) "
                "SELECT :e, s.id, 'all', (ARRAY['sent','sent','sent','queued','retry','failed'])[1 + s.id % 6], 0 "
                "FROM (SELECT id FROM subscribers ORDER BY id LIMIT :n) s"), {"e": eid, "n": subscribers})
        c.execute(sa.text("ANALYZE"))
    engine.dispose()


def reference_metrics_queries(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.connect() as c:
        c.execute(sa.text(
            "SELECT e.kind, d.status, count(*) FROM deliveries d JOIN editions e ON e.id = d.edition_id "
            "GROUP BY e.kind, d.status")).all()
        c.execute(sa.text("SELECT status, count(*) FROM subscribers GROUP BY status")).all()
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--signups", type=int, default=300)
    parser.add_argument("--deliveries", type=int, default=200_000)
    args = parser.parse_args()

    with scratch_database("web", ADMIN_URL) as url:
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        os.environ.update(DATABASE_URL=url, REDIS_URL=REDIS_URL, SECRET_KEY="bench-secret-key-0123456789",
                          LOG_LEVEL="WARNING", LOG_FORMAT="json", NASHRA_VAR_DIR=str(REPO / "bench" / "out"))
        from service.config import reset_settings

        reset_settings()
        from service.logs import setup_logging

        setup_logging()
        with sa.create_engine(url).begin() as c:
            c.execute(sa.text("INSERT INTO sections (slug, name, position) VALUES ('world', 'عربي دولي', 1), ('sport', 'رياضة', 2)"))

        from service.jobs.app import configure
        from service.web.app import create_app

        configure()
        with web_server(create_app()) as base, httpx.Client(base_url=base) as client:
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text).group(1)

            def signup(i: int) -> None:
                r = client.post("/subscribe", headers={"X-Forwarded-For": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"},
                                data={"csrf_token": csrf, "email": f"reader{i}@example.com", "frequency": "daily",
                                      "alerts": "yes", "consent": "yes", "sections": ["1", "2"]})
                assert r.status_code == 200, r.status_code

            def healthz(_i: int) -> None:
                assert client.get("/healthz").status_code == 200

            timed(healthz, 50)  # warm up
            ref = timed(healthz, args.signups)
            work = timed(signup, args.signups)
            queued = redis.Redis.from_url(REDIS_URL).llen("default")
            print(f"signup: {args.signups} new readers over HTTP, one connection, PostgreSQL + Redis")
            print(describe("healthz", ref))
            print(describe("signup", work))
            print(f"confirmation tasks queued in Redis: {queued}")
            print(f"ratio signup / healthz (median latency): {statistics.median(work) / statistics.median(ref):.1f}x")

            seed_ledger(url, args.deliveries)
            ref_q = timed(lambda _i: reference_metrics_queries(url), 10)
            scrapes = timed(lambda _i: client.get("/metrics").raise_for_status(), 10)
            size = len(client.get("/metrics").content)
            print(f"\nmetrics: ledger of {args.deliveries} rows in 2 editions, {args.deliveries // 2} subscribers")
            print(describe("queries", ref_q) + "   (the same GROUP BYs, direct, new engine each time)")
            print(describe("metrics", scrapes) + f"   ({size} bytes)")
            print(f"ratio /metrics / direct queries (median): {statistics.median(scrapes) / statistics.median(ref_q):.2f}x")


if __name__ == "__main__":
    main()
