"""`nashra demo`'s own reader is on the daily digest and the breaking alerts, on the
embedded SQLite database: the digest the demo sends and an alert sent from the editor's
page both reach the outbox.  A second run puts back a reader who left or unsubscribed
in the browser, and keeps the choices they made there."""

from __future__ import annotations

import sqlalchemy as sa

from service.db import session_scope
from service.demo.run import DEMO_READER, _prepare_database
from service.models import Subscriber, SubscriberStatus
from service.newsletters import catalogue, membership


def _the_reader() -> tuple[SubscriberStatus, dict[str, list]]:
    with session_scope() as s:
        reader = s.scalar(sa.select(Subscriber).where(Subscriber.email == DEMO_READER))
        slugs = {n.id: n.slug for n in catalogue.every(s, hidden=True)}
        return reader.status, {slugs[m.newsletter_id]: m.sections for m in membership.of(s, reader.id)}


def test_the_demo_reader_gets_the_daily_digest_and_alerts(sqlite_env):
    _prepare_database()
    assert _the_reader() == (SubscriberStatus.active, {"daily": [], "alerts": []})


def test_a_second_run_puts_back_a_reader_who_left_and_keeps_their_sections(sqlite_env):
    _prepare_database()
    with session_scope() as s:
        reader = s.scalar(sa.select(Subscriber).where(Subscriber.email == DEMO_READER))
        reader.status = SubscriberStatus.unsubscribed
        membership.leave(s, reader.id, catalogue.default_alerts(s).id)
        daily = membership.find(s, reader.id, catalogue.digest_for(s, "daily").id)
        daily.sections = [2]

    _prepare_database()

    assert _the_reader() == (SubscriberStatus.active, {"daily": [2], "alerts": []})
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Subscriber)) == 1
