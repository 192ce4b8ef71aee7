"""The digest preview serves every slot (readers choose their hour): by default the next
slot that has readers, whatever its hour; the editor picks another one (`nashra digest
preview --hour H [--weekday D]`, the selector on /editor/digest, each slot with its
readers); the preview says which slot it is and holds what that slot's own edition would
(its own window); bad input is a clear error or a 400 page, never a 5xx; and nothing is
written to the database.

Against PostgreSQL (and Redis for the pages).  Asia/Amman (UTC+3 all year), readers at
07:00 and 18:00; the clock the use-case and the pages read is fixed at 05:00 local on
Saturday 2026-03-28 (service.usecases.digest_preview.utcnow), before the 07:00 slot.
"""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from service.config import reset_settings
from service.db import session_scope
from service.models import (
    Article,
    ArticleVersion,
    Base,
    Edition,
    EditionKind,
    EditionStatus,
    Frequency,
    Section,
    VersionKind,
    utcnow,
)
from service.newsletters import catalogue
from service.staff.editors import create_editor
from service.usecases import digest_preview
from service.usecases.digest_preview import PreviewRefused, preview
from tests.support.browser import log_in_editor
from tests.support.readers import reader as make_reader
from tests.test_cli import nashra
from tests.test_hardening_fuzz import FUZZ, text

AMMAN = dt.timezone(dt.timedelta(hours=3))
NOW = dt.datetime(2026, 3, 28, 5, 0, tzinfo=AMMAN).astimezone(dt.UTC)  # Saturday, 05:00 in Amman
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
NIGHT, NOON, EVENING_BEFORE = "خبر الليلة الماضية", "خبر الظهيرة", "خبر ظهر أمس"


@pytest.fixture
def slots_env(pg_env, monkeypatch):
    for name, value in (("TIMEZONE", "Asia/Amman"), ("DIGEST_DAILY_AT", "07:00"),
                        ("DIGEST_HOURS", "6,7,8,12,18,21"), ("DIGEST_WEEKLY_DAY", "5")):
        monkeypatch.setenv(name, value)
    reset_settings()
    yield
    reset_settings()


@pytest.fixture
def clock(monkeypatch):
    monkeypatch.setattr(digest_preview, "utcnow", lambda: NOW)
    return NOW


def local(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=AMMAN).astimezone(dt.UTC)


def article(s, title: str, seen: dt.datetime, n: int) -> None:
    a = Article(guid=f"urn:slot:{n}", url=f"https://news.example/slot/{n}", title=title, summary="ملخص الخبر.",
                first_seen_at=seen, last_major_at=seen, published_at=seen, content_hash=f"{n:064d}", version=1)
    s.add(a)
    s.flush()
    s.add(ArticleVersion(article_id=a.id, version=1, kind=VersionKind.new, content_hash=f"{n:064d}", title=title,
                         created_at=seen))


def reader(s, email: str, *, hour: int | None = None, weekday: int | None = None, frequency: str = "daily") -> int:
    return make_reader(s, email, frequency=frequency, alerts=False, digest_hour=hour, digest_weekday=weekday).id


def newsroom() -> dict[str, int]:
    """Two readers at 07:00 (one never chose), three at 18:00, one weekly; yesterday's
    18:00 digest went out (its window ended at 17:58); three stories: one yesterday at
    noon (before that cut-off), one last night, one today at noon (after 07:00's)."""
    with session_scope() as s:
        if s.scalar(sa.select(Section.id).where(Section.slug == "world")) is None:  # the live server adds it
            s.add(Section(slug="world", name="عربي دولي", position=1))
        ids = {"never-chose": reader(s, "dawn@example.com"), "seven": reader(s, "seven@example.com", hour=7)}
        for n in range(3):
            ids[f"evening{n}"] = reader(s, f"evening{n}@example.com", hour=18)
        ids["weekly"] = reader(s, "weekly@example.com", frequency="weekly")
        s.add(Edition(kind=EditionKind.digest, frequency=Frequency.daily, status=EditionStatus.done,
                      newsletter_id=catalogue.digest_for(s, "daily").id,
                      idempotency_key="digest:daily:u15:2026-03-27", window_start=local(26, 17, 58),
                      window_end=local(27, 17, 58), params={"slot": {"at": local(27, 18).isoformat(),
                                                                     "frequency": "daily"}}))
        article(s, EVENING_BEFORE, local(27, 12), 1)
        article(s, NIGHT, local(27, 22), 2)
        article(s, NOON, local(28, 12), 3)
    return ids


def row_counts() -> dict[str, int]:
    with session_scope() as s:
        return {t.name: s.scalar(sa.select(sa.func.count()).select_from(t)) for t in Base.metadata.sorted_tables}


def titles(result) -> set[str]:
    return {a.title for a in result.articles}


# ------------------------------------------------------------------ the use-case


def test_the_default_preview_is_the_next_slot_with_readers_and_the_editor_picks_the_later_one(slots_env):
    newsroom()
    before = row_counts()

    first = preview("daily", now=NOW)
    assert (first.slot.hour, first.slot.date, first.slot.readers, first.picked) == (7, dt.date(2026, 3, 28), 2, False)
    assert first.audience == 2 and first.send_at == local(28, 7)
    assert titles(first) == {EVENING_BEFORE, NIGHT}  # today's noon story is after 07:00's cut-off
    assert [(s.clock, s.readers) for s in first.slots] == [("07:00", 2), ("18:00", 3)]  # only slots with readers
    assert first.slots[0].label == "07:00، السبت 2026-03-28 — مشتركَين"
    assert first.slots[1].label == "18:00، السبت 2026-03-28 — 3 مشتركين"

    evening = preview("daily", hour="18", now=NOW)
    assert (evening.slot.hour, evening.slot.readers, evening.audience, evening.picked) == (18, 3, 3, True)
    assert evening.send_at == local(28, 18)
    # Its own window: from yesterday's 18:00 cut-off, so the noon story is in and yesterday's noon one is not.
    assert titles(evening) == {NIGHT, NOON}
    assert evening.window_start == local(27, 17, 58)
    rendered = next(v for v in evening.variants if v.rendered)
    assert NOON in rendered.html and rendered.audience == 3

    assert preview("daily", hour="07:00", now=NOW).slot.hour == 7
    later = preview("daily", now=local(28, 9))  # 07:00 has gone: the next slot with readers is 18:00
    assert later.slot.hour == 18 and later.slot.readers == 3
    tomorrow = preview("daily", hour=7, now=local(28, 9))
    assert tomorrow.slot.date == dt.date(2026, 3, 29) and tomorrow.slot.readers == 2
    nobody = preview("daily", hour=12, now=NOW)  # a slot nobody chose can still be looked at
    assert nobody.slot.hour == 12 and nobody.slot.readers == 0 and nobody.audience == 0
    assert row_counts() == before  # a preview writes nothing


def test_a_slot_made_ahead_of_its_time_is_followed_by_the_next_one(slots_env):
    newsroom()
    with session_scope() as s:  # `nashra digest send` made today's 07:00 digest already
        s.add(Edition(kind=EditionKind.digest, frequency=Frequency.daily, status=EditionStatus.done,
                      newsletter_id=catalogue.digest_for(s, "daily").id,
                      idempotency_key="digest:daily:u04:2026-03-28", window_start=local(27, 4, 58),
                      window_end=local(28, 4, 58), params={"slot": {"at": local(28, 7).isoformat(),
                                                                     "frequency": "daily"}}))
    result = preview("daily", now=NOW)
    assert (result.slot.hour, result.slot.date) == (18, dt.date(2026, 3, 28))
    assert [(s.clock, s.date.day) for s in result.slots] == [("18:00", 28), ("07:00", 29)]
    tomorrow = preview("daily", hour=7, now=NOW)
    assert tomorrow.slot.date == dt.date(2026, 3, 29) and tomorrow.window_start == local(28, 4, 58)
    assert titles(tomorrow) == {NOON}


def test_a_weekly_slot_a_readers_own_slot_and_what_is_refused(slots_env):
    ids = newsroom()
    with session_scope() as s:
        ids["tuesday"] = reader(s, "tuesday@example.com", frequency="weekly", weekday=1, hour=18)
    before = row_counts()

    weekly = preview("weekly", now=NOW)
    assert (weekly.slot.weekday, weekly.slot.hour, weekly.slot.readers) == (5, 7, 1)  # Saturday 07:00, the default
    assert [(s.day_ar, s.clock, s.readers) for s in weekly.slots] == [("السبت", "07:00", 1), ("الثلاثاء", "18:00", 1)]
    tuesday = preview("weekly", hour=18, weekday="tuesday", now=NOW)
    assert (tuesday.slot.date, tuesday.slot.readers, tuesday.slot.code) == (dt.date(2026, 3, 31), 1, "d1h18")
    assert preview("weekly", weekday=1, now=NOW).slot.hour == 18  # that day's slot with readers

    theirs = preview(subscriber_id=ids["evening0"], now=NOW)  # a reader's own slot, not the default one
    assert theirs.slot.hour == 18 and theirs.variants[0].rendered and NOON in theirs.variants[0].html
    with pytest.raises(PreviewRefused, match="at 18:00, not at 07:00"):
        preview(subscriber_id=ids["evening0"], hour=7, now=NOW)

    for bad in ("25", "24", "-1", "abc", "7\x00", "9" * 40, "٧", "7:30", "13"):
        with pytest.raises(PreviewRefused) as refused:
            preview("daily", hour=bad, now=NOW)
        assert refused.value.arabic  # the page says why, in Arabic
    for bad_day in ("7", "-1", "someday", "\x00"):
        with pytest.raises(PreviewRefused):
            preview("weekly", weekday=bad_day, now=NOW)
    with pytest.raises(PreviewRefused, match="weekly"):
        preview("daily", weekday=1, now=NOW)
    assert row_counts() == before


def test_the_command_previews_the_slot_asked_for_and_refuses_bad_hours(slots_env, tmp_path):
    seen = utcnow() - dt.timedelta(minutes=30)
    with session_scope() as s:
        for n in range(2):
            reader(s, f"evening{n}@example.com", hour=18)
        article(s, "خبر للمساء", seen, 1)
    before = row_counts()
    out = tmp_path / "preview"
    proc = nashra("digest", "preview", "--out", str(out))  # the real clock: 18:00 is the only slot with readers
    assert proc.returncode == 0, proc.stderr
    assert "(the 18:00 slot, the next one with readers)" in proc.stdout and "(2 reader(s))" in proc.stdout
    assert "خبر للمساء" in (out / "digest-daily-all.html").read_text(encoding="utf-8")
    picked = nashra("digest", "preview", "--hour", "7", "--out", str(out))
    assert picked.returncode == 0, picked.stderr
    assert "(the 07:00 slot)" in picked.stdout and "other upcoming slots with readers" in picked.stdout
    assert "18:00 on" in picked.stdout and "(2 reader(s))" in picked.stdout
    weekly = nashra("digest", "preview", "--frequency", "weekly", "--weekday", "sun", "--hour", "21", "--out", str(out))
    assert weekly.returncode == 0 and "the 21:00 slot of Sundays" in weekly.stdout
    for args in (("--hour", "25"), ("--hour", "seven"), ("--hour", "9" * 30), ("--weekday", "2"),
                 ("--frequency", "weekly", "--weekday", "8")):
        bad = nashra("digest", "preview", *args, "--out", str(out))
        assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr, args
    assert "no digest leaves at 25" in nashra("digest", "preview", "--hour", "25").stderr
    assert row_counts() == before


# ------------------------------------------------------------------ the editors' page


@pytest.fixture
def desk_client(slots_env, queue_redis, clock):
    ids = newsroom()
    with session_scope() as s:
        _, token = create_editor(s, "سلمى", "editor")
    from service.web.app import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as client:
        form = client.get("/editor").text
        resp = client.post("/editor/login", data={"csrf_token": CSRF.search(form).group(1), "name": "سلمى",
                                                  "token": token}, follow_redirects=False)
        assert resp.status_code == 303, resp.text
        yield client, ids


def kept(page: str) -> str:
    return re.search(r'<ol id="kept">(.*?)</ol>', page, re.S).group(1)


def test_the_page_shows_the_slot_its_readers_and_a_selector_of_the_slots_with_readers(desk_client):
    client, _ = desk_client
    before = row_counts()
    page = client.get("/editor/digest")
    assert page.status_code == 200, page.text
    shown = re.search(r'<p id="slot-shown">(.*?)</p>', page.text, re.S).group(1)
    assert "07:00" in shown and "السبت" in shown and "مشتركَين" in shown and "أقرب موعد له قراء" in shown
    options = re.findall(r'<option value="([^"]+)"( selected)?>([^<]+)</option>', page.text)
    assert [(code, bool(sel), label) for code, sel, label in options] == [
        ("h07", True, "07:00، السبت 2026-03-28 — مشتركَين"), ("h18", False, "18:00، السبت 2026-03-28 — 3 مشتركين")]
    assert NIGHT in kept(page.text) and NOON not in kept(page.text)

    evening = client.get("/editor/digest", params={"frequency": "daily", "slot": "h18"})
    assert evening.status_code == 200
    shown = re.search(r'<p id="slot-shown">(.*?)</p>', evening.text, re.S).group(1)
    assert "18:00" in shown and "3 مشتركين" in shown
    assert NOON in kept(evening.text) and EVENING_BEFORE not in kept(evening.text)
    assert 'slot=h18&amp;variant=' in evening.text  # the variants' links stay on the slot

    weekly = client.get("/editor/digest", params={"frequency": "weekly"})
    assert weekly.status_code == 200 and '<option value="d5h07" selected>07:00، السبت 2026-03-28 — مشترك واحد' \
        in weekly.text
    # The newsletter selector (where daily/weekly links were) names each digest newsletter by slug.
    assert 'href="/editor/digest?newsletter=daily"' in page.text and 'href="/editor/digest?newsletter=weekly"' \
        in page.text and "newsletter=alerts" not in page.text
    by_slug = client.get("/editor/digest", params={"newsletter": "weekly"})
    assert by_slug.status_code == 200 and '<option value="d5h07" selected>' in by_slug.text
    assert '<input type="hidden" name="newsletter" value="weekly">' in by_slug.text
    for params in ({"slot": "h25"}, {"slot": "h13"}, {"slot": "18"}, {"slot": "h18\x00"}, {"slot": "h" + "9" * 40},
                   {"slot": "d5h07"}, {"frequency": "monthly"}, {"frequency": "weekly", "slot": "d9h07"},
                   {"newsletter": "alerts"}, {"newsletter": "nope"}, {"newsletter": "daily", "slot": "d5h07"}):
        bad = client.get("/editor/digest", params=params)
        assert bad.status_code == 400, (params, bad.status_code)
        assert 'id="form-error"' in bad.text and 'dir="rtl"' in bad.text, params
    assert "لا نشرة في الساعة 13" in client.get("/editor/digest", params={"slot": "h13"}).text
    assert row_counts() == before


def test_the_page_never_answers_5xx_whatever_the_query(desk_client):
    client, _ = desk_client
    before = row_counts()
    values = st.one_of(text, st.sampled_from(["h07", "h18", "d5h07", "d1h18", "h25", "h-1", "d7h07", "daily",
                                              "weekly", "all", '[1]', "a:all"]),
                       st.integers(-(2**70), 2**70).map(str))

    @FUZZ
    @given(frequency=st.one_of(st.sampled_from(["daily", "weekly"]), values), slot=values, variant=values,
           newsletter=st.one_of(st.sampled_from(["", "daily", "weekly", "alerts"]), values))
    def run(frequency, slot, variant, newsletter):
        fields = {"frequency": frequency, "slot": slot, "variant": variant, "newsletter": newsletter}
        query = urlencode({k: v[:600] for k, v in fields.items()}, encoding="utf-8",
                          errors="surrogatepass")  # lone surrogates and NUL go as raw bytes
        answer = client.get(f"/editor/digest?{query}")
        assert answer.status_code in (200, 400), (frequency, slot, variant, answer.status_code)

    run()
    assert row_counts() == before


# ------------------------------------------------------------------ in the browser


@pytest.mark.browser
def test_the_editor_switches_slots_in_the_browser(slots_env, live_server, browser, clock):
    newsroom()
    with session_scope() as s:
        _, token = create_editor(s, "سلمى", "editor")
    context = browser.new_context()
    page = context.new_page()
    try:
        log_in_editor(page, live_server, "سلمى", token)
        before = row_counts()  # after the login (its session and audit line)
        page.get_by_role("link", name="معاينة النشرة").click()
        shown = page.locator("#slot-shown")
        shown.wait_for()
        assert "07:00" in shown.inner_text() and "مشتركَين" in shown.inner_text()
        assert page.locator("#kept").inner_text().count(NOON) == 0
        picker = page.get_by_label("موعد النشرة", exact=False)
        assert picker.locator("option").all_inner_texts() == ["07:00، السبت 2026-03-28 — مشتركَين",
                                                              "18:00، السبت 2026-03-28 — 3 مشتركين"]
        picker.select_option("h18")
        page.get_by_role("button", name="اعرض هذا الموعد").click()
        page.wait_for_url(re.compile(r"slot=h18"))
        assert "18:00" in page.locator("#slot-shown").inner_text()
        assert "3 مشتركين" in page.locator("#slot-readers").inner_text()
        assert NOON in page.locator("#kept").inner_text()
        assert page.get_by_label("موعد النشرة", exact=False).input_value() == "h18"
        assert row_counts() == before
    finally:
        context.close()
