"""Pages anyone can use (issue 22, item 3), checked in real headless Chromium against the
real app, PostgreSQL and Redis:

- axe-core (pinned in package.json, read from node_modules: nothing downloads at test time)
  finds no WCAG 2.1 A/AA violation on any reader or editor page, in Arabic RTL, in the
  light and in the dark colour scheme; the test prints the counts per page and scheme;
  (what axe leaves undecided in colour contrast is decided here from the CSS);
- no page scrolls sideways at 320 CSS px wide, nor with its text at 200 % in a 640 px
  window, and all its text grows (data tables scroll inside their own box, which the
  keyboard can reach); buttons stay buttons in forced colours;
- signup (with and without the proof of work), preferences and unsubscribe work by
  keyboard alone: every control is reached in document order, each shows a focus ring
  that stands out from the page (3:1), and the form is sent and does what the reader asked;
- a form's error is announced (an assertive live region), marks its field and takes the
  focus, and nothing is stored.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from service.config import get_settings, reset_settings
from service.db import session_scope
from service.delivery.planner import plan
from service.editions import web_copy
from service.editions.digests import create_digest
from service.models import (
    Article,
    ArticleVersion,
    Feed,
    Section,
    Subscriber,
    SubscriberStatus,
    Suppression,
    VersionKind,
    utcnow,
)
from service.newsletters import catalogue, membership
from service.staff.editors import create_editor
from service.subscribers.tokens import link
from tests.support.browser import log_in_editor
from tests.support.delivery import run_all_batches
from tests.support.readers import reader

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
AXE_JS = REPO / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
SCHEMES = ("light", "dark")
LONG_URL = "https://news.example/feeds/" + "very-long-feed-path-without-any-break-" * 4 + "rss.xml"


@pytest.fixture(scope="module")
def axe_source() -> str:
    if not AXE_JS.is_file():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{AXE_JS} is missing under CI=true: run `make install-test` (npm ci)")
        pytest.skip("axe-core not installed (make install-test runs npm ci)")
    return AXE_JS.read_text(encoding="utf-8")


def _context(browser, scheme: str = "light"):
    # bypass_csp: the pages' CSP rightly refuses inline scripts, and axe is injected as one.
    context = browser.new_context(viewport={"width": 1000, "height": 800}, color_scheme=scheme, bypass_csp=True,
                                  locale="ar")
    # Nothing outside the test server is fetched (the article's links point at news.example).
    context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"), lambda route: route.abort())
    return context


# ------------------------------------------------------------------ what is checked on a page

# axe-core takes any text whose first letter alone draws differently from its start in the
# text for an icon-font ligature, and after three such texts in one font skips every text in
# that font: Arabic letters join, so its colour-contrast rule never looked at our Arabic text
# (it passed white on #ff8a80). These pages use no icon font: every font is declared free of
# ligature icons before each run (axe clears its cache after one).
AXE_RUN = """async (tags) => {
  axe._cache.set('fonts', new Proxy({}, {get: () => ({occurrences: Infinity, numLigatures: 0})}));
  const r = await axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations'],
                                     iframes: false});
  const found = r.violations.map(v => ({id: v.id, help: v.help, count: v.nodes.length,
    nodes: v.nodes.slice(0, 3).map(n => n.target.join(' ') + ': ' + (n.failureSummary || '').replace(/\\s+/g, ' '))}));
  // What axe leaves undecided (its background "partially obscured", as it says of a
  // coloured label beside a link) is decided from the CSS: the text's colour on the first
  // opaque background behind it, 4.5:1 (3:1 for large text).
  const lum = c => { const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map(x => {
    x /= 255; return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const opaque = c => !/^rgba\\(.*,\\s*0\\)$/.test(c) && c !== 'transparent';
  const undecided = [];
  for (const item of r.incomplete.filter(v => v.id === 'color-contrast')) {
    for (const n of item.nodes) {
      const el = document.querySelector(n.target[0]);
      if (!el) continue;
      const s = getComputedStyle(el);
      let bg = null;
      for (let a = el; a && !bg; a = a.parentElement) {
        const c = getComputedStyle(a).backgroundColor; if (opaque(c)) bg = c; }
      bg = bg || 'rgb(255, 255, 255)';
      const [hi, lo] = [lum(s.color), lum(bg)].sort((x, y) => y - x);
      const ratio = (hi + 0.05) / (lo + 0.05), size = parseFloat(s.fontSize), bold = parseInt(s.fontWeight) >= 700;
      const large = size >= 24 || (bold && size >= 18.66);
      if (ratio < (large ? 3 : 4.5)) undecided.push(`${n.target.join(' ')}: ${ratio.toFixed(2)}:1 (${s.color} on ${bg})`);
    }
  }
  if (undecided.length) found.push({id: 'color-contrast (undecided by axe)', help: 'text contrast from the CSS',
                                    count: undecided.length, nodes: undecided.slice(0, 3)});
  return found;
}"""

# Sideways scrolling of the page itself (a data table scrolls in its own .table-scroll box,
# which the document's scroll width does not include), with the widest culprits named.
OVERFLOW = """() => {
  const root = document.scrollingElement, width = root.clientWidth;
  const culprits = [...document.body.querySelectorAll('*')]
    .filter(el => { const r = el.getBoundingClientRect();
                    return !el.closest('.table-scroll, .skip, .hp') && (r.right > width + 1 || r.left < -1); })
    .slice(-3).map(el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.className ? '.' + el.className : '')
                        + ' ' + Math.round(el.getBoundingClientRect().width) + 'px');
  return {scroll: root.scrollWidth, client: width, culprits};
}"""

# A box that scrolls sideways (a data table's at 320 px) must be reachable by keyboard, to
# scroll it with the arrow keys: focusable itself, or holding something focusable.
UNREACHABLE_SCROLLERS = """() => [...document.body.querySelectorAll('*')].filter(el => {
  const s = getComputedStyle(el);
  if (!['auto', 'scroll'].includes(s.overflowX) || el.scrollWidth <= el.clientWidth + 1) return false;
  return el.tabIndex < 0 && !el.querySelector('a[href], button, input, select, textarea, [tabindex]:not([tabindex="-1"])');
}).map(el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + '.' + el.className)"""

# Text cut off by a box that hides its overflow (form fields scroll their own text).
CLIPPED = """() => [...document.body.querySelectorAll('*')].filter(el => {
  if (el.closest('.skip, .hp') || el.matches('input, select, textarea, iframe, option')) return false;
  const s = getComputedStyle(el);
  return (s.overflowX === 'hidden' || s.overflowX === 'clip') && el.scrollWidth > el.clientWidth + 1;
}).map(el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : ''))"""


# Text that does not grow with the reader's text size (a size fixed in px): what is
# measured before the text is set to 200 % and not at least 1.9 times as large after.
TEXT_SIZES = """() => { window.__sizes = [...document.body.querySelectorAll('*')]
  .filter(el => [...el.childNodes].some(n => n.nodeType === 3 && n.nodeValue.trim()) && el.checkVisibility()
                && !el.closest('svg'))  // a chart's labels grow with the chart
  .map(el => [el, parseFloat(getComputedStyle(el).fontSize)]); }"""
FIXED_TEXT = """() => window.__sizes.filter(([el, size]) => parseFloat(getComputedStyle(el).fontSize) < 1.9 * size)
  .slice(0, 5).map(([el, size]) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + ' ' + size + 'px')"""


class Audit:
    """Everything found on every page: axe per scheme, and the reflow checks."""

    def __init__(self, axe: str):
        self.axe = axe
        self.counts: dict[str, dict[str, int]] = {}
        self.problems: list[str] = []

    def page(self, page, name: str, *, text_only_zoom: bool = True) -> None:
        """Axe in both schemes, then reflow at 320 px and at 200 % text. text_only_zoom=False
        for the web copy: the mail's own HTML sizes its text in px, as mail clients need;
        it grows with the browser's zoom, which the 320 px check stands for (1280 px at 400 %)."""
        page.wait_for_load_state("load")
        assert page.locator("html").get_attribute("dir") == "rtl" and page.locator("html").get_attribute("lang") == "ar"
        self.counts[name] = {}
        for scheme in SCHEMES:
            page.emulate_media(color_scheme=scheme)
            if not page.evaluate("() => typeof window.axe !== 'undefined'"):
                page.add_script_tag(content=self.axe)
            found = page.evaluate(AXE_RUN, WCAG_TAGS)
            self.counts[name][scheme] = sum(v["count"] for v in found)
            self.problems += [f"{name} [{scheme}] {v['id']}: {v['help']} — {'; '.join(v['nodes'])}" for v in found]
        page.emulate_media(color_scheme="light")
        viewport = page.viewport_size
        try:
            page.set_viewport_size({"width": 320, "height": 640})
            self._reflow(page, name, "320 px")
            if stuck := page.evaluate(UNREACHABLE_SCROLLERS):
                self.problems.append(f"{name} [320 px] scrolls where a keyboard cannot reach: {stuck}")
            page.set_viewport_size({"width": 640, "height": 800})
            page.evaluate(TEXT_SIZES)
            page.evaluate("() => { document.documentElement.style.fontSize = '200%'; }")
            if text_only_zoom and (fixed := page.evaluate(FIXED_TEXT)):
                self.problems.append(f"{name} [text 200 %] text that does not grow: {fixed}")
            self._reflow(page, name, "text 200 %")
            if clipped := page.evaluate(CLIPPED):
                self.problems.append(f"{name} [text 200 %] text cut off in {clipped}")
        finally:
            page.evaluate("() => { document.documentElement.style.fontSize = ''; }")
            page.set_viewport_size(viewport)

    def _reflow(self, page, name: str, how: str) -> None:
        m = page.evaluate(OVERFLOW)
        if m["scroll"] > m["client"]:
            self.problems.append(f"{name} [{how}] scrolls sideways: {m['scroll']} px in {m['client']} "
                                 f"({', '.join(m['culprits'])})")

    def report(self) -> str:
        width = max(len(n) for n in self.counts)
        lines = [f"{'page':<{width}}  light  dark"]
        lines += [f"{n:<{width}}  {c['light']:>5}  {c['dark']:>4}" for n, c in self.counts.items()]
        return "\n".join(lines)


# ------------------------------------------------------------------ the pages and what they hold


def _article(s, title: str, url: str, section_id: int, *, image: str | None = None) -> Article:
    seen = utcnow() - dt.timedelta(hours=1)
    summary = "أعلنت السلطات المغربية تفكيك خلية من أربعة عناصر في عملية مشتركة مع الاستخبارات."
    article = Article(guid=url, url=url, title=title, summary=summary, body_html=f"<p>{summary}</p>",
                      section_id=section_id, lead_image_url=image, lead_image_caption="عناصر من الأمن المغربي"
                      if image else None, published_at=seen, first_seen_at=seen, last_major_at=seen, version=1,
                      content_hash="h" * 64)
    s.add(article)
    s.flush()
    s.add(ArticleVersion(article_id=article.id, version=1, kind=VersionKind.new, content_hash="h" * 64, title=title,
                         summary=summary, created_at=seen))
    return article


def _newsroom(base: str) -> dict:
    with session_scope() as s:
        sections = {x.slug: x.id for x in s.scalars(sa.select(Section))}
        lead = _article(s, "تفكيك خلية إرهابية شمال المغرب", "https://news.example/world/morocco", sections["world"],
                        image=base + "/favicon.ico")  # the page shows it 320 px wide: wider than a phone
        for i in range(3):
            _article(s, f"خبر رياضي رقم {i}", f"https://news.example/sport/{i}", sections["sport"])
        pending = reader(s, "pending@example.com", status=SubscriberStatus.pending)
        leaving = reader(s, "leaving@example.com", frequency="daily")
        reader(s, "world@example.com", frequency="daily", sections=[sections["world"]])
        daily = catalogue.by_slug(s, "daily").id
        s.add_all([Suppression(email="bounced@example.com", reason="hard_bounce", detail="550 5.1.1 " + "x" * 150),
                   Feed(url=LONG_URL, section_id=sections["world"], consecutive_failures=2,
                        last_error="timed out after 20 s", next_poll_at=utcnow())])
        s.flush()
        _, admin_token = create_editor(s, "منى", "admin")
        digest, _ = create_digest(s, "daily", scheduled=False, now=utcnow())
        plan(s, digest.id)
        digest_id = digest.id
    run_all_batches(digest_id)  # sent: its report, its web copy and the archive have something to show
    with session_scope() as s:
        pending, leaving = s.get(Subscriber, pending.id), s.get(Subscriber, leaving.id)
        return {"digest": digest_id, "lead": lead.id, "admin": admin_token,
                "confirm": link("confirm", pending.id, pending.token_version),
                "unsubscribe": link("unsubscribe", leaving.id, leaving.token_version) + f"?n={daily}"}


def _outbox_mail() -> str:
    """A captured message for the demo's outbox pages."""
    box = get_settings().outbox_dir
    box.mkdir(parents=True, exist_ok=True)
    msg = EmailMessage()
    msg["Subject"], msg["From"], msg["To"] = "عاجل | زلزال شمال المغرب", "news@example.com", "reader@example.com"
    msg["Date"] = "Mon, 07 Dec 2026 10:00:00 +0000"
    msg.set_content("زلزال بقوة 5 درجات.")
    msg.add_alternative('<html dir="rtl" lang="ar"><body><p>زلزال بقوة 5 درجات.</p></body></html>', subtype="html")
    (box / "0001-alert.eml").write_bytes(msg.as_bytes())
    return "0001-alert"


@pytest.fixture
def demo_server(monkeypatch, request):
    """The live server with the demo's pages (the outbox) and the public archive switched on."""
    monkeypatch.setenv("NASHRA_DEMO", "true")
    monkeypatch.setenv("ARCHIVE_PUBLIC", "true")
    return request.getfixturevalue("live_server")


def test_every_page_passes_axe_in_both_schemes_and_reflows_at_320px_and_200_percent(demo_server, browser, axe_source):
    base = demo_server
    data = _newsroom(base)
    audit = Audit(axe_source)
    context = _context(browser)
    page = context.new_page()
    try:
        # The reader's pages, reached as a reader reaches them.
        page.goto(base + "/")
        audit.page(page, "signup")
        # The check sees what a reader sees: the old dark button (white on the light accent) fails it.
        page.emulate_media(color_scheme="dark")
        page.add_style_tag(content="button { color: #ffffff !important; }")
        assert "color-contrast" in {v["id"] for v in page.evaluate(AXE_RUN, WCAG_TAGS)}
        page.emulate_media(color_scheme="light")
        # A Windows contrast theme drops the button's colour: its border keeps it a button.
        page.reload()
        page.emulate_media(forced_colors="active")
        assert page.evaluate("() => { const s = getComputedStyle(document.querySelector('button[type=submit]'));"
                             " return s.borderTopStyle === 'solid' && parseFloat(s.borderTopWidth) >= 1; }")
        page.emulate_media(forced_colors="none")
        page.get_by_label("البريد الإلكتروني", exact=True).fill("not an address")
        page.get_by_role("button", name="اشترك").click()
        audit.page(page, "signup, error")
        page.goto(base + "/?embed=1")
        audit.page(page, "signup, embedded")
        page.goto(base + "/")
        page.get_by_label("البريد الإلكتروني", exact=True).fill("new@example.com")
        page.get_by_label("أوافق على", exact=False).check()
        page.get_by_role("button", name="اشترك").click()
        page.get_by_role("heading", name="تحقّق من بريدك الإلكتروني").wait_for()
        audit.page(page, "signup done")
        page.goto(data["confirm"])
        audit.page(page, "confirm")
        page.get_by_role("button", name="تأكيد الاشتراك").click()
        page.get_by_role("heading", name="تم تأكيد اشتراكك").wait_for()
        audit.page(page, "confirmed")
        page.get_by_role("link", name="اختر نشراتك وأقسامها ومواعيدها").click()
        audit.page(page, "preferences")
        page.get_by_role("button", name="احفظ التفضيلات").click()
        page.get_by_text("حُفظت تفضيلاتك.").wait_for()
        audit.page(page, "preferences, saved")
        page.get_by_role("button", name="احذف بياناتي").click()
        audit.page(page, "forget")
        page.get_by_role("button", name="نعم، احذف بياناتي").click()
        page.get_by_role("heading", name="حُذفت بياناتك").wait_for()
        audit.page(page, "forgotten")
        page.goto(data["unsubscribe"])
        audit.page(page, "unsubscribe")
        page.get_by_role("button", name="ألغِ اشتراكي في «النشرة اليومية» فقط").click()
        page.get_by_role("heading", name="أُلغي اشتراكك في «النشرة اليومية»").wait_for()
        audit.page(page, "unsubscribed from one newsletter")
        page.goto(data["unsubscribe"])
        audit.page(page, "unsubscribe, that newsletter left")
        page.get_by_role("button", name="إلغاء الاشتراك من كل النشرات").click()
        page.get_by_role("heading", name="أُلغي اشتراكك").wait_for()
        audit.page(page, "unsubscribed")
        page.goto(base + "/preferences/not-a-token")
        audit.page(page, "error (bad link)")
        page.goto(base + "/archive")
        page.locator(f"#edition-{data['digest']}").wait_for()
        audit.page(page, "archive")
        page.goto(base + web_copy.path_for(data["digest"], "all"))
        audit.page(page, "web copy", text_only_zoom=False)

        # The newsroom's pages.
        page.goto(base + "/editor")
        audit.page(page, "editor login")
        page.fill("input[name=name]", "منى")
        page.fill("input[name=token]", "nse_wrong")
        page.click("button[type=submit]")
        page.locator("p.error").wait_for()
        assert page.evaluate("() => document.activeElement.matches('p.error[role=alert]')")  # read out at once
        audit.page(page, "editor login, error")
        log_in_editor(page, base, "منى", data["admin"])
        audit.page(page, "editor")
        page.goto(f"{base}/editor?article={data['lead']}#alert-form")
        page.locator("#article-lead").wait_for()
        audit.page(page, "editor, article")
        page.get_by_role("button", name="معاينة").click()
        page.locator("#audience").wait_for()
        audit.page(page, "editor, preview")
        # An alert scheduled for tomorrow: the special edition page lists what waits.
        later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
        scheduled = httpx.post(base + "/api/alerts", headers={"Authorization": f"Bearer {data['admin']}"},
                               json={"headline": "موعد إعلان نتائج الانتخابات", "url": "https://news.example/vote",
                                     "send_at": later})
        assert scheduled.status_code == 202, scheduled.text
        page.goto(base + "/editor/special")
        page.locator("#waiting").wait_for()
        audit.page(page, "special edition")
        page.get_by_label("كلمات من العنوان").fill("المغرب")
        page.get_by_role("button", name="ابحث", exact=True).click()
        page.get_by_role("button", name="أضف «تفكيك خلية إرهابية شمال المغرب»").click()
        page.get_by_role("button", name="احذف «تفكيك خلية إرهابية شمال المغرب» من العدد").wait_for()
        audit.page(page, "special edition, chosen")
        for path, name in (("/editor/digest", "digest"), ("/editor/editors", "editors"),
                           ("/editor/sections", "sections"), ("/editor/feeds", "feeds"),
                           ("/editor/suppressions", "suppressions"), ("/editor/settings", "settings"),
                           ("/editor/audit", "audit"), (f"/editor/editions/{data['digest']}/report", "report")):
            page.goto(base + path)
            audit.page(page, name)
        name = _outbox_mail()
        page.goto(base + "/outbox")
        audit.page(page, "outbox")
        page.goto(f"{base}/outbox/{name}")
        audit.page(page, "outbox, message")
    finally:
        context.close()
    table = "axe-core violations (WCAG 2.1 A/AA nodes) per page and colour scheme:\n" + audit.report()
    print("\n" + table)  # shown with -s; kept beside the screenshots of the other browser tests
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "accessibility.txt").write_text(table + "\n" + "\n".join(audit.problems) + "\n", encoding="utf-8")
    assert not audit.problems, "\n".join(audit.problems)


# ------------------------------------------------------------------ by keyboard alone

MARK = "() => { let i = 0; for (const el of document.querySelectorAll('*')) el.dataset.walk = String(i++); }"

# Where the focus is and whether anyone can see it: a ring (outline of 2 px or more, or a
# shadow) drawn because of :focus-visible, on screen.
FOCUSED = """() => {
  const el = document.activeElement;
  if (!el || el === document.body || el === document.documentElement) return null;
  const s = getComputedStyle(el), r = el.getBoundingClientRect();
  const outline = s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2;
  const label = (el.labels && el.labels.length ? el.labels[0].innerText : el.getAttribute('aria-label') || el.innerText || '')
    .trim().replace(/\\s+/g, ' ').slice(0, 60);
  return {key: el.type === 'radio' ? 'radio:' + el.name : el.dataset.walk, tag: el.tagName.toLowerCase(),
          type: el.type || '', name: el.name || '', id: el.id || '', label, value: el.value === undefined ? null : el.value,
          visible: el.matches(':focus-visible') && (outline || s.boxShadow !== 'none'),
          ring: outline ? s.outlineColor : null, page: getComputedStyle(document.body).backgroundColor,
          on_screen: r.width > 0 && r.height > 0 && r.bottom > 0 && r.right > 0 && r.left < innerWidth && r.top < innerHeight};
}"""

# Every control a keyboard should reach, in document order (a radio group is one stop).
STOPS = """() => {
  const out = [];
  for (const el of document.querySelectorAll('a[href], button, input, select, textarea, summary, [tabindex]')) {
    if (el.disabled || el.type === 'hidden' || el.tabIndex < 0) continue;
    if (!el.checkVisibility({visibilityProperty: true, checkVisibilityCSS: true}) || el.closest('[inert]')) continue;
    const key = el.type === 'radio' ? 'radio:' + el.name : el.dataset.walk;
    if (!out.includes(key)) out.push(key);
  }
  return {stops: out, positive: [...document.querySelectorAll('[tabindex]')].filter(el => el.tabIndex > 0).length};
}"""


def _rgb(css: str) -> tuple[float, ...]:
    return tuple(float(x) for x in re.findall(r"[\d.]+", css)[:3])


def _contrast(a: str, b: str) -> float:
    def luminance(rgb):
        c = [x / 255 for x in rgb]
        c = [x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4 for x in c]
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]

    hi, lo = sorted((luminance(_rgb(a)), luminance(_rgb(b))), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def walk(page, act=lambda stop: None, limit: int = 150) -> list[dict]:
    """Tab through the whole page from its top, as a keyboard user does, calling act() at
    each stop; checks that every control is reached, in document order, with a focus ring
    one can see (3:1 against the page, WCAG 1.4.11)."""
    page.evaluate(MARK)
    stops: list[dict] = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        stop = page.evaluate(FOCUSED)
        if stop is None or (stops and stop["key"] == stops[0]["key"]):
            if stops:
                break  # past the last control: the walk went round the page
            continue
        if stops and stop["key"] == stops[-1]["key"]:
            continue  # Tab between the parts of one control (a date and time field's day, month…)
        stops.append(stop)
        act(stop)
    else:
        pytest.fail(f"the focus never left the page after {limit} Tabs")
    expected = page.evaluate(STOPS)
    assert expected["positive"] == 0, "a positive tabindex breaks the reading order"
    assert [s["key"] for s in stops] == expected["stops"], (
        "Tab missed or reordered controls: " + " | ".join(f"{s['tag']} {s['label']}" for s in stops))
    for s in stops:
        where = f"{s['tag']} {s['name'] or s['id']} «{s['label']}»"
        assert s["visible"] and s["on_screen"], f"no visible focus on {where}"
        if s["ring"]:
            assert _contrast(s["ring"], s["page"]) >= 3, f"the focus ring of {where} is faint: {s['ring']} on {s['page']}"
    return stops


def back_to(page, label: str, limit: int = 60) -> None:
    """Shift+Tab until the control called `label` has the focus."""
    for _ in range(limit):
        page.keyboard.press("Shift+Tab")
        stop = page.evaluate(FOCUSED)
        if stop and stop["label"] == label:
            return
    pytest.fail(f"Shift+Tab never reached «{label}»")


def forward_to(page, label: str, limit: int = 60) -> None:
    for _ in range(limit):
        page.keyboard.press("Tab")
        stop = page.evaluate(FOCUSED)
        if stop and stop["label"] == label:
            return
    pytest.fail(f"Tab never reached «{label}»")


def _reader(email: str) -> Subscriber:
    with session_scope() as s:
        return s.scalars(sa.select(Subscriber).where(Subscriber.email == email)).one_or_none()


def _on(subscriber_id: int) -> dict:
    """slug → the reader's subscription (detached), in the site's order."""
    with session_scope() as s:
        rows = membership.of(s, subscriber_id)
        for x in rows:
            s.expunge(x)
        return {x.newsletter.slug: x for x in rows}


def _section_ids() -> dict[str, int]:
    with session_scope() as s:
        return {x.slug: x.id for x in s.scalars(sa.select(Section))}


@pytest.mark.parametrize("challenge", [False, True], ids=["plain", "proof-of-work"])
def test_signing_up_by_keyboard_alone(live_server, browser, monkeypatch, challenge):
    if challenge:  # the page's script solves it when the form is sent, and says so in a live region
        monkeypatch.setenv("SIGNUP_CHALLENGE", "true")
        reset_settings()
    context = _context(browser, "light")
    page = context.new_page()
    chosen: dict[str, str] = {}

    def act(stop: dict) -> None:
        if stop["name"] == "email":
            page.keyboard.type("kbd@example.com")
        elif stop["type"] == "checkbox" and stop["label"] == "رياضة":
            page.keyboard.press("Space")
        elif stop["type"] == "checkbox" and stop["label"] == "النشرة الأسبوعية":
            page.keyboard.press("Space")  # the weekly digest too, beside the daily one and alerts
            chosen["weekly"] = page.evaluate("() => String(document.activeElement.checked)")
        elif stop["tag"] == "summary":
            page.keyboard.press("Enter")  # opens «more options»: the walk goes on inside it
        elif stop["id"] == "time_zone":  # the browser's zone, changed by typing another
            page.keyboard.press("Control+a")
            page.keyboard.type("Europe/Berlin")
        elif stop["id"] == "digest_hour":
            page.keyboard.press("ArrowDown")
            chosen["digest_hour"] = page.evaluate("() => document.activeElement.value")
        elif stop["name"] == "consent":
            page.keyboard.press("Space")

    try:
        page.goto(live_server + "/")
        stops = walk(page, act)
        assert stops[0]["label"] == "انتقل إلى المحتوى"  # the skip link comes first, and shows when focused
        assert {"email", "consent"} <= {s["name"] for s in stops} and "digest_hour" in {s["id"] for s in stops}
        assert (page.locator("#challenge-status[role=status]").count() == 1) is challenge
        back_to(page, "اشترك")
        page.keyboard.press("Enter")
        page.get_by_role("heading", name="تحقّق من بريدك الإلكتروني").wait_for()
    finally:
        context.close()
    signed = _reader("kbd@example.com")
    assert signed is not None and signed.status is SubscriberStatus.pending and signed.time_zone == "Europe/Berlin"
    mine = _on(signed.id)
    assert chosen["weekly"] == "true" and list(mine) == ["daily", "weekly", "alerts"]
    assert mine["daily"].sections == mine["weekly"].sections == [_section_ids()["sport"]]
    assert str(mine["daily"].digest_hour) == chosen["digest_hour"] == str(mine["weekly"].digest_hour)


def test_a_form_error_is_announced_takes_the_focus_and_changes_nothing(live_server, browser):
    context = _context(browser, "dark")
    page = context.new_page()
    try:
        page.goto(live_server + "/")
        forward_to(page, "البريد الإلكتروني")
        page.keyboard.type("not-an-address")
        page.keyboard.press("Enter")  # a text field's Enter sends its form
        page.locator("#form-error").wait_for()
        error = page.evaluate(FOCUSED)
        assert error["id"] == "form-error" and error["label"], "the error did not take the focus"
        region = page.locator("#form-error")
        assert region.get_attribute("role") == "alert" and region.get_attribute("aria-live") == "assertive"
        assert page.title().startswith("خطأ: ")
        email = page.locator("#email")
        assert email.get_attribute("aria-invalid") == "true" and email.get_attribute("aria-describedby") == "form-error"
        page.keyboard.press("Tab")
        assert page.evaluate(FOCUSED)["name"] == "email"  # the next Tab lands on the field to fix
        page.keyboard.press("Control+a")
        page.keyboard.type("fixed@example.com")
        page.keyboard.press("Enter")  # without the consent box
        page.locator("#form-error").wait_for()
        assert page.evaluate(FOCUSED)["id"] == "form-error"
        consent = page.locator("input[name=consent]")
        assert consent.get_attribute("aria-invalid") == "true" and consent.get_attribute("aria-describedby") == "form-error"
    finally:
        context.close()
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Subscriber)) == 0


def test_preferences_and_unsubscribe_by_keyboard_alone_in_the_dark(live_server, browser):
    with session_scope() as s:
        prefs_reader = reader(s, "prefs@example.com", frequency="daily", alerts=True)
        prefs = link("preferences", prefs_reader.id, prefs_reader.token_version)
        leave = link("unsubscribe", prefs_reader.id, prefs_reader.token_version)
        daily = catalogue.by_slug(s, "daily").id
    ids = _section_ids()
    context = _context(browser, "dark")
    page = context.new_page()

    def act(stop: dict) -> None:
        if stop["type"] == "checkbox" and stop["label"] in ("عربي دولي", "رياضة"):
            page.keyboard.press("Space")
        elif stop["label"] in ("ترتيب قسم عربي دولي في النشرة اليومية", "ترتيب قسم رياضة في النشرة اليومية"):
            page.keyboard.press("Control+a")
            page.keyboard.type("1" if "عربي" in stop["label"] else "2")
        elif stop["key"].startswith("radio:") and stop["key"].endswith("quiet_mode"):
            page.keyboard.press("ArrowDown")  # hold → drop
        elif stop["id"] == "time_zone":
            page.keyboard.press("Control+a")
            page.keyboard.type("Asia/Qatar")

    try:
        page.goto(prefs)
        walk(page, act)
        back_to(page, "احفظ التفضيلات")
        page.keyboard.press("Enter")
        page.get_by_text("حُفظت تفضيلاتك.").wait_for()
        saved = _reader("prefs@example.com")
        mine = _on(saved.id)
        assert mine["daily"].sections == [ids["world"], ids["sport"]] and mine["alerts"].quiet_mode == "drop"
        assert saved.time_zone == "Asia/Qatar"

        # A daily mail's unsubscribe link: «this newsletter», then «all», by keyboard.
        page.goto(f"{leave}?n={daily}")
        page.get_by_role("heading", name="إلغاء الاشتراك").wait_for()
        assert list(_on(saved.id)) == ["daily", "alerts"]  # opening the page changed nothing
        walk(page)
        forward_to(page, "ألغِ اشتراكي في «النشرة اليومية» فقط")
        page.keyboard.press("Enter")
        page.get_by_role("heading", name="أُلغي اشتراكك في «النشرة اليومية»").wait_for()
        assert list(_on(saved.id)) == ["alerts"] and _reader("prefs@example.com").status is SubscriberStatus.active
        page.goto(f"{leave}?n={daily}")
        forward_to(page, "إلغاء الاشتراك من كل النشرات")
        page.keyboard.press("Enter")
        page.get_by_role("heading", name="أُلغي اشتراكك").wait_for()
    finally:
        context.close()
    assert _reader("prefs@example.com").status is SubscriberStatus.unsubscribed


def test_the_editors_log_in_and_reach_every_control_of_the_alert_page_by_keyboard(live_server, browser):
    with session_scope() as s:
        _, token = create_editor(s, "سلمى", "editor")
    context = _context(browser, "dark")
    page = context.new_page()
    try:
        page.goto(live_server + "/editor")
        forward_to(page, "الاسم")
        page.keyboard.type("سلمى")
        page.keyboard.press("Tab")
        page.keyboard.type(token)
        page.keyboard.press("Enter")
        page.get_by_role("heading", name="إرسال تنبيه عاجل").wait_for()
        stops = walk(page)
        assert {"article_url", "headline", "url", "summary", "test_to"} <= {s["name"] for s in stops}
        assert "خروج" in {s["label"] for s in stops}
    finally:
        context.close()
