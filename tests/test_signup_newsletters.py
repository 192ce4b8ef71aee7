"""Double opt-in under several newsletters: a pending reader has their subscription rows
from the signup on, but no edition of any of them reaches them until they confirm; then
each edition reaches them on the newsletters they chose, and no other."""

from __future__ import annotations

from service.db import session_scope
from service.delivery.planner import plan
from service.models import Newsletter, NewsletterKind
from service.newsletters import membership
from service.subscribers import lifecycle
from service.subscribers.consent import Evidence
from service.subscribers.tokens import make_token
from service.usecases.subscribers import SignupRequest, sign_up
from tests.support.delivery import make_edition, renderer, run_all_batches


def _send(kind: str, frequency: str | None = "daily", **params) -> None:
    with session_scope() as s:
        eid = make_edition(s, kind, frequency, headline="عاجل", url="https://news.example/a", **params)
        plan(s, eid, renderer=renderer())
    run_all_batches(eid)


def test_a_pending_reader_is_sent_nothing_until_confirmed_then_only_what_they_chose(pg_env, smtp_sink):
    with session_scope() as s:
        s.add(Newsletter(slug="friday", name="نشرة الجمعة", kind=NewsletterKind.digest, frequency="weekly",
                         position=5))
    result = sign_up(SignupRequest(email="two@example.com", sections=[], frequency=None, alerts=None,
                                   consented=True, newsletters=["weekly", "alerts"]),
                     source="test", evidence=Evidence())
    with session_scope() as s:
        assert [x.newsletter.slug for x in membership.of(s, result.subscriber_id)] == ["weekly", "alerts"]
    _send("digest", "weekly")
    _send("alert", None)
    assert smtp_sink.recipients() == []  # pending: their rows are there, their mail is not

    with session_scope() as s:
        lifecycle.confirm(s, make_token("confirm", result.subscriber_id, 1))
    _send("digest", "daily")  # not theirs
    _send("digest", "weekly")
    _send("alert", None)
    assert smtp_sink.recipients() == ["two@example.com", "two@example.com"]
