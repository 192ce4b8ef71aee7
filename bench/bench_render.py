"""Render once, personalise cheaply: how many ready-to-send digests one core builds.

    .venv/bin/python bench/bench_render.py [--recipients 5000] [--naive 40]

For a 40-article digest it prints:
  * render + inline time per edition (Jinja2 + premailer, once per audience variant);
  * per-recipient cost of personalise() + build_message(), and of PreparedVariant.build();
  * messages per second on one core, amortising the one render over the recipients;
  * per-recipient cost with click tracking off and on (every link through /r/, one
    reader token per message), and their ratio (issue 18's target: at most 1.5x);
  * the naive way (render + premailer + email.message.EmailMessage for every recipient),
    measured in the same run, and the ratio.
The process pins itself to one CPU so the figure is per core.
"""

from __future__ import annotations

import argparse
import dataclasses
import email.message
import gc
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.clicks.signing import link_url, reader_token  # noqa: E402
from service.config import get_settings  # noqa: E402
from service.rendering.bidi import rtl_text  # noqa: E402
from service.rendering.environment import html_env, text_env  # noqa: E402
from service.rendering.inline import inline_css  # noqa: E402
from service.rendering.mime import PreparedVariant, build_message  # noqa: E402
from service.rendering.personalise import personalise  # noqa: E402
from service.rendering.render import render_variant  # noqa: E402
from service.rendering.viewmodels import CLICK_TOKEN  # noqa: E402
from tests.support import email_samples as samples  # noqa: E402

FROM = "نشرة <newsletter@nashra.example>"


def links(i: int) -> tuple[str, str]:
    # the shape of a real signed token (itsdangerous, ~60 characters)
    tok = f"WzEyMzQ1LCAxXQ.ZXhhbXBsZS10b2tlbi0{i:06d}.aBcDeFgHiJkLmNoPqRsTuVwXyZ"
    return f"https://news.example/unsubscribe/{tok}", f"https://news.example/preferences/{tok}"


def tracked(variant):
    """The variant's links as service/clicks/links.py writes them (without a database: ids
    counted here), each followed by the reader's token placeholder."""
    settings = get_settings()
    urls: dict[str, str] = {}

    def link(url: str) -> str:
        if url.startswith(settings.public_url) or "__NASHRA_" in url:
            return url
        if url not in urls:
            urls[url] = link_url(1000 + len(urls), settings) + "." + CLICK_TOKEN
        return urls[url]

    html = re.sub(r'(href=")(https?://[^"]*)(")', lambda m: m[1] + link(m[2]) + m[3], variant.html)
    text = re.sub(r"https?://[^\s\u200e\u200f<>\"]+", lambda m: link(m[0]), variant.text)
    return dataclasses.replace(variant, html=html, text=text)


def per_call(fn, n: int) -> float:
    gc.collect()
    t = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipients", type=int, default=5000)
    ap.add_argument("--naive", type=int, default=40, help="recipients for the naive way (it is slow)")
    ap.add_argument("--editions", type=int, default=10)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    ctx = samples.all_contexts(digest_articles=40)["digest"]
    variant = render_variant("digest", ctx)  # warm the template cache

    render_s = statistics.median(
        per_call(lambda _: render_variant("digest", ctx), 1) for _ in range(args.editions)
    )

    def simple(i: int) -> bytes:
        unsub, prefs = links(i)
        html, text = personalise(variant, unsubscribe_url=unsub, preferences_url=prefs)
        return build_message(subject=variant.subject, html=html, text=text, from_addr=FROM,
                             to_addr=f"reader{i}@example.com", headers={"List-Unsubscribe": f"<{unsub}>"})

    prepared = PreparedVariant(variant, from_addr=FROM, headers={"List-Id": "digest.nashra.example"})

    def fast(i: int) -> bytes:
        unsub, prefs = links(i)
        return prepared.build(to_addr=f"reader{i}@example.com", unsubscribe_url=unsub,
                              preferences_url=prefs, headers={"List-Unsubscribe": f"<{unsub}>"})

    def naive(i: int) -> bytes:
        # what a newsletter tool does without the design: everything, for everyone
        unsub, prefs = links(i)
        c = dict(ctx, unsubscribe_url=unsub, preferences_url=prefs)
        html = inline_css(html_env().get_template("digest/body.html").render(c, subject=variant.subject))
        text = rtl_text(text_env().get_template("digest/body.txt").render(c))
        msg = email.message.EmailMessage()
        msg["From"] = FROM
        msg["To"] = f"reader{i}@example.com"
        msg["Subject"] = variant.subject
        msg["List-Unsubscribe"] = f"<{unsub}>"
        msg.set_content(text, cte="base64")
        msg.add_alternative(html, subtype="html", cte="base64")
        return msg.as_bytes()

    # Clicks counted (service/clicks): every outgoing link of the variant through /r/,
    # rewritten once per variant; per recipient one click token (two HMACs) filled into
    # every link by PreparedVariant's fixed-length hole.
    tracked_variant = tracked(variant)
    tracked_prepared = PreparedVariant(tracked_variant, from_addr=FROM, headers={"List-Id": "digest.nashra.example"})
    settings = get_settings()

    def fast_tracked(i: int) -> bytes:
        unsub, prefs = links(i)
        return tracked_prepared.build(to_addr=f"reader{i}@example.com", unsubscribe_url=unsub,
                                      preferences_url=prefs, headers={"List-Unsubscribe": f"<{unsub}>"},
                                      click_token=reader_token(7, i, settings))

    prepare_s = per_call(lambda _: PreparedVariant(variant, from_addr=FROM), 20)
    simple_s = per_call(simple, args.recipients)
    fast_s = per_call(fast, args.recipients)
    # Off and on measured message by message in turns (off, on, off, on…), so that a
    # busy machine's swings fall on both alike; three rounds, the median kept.
    off_runs, on_runs = [], []
    for _ in range(3):
        gc.collect()
        off_t = on_t = 0.0
        for i in range(args.recipients):
            t0 = time.perf_counter()
            fast(i)
            t1 = time.perf_counter()
            fast_tracked(i)
            on_t += time.perf_counter() - t1
            off_t += t1 - t0
        off_runs.append(off_t / args.recipients)
        on_runs.append(on_t / args.recipients)
    off_s, on_s = statistics.median(off_runs), statistics.median(on_runs)
    naive_s = per_call(naive, args.naive)

    r = args.recipients
    fast_total = render_s + prepare_s + r * fast_s
    simple_total = render_s + r * simple_s
    naive_total = r * naive_s
    size = len(fast(0))
    print(f"digest: 40 articles, HTML {len(variant.html.encode()) / 1024:.1f} KB, message {size / 1024:.1f} KB")
    print(f"render + inline, once per edition variant : {render_s * 1e3:8.2f} ms")
    print(f"PreparedVariant(), once per variant       : {prepare_s * 1e3:8.2f} ms")
    print(f"per recipient, personalise + build_message: {simple_s * 1e6:8.1f} µs")
    print(f"per recipient, PreparedVariant.build      : {fast_s * 1e6:8.1f} µs")
    print(f"per recipient, naive (render+premailer+EmailMessage): {naive_s * 1e3:8.2f} ms")
    n_links = tracked_variant.html.count(CLICK_TOKEN) + tracked_variant.text.count(CLICK_TOKEN)
    print(f"per recipient, clicks off (links straight to the site): {off_s * 1e6:8.1f} µs")
    print(f"per recipient, clicks on ({n_links} tracked links, one token): {on_s * 1e6:8.1f} µs")
    print(f"ratio clicks on / off: {on_s / off_s:.2f}x   (target: at most 1.5x)")
    print(f"messages/s on one core, {r} recipients, prepared : {r / fast_total:10.0f}")
    print(f"messages/s on one core, {r} recipients, simple   : {r / simple_total:10.0f}")
    print(f"messages/s on one core, naive                    : {r / naive_total:10.1f}")
    print(f"ratio prepared / naive: {naive_total / fast_total:.0f}x   simple / naive: {naive_total / simple_total:.0f}x")


if __name__ == "__main__":
    main()
