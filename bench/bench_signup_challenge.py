"""What the signup form's proof of work (SIGNUP_CHALLENGE) costs a real browser.

Headless Chromium runs templates/web/signup_challenge.js on real challenges
(service/subscribers/challenge.py, checked afterwards by the server's own `solves`),
with the CPU throttled through the DevTools protocol (`Emulation.setCPUThrottlingRate`)
to a phone-class CPU, for both hashers (the plain SHA-256 with the challenge's first
block hashed once, and Web Crypto in batches), at several difficulties.

The solve time of one challenge is random (about 2^bits tries, geometrically spread),
so each cell is the median over --solves challenges; the tries per second are the total
tries over the total time, the steadier figure.  The reference is the same script
unthrottled in the same run: the ratio says how much slower the "phone" is.

    .venv/bin/python bench/bench_signup_challenge.py [--solves 15] [--bits 14,16,17,18] [--rates 1,4,6]

The issue's bar: under 1 s (median) at the default SIGNUP_CHALLENGE_BITS with the CPU
throttled 4-6×.  On a machine other work shares, the throttled figures move with that
load (the throttle slows what Chromium gets, not the machine): read the 1× column beside
them, and the load average printed at the start.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

os.environ.setdefault("SECRET_KEY", "bench-secret-key-0123456789abcdef")

from service.config import get_settings  # noqa: E402
from service.resources import signup_challenge_js  # noqa: E402
from service.subscribers import challenge  # noqa: E402
from tests.support.browser import CHROMIUM_ARGS, chromium_path  # noqa: E402

SOLVE = """async ([fn, value, bits]) => {
  const t0 = performance.now();
  const found = await window.NashraChallenge[fn](value, bits);
  return [found, performance.now() - t0];
}"""


def run(page, fn: str, bits: int, solves: int) -> tuple[float, float, float]:
    """(median and 90th percentile seconds per solve, tries per second) over `solves`
    fresh challenges."""
    times, tries = [], 0
    for _ in range(solves):
        c = challenge.issue()
        value = c.value.replace(f".{c.bits}.", f".{bits}.", 1)  # the hash does not care for the MAC
        found, ms = page.evaluate(SOLVE, [fn, value, bits])
        assert challenge.solves(value, found, bits), "the browser's answer does not solve the challenge"
        times.append(ms / 1000)
        tries += int(found) + 1
    p90 = statistics.quantiles(times, n=10)[-1] if len(times) > 1 else times[0]
    return statistics.median(times), p90, tries / sum(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solves", type=int, default=15)
    parser.add_argument("--bits", default="15,16,17,18")
    parser.add_argument("--rates", default="1,4,6")
    parser.add_argument("--hashers", default="solvePlain,solveSubtle")
    args = parser.parse_args()
    path = chromium_path()
    if path is None:
        sys.exit("Chromium not found (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    bits_list = [int(b) for b in args.bits.split(",")]
    rates = [float(r) for r in args.rates.split(",")]
    print(f"default SIGNUP_CHALLENGE_BITS = {get_settings().signup_challenge_bits}; "
          f"{args.solves} challenges a cell; CPU: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        # A page of its own on http://localhost (a secure context: Web Crypto is there),
        # answered by Playwright itself: no server in the measurement.
        script = signup_challenge_js()
        page.route("http://localhost/**", lambda route: route.fulfill(
            content_type="text/javascript" if route.request.url.endswith(".js") else "text/html",
            body=script if route.request.url.endswith(".js") else '<p>bench</p><script src="/c.js"></script>'))
        page.goto("http://localhost/")
        page.wait_for_function("window.NashraChallenge !== undefined")
        cdp = page.context.new_cdp_session(page)
        results: dict[tuple[str, int, float], tuple[float, float, float]] = {}
        print(f"{'hasher':<12} {'bits':>4} {'cpu':>5} {'median s':>9} {'p90 s':>7} {'tries/s':>11} "
              f"{'× slower than 1×':>17}")
        for fn in args.hashers.split(","):
            for bits in bits_list:
                for rate in rates:
                    cdp.send("Emulation.setCPUThrottlingRate", {"rate": rate})
                    results[(fn, bits, rate)] = median, p90, speed = run(page, fn, bits, args.solves)
                    ref = results.get((fn, bits, rates[0]))
                    ratio = ref[2] / speed if ref else 1.0
                    print(f"{fn:<12} {bits:>4} {rate:>4.0f}× {median:>9.3f} {p90:>7.3f} {speed:>11,.0f} "
                          f"{ratio:>17.2f}")
        cdp.send("Emulation.setCPUThrottlingRate", {"rate": 1})
        browser.close()
    default = get_settings().signup_challenge_bits
    worst = max(rates)
    for fn in args.hashers.split(","):
        cell = results.get((fn, default, worst))
        if cell:
            verdict = "under" if cell[0] < 1 else "OVER"
            print(f"{fn}: {cell[0]:.3f} s median at the default {default} bits, CPU {worst:.0f}× slower — "
                  f"{verdict} the 1 s bar")


if __name__ == "__main__":
    main()
