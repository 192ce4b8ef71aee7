"""Metrics of what comes back (issue 21, item 6): reports by source and kind, and the
suppression list by reason, read from the database at scrape time by the web app.

The bounce server, the mailbox fetch and the webhooks run in other processes than the
web app that serves /metrics, so nothing here is a counter in memory: the reports go
through the real bounce server (DSNs, an ARF complaint) and the shared rules (a report
read from the mailbox), and the numbers are read with GET /metrics from the real app
served by uvicorn on a loopback port, parsed as Prometheus parses them.
"""

from __future__ import annotations

import urllib.request

import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from service.db import session_scope
from service.inbound import actions
from service.inbound.actions import Feedback
from service.models import Delivery, Subscriber
from service.subscribers.suppression import REASONS, suppress
from service.usecases import suppressions
from tests.support.delivery import add_subscribers
from tests.test_bounces import arf, deliver
from tests.test_soft_bounce_policy import DELIVERED, FULL, report, send_edition


def scrape(base_url: str) -> tuple[str, dict[str, dict[tuple, float]]]:
    """GET /metrics: the body, and {family: {sorted label pairs: value}}."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=30) as resp:
        assert resp.status == 200
        body = resp.read().decode()
    families = {}
    for family in text_string_to_metric_families(body):
        families[family.name] = {tuple(sorted(s.labels.items())): s.value for s in family.samples}
    return body, families


def feedback(families, source: str, kind: str) -> float:
    return families["nashra_feedback_events"][(("kind", kind), ("source", source))]


def test_reports_by_source_and_kind_and_suppressions_by_reason(live_server, bounce_server, smtp_sink):
    # Before anything came back: every series is there, at 0, so alert rules see it.
    _, before = scrape(live_server)
    assert len(before["nashra_feedback_events"]) == len(actions.SOURCES) * len(actions.KINDS)
    assert set(before["nashra_feedback_events"].values()) == {0.0}
    assert before["nashra_suppressions"] == {(("reason", r),): 0.0 for r in REASONS}

    with session_scope() as s:
        add_subscribers(s, 4)
    _, got = send_edition(smtp_sink)
    assert report(bounce_server, got["reader0@example.com"], {})[0] == 250  # 5.1.1: hard
    assert report(bounce_server, got["reader1@example.com"], FULL)[0] == 250  # soft
    assert report(bounce_server, got["reader1@example.com"], FULL)[0] == 250  # the same DSN again: received twice
    assert report(bounce_server, got["reader2@example.com"], DELIVERED)[0] == 250
    verp = got["reader3@example.com"].mail_from
    assert deliver(bounce_server.port, verp, arf(verp, got["reader3@example.com"].data, verp))[0] == 250
    # A report read from the bounce mailbox goes through the same rules, with its source.
    with session_scope() as s:
        sub = s.scalar(sa.select(Subscriber).where(Subscriber.email == "reader2@example.com"))
        row = s.scalar(sa.select(Delivery).where(Delivery.subscriber_id == sub.id))
        actions.apply(s, Feedback("soft", "imap", status="4.2.2"), sub, row)
        # An admin's decision, put on and taken off again: its lift leaves a mark among
        # the events (the soft-bounce count restarts), which is no report.
        assert suppress(s, "reader2@example.com", "manual", actor="test")
        suppress(s, "someone@example.net", "manual", actor="test")
    with session_scope() as s:
        row_id = s.scalar(sa.text("SELECT id FROM suppressions WHERE email = 'reader2@example.com'"))
    assert suppressions.lift(row_id, "asked by mistake", actor="test", by_admin=True)

    body, after = scrape(live_server)
    expected = {("smtp", "hard"): 1, ("smtp", "soft"): 2, ("smtp", "delivered"): 1, ("smtp", "complaint"): 1,
                ("imap", "soft"): 1}
    for source in actions.SOURCES:
        for kind in actions.KINDS:
            assert feedback(after, source, kind) == expected.get((source, kind), 0), (source, kind)
    assert not any(dict(labels).get("kind") == "lifted" for labels in after["nashra_feedback_events"])
    assert after["nashra_suppressions"] == {
        (("reason", "complaint"),): 1.0, (("reason", "hard_bounce"),): 1.0, (("reason", "manual"),): 1.0,
        (("reason", "soft_bounce"),): 0.0}
    assert "# TYPE nashra_feedback_events gauge" in body and "# TYPE nashra_suppressions gauge" in body
    assert "@example" not in body  # ids and counts, never an address
