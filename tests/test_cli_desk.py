"""`nashra` for the newsroom's desk (issue 11), as real processes on PostgreSQL: sections
and feeds without SQL, editors listed, revoked and rotated, the audit log, the import's
exit status, the alert's audience at the prompt, the digest preview's files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import sqlalchemy as sa

from service.db import session_scope
from service.models import (
    Article,
    ArticleVersion,
    AuditLog,
    Category,
    Edition,
    Editor,
    Feed,
    Frequency,
    Section,
    Subscriber,
    SubscriberStatus,
    Subscription,
    VersionKind,
    utcnow,
)
from service.newsletters import catalogue
from service.staff.editors import authenticate
from tests.support.readers import reader
from tests.test_cli import SAMPLE_FEED, nashra


def test_sections_exist_before_any_feed_and_are_run_from_the_console(pg_env, feed_server):
    empty = nashra("sections", "list")
    assert empty.returncode == 0 and "no sections yet" in empty.stdout
    for args in (("عربي دولي", "--slug", "world"), ("رياضة",), ("ملفات خاصة",)):
        proc = nashra("sections", "add", *args)
        assert proc.returncode == 0, proc.stderr
    taken = nashra("sections", "add", "رياضة")
    assert taken.returncode == 2 and "already" in taken.stderr and "Traceback" not in taken.stderr
    bad_slug = nashra("sections", "add", "اقتصاد", "--slug", "Not A Slug")
    assert bad_slug.returncode == 2 and "slug" in bad_slug.stderr
    assert nashra("sections", "rename", "sports", "الرياضة").returncode == 0
    assert nashra("sections", "order", "الرياضة", "world").returncode == 0
    hidden = nashra("sections", "hide", "ملفات خاصة")
    assert hidden.returncode == 0 and "hidden" in hidden.stdout
    unknown = nashra("sections", "hide", "nope")
    assert unknown.returncode == 2 and "known: الرياضة (sports)" in unknown.stderr
    with session_scope() as s:
        rows = [(x.slug, x.name, x.hidden) for x in s.scalars(sa.select(Section).order_by(Section.position))]
    assert rows == [("sports", "الرياضة", False), ("world", "عربي دولي", False), ("section-3", "ملفات خاصة", True)]

    # A feed added now keeps the admin's sections (no built-in nine), files a category
    # that matches a section's name under it, and reports the one that matches none.
    url = feed_server.serve("/rss.xml", SAMPLE_FEED.read_bytes())
    assert nashra("feeds", "add", url, "--section", "world").returncode == 0
    assert nashra("ingest").returncode == 0
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Section)) == 3
        mapped = dict(s.execute(sa.select(Category.name, Category.section_id)).all())
        world = s.scalar(sa.select(Section.id).where(Section.slug == "world"))
    assert mapped["عربي دولي"] == world and mapped["محليات"] is None
    listing = nashra("sections", "list")
    assert "categories no section claims" in listing.stdout and "محليات" in listing.stdout
    mapped_now = nashra("sections", "map", "محليات", "world")
    assert mapped_now.returncode == 0 and "article(s) filed" in mapped_now.stdout
    with session_scope() as s:
        cat = s.scalar(sa.select(Category).where(Category.name == "محليات"))
        assert cat.section_id == world
        assert set(s.scalars(sa.select(Article.section_id).where(Article.category_id == cat.id))) == {world}
    assert "محليات (" not in nashra("sections", "list").stdout.split("categories no section claims")[-1]


def test_feeds_listed_with_their_health_paused_resumed_removed(pg_env, feed_server):
    good = feed_server.serve("/rss.xml", SAMPLE_FEED.read_bytes())
    broken = feed_server.serve("/broken.xml", b"oops", status=500)
    for url in (good, broken):
        assert nashra("feeds", "add", url).returncode == 0
    nashra("ingest")
    listing = nashra("feeds", "list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert any(line.strip().startswith("1  ok") and "articles: 9" in line for line in lines), listing.stdout
    assert any(line.strip().startswith("2  failing") and "failures in a row: 1" in line for line in lines)
    assert "last error" in listing.stdout
    paused = nashra("feeds", "pause", "2")
    assert paused.returncode == 0 and "paused" in paused.stdout
    assert "2  paused" in nashra("feeds", "list").stdout
    assert "resumed" in nashra("feeds", "resume", broken).stdout  # by URL too
    removed = nashra("feeds", "remove", "1")
    assert removed.returncode == 0 and "9 article(s) stay" in removed.stdout
    missing = nashra("feeds", "pause", "99")
    assert missing.returncode == 2 and "no feed" in missing.stderr
    with session_scope() as s:
        assert [f.id for f in s.scalars(sa.select(Feed))] == [2]
        assert s.scalar(sa.select(sa.func.count()).select_from(Article)) == 9


def test_editors_listed_revoked_rotated_and_the_audit_says_who_when_from_where(pg_env):
    proc = nashra("editors", "add", "سلمى")
    assert proc.returncode == 0 and "valid until" in proc.stdout
    old_token = proc.stdout.strip().splitlines()[-1]
    assert nashra("editors", "add", "منى", "--role", "admin").returncode == 0
    listing = nashra("editors", "list").stdout
    assert "سلمى" in listing and "منى" in listing and "admin" in listing and listing.count("active") == 2
    revoked = nashra("editors", "revoke", "سلمى")
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert "revoked" in nashra("editors", "list").stdout
    with session_scope() as s:
        assert authenticate(s, old_token) is None
    rotated = nashra("editors", "rotate", "سلمى")
    assert rotated.returncode == 0 and "reinstated" in rotated.stdout
    new_token = rotated.stdout.strip().splitlines()[-1]
    with session_scope() as s:
        assert authenticate(s, old_token) is None and authenticate(s, new_token).name == "سلمى"
        editor = s.scalar(sa.select(Editor).where(Editor.name == "سلمى"))
        assert dt.timedelta(days=89) < editor.token_expires_at - utcnow() <= dt.timedelta(days=90)
    missing = nashra("editors", "revoke", "nobody")
    assert missing.returncode == 2 and "no editor" in missing.stderr
    audit = nashra("audit")
    assert audit.returncode == 0
    for action in ("editor_created", "editor_revoked", "editor_token_rotated"):
        assert action in audit.stdout
    assert "from cli " in audit.stdout and new_token not in audit.stdout
    only = nashra("audit", "--action", "editor_revoked").stdout.strip().splitlines()
    assert len(only) == 1 and "editor_revoked" in only[0]
    with session_scope() as s:
        origins = set(s.scalars(sa.select(AuditLog.origin)))
    assert len(origins) == 1 and next(iter(origins)).startswith("cli ") and "@" in next(iter(origins))


def test_the_import_takes_names_or_slugs_and_fails_loudly_when_rows_are_skipped(pg_env, tmp_path):
    with session_scope() as s:
        s.add_all([Section(slug="world", name="عربي دولي", position=1), Section(slug="sport", name="رياضة", position=2)])
    good = tmp_path / "good.csv"
    good.write_text("email,sections,status\na@example.com,عربي دولي|SPORT,active\nb@example.com,world,active\n",
                    encoding="utf-8")
    proc = nashra("subscribers", "import", str(good))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 created" in proc.stdout and "0 skipped" in proc.stdout
    with session_scope() as s:
        ids = dict(s.execute(sa.select(Section.slug, Section.id)).all())
        # The sections are the reader's choice on their digest (the `daily` newsletter by default).
        assert s.scalar(sa.select(Subscription.sections)
                        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
                        .where(Subscriber.email == "a@example.com",
                               Subscription.newsletter_id == catalogue.by_slug(s, "daily").id)) == [
            ids["world"], ids["sport"]]
    bad = tmp_path / "bad.csv"
    bad.write_text("email,sections,status\nc@example.com,رياضة,active\nd@example.com,اقتصاد,active\n"
                   "e@example.com,economy|sport,active\n", encoding="utf-8")
    proc = nashra("subscribers", "import", str(bad))
    assert proc.returncode == 1  # rows were skipped: a script sees it
    assert "1 created" in proc.stdout and "2 skipped" in proc.stdout
    assert "line 3" in proc.stdout and "line 4" in proc.stdout
    assert "unknown section(s): 'اقتصاد', 'economy'" in proc.stdout
    assert "the sections are: عربي دولي (world), رياضة (sport)" in proc.stdout


def test_the_alert_prompt_says_whom_it_reaches(pg_env, redis_url):
    with session_scope() as s:
        for i in range(12):
            reader(s, f"r{i}@example.com", status=SubscriberStatus.active, alerts=i != 0)
    proc = nashra("alert", "send", "--headline", "زلزال", "--link", "https://news.example/q", stdin="n\n")
    assert proc.returncode == 1 and "not sent" in proc.stdout
    assert "Send this alert? سيصل إلى 11 مشتركاً [y/N]" in proc.stdout
    assert "subject: عاجل | زلزال" in proc.stdout
    with session_scope() as s:
        assert s.scalars(sa.select(Edition)).all() == []
    sent = nashra("alert", "send", "--headline", "زلزال", "--link", "https://news.example/q", "--yes")
    assert sent.returncode == 0 and "سيصل إلى 11 مشتركاً" in sent.stdout


def test_digest_preview_writes_what_a_reader_would_get(pg_env, tmp_path):
    seen = utcnow() - dt.timedelta(hours=2)
    with session_scope() as s:
        world = Section(slug="world", name="عربي دولي", position=1)
        sport = Section(slug="sport", name="رياضة", position=2)
        s.add_all([world, sport])
        s.flush()
        for i, section in enumerate([world, world, sport]):
            art = Article(guid=f"g{i}", url=f"https://news.example/{i}", title=f"خبر {i}", summary="موجز.",
                          section_id=section.id, first_seen_at=seen, last_major_at=seen, content_hash="h" * 64)
            s.add(art)
            s.flush()
            s.add(ArticleVersion(article_id=art.id, version=1, kind=VersionKind.new, content_hash="h" * 64,
                                 title=art.title, created_at=seen))
        sub = reader(s, "w@example.com", status=SubscriberStatus.active, sections=[sport.id],
                     frequency=Frequency.daily)
        weekly = reader(s, "k@example.com", status=SubscriberStatus.active, frequency=Frequency.weekly)
        sub_id, weekly_id = sub.id, weekly.id
    out = tmp_path / "preview"
    proc = nashra("digest", "preview", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    html = (out / "digest-daily-all.html").read_text(encoding="utf-8")
    text = (out / "digest-daily-all.txt").read_text(encoding="utf-8")
    assert 'dir="rtl"' in html and all(f"خبر {i}" in html for i in range(3)) and "خبر 2" in text
    assert "3 article(s) in its window" in proc.stdout
    mine = nashra("digest", "preview", "--subscriber", str(sub_id), "--out", str(out))
    assert mine.returncode == 0, mine.stderr
    theirs = (out / f"digest-daily-subscriber-{sub_id}.html").read_text(encoding="utf-8")
    assert "خبر 2" in theirs and "خبر 0" not in theirs and "مشترك واحد" in mine.stdout
    chosen = nashra("digest", "preview", "--sections", "رياضة,world", "--out", str(out))
    assert chosen.returncode == 0 and (out / "digest-daily-sport-world.html").exists()
    not_this_one = nashra("digest", "preview", "--frequency", "daily", "--subscriber", str(weekly_id), "--out",
                          str(out))
    assert not_this_one.returncode == 2 and "not on the daily newsletter" in not_this_one.stderr
    both = nashra("digest", "preview", "--sections", "x", "--subscriber", "1")
    assert both.returncode == 2  # one reader or one list, not both (argparse)
    with session_scope() as s:
        assert s.scalars(sa.select(Edition)).all() == []  # nothing written
    assert not list(Path.cwd().glob("digest-*.html"))  # --out was honoured; nothing opened or left here
