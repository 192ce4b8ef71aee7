"""Unsubscribes an edition caused (issue 18's report reads `editions.unsubscribes`): the
unsubscribe links of a ledger mail name their edition, and a reader who leaves through
one counts once for it — however often they click, and never who they were."""

from __future__ import annotations

import html as htmllib
import re
import time

import httpx
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from service.db import session_scope
from service.delivery.planner import plan
from service.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    Subscriber,
    SubscriberStatus,
)
from service.newsletters import catalogue, membership
from service.subscribers.tokens import make_token
from service.usecases import readers
from tests.support.delivery import make_edition, planned_edition, renderer, run_all_batches
from tests.support.readers import reader
from tests.test_hardening_fuzz import FUZZ

ONE_CLICK = {"content": b"List-Unsubscribe=One-Click",
             "headers": {"Content-Type": "application/x-www-form-urlencoded"}}


def _unsubscribes(edition_id: int) -> int:
    with session_scope() as s:
        return s.get(Edition, edition_id).unsubscribes


def _status(email: str) -> SubscriberStatus:
    with session_scope() as s:
        return s.scalars(sa.select(Subscriber.status).where(Subscriber.email == email)).one()


def _newsletters(email: str) -> list[str]:
    with session_scope() as s:
        sub_id = s.scalars(sa.select(Subscriber.id).where(Subscriber.email == email)).one()
        return [x.newsletter.slug for x in membership.of(s, sub_id)]


def _header_link(message) -> str:
    https, _mailto = re.fullmatch(r"<([^>]+)>, <([^>]+)>", message["List-Unsubscribe"]).groups()
    return https


def test_one_click_from_a_real_mail_counts_once_for_its_edition(live_server, smtp_sink):
    eid = planned_edition(3)
    run_all_batches(eid)  # the real send path: batch → composer → SMTP
    mails = {m.rcpt_tos[0]: m.message for m in smtp_sink.wait_for(3, timeout=30)}
    assert len(mails) == 3
    with session_scope() as s:
        daily = catalogue.by_slug(s, "daily").id
    link = _header_link(mails["reader0@example.com"])
    assert link.endswith(f"?e={eid}&n={daily}")  # this edition, this newsletter
    body = htmllib.unescape(mails["reader0@example.com"].get_body(("html",)).get_content())
    assert link in body  # the body's link and the header's: one link, edition included

    # RFC 8058 one-click, twice (a mail client retrying, a double click): counted once.
    # The readers are on the daily digest and alerts: they leave the daily only.
    for _ in range(2):
        assert httpx.post(link, **ONE_CLICK).status_code == 200
    assert _newsletters("reader0@example.com") == ["alerts"]
    assert _status("reader0@example.com") is SubscriberStatus.active
    assert _unsubscribes(eid) == 1

    # The page's «this newsletter» button posts to the same link, edition included.
    link1 = _header_link(mails["reader1@example.com"])
    page = httpx.get(link1)
    action = htmllib.unescape(re.search(r'<form method="post" action="([^"]+)"', page.text).group(1))
    assert action.endswith(f"?n={daily}&e={eid}")
    assert httpx.post(live_server + action, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert _unsubscribes(eid) == 2 and _newsletters("reader1@example.com") == ["alerts"]

    # A changed e= never errors: the reader leaves, and only an edition they were sent counts.
    with session_scope() as s:
        other = make_edition(s)
    link2 = _header_link(mails["reader2@example.com"]).replace(f"?e={eid}", f"?e={other}")
    assert httpx.post(link2, **ONE_CLICK).status_code == 200
    assert _newsletters("reader2@example.com") == ["alerts"]
    assert (_unsubscribes(eid), _unsubscribes(other)) == (2, 0)
    with session_scope() as s:  # nothing says who
        assert s.scalar(sa.select(sa.func.count()).select_from(Edition).where(Edition.unsubscribes > 0)) == 1


def _sent_reader(s, edition_id: int, n: int) -> str:
    sub = reader(s, f"fuzz{n}@example.com")
    s.add(Delivery(edition_id=edition_id, subscriber_id=sub.id, variant="v", status=DeliveryStatus.sent))
    return make_token("unsubscribe", sub.id, sub.token_version)


def test_any_e_value_unsubscribes_and_counts_only_a_real_edition(pg_env):
    with session_scope() as s:
        eid = make_edition(s)
    seen = iter(range(10**6))
    values = st.one_of(st.text(max_size=30), st.just(str(eid)), st.integers().map(str), st.none(),
                       st.sampled_from([f"{eid}.0", f" {eid}", f"0{eid}", "٣", "9" * 40, "-1", "0"]))

    @FUZZ
    @given(raw=values)
    def check(raw):
        with session_scope() as s:
            token = _sent_reader(s, eid, next(seen))
        before = _unsubscribes(eid)
        counted = readers.unsubscribe(token, raw).counted
        assert counted == (readers.edition_ref(raw) == eid)
        assert _unsubscribes(eid) == before + counted
        assert readers.unsubscribe(token, raw).counted is False  # the second click: already out, not counted
        assert _unsubscribes(eid) == before + counted

    check()


def test_any_e_in_the_link_over_http_unsubscribes_and_never_errors(pg_env, redis_url):
    from urllib.parse import quote

    from fastapi.testclient import TestClient

    from service.web.app import create_app

    with session_scope() as s:
        eid = make_edition(s)
    seen = iter(range(10**6))
    with TestClient(create_app()) as web:

        @FUZZ
        @given(raw=st.one_of(st.text(max_size=40), st.just(str(eid))))
        def check(raw):
            with session_scope() as s:
                token = _sent_reader(s, eid, next(seen))
            before = _unsubscribes(eid)
            page = web.get(f"/unsubscribe/{token}?e={quote(raw)}")
            assert page.status_code == 200
            answer = web.post(f"/unsubscribe/{token}?e={quote(raw)}", **ONE_CLICK)
            assert answer.status_code == 200 and "أُلغي اشتراكك" in answer.text
            assert _unsubscribes(eid) == before + (readers.edition_ref(raw) == eid)

        check()


def _send_on_a_worker(eid: int, queue: str) -> None:
    """The edition planned and sent by a real Celery worker (through Redis), as beat would."""
    from service.jobs.tasks import plan_edition

    plan_edition.si(eid).apply_async(queue=queue)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with session_scope() as s:
            if s.get(Edition, eid).status == EditionStatus.done:
                return
        time.sleep(0.2)
    raise AssertionError(f"edition {eid} was not sent")


def test_one_click_from_one_newsletters_mail_leaves_only_it(live_server, redis_url, smtp_sink, celery_worker_factory):
    """A reader on the daily digest and alerts one-click-leaves from a daily mail (the link
    taken from the mail the worker sent): the next daily passes them by, the next alert
    reaches them."""
    with session_scope() as s:
        two = reader(s, "two@example.com", frequency="daily", alerts=True)
        reader(s, "daily-only@example.com", frequency="daily", alerts=False)
        daily = catalogue.by_slug(s, "daily").id
        two_id, first = two.id, make_edition(s, "digest", "daily")
        plan(s, first, renderer=renderer())
    with celery_worker_factory(queues=("digests", "alerts"), concurrency=2):
        _send_on_a_worker(first, "digests")
        mails = {m.rcpt_tos[0]: m.message for m in smtp_sink.wait_for(2, timeout=30)}
        link = _header_link(mails["two@example.com"])
        assert f"n={daily}" in link and f"e={first}" in link  # this newsletter, from this edition
        for _ in range(2):  # one-click, and a mail client's retry
            assert httpx.post(link, **ONE_CLICK).status_code == 200
        with session_scope() as s:
            assert [x.newsletter.slug for x in membership.of(s, two_id)] == ["alerts"]
        assert _status("two@example.com") is SubscriberStatus.active and _unsubscribes(first) == 1

        with session_scope() as s:
            second = make_edition(s, "digest", "daily")
            plan(s, second, renderer=renderer())
            alert = make_edition(s, "alert", None, headline="عاجل: زلزال", url="https://news.example/quake")
            plan(s, alert, renderer=renderer())
        _send_on_a_worker(second, "digests")
        _send_on_a_worker(alert, "alerts")
        later = smtp_sink.wait_for(4, timeout=30)[2:]
    assert sorted(m.rcpt_tos[0] for m in later) == ["daily-only@example.com", "two@example.com"]
    with session_scope() as s:
        got = {eid: [e for e, in s.execute(sa.select(Subscriber.email).join(
            Delivery, Delivery.subscriber_id == Subscriber.id).where(
            Delivery.edition_id == eid, Delivery.status == DeliveryStatus.sent))] for eid in (second, alert)}
    assert got == {second: ["daily-only@example.com"], alert: ["two@example.com"]}
