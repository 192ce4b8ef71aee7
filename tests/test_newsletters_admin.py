"""Managing newsletters (issue 17): `nashra newsletters list|add|edit|hide` as operators run
it (real processes on PostgreSQL), the checks of usecases.newsletters (bad input → a clear
Arabic error, nothing changed), the admins' «النشرات» on the pages (CSRF, admins only), and
the headers a newsletter's mail carries (its List-Id, its From name, n=<id> to leave it)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.cli.main import main as cli_main
from service.db import session_scope
from service.delivery.compose import compose, prepare
from service.models import (
    AuditLog,
    Edition,
    EditionKind,
    EditionStatus,
    Newsletter,
    NewsletterKind,
    Section,
    SubscriberStatus,
)
from service.newsletters import catalogue
from service.staff.editors import create_editor
from service.usecases import newsletters
from tests.support.readers import reader
from tests.test_cli import nashra
from tests.test_web_desk import CSRF, log_in
from tests.test_web_desk import csrf_of as desk_csrf_of


def snapshot() -> list[tuple]:
    """Every newsletter as stored, and how many audit lines there are: "nothing changed"."""
    with session_scope() as s:
        rows = s.execute(sa.select(Newsletter.id, Newsletter.slug, Newsletter.name, Newsletter.kind,
                                   Newsletter.frequency, Newsletter.default_hour, Newsletter.default_weekday,
                                   Newsletter.sections, Newsletter.from_name, Newsletter.list_id,
                                   Newsletter.description, Newsletter.offered, Newsletter.hidden)
                         .order_by(Newsletter.id)).all()
        audits = s.scalar(sa.select(sa.func.count()).select_from(AuditLog))
    return [tuple(r) for r in rows] + [("audit", audits)]


@pytest.fixture
def site(pg_env):
    with session_scope() as s:
        s.add_all([Section(slug="sports", name="رياضة", position=1), Section(slug="world", name="عربي دولي", position=2)])
        s.flush()
        reader(s, "a@example.com")  # daily + alerts
        reader(s, "b@example.com", frequency="weekly", alerts=False)
        reader(s, "c@example.com", status=SubscriberStatus.pending)  # not counted: unconfirmed
    return pg_env


# ---------------------------------------------------------------- the console


def test_cli_add_edit_hide_list_round_trip(site):
    added = nashra("newsletters", "add", "رياضة الجمعة", "--slug", "sports-friday", "--kind", "digest",
                   "--frequency", "weekly", "--hour", "18", "--day", "4", "--sections", "sports",
                   "--from-name", "نشرة الرياضة", "--list-id", "friday.sports.example",
                   "--description", "مباريات الأسبوع")
    assert added.returncode == 0, added.stderr
    assert "sports-friday" in added.stdout and "<friday.sports.example>" in added.stdout
    with session_scope() as s:
        n = catalogue.by_slug(s, "sports-friday")
        sports = s.scalar(sa.select(Section.id).where(Section.slug == "sports"))
        assert (n.kind, n.frequency.value, n.default_hour, n.default_weekday, n.sections, n.from_name, n.list_id) \
            == (NewsletterKind.digest, "weekly", 18, 4, [sports], "نشرة الرياضة", "friday.sports.example")
        assert n.offered and not n.hidden and n.position > 2

    edited = nashra("newsletters", "edit", "sports-friday", "--name", "رياضة نهاية الأسبوع", "--hour", "default",
                    "--list-id", "", "--not-offered")
    assert edited.returncode == 0, edited.stderr
    with session_scope() as s:
        n = catalogue.by_slug(s, "sports-friday")
        assert (n.name, n.default_hour, n.list_id, n.offered) == ("رياضة نهاية الأسبوع", None, None, False)

    hidden = nashra("newsletters", "hide", "sports-friday")
    assert hidden.returncode == 0 and "hidden" in hidden.stdout
    again = nashra("newsletters", "hide", "sports-friday")
    assert again.returncode == 0 and "already" in again.stdout
    listed = nashra("newsletters", "list")
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert set(lines) == {"daily", "weekly", "alerts", "sports-friday"}
    assert listed.stdout.splitlines()[0].split() == ["slug", "name", "kind", "schedule", "sections", "offered",
                                                    "hidden", "readers"]
    assert lines["daily"].split()[-1] == "1" and lines["weekly"].split()[-1] == "1"  # confirmed readers only
    assert lines["sports-friday"].split()[-2:] == ["yes", "0"] and "رياضة" in lines["sports-friday"]
    shown = nashra("newsletters", "hide", "sports-friday", "--show")
    assert shown.returncode == 0
    with session_scope() as s:
        assert not catalogue.by_slug(s, "sports-friday").hidden
        actions = s.scalars(sa.select(AuditLog.action).where(AuditLog.action.startswith("newsletter."))
                            .order_by(AuditLog.id)).all()
    assert actions == ["newsletter.add", "newsletter.edit", "newsletter.hide", "newsletter.show"]


def test_hiding_a_newsletter_names_its_scheduled_editions_which_still_go(site):
    """Retiring a newsletter makes nothing new for it, but an edition an editor scheduled
    for it was made on purpose: the console says which still go, and how to stop one."""
    with session_scope() as s:
        weekly = catalogue.by_slug(s, "weekly")
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        waiting = Edition(kind=EditionKind.special, status=EditionStatus.draft, title="عدد خاص", params={},
                          newsletter_id=weekly.id, send_at=later)
        gone = Edition(kind=EditionKind.special, status=EditionStatus.done, title="مضى", params={},
                       newsletter_id=weekly.id, send_at=later - dt.timedelta(days=3))
        s.add_all([waiting, gone])
        s.flush()
        waiting_id = waiting.id
    hidden = nashra("newsletters", "hide", "weekly")
    assert hidden.returncode == 0, hidden.stderr
    assert f"1 scheduled edition(s) still go at their time: {waiting_id} " in hidden.stdout
    quiet = nashra("newsletters", "hide", "daily")
    assert quiet.returncode == 0 and "scheduled" not in quiet.stdout
    with session_scope() as s:
        assert s.get(Edition, waiting_id).status is EditionStatus.draft  # not cancelled behind the editor's back


@pytest.mark.parametrize("args, words", [
    (("add", "رياضة", "--slug", "sports", "--kind", "digest", "--sections", "cooking"), "cooking"),
    (("add", "أخرى", "--slug", "daily", "--kind", "digest"), "daily"),  # a taken slug
    (("add", "النشرة اليومية", "--slug", "other", "--kind", "digest"), "النشرة اليومية"),  # a taken name
    (("add", "رياضة", "--slug", "sports", "--kind", "digest", "--list-id", "no dots here"), "List-Id"),
    (("add", "رياضة", "--slug", "sports", "--kind", "digest", "--list-id", "a..b"), "List-Id"),
    (("add", "رياضة", "--slug", "sports", "--kind", "digest", "--list-id", "x" * 199 + ".b"), "List-Id"),
    (("add", "رياضة", "--slug", "sports", "--kind", "digest", "--list-id", "daily.nashra.example"), "List-Id"),
    (("add", "رياضة", "--slug", "Sports Friday", "--kind", "digest"), "Sports Friday".lower()),
    (("add", "رياضة", "--slug", "sports", "--kind", "digest", "--hour", "3"), "3"),
    (("add", "رياضة", "--slug", "sports", "--kind", "digest", "--hour", "24"), "24"),
    (("add", "رياضة", "--slug", "sports", "--kind", "digest", "--frequency", "weekly", "--day", "7"), "6"),
    (("add", "رياضة", "--slug", "sports", "--kind", "digest", "--day", "2"), "اليومي"),  # a day on a daily digest
    (("add", "عاجل رياضي", "--slug", "sports-alerts", "--kind", "alerts", "--hour", "7"), "العاجلة"),
    (("add", "رياضة\u0000", "--slug", "sports", "--kind", "digest"), "U+0000"),
    (("add", "رياضة", "--slug", "sports", "--kind", "digest", "--from-name", "a\nBcc: x@evil.example"), "سطر"),
    (("edit", "daily", "--slug", "every-day"), "daily"),  # the first three keep their slugs
    (("edit", "daily", "--kind", "alerts"), "قراء"),  # readers are on it
    (("edit", "nope", "--name", "x"), "nope"),
    (("hide", "nope"), "nope"),
])
def test_cli_bad_input_is_refused_clearly_and_changes_nothing(site, args, words, capsys):
    before = snapshot()
    if "\x00" in "".join(args):
        # No process takes a NUL in its argv (execve ends the string there): the command
        # itself runs here, on what its parser was handed.
        with pytest.raises(SystemExit) as code:
            cli_main(["newsletters", *args])
        assert code.value.code != 0
        err = capsys.readouterr().err
    else:
        proc = nashra("newsletters", *args)
        assert proc.returncode != 0
        err = proc.stderr
    assert "Traceback" not in err and "error:" in err and "nothing was changed" in err
    assert words in err, err
    assert snapshot() == before


def test_use_case_refuses_nul_and_controls_anywhere(site):
    before = snapshot()
    for fields in ({"description": "وصف\x00"}, {"from_name": "اسم\x00"}, {"list_id": "a.b\x00"},
                   {"sections": ["sports\x00"]}, {"hour": "7\x00"}):
        with pytest.raises(newsletters.NewsletterError):
            newsletters.add("رياضة", slug="sports", kind="digest", actor="test", **fields)
    with pytest.raises(newsletters.NewsletterError):
        newsletters.edit("daily\x00", name="x", actor="test")
    assert snapshot() == before


def test_kind_changes_only_while_nobody_is_on_it(site):
    newsletters.add("تجربة", slug="trial", kind="digest", actor="test")
    row, changed = newsletters.edit("trial", kind="alerts", actor="test")
    assert (row.kind, row.frequency, changed) == ("alerts", None, ["kind"])
    with session_scope() as s:
        reader(s, "d@example.com", newsletters=["trial"])
    with pytest.raises(newsletters.NewsletterError, match="قراء"):
        newsletters.edit("trial", kind="digest", actor="test")


def test_hidden_newsletters_are_not_offered(site):
    newsletters.add("ثقافة", slug="culture", kind="digest", actor="test")
    with session_scope() as s:
        assert "culture" in [n.slug for n in catalogue.offered(s)]
    newsletters.hide("culture", actor="test")
    with session_scope() as s:
        assert "culture" not in [n.slug for n in catalogue.offered(s)]
    row = newsletters.get("culture")
    assert row.hidden and not row.offered


# ---------------------------------------------------------------- the headers


def test_a_newsletters_mail_carries_its_list_id_from_name_and_leave_link(site):
    newsletters.add("رياضة الجمعة", slug="sports-friday", kind="digest", from_name="نشرة الرياضة", actor="test")
    with session_scope() as s:
        n = catalogue.by_slug(s, "sports-friday")
        s.expunge(n)
    tpl = prepare(41, "special", "all", "عدد خاص", "<p>x</p>", "x", newsletter=n)
    data = compose(tpl, to_addr="r@example.com", subscriber_id=3, token_version=1, delivery_id=9).data
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg["List-Id"] == "<sports-friday.nashra.example>"
    assert msg["From"].addresses[0].display_name == "نشرة الرياضة"
    assert msg["From"].addresses[0].addr_spec == "newsletter@nashra.example"
    assert f"?e=41&n={n.id}>" in msg["List-Unsubscribe"]
    plain = compose(prepare(41, "special", "all", "عدد خاص", "<p>x</p>", "x"), to_addr="r@example.com",
                    subscriber_id=3, token_version=1, delivery_id=9).data
    msg = email.message_from_bytes(plain, policy=email.policy.default)  # none given: as before
    assert msg["List-Id"] == "<digest.nashra.example>" and "&n=" not in msg["List-Unsubscribe"]


# ---------------------------------------------------------------- the admins' page


@pytest.fixture
def desk(site, queue_redis):
    with session_scope() as s:
        _, editor = create_editor(s, "سلمى", "editor")
        _, admin = create_editor(s, "منى", "admin")
    from service.web.app import create_app

    with TestClient(create_app()) as client:
        yield {"app": client.app, "editor": ("سلمى", editor), "admin": ("منى", admin)}


def csrf_of(client, path: str = "/editor/newsletters") -> str:
    return desk_csrf_of(client, path)


def test_an_admin_adds_edits_and_hides_newsletters_on_the_page(desk):
    admin = log_in(desk, "admin")
    page = admin.get("/editor/newsletters")
    assert page.status_code == 200 and "النشرات" in page.text and "النشرة اليومية" in page.text
    with session_scope() as s:
        sports = s.scalar(sa.select(Section.id).where(Section.slug == "sports"))
    resp = admin.post("/editor/newsletters", data={
        "csrf_token": csrf_of(admin), "kind": "digest", "name": "رياضة الجمعة", "slug": "sports-friday",
        "frequency": "weekly", "hour": "18", "day": "4", "section": [str(sports)], "from_name": "نشرة الرياضة",
        "list_id": "", "description": "", "offered": "yes"})
    assert resp.status_code == 200 and "أُضيفت" in resp.text, resp.text
    assert 'id="newsletter-sports-friday"' in resp.text
    with session_scope() as s:
        n = catalogue.by_slug(s, "sports-friday")
        assert (n.frequency.value, n.default_hour, n.default_weekday, n.sections) == ("weekly", 18, 4, [sports])
        nid = n.id

    before = snapshot()
    bad = admin.post("/editor/newsletters", data={"csrf_token": csrf_of(admin), "kind": "digest", "name": "x",
                                                  "slug": "sports-friday"})
    assert bad.status_code == 422 and "لم تُضف النشرة" in bad.text
    forged = admin.post("/editor/newsletters", data={"csrf_token": "nope", "kind": "digest", "name": "y",
                                                     "slug": "yy"})
    assert forged.status_code == 400
    assert snapshot() == before

    edited = admin.post(f"/editor/newsletters/{nid}", data={
        "csrf_token": csrf_of(admin), "action": "edit", "name": "رياضة", "slug": "sports-friday",
        "frequency": "daily", "hour": "", "from_name": "", "list_id": "sports.nashra.example", "offered": "yes"})
    assert edited.status_code == 200 and "حُفظت" in edited.text, edited.text
    with session_scope() as s:  # an edition an editor scheduled for it: hiding says it still goes
        waiting = Edition(kind=EditionKind.special, status=EditionStatus.draft, title="عدد خاص", params={},
                          newsletter_id=nid, send_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=5))
        s.add(waiting)
        s.flush()
        waiting_id = waiting.id
    hidden = admin.post(f"/editor/newsletters/{nid}", data={"csrf_token": csrf_of(admin), "action": "hide"})
    assert hidden.status_code == 200 and "أُخفيت" in hidden.text
    assert f"أعدادها المجدولة ({waiting_id}) تُرسل في موعدها" in hidden.text
    with session_scope() as s:
        n = catalogue.by_slug(s, "sports-friday")
        assert (n.name, n.frequency.value, n.default_hour, n.default_weekday, n.sections, n.from_name, n.list_id,
                n.hidden) == ("رياضة", "daily", None, None, [], None, "sports.nashra.example", True)
    missing = admin.post("/editor/newsletters/999999", data={"csrf_token": csrf_of(admin), "action": "hide"})
    assert missing.status_code == 404


def test_an_editor_is_refused_the_newsletters_page(desk):
    editor = log_in(desk, "editor")
    assert editor.get("/editor/newsletters").status_code == 403
    token = CSRF.search(editor.get("/editor").text).group(1)
    before = snapshot()
    resp = editor.post("/editor/newsletters", data={"csrf_token": token, "kind": "digest", "name": "x", "slug": "x"})
    assert resp.status_code == 403
    assert editor.post("/editor/newsletters/1", data={"csrf_token": token, "action": "hide"}).status_code == 403
    assert snapshot() == before
    assert TestClient(desk["app"]).get("/editor/newsletters").status_code == 401


class _Desk:
    """Who sends a test copy: an id no editor has (its bounce names nobody)."""

    id = 0
    actor = "test"


def test_test_copies_carry_their_newsletters_headers(site, smtp_sink):
    from service.usecases import special_editions
    from service.usecases.alerts import send_test_alert
    from tests.test_special_editions import _article

    newsletters.add("رياضة الجمعة", slug="sports-friday", kind="digest", from_name="نشرة الرياضة",
                    list_id="friday.sports.example", actor="test")
    newsletters.add("عاجل الرياضة", slug="sports-alerts", kind="alerts", from_name="عاجل الملاعب", actor="test")
    with session_scope() as s:
        story = _article(s, "المنتخب يفوز في طنجة", slug="sports")
        reader(s, "fan@example.com", newsletters=["sports-friday"])
    comp = special_editions.Composition(title="ليلة الكأس", article_ids=(story,), newsletter="sports-friday")
    shown = special_editions.send_test(comp, "desk@example.com", _Desk())
    assert shown.audience == 1 and shown.newsletter.slug == "sports-friday"
    with session_scope() as s:
        editor, _ = create_editor(s, "سلمى", "editor")
        desk = type("Editor", (), {"id": editor.id, "actor": f"editor:{editor.id}"})()
    send_test_alert({"headline": "هدف في الدقيقة 90", "url": "https://news.example/sports/goal", "summary": "",
                     "newsletter": "sports-alerts"}, "desk@example.com", desk)
    special, alert = smtp_sink.wait_for(2, timeout=20)
    assert special.message["List-Id"] == "<friday.sports.example>"
    assert special.message["From"].addresses[0].display_name == "نشرة الرياضة"
    assert alert.message["List-Id"] == "<sports-alerts.nashra.example>"
    assert alert.message["From"].addresses[0].display_name == "عاجل الملاعب"
    for copy in (special, alert):
        assert copy.message["X-Nashra-Test"] == "editor-copy" and copy.message["List-Unsubscribe"] is None
    with pytest.raises(special_editions.SpecialError):  # an alerts newsletter is no special edition's
        special_editions.preview(special_editions.Composition(title="x", article_ids=(story,),
                                                              newsletter="sports-alerts"))


def test_cli_composes_a_special_edition_for_a_newsletter_and_refuses_what_is_none(site, redis_url):
    from service.models import Edition
    from tests.test_special_editions import _article

    newsletters.add("رياضة الجمعة", slug="sports-friday", kind="digest", actor="test")
    with session_scope() as s:
        story = _article(s, "المنتخب يفوز في طنجة", slug="sports")
        reader(s, "fan@example.com", newsletters=["sports-friday"])
    base = ("edition", "compose", "--title", "ليلة الكأس", "--article", str(story))
    for bad in ("alerts", "nope", "Bad Slug"):
        proc = nashra(*base, "--newsletter", bad, "--yes")
        assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    with session_scope() as s:
        assert s.scalars(sa.select(Edition)).all() == []
    proc = nashra(*base, "--newsletter", "sports-friday", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "رياضة الجمعة [sports-friday]" in proc.stdout and "مشترك واحد" in proc.stdout
    with session_scope() as s:
        edition = s.scalars(sa.select(Edition)).one()
        assert edition.newsletter_id == catalogue.by_slug(s, "sports-friday").id
    refused = nashra("alert", "send", "--headline", "هدف", "--link", "https://news.example/goal",
                     "--newsletter", "no-such-alerts", "--yes")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr


_CLIENTS: dict = {}
_field = st.one_of(st.text(max_size=80), st.sampled_from(["", "daily", "weekly", "digest", "alerts", "7", "24", "-1",
                                                          "6", "a.b", "<x.y>", "\x00", "a\r\nb", "9" * 12]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=_field, name=_field, slug=_field, frequency=_field, hour=_field, day=_field,
       section=st.lists(_field, max_size=3), from_name=_field, list_id=_field, description=_field, offered=_field,
       action=st.sampled_from(["edit", "hide", "show", "bogus", ""]), target=st.sampled_from(["1", "3", "999999"]))
def test_hypothesis_over_the_newsletter_forms_never_a_5xx(desk, kind, name, slug, frequency, hour, day, section,
                                                         from_name, list_id, description, offered, action, target):
    if id(desk["app"]) not in _CLIENTS:  # one login per test run (the fixture is shared by the examples)
        _CLIENTS.clear()
        _CLIENTS[id(desk["app"])] = log_in(desk, "admin")
    client = _CLIENTS[id(desk["app"])]
    fields = {"kind": kind, "name": name, "slug": slug, "frequency": frequency, "hour": hour, "day": day,
              "section": section, "from_name": from_name, "list_id": list_id, "description": description,
              "offered": offered}
    before = snapshot()
    added = client.post("/editor/newsletters", data={"csrf_token": csrf_of(client), **fields})
    assert added.status_code in (200, 422), added.text[:500]
    if added.status_code == 422:
        assert snapshot() == before
    before = snapshot()
    changed = client.post(f"/editor/newsletters/{target}", data={"csrf_token": csrf_of(client), "action": action,
                                                                 **fields})
    assert changed.status_code in (200, 404, 422), changed.text[:500]
    if changed.status_code != 200:
        assert snapshot() == before


def test_an_edit_to_what_another_has_is_refused_not_a_500(site):
    newsletters.add("ثقافة", slug="culture", kind="digest", list_id="sports.nashra.example", actor="test")
    before = snapshot()
    for changes in ({"name": "النشرة اليومية"}, {"slug": "weekly"}, {"list_id": "<weekly.nashra.example>"}):
        with pytest.raises(newsletters.NewsletterError, match="لنشرة أخرى"):
            newsletters.edit("culture", actor="test", **changes)
    with pytest.raises(newsletters.NewsletterError, match="لنشرة أخرى"):  # its made List-Id is culture's own
        newsletters.add("رياضة", slug="sports", kind="digest", actor="test")
    assert snapshot() == before
