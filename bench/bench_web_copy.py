"""The web copy's cost: serving an edition's copy from the stored variant, against
rendering it again, and finding the variant a link names.

    .venv/bin/python bench/bench_web_copy.py [--articles 40] [--variants 200] [--n 2000]

In one process pinned to one CPU, for a digest of --articles articles:
  * render + inline of the variant (Jinja2 + premailer): what the copy would cost if it
    were rendered per view — the reference;
  * public_html(): the stored variant with the reader's links taken out (what each view
    of /e/… does besides one SELECT), and its ratio to the render;
  * personalise(): the per-recipient fill-in of the same variant, for scale;
  * the lookup of a link's variant among --variants variants (one HMAC each, as
    web_copy.find does), and per variant.
"""

from __future__ import annotations

import argparse
import gc
import hmac
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.editions.web_copy import public_html, ref_for  # noqa: E402
from service.rendering.personalise import personalise  # noqa: E402
from service.rendering.render import render_variant  # noqa: E402
from tests.support import email_samples as samples  # noqa: E402

SECRET = "bench-secret-key-of-some-length"


def per_call(fn, n: int, repeats: int = 5) -> float:
    """The median of `repeats` runs of n calls, per call (seconds)."""
    runs = []
    for _ in range(repeats):
        gc.collect()
        t = time.perf_counter()
        for i in range(n):
            fn(i)
        runs.append((time.perf_counter() - t) / n)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--articles", type=int, default=40)
    ap.add_argument("--variants", type=int, default=200)
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    ctx = samples.all_contexts(digest_articles=args.articles)["digest"]
    variant = render_variant("digest", ctx)
    render = per_call(lambda i: render_variant("digest", ctx), max(5, args.n // 200))
    page = public_html(variant.html, signup_url="https://news.example/", indexable=False)
    assert "__NASHRA_" not in page
    strip = per_call(lambda i: public_html(variant.html, signup_url="https://news.example/", indexable=False), args.n)
    fill = per_call(lambda i: personalise(variant, unsubscribe_url=f"https://news.example/unsubscribe/t{i}",
                                          preferences_url=f"https://news.example/preferences/t{i}"), args.n)
    keys = ["all", *(f"[{i}, {i + 1}]" for i in range(args.variants - 1))]
    wanted = ref_for(7, keys[-1], SECRET)  # the worst case: the last one tried
    lookup = per_call(lambda i: next(k for k in keys if hmac.compare_digest(ref_for(7, k, SECRET), wanted)),
                      max(10, args.n // 20))

    print(f"digest of {args.articles} articles: {len(variant.html.encode()):,} bytes of HTML")
    print(f"render + inline (reference)         : {render * 1e3:9.3f} ms")
    print(f"public_html (each view of /e/...)   : {strip * 1e3:9.3f} ms   ratio to render {strip / render:.4f}")
    print(f"personalise (per recipient)         : {fill * 1e3:9.3f} ms   ratio to render {fill / render:.4f}")
    print(f"{f'find the variant among {args.variants}':36}: {lookup * 1e3:9.3f} ms   "
          f"({lookup / args.variants * 1e6:.2f} µs a variant; ratio to render {lookup / render:.4f})")


if __name__ == "__main__":
    main()
