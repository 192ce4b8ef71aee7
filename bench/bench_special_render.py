"""A special edition costs what a digest costs: its one render (Jinja2 + premailer) next
to a digest's with the same 40 stories, measured in the same run.

    .venv/bin/python bench/bench_special_render.py [--stories 40] [--runs 15]

Prints the median render time of each, the HTML sizes (Gmail clips at about 102 KB), and
the ratio special / digest.  The process pins itself to one CPU so the figures are per core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.rendering import contexts  # noqa: E402
from service.rendering.render import render_variant  # noqa: E402
from tests.support import email_samples as samples  # noqa: E402

INTRO = ["ليلة انتخابية طويلة في المغرب: نتابع هنا النتائج الأولى ساعة بساعة.",
         "تصدر النتائج الرسمية عن وزارة الداخلية بعد منتصف الليل."]


def median_ms(work, runs: int) -> float:
    work()  # templates compiled, caches warm
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stories", type=int, default=40)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    site = samples.SITE
    stories = samples.articles(args.stories)
    digest_ctx = samples.all_contexts(site, digest_articles=args.stories)["digest"]
    special_ctx = contexts.special_context(site, title="ليلة الانتخابات", intro=INTRO, articles=stories,
                                           edition_date=samples.EDITION_AT)
    digest = median_ms(lambda: render_variant("digest", digest_ctx), args.runs)
    special = median_ms(lambda: render_variant("special", special_ctx), args.runs)
    d_size = len(render_variant("digest", digest_ctx).html.encode())
    s_size = len(render_variant("special", special_ctx).html.encode())
    print(f"{args.stories} stories, median of {args.runs} renders on one core")
    print(f"digest  (reference): {digest:8.1f} ms  {d_size:,} bytes of HTML")
    print(f"special            : {special:8.1f} ms  {s_size:,} bytes of HTML")
    print(f"ratio special/digest: {special / digest:.2f}")


if __name__ == "__main__":
    main()
