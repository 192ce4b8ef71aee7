"""/r/ benchmark: a reader's click over real HTTP (uvicorn) on PostgreSQL and Redis.

  healthz  GET /healthz on the same server and connection: the reference, i.e. what
           uvicorn + FastAPI + our middleware cost with no work behind them.
  click    GET /r/<link>.<sig>.<token> with a browser's headers: verify the MAC and the
           reader token, read the link, upsert (link, hour) in click_counts, PFADD to
           three HyperLogLogs in one Redis round trip, 302.
  head     HEAD of the same link: verified and redirected, nothing written.
  forged   GET of an altered link: the 400 page.

    .venv/bin/python bench/bench_clicks.py [--clicks 500]

Needs PostgreSQL (TEST_PG_ADMIN_URL) and Redis (db 12 of TEST_REDIS_URL's server);
creates and drops a scratch database, flushes Redis db 12.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench.bench_web import ADMIN_URL, REDIS_URL, describe, timed  # noqa: E402
from bench.support import scratch_database, web_server  # noqa: E402

BROWSER = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Accept-Language": "ar-JO,ar;q=0.9",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clicks", type=int, default=500)
    args = parser.parse_args()

    with scratch_database("clicks", ADMIN_URL) as url:
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        os.environ.update(DATABASE_URL=url, REDIS_URL=REDIS_URL, SECRET_KEY="bench-secret-key-0123456789",
                          LOG_LEVEL="WARNING", LOG_FORMAT="json", NASHRA_VAR_DIR=str(REPO / "bench" / "out"))
        from service.config import reset_settings

        reset_settings()
        from service.logs import setup_logging

        setup_logging()
        from service.clicks import links, signing
        from service.db import session_scope
        from service.models import Edition, EditionKind, EditionStatus

        with session_scope() as s:
            edition = Edition(kind=EditionKind.digest, status=EditionStatus.done, title="bench", params={})
            s.add(edition)
            s.flush()
            ids = links.register(s, edition, "all", [f"https://news.example/story/{i}" for i in range(40)])
            eid = edition.id
        paths = [f"/r/{lid}.{signing.link_sig(lid)}.~{signing.reader_token(eid, reader, now=0)}"
                 for reader, lid in enumerate(list(ids.values()) * (args.clicks // len(ids) + 1))][: args.clicks]

        from service.jobs.app import configure
        from service.web.app import create_app

        configure()
        with web_server(create_app()) as base, httpx.Client(base_url=base) as client:
            def click(i: int) -> None:
                assert client.get(paths[i], headers=BROWSER).status_code == 302

            def head(i: int) -> None:
                assert client.head(paths[i], headers=BROWSER).status_code == 302

            def forged(i: int) -> None:
                altered = paths[i][:-1] + ("B" if paths[i].endswith("A") else "A")
                assert client.get(altered, headers=BROWSER).status_code == 400

            def healthz(_i: int) -> None:
                assert client.get("/healthz").status_code == 200

            timed(healthz, 50)  # warm up
            timed(click, 20)
            ref = timed(healthz, args.clicks)
            work = timed(click, args.clicks)
            heads = timed(head, args.clicks)
            bad = timed(forged, args.clicks)
            with sa.create_engine(url).connect() as c:
                counted = c.execute(sa.text("SELECT coalesce(sum(clicks), 0) FROM click_counts")).scalar()
            print(f"/r/: {args.clicks} clicks over HTTP, one connection, PostgreSQL + Redis ({counted} counted)")
            print(describe("healthz", ref))
            print(describe("click", work))
            print(describe("head", heads))
            print(describe("forged", bad))
            print(f"ratio click / healthz (median latency): {statistics.median(work) / statistics.median(ref):.1f}x")


if __name__ == "__main__":
    main()
