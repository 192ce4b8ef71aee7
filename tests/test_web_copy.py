"""The web copy of an edition («اعرض في المتصفح», issue 18 item 1).

A real digest and a real alert are rendered by the real renderer, planned into the
PostgreSQL ledger and sent to the SMTP sink; the link each mail carries is opened on the
real app.  The page is the reader's variant with nothing of any reader in it, noindex
while the archive is private; anything that is not a copy's address is a 404.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from service.config import reset_settings
from service.db import session_scope
from service.delivery.planner import plan
from service.editions import web_copy
from service.editions.alerts import create_alert
from service.editions.digests import create_digest
from service.editions.variants import render_variant_for
from service.models import (
    Article,
    ArticleVersion,
    Edition,
    EditionArticle,
    EditionKind,
    EditionStatus,
    EditionVariant,
    Section,
    Subscriber,
    VersionKind,
    utcnow,
)
from service.web.app import create_app
from tests.support.delivery import add_subscribers, run_all_batches
from tests.test_hardening_fuzz import FUZZ

LINK_TEXT = "اعرض في المتصفح"
WEB_COPY = re.compile(r"https?://[^\s\"<>\u200e\u200f]+/e/\d+/[A-Za-z0-9_-]{22}")
PERSONAL = re.compile(r"https?://[^\s\"<>\u200e\u200f]+/(?:unsubscribe|preferences|confirm)/[^\s\"<>\u200e\u200f]+")


def add_article(session, n: int, section: Section | None, *, seen: dt.datetime) -> Article:
    a = Article(guid=f"urn:web-copy:{n}", url=f"https://site.example/a/{n}", title=f"خبر رقم {n} عن الأمن",
                summary="ملخص الخبر", content_hash=f"{n:064d}", first_seen_at=seen, last_major_at=seen,
                version=1, section_id=section.id if section else None)
    session.add(a)
    session.flush()
    session.add(ArticleVersion(article_id=a.id, version=1, kind=VersionKind.new, content_hash="0" * 64,
                               title=a.title, created_at=seen))
    session.flush()
    return a


def _section(session, slug: str, name: str, position: int) -> Section:
    found = session.scalar(sa.select(Section).where(Section.slug == slug))  # live_server makes these two
    if found is None:
        found = Section(slug=slug, name=name, position=position)
        session.add(found)
        session.flush()
    return found


def sent_digest() -> tuple[int, dict[int, str]]:
    """A daily digest of two sections sent for real to three readers: two chose one section
    (one variant), one chose everything ("all").  (edition id, sections by id)."""
    now = utcnow()
    with session_scope() as s:
        world, sport = (_section(s, "world", "عربي دولي", 1), _section(s, "sport", "رياضة", 2))
        for n in range(4):
            add_article(s, n, world if n % 2 else sport, seen=now - dt.timedelta(hours=2 + n))
        add_subscribers(s, 2, sections=[world.id])
        add_subscribers(s, 1, start=2)
        edition, _ = create_digest(s, "daily", scheduled=False, now=now)
        eid = edition.id
        plan(s, eid)  # the real renderer, once per variant
        names = {world.id: world.name, sport.id: sport.name}
    run_all_batches(eid)
    return eid, names


@pytest.fixture
def client(pg_env, redis_url, smtp_sink, monkeypatch):
    monkeypatch.setenv("PUBLIC_URL", "https://news.example")
    monkeypatch.delenv("ARCHIVE_PUBLIC", raising=False)
    reset_settings()
    return TestClient(create_app(), raise_server_exceptions=False, base_url="https://news.example")


def _parts(received) -> tuple[str, str]:
    msg = received.message
    return msg.get_body(("html",)).get_content(), msg.get_body(("plain",)).get_content()


def _copy_link(received) -> str:
    html, text = _parts(received)
    assert LINK_TEXT in html and LINK_TEXT in text
    in_html = {m for m in WEB_COPY.findall(html)}
    in_text = {m for m in WEB_COPY.findall(text)}
    assert len(in_html) == 1 and in_html == in_text, (in_html, in_text)
    return in_html.pop()


def _path(url: str) -> str:
    return url.removeprefix("https://news.example")


def test_each_mail_links_to_its_variants_copy_which_holds_nothing_of_any_reader(client, smtp_sink):
    eid, _ = sent_digest()
    mails = smtp_sink.wait_for(3)
    by_reader = {m.rcpt_tos[0]: m for m in mails}
    links = {reader: _copy_link(m) for reader, m in by_reader.items()}
    # The same link for the two readers of one variant; another for the reader of "all".
    assert links["reader0@example.com"] == links["reader1@example.com"] != links["reader2@example.com"]
    assert links["reader2@example.com"].endswith(web_copy.path_for(eid, "all"))
    personal = {u for m in mails for part in _parts(m) for u in PERSONAL.findall(part)}
    assert len(personal) >= 6  # each reader's own preferences and unsubscribe links
    with session_scope() as s:
        readers = s.execute(sa.select(Subscriber.id, Subscriber.email)).all()

    for reader, link in links.items():
        assert not any(token_url.split("/")[-1] in link for token_url in personal)
        page = client.get(_path(link))
        assert page.status_code == 200, page.text
        assert page.headers["x-robots-tag"] == "noindex"
        assert '<meta name="robots" content="noindex">' in page.text
        assert '<html lang="ar" dir="rtl"' in page.text and 'name="viewport"' in page.text
        for token_url in personal:  # nobody's token, under any path
            assert token_url.split("/")[-1] not in page.text
        assert "/unsubscribe/" not in page.text and "/preferences/" not in page.text
        assert "__NASHRA_" not in page.text and LINK_TEXT not in page.text
        for _, address in readers:
            assert address not in page.text
        assert 'href="https://news.example/"' in page.text and "اشترك في النشرة" in page.text
        assert "تصلك هذه الرسالة" not in page.text and web_copy.web_copy_note("نشرة") in page.text
        mail_html, _ = _parts(by_reader[reader])
        # It is that reader's copy: the stories of their mail, in its order.
        assert re.findall(r"خبر رقم \d", page.text) == re.findall(r"خبر رقم \d", mail_html)
    one_section, everything = client.get(_path(links["reader0@example.com"])), client.get(_path(links["reader2@example.com"]))
    assert one_section.text.count("خبر رقم") < everything.text.count("خبر رقم")
    # Its story links still reach the stories (through /r/ with no reader's token in it,
    # when clicks are counted).
    hrefs = set(re.findall(r'href="(https://(?:news\.example/r/[^"]+|site\.example/a/\d+))"', everything.text))
    assert hrefs and all("/r/" in h for h in hrefs)  # CLICK_TRACKING is on by default
    for href in hrefs:
        if "/r/" in href:
            answer = client.get(_path(href), follow_redirects=False)
            assert answer.status_code in (302, 303, 307) and re.fullmatch(
                r"https://site\.example/a/\d+", answer.headers["location"]), (href, answer.status_code)


def test_alerts_corrections_and_catchups_carry_the_link_too(db_session, monkeypatch):
    monkeypatch.setenv("PUBLIC_URL", "https://news.example")
    reset_settings()
    sec = Section(slug="local", name="محليات", position=1)
    db_session.add(sec)
    db_session.flush()
    article = add_article(db_session, 9, sec, seen=utcnow())
    alert = create_alert(db_session, editor_id=None, headline="زلزال في العقبة", url="https://news.example/q")
    correction = Edition(kind=EditionKind.correction, status=EditionStatus.draft, title=article.title,
                         params={"note": "صُحّح الاسم"})
    correction.articles.append(EditionArticle(article_id=article.id, version=1, position=0))
    catchup = Edition(kind=EditionKind.catchup, status=EditionStatus.draft, title="بينما كنت نائماً",
                      params={"alerts": [alert.id]})
    db_session.add_all([correction, catchup])
    db_session.flush()
    for edition, variant in ((alert, "all"), (correction, "all"), (catchup, json.dumps([alert.id]))):
        rendered = render_variant_for(db_session, edition, variant)
        url = web_copy.url_for(edition.id, variant)
        assert f'href="{url}"' in rendered.html and LINK_TEXT in rendered.html, edition.kind
        assert url in rendered.text


def _stored(eid: int) -> list[str]:
    with session_scope() as s:
        return list(s.scalars(sa.select(EditionVariant.variant).where(EditionVariant.edition_id == eid)))


def test_forged_altered_draft_and_cancelled_are_404(client):
    eid, _ = sent_digest()
    good = web_copy.path_for(eid, "all")
    assert client.get(good).status_code == 200
    ref = good.rsplit("/", 1)[1]
    forged = ref[:-1] + ("A" if ref[-1] != "A" else "B")
    other_key = web_copy.ref_for(eid, "all", secret_key="another-secret-key-entirely")
    for path in (f"/e/{eid}/{forged}", f"/e/{eid}/{other_key}", f"/e/{eid + 1}/{ref}", f"/e/0{eid}/{ref}",
                 f"/e/{eid}/{ref}x", f"/e/{eid}/{web_copy.ref_for(eid, '[999]')}", "/e/abc/" + ref):
        answer = client.get(path)
        assert answer.status_code == 404, path
        assert answer.headers["x-robots-tag"] == "noindex" and 'dir="rtl"' in answer.text
    for status in (EditionStatus.cancelled, EditionStatus.draft):
        with session_scope() as s:
            s.get(Edition, eid).status = status
        assert client.get(good).status_code == 404, status
    assert "all" in _stored(eid)  # nothing was removed: a 404 is the page's, not the data's


def test_the_all_copy_of_a_digest_nobody_chose_everything_for_is_rendered_when_asked(client):
    now = utcnow()
    with session_scope() as s:
        world = Section(slug="world", name="عربي دولي", position=1)
        s.add(world)
        s.flush()
        add_article(s, 1, world, seen=now - dt.timedelta(hours=1))
        add_subscribers(s, 1, sections=[world.id])
        edition, _ = create_digest(s, "daily", scheduled=False, now=now)
        eid = edition.id
        plan(s, eid)
    assert "all" not in _stored(eid)
    page = client.get(web_copy.path_for(eid, "all"))
    assert page.status_code == 200 and "خبر رقم 1" in page.text and "__NASHRA_" not in page.text
    assert "all" not in _stored(eid)  # a GET writes nothing


def test_archive_public_lets_engines_index_the_archived_copy_only(client, monkeypatch):
    eid, names = sent_digest()
    monkeypatch.setenv("ARCHIVE_PUBLIC", "true")
    reset_settings()
    everything = client.get(web_copy.path_for(eid, "all"))
    assert everything.status_code == 200
    assert "x-robots-tag" not in everything.headers and 'name="robots"' not in everything.text
    own = [v for v in _stored(eid) if v != "all"][0]
    mine = client.get(web_copy.path_for(eid, own))
    assert mine.headers["x-robots-tag"] == "noindex"
    assert f'<link rel="canonical" href="https://news.example{web_copy.path_for(eid, "all")}">' in mine.text


@FUZZ
@given(edition_id=st.one_of(st.text(max_size=30), st.integers(-(2**70), 2**70).map(str)),
       ref=st.one_of(st.text(max_size=40), st.from_regex(r"[A-Za-z0-9_-]{22}", fullmatch=True)))
def test_any_path_is_a_404_never_a_5xx(fuzz_client, edition_id, ref):
    from urllib.parse import quote

    answer = fuzz_client.get(f"/e/{quote(edition_id, safe='')}/{quote(ref, safe='')}")
    assert answer.status_code in (404, 405), answer.status_code  # 405: an empty segment routes elsewhere


@pytest.fixture
def fuzz_client(client):
    sent_digest()
    return client


def test_the_api_gives_an_editor_the_link_to_share(client):
    from service.staff.editors import create_editor

    eid, _ = sent_digest()
    with session_scope() as s:
        _, token = create_editor(s, "منى", "admin")
    auth = {"Authorization": f"Bearer {token}"}
    body = client.get(f"/api/editions/{eid}", headers=auth).json()
    assert body["web_copy_url"] == f"https://news.example{web_copy.path_for(eid, 'all')}"
    assert client.get(_path(body["web_copy_url"])).status_code == 200
    with session_scope() as s:
        s.get(Edition, eid).status = EditionStatus.cancelled
    assert client.get(f"/api/editions/{eid}", headers=auth).json()["web_copy_url"] is None


@pytest.mark.browser
def test_a_mails_link_opens_its_copy_in_chromium_on_a_phone(live_server, browser, smtp_sink):
    from pathlib import Path

    sent_digest()
    mail = next(m for m in smtp_sink.wait_for(3) if m.rcpt_tos == ["reader0@example.com"])
    link = _copy_link(mail)
    assert link.startswith(live_server + "/e/")
    context = browser.new_context(viewport={"width": 320, "height": 640})
    page = context.new_page()
    try:
        answer = page.goto(link)
        assert answer.status == 200 and answer.headers["x-robots-tag"] == "noindex"
        assert page.locator("html").get_attribute("dir") == "rtl"
        assert page.locator("meta[name=robots]").get_attribute("content") == "noindex"
        assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        assert page.get_by_role("link", name="خبر رقم 1 عن الأمن").is_visible()
        assert page.get_by_role("link", name="إلغاء الاشتراك").count() == 0
        page.get_by_role("link", name="اشترك في النشرة").click()
        page.wait_for_load_state("load")
        assert page.url == live_server + "/"  # the signup form
        artifacts = Path(__file__).resolve().parent / "artifacts"
        artifacts.mkdir(exist_ok=True)
        page.goto(link)
        page.screenshot(path=str(artifacts / "web-copy-320.png"), full_page=True)
    finally:
        context.close()


def test_nashra_status_of_an_edition_prints_the_link_to_share(client):
    import io

    from rich.console import Console

    from service.cli.status import print_status

    eid, _ = sent_digest()
    out = io.StringIO()
    assert print_status(eid, Console(file=out, width=100)) == 0
    assert f"web copy: https://news.example{web_copy.path_for(eid, 'all')}\n" in out.getvalue()
