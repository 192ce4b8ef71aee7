"""The README's gallery: the sample mails in headless Chromium, as readers get them.

    .venv/bin/python scripts/gallery.py [--out docs/gallery]

Renders the fixed samples of tests/support/email_samples.py (the digest of a short day as a
reader with alerts on gets it, one story in «فاتك؟»), personalises them, and shoots each at 600
and 375 px wide, light and dark, and with every <style> element removed (what
gmail.mobile-webmail and some Outlooks keep).  `inbox-rtl.png` draws each mail's Subject
and preheader as a right-to-left inbox lists them, from the strings the mail carries.
Images are served by the script (a flat SVG), nothing is fetched.
"""

from __future__ import annotations

import argparse
import html as htmllib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from service.rendering import contexts  # noqa: E402
from service.rendering.personalise import personalise  # noqa: E402
from service.rendering.render import render_variant  # noqa: E402
from tests.support import email_samples as samples  # noqa: E402
from tests.support.browser import CHROMIUM_ARGS, chromium_path  # noqa: E402

IMAGE = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="600" height="400">'
    b'<rect width="600" height="400" fill="#4a6fa5"/><circle cx="300" cy="200" r="90" fill="#e8c170"/></svg>'
)
STYLE = re.compile(r"<style\b[^>]*>.*?</style>", re.S | re.I)
# (name, width, scheme, drop the <style> block)
SHOTS = {
    "digest": [(600, "light", False), (375, "light", False), (600, "dark", False), (375, "dark", False),
               (375, "light", True)],
    "alert": [(375, "light", False), (375, "dark", False), (375, "light", True)],
    "correction": [(375, "light", False)],
    "welcome": [(375, "light", False)],
}


def _mails() -> dict[str, object]:
    ctxs = samples.all_contexts()
    sections = samples.sections(5)  # a short day keeps the images small
    phone = next(a for s in sections for a in s.articles if "COVID-19" in a.title)
    ctxs["digest"] = contexts.digest_context(samples.SITE, sections, edition_date=samples.EDITION_AT,
                                             frequency="daily", lead=samples.LEAD, alerted={phone.id})
    out = {}
    for kind, ctx in ctxs.items():
        variant = render_variant(kind, ctx)
        html, _ = personalise(variant, unsubscribe_url="https://news.example/unsubscribe/t1",
                              preferences_url="https://news.example/preferences/t1")
        out[kind] = (variant, html)
    return out


def _inbox(mails) -> str:
    rows = "".join(
        '<div class="row"><div class="from">نشرة</div>'
        f'<div class="subject">{htmllib.escape(v.subject)}</div>'
        f'<div class="snippet">{htmllib.escape(v.preheader)}</div></div>'
        for v, _ in mails.values()
    )
    return (
        '<html dir="rtl" lang="ar"><head><meta charset="utf-8"><style>'
        "body{margin:0;font:15px Tahoma,'Noto Naskh Arabic',sans-serif;background:#ffffff;color:#1a1a1a}"
        ".row{padding:10px 16px;border-bottom:1px solid #e5e5e5;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}"
        ".from{font-weight:bold}.subject{font-weight:bold}.snippet{color:#595959}"
        f"</style></head><body>{rows}</body></html>"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "docs" / "gallery"))
    out = Path(ap.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    mails = _mails()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.route("**/*", lambda r: r.fulfill(status=200, body=IMAGE, content_type="image/svg+xml")
                   if r.request.resource_type == "image" else r.abort())
        for kind, shots in SHOTS.items():
            _, html = mails[kind]
            for width, scheme, bare in shots:
                page.set_viewport_size({"width": width, "height": 800})
                page.emulate_media(color_scheme=scheme)
                page.set_content(STYLE.sub("", html) if bare else html, wait_until="load")
                name = f"{kind}-{width}-{'nostyle' if bare else scheme}.png"
                page.screenshot(path=str(out / name), full_page=True)
                print(name)
        page.set_viewport_size({"width": 375, "height": 400})
        page.emulate_media(color_scheme="light")
        page.set_content(_inbox(mails))
        page.screenshot(path=str(out / "inbox-rtl.png"), full_page=True)
        print("inbox-rtl.png")
        browser.close()


if __name__ == "__main__":
    main()
