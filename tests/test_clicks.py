"""Clicks, counted privately (issue 18 item 3): a real digest sent to an SMTP sink through
the batch path, its captured links followed through the real web app.

A mail's links redirect to the article and count once per click; a forged or altered
`/r/` link is a 400 that redirects nowhere; a HEAD, a scanner and a prefetch are not
counted; after the clicks no row anywhere pairs a reader with a click; unique clicks
are estimated within 5 % for 10,000 readers; CLICK_TRACKING=false sends links straight
to the site while old `/r/` links keep working.
"""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.articles.sections import ensure_sections
from service.clicks import retention, signing, unique
from service.config import get_settings, reset_settings
from service.db import session_scope
from service.delivery.planner import plan
from service.models import (
    Article,
    Base,
    ClickCount,
    ClickSketch,
    Edition,
    EditionArticle,
    EditionKind,
    EditionLink,
    EditionStatus,
    Frequency,
    Section,
    Subscriber,
    utcnow,
)
from service.newsletters import catalogue
from tests.support.delivery import add_subscribers, run_all_batches

BROWSER = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Accept": "text/html,application/xhtml+xml",
    "Accept-Language": "ar-JO,ar;q=0.9,en;q=0.5",
}
STORIES = [
    ("https://news.example/ar/politics/2026/12/07/talks", "جولة مفاوضات جديدة في عمّان"),
    ("https://news.example/ar/sport/2026/12/07/final", "المنتخب إلى النهائي"),
]
_TRACKED = re.compile(r"https?://[^\s\"<>\u200e\u200f]+/r/[^\s\"<>\u200e\u200f]+")


def make_digest(readers: int = 3) -> tuple[int, list[int]]:
    """A two-story digest (two sections) planned with the real renderer: (edition id, article ids)."""
    with session_scope() as s:
        ensure_sections(s)
        sections = s.scalars(sa.select(Section).order_by(Section.position)).all()[:2]
        add_subscribers(s, readers)
        articles = []
        for (url, title), section in zip(STORIES, sections, strict=True):
            a = s.scalar(sa.select(Article).where(Article.guid == url))
            if a is None:  # a second digest carries the same stories
                a = Article(guid=url, url=url, title=title, summary=title + "، التفاصيل.", section_id=section.id,
                            published_at=utcnow(), content_hash=url[-40:])
                s.add(a)
            articles.append(a)
        edition = Edition(kind=EditionKind.digest, frequency=Frequency.daily, status=EditionStatus.draft,
                          newsletter_id=catalogue.digest_for(s, Frequency.daily).id,
                          title="نشرة الصباح", params={}, window_end=utcnow())
        s.add(edition)
        s.flush()
        for i, a in enumerate(articles):
            s.add(EditionArticle(edition_id=edition.id, article_id=a.id, version=1, position=i))
        s.flush()
        eid, ids = edition.id, [a.id for a in articles]
    with session_scope() as s:
        plan(s, eid)
    return eid, ids


def bodies(received) -> dict[str, str]:
    out = {}
    for part in received.message.walk():
        if part.get_content_maintype() == "text":
            out[part.get_content_type()] = part.get_content()
    return out


def tracked_links(received) -> dict[str, list[str]]:
    b = bodies(received)
    return {kind: _TRACKED.findall(text) for kind, text in b.items()}


def ref_of(url: str) -> str:
    return url.rsplit("/r/", 1)[1]


def target(url: str) -> str:
    with session_scope() as s:
        return s.scalar(sa.select(EditionLink.url).where(EditionLink.id == int(ref_of(url).split(".")[0])))


def clicks_on_record() -> tuple[int, int]:
    with session_scope() as s:
        row = s.execute(sa.select(sa.func.coalesce(sa.func.sum(ClickCount.clicks), 0),
                                  sa.func.coalesce(sa.func.sum(ClickCount.ignored), 0))).one()
    return int(row[0]), int(row[1])


def uniques(eid: int, scope: str = "edition") -> int:
    with session_scope() as s:
        return unique.estimate(s, eid, [scope])[scope]


@pytest.fixture
def web():
    from service.web.app import create_app

    with TestClient(create_app(), follow_redirects=False) as client:
        yield client


@pytest.fixture
def sent(pg_env, redis_url, smtp_sink):
    eid, article_ids = make_digest(3)
    run_all_batches(eid)
    mails = {m.rcpt_tos[0]: m for m in smtp_sink.wait_for(3)}
    return eid, article_ids, mails


def story_link(received, story_url: str, kind: str = "text/html") -> str:
    for url in tracked_links(received)[kind]:
        if target(url) == story_url:
            return url
    raise AssertionError(f"no tracked link to {story_url}")


def test_a_mails_links_redirect_to_the_article_and_count_once_per_click(sent, web):
    eid, article_ids, mails = sent
    mail = mails["reader0@example.com"]
    links = tracked_links(mail)
    assert links["text/html"] and links["text/plain"]  # both parts go through /r/
    assert not any(f'href="{story}"' in bodies(mail)["text/html"] for story, _ in STORIES)
    url = story_link(mail, STORIES[0][0])
    assert url.startswith(get_settings().public_url + "/r/")
    # The text part's link to the story is the same link (the same id and token; the "~"
    # fillers that align the token in base64 may differ).
    assert url.replace("~", "") in [u.replace("~", "") for u in links["text/plain"]]

    r = web.get(ref_path(url), headers=BROWSER)
    assert r.status_code == 302 and r.headers["location"] == STORIES[0][0]
    assert r.headers["referrer-policy"] == "no-referrer" and "no-store" in r.headers["cache-control"]
    assert clicks_on_record() == (1, 0)
    assert uniques(eid) == 1 and uniques(eid, f"article:{article_ids[0]}") == 1

    # The same reader again: one more click, still one reader.
    web.get(ref_path(url), headers=BROWSER)
    assert clicks_on_record() == (2, 0) and uniques(eid) == 1
    # Two other readers: their own tokens on the same link.
    for who in ("reader1@example.com", "reader2@example.com"):
        other = story_link(mails[who], STORIES[0][0])
        assert other != url and other.split(".")[:-1] == url.split(".")[:-1]  # same link, another token
        assert web.get(ref_path(other), headers=BROWSER).headers["location"] == STORIES[0][0]
    assert clicks_on_record() == (4, 0) and uniques(eid) == 3
    with session_scope() as s:
        section_id = s.get(Article, article_ids[0]).section_id
    assert uniques(eid, f"section:{section_id}") == 3
    assert uniques(eid, f"article:{article_ids[1]}") == 0  # nobody followed the other story


def ref_path(url: str) -> str:
    return "/r/" + ref_of(url)


def test_forged_or_altered_links_are_a_400_that_redirects_nowhere(sent, web):
    eid, _, mails = sent
    url = story_link(mails["reader0@example.com"], STORIES[0][0])
    ref = ref_of(url)
    link_id, sig, token = ref.split(".")
    bad = [
        f"{int(link_id) + 1}.{sig}.{token}",  # another link under this link's signature
        f"{link_id}.{sig[:-1]}{'B' if sig[-1] != 'B' else 'C'}.{token}",  # the signature altered
        f"{link_id}.{sig}.{token[:-1]}{'B' if token[-1] != 'B' else 'C'}",  # the reader token altered
        f"{link_id}.{sig}.{token[:5]}{'x' if token[5] != 'x' else 'y'}{token[6:]}",
        f"{link_id}.{sig}.{token}x",  # one character more
        f"{link_id}.{sig}",  # (valid: a link without a reader, as on the web copy — checked below)
        "1.AAAAAAAAAAA",
        "0.AAAAAAAAAAA",
        "x" * 5000,  # oversized
        quote(f"{link_id}.{sig}\x00"),  # NUL
        quote(f"{link_id}.{sig}.{token}\n"),
        quote("١٢.ءءءءءءءءءءء"),
    ]
    for ref_ in bad:
        r = web.get("/r/" + ref_, headers=BROWSER)
        if ref_ == f"{link_id}.{sig}":
            assert r.status_code == 302  # signed by us: a web copy's link, no reader in it
            continue
        assert r.status_code == 400, ref_
        assert "location" not in r.headers and "رابط غير صالح" in r.text
    assert clicks_on_record() == (1, 0)  # only the web copy's link counted
    assert uniques(eid) == 0


def test_a_head_a_scanner_and_a_prefetch_are_not_counted(sent, web):
    eid, _, mails = sent
    path = ref_path(story_link(mails["reader0@example.com"], STORIES[0][0]))
    r = web.head(path, headers=BROWSER)
    assert r.status_code == 302 and r.headers["location"] == STORIES[0][0]
    assert clicks_on_record() == (0, 0)  # a HEAD writes nothing
    scanners = [
        {"User-Agent": "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))"},
        {"User-Agent": "Proofpoint URL Defense"},
        {"User-Agent": "Mimecast-URL-Protect"},
        {"User-Agent": ""},
        {**BROWSER, "Sec-Purpose": "prefetch;prerender"},
        {**BROWSER, "X-Purpose": "preview"},
        # A browser's user agent without a browser's Accept-Language, seconds after
        # delivery: what Safe Links' detonation looks like.
        {"User-Agent": BROWSER["User-Agent"], "Accept": "*/*"},
    ]
    for headers in scanners:
        r = web.get(path, headers=headers)
        assert r.status_code == 302 and r.headers["location"] == STORIES[0][0]  # still taken there
    assert clicks_on_record() == (0, len(scanners))
    assert uniques(eid) == 0
    web.get(path, headers=BROWSER)
    assert clicks_on_record() == (1, len(scanners)) and uniques(eid) == 1


def test_the_web_copy_links_through_r_with_no_readers_token(sent, web):
    eid, _, mails = sent
    html = bodies(mails["reader0@example.com"])["text/html"]
    copy = re.search(r'href="https?://[^/"]+(/e/\d+/[A-Za-z0-9_-]+)"', html)[1]
    page = web.get(copy).text
    tokens = {ref_of(u).split(".")[2].lstrip("~") for m in mails.values() for u in tracked_links(m)["text/html"]}
    assert tokens and not any(t in page for t in tokens)
    in_page = re.findall(r'href="https?://[^/"]+(/r/[^"]+)"', page)
    assert in_page and all(re.fullmatch(r"/r/\d+\.[A-Za-z0-9_-]{11}\.", p) for p in in_page)
    r = web.get(in_page[0], headers=BROWSER)
    assert r.status_code == 302 and r.headers["location"].startswith("https://")
    assert clicks_on_record() == (1, 0) and uniques(eid) == 0  # a click, and nobody's


def _snapshot(engine) -> dict[str, set[tuple]]:
    with engine.connect() as conn:
        return {t.name: {repr(tuple(row)) for row in conn.execute(sa.select(t)).all()}
                for t in Base.metadata.sorted_tables}


def test_no_row_anywhere_pairs_a_reader_with_a_click(sent, web, pg_engine):
    import redis

    eid, _, mails = sent
    with session_scope() as s:
        readers = {sub.email: (sub.id, sub.email) for sub in s.scalars(sa.select(Subscriber))}
    before = _snapshot(pg_engine)
    for mail in mails.values():
        for url in tracked_links(mail)["text/html"][:3]:
            assert web.get(ref_path(url), headers=BROWSER).status_code == 302
    after = _snapshot(pg_engine)
    changed = {name: after[name] - before[name] for name in after if after[name] != before[name]}
    # The clicks wrote to click_counts and nowhere else: not the ledger, not the
    # subscribers, not the audit log — nothing that names a reader.
    assert set(changed) == {"click_counts"}
    columns = [c.name for c in ClickCount.__table__.columns]
    assert columns == ["link_id", "hour", "clicks", "ignored"]
    assert not any(fk.column.table.name == "subscribers" for fk in ClickCount.__table__.foreign_keys)
    tokens = {ref_of(url).split(".")[2] for mail in mails.values() for url in tracked_links(mail)["text/html"]}
    everything = repr(after)
    for _id, email in readers.values():
        assert email not in repr(changed)
    for token in tokens:  # the reader tokens are nowhere in the database
        assert token not in everything
        assert signing.parse(f"1.{signing.link_sig(1)}.{token}").uid.hex() not in everything
    # Redis holds HyperLogLog registers under the edition's keys: no address, no token.
    client = redis.Redis.from_url(get_settings().redis_url)
    keys = list(client.scan_iter(match=f"{get_settings().redis_key_prefix}nashra:clicks:*"))
    assert keys and all(re.fullmatch(rb".*nashra:clicks:\d+:(edition|article:\d+|section:\d+)", k) for k in keys)
    for k in keys:
        value = client.get(k)
        assert value.startswith(b"HYLL") and not any(e.encode() in value for e in readers)
        assert 0 < client.ttl(k) <= get_settings().click_days * 86_400


def test_unique_clicks_of_10000_readers_are_estimated_within_5_percent(pg_env, redis_url):
    with session_scope() as s:
        edition = Edition(kind=EditionKind.alert, status=EditionStatus.done, title="t", params={})
        s.add(edition)
        s.flush()
        eid = edition.id
    n = 10_000
    settings_ = get_settings()
    with session_scope() as s:
        for subscriber_id in range(1, n + 1):
            token = signing.reader_token(eid, subscriber_id, settings_)
            uid = signing.parse(f"1.{signing.link_sig(1)}.{token}").uid
            unique.add(s, eid, ["edition"], uid)
            if subscriber_id % 3 == 0:  # a third of them click twice
                unique.add(s, eid, ["edition"], uid)
    estimate = uniques(eid)
    assert abs(estimate - n) / n < 0.05, estimate


def test_without_redis_the_sketch_lives_in_the_database(sqlite_env, smtp_sink, web):
    # The embedded default: SQLite and no Redis; the sketches are DataSketches HLLs.
    eid, article_ids = make_digest(4)
    run_all_batches(eid)
    mails = smtp_sink.wait_for(4)
    for mail in mails:
        url = story_link(mail, STORIES[1][0])
        assert web.get(ref_path(url), headers=BROWSER).headers["location"] == STORIES[1][0]
        web.get(ref_path(url), headers=BROWSER)
    assert clicks_on_record() == (8, 0)
    assert uniques(eid) == 4 and uniques(eid, f"article:{article_ids[1]}") == 4
    with session_scope() as s:
        scopes = set(s.scalars(sa.select(ClickSketch.scope).where(ClickSketch.edition_id == eid)))
    assert "edition" in scopes and f"article:{article_ids[1]}" in scopes
    with session_scope() as s:
        for n in range(500):
            token = signing.reader_token(eid, 1000 + n)
            unique.add(s, eid, ["edition"], signing.parse(f"1.{signing.link_sig(1)}.{token}").uid)
    assert abs(uniques(eid) - 504) / 504 < 0.05


def test_with_tracking_off_links_go_straight_to_the_site_and_old_links_still_work(sent, web, smtp_sink,
                                                                                 monkeypatch):
    _, _, mails = sent
    old = ref_path(story_link(mails["reader0@example.com"], STORIES[0][0]))
    monkeypatch.setenv("CLICK_TRACKING", "false")
    reset_settings()
    smtp_sink.clear()
    eid, _ = make_digest(0)  # the same stories, to the same three readers
    run_all_batches(eid)
    mail = smtp_sink.wait_for(3)[0]
    html = bodies(mail)["text/html"]
    assert "/r/" not in html and f'href="{STORIES[0][0]}"' in html
    with session_scope() as s:
        assert not s.scalar(sa.select(sa.func.count()).select_from(EditionLink).where(EditionLink.edition_id == eid))
    r = web.get(old, headers=BROWSER)
    assert r.status_code == 302 and r.headers["location"] == STORIES[0][0]  # a mail's link keeps working
    assert clicks_on_record() == (0, 0)  # and counts nothing


def test_counts_older_than_click_days_are_purged(sent, web):
    eid, _, mails = sent
    web.get(ref_path(story_link(mails["reader0@example.com"], STORIES[0][0])), headers=BROWSER)
    with session_scope() as s:
        link_id = s.scalar(sa.select(EditionLink.id).where(EditionLink.edition_id == eid).limit(1))
        s.add(ClickCount(link_id=link_id, hour=utcnow() - dt.timedelta(days=91), clicks=5, ignored=0))
    from service.usecases.subscribers import purge

    purge()
    with session_scope() as s:
        hours = s.scalars(sa.select(ClickCount.hour)).all()
    assert len(hours) == 1 and hours[0] > utcnow() - dt.timedelta(days=1)
    with session_scope() as s:
        assert retention.forget_old(s) == 0


def test_metrics_count_clicks_by_edition_kind(sent, web):
    _, _, mails = sent
    web.get(ref_path(story_link(mails["reader0@example.com"], STORIES[0][0])), headers=BROWSER)
    web.get(ref_path(story_link(mails["reader1@example.com"], STORIES[1][0])), headers={"User-Agent": "curl/8"})
    text = web.get("/metrics").text
    assert 'nashra_clicks_total{kind="digest"} 1.0' in text
    assert 'nashra_clicks_total{kind="alert"} 0.0' in text
    assert 'nashra_clicks_ignored_total{kind="digest"} 1.0' in text


_REF_CHARS = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=120)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ref=st.one_of(_REF_CHARS, st.from_regex(r"[0-9]{1,20}\.[A-Za-z0-9_-]{0,14}(\.[A-Za-z0-9_=-]{0,30})?",
                                                fullmatch=True)))
def test_r_never_fails_on_what_a_client_sends(pg_env, web, ref):
    r = web.get("/r/" + quote(ref, safe=""), headers=BROWSER)
    assert r.status_code in (400, 404, 405), (ref, r.status_code)
    assert "location" not in r.headers
