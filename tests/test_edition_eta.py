"""An edition's ETA: the time left at the last minute's rate, from the ledger, only while
it sends — in `progress`, in GET /api/editions/{id} and on the editor's page."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.db import session_scope
from service.delivery import fanout
from service.delivery.batch import send_batch
from service.delivery.progress import eta_seconds, progress
from service.models import Delivery, DeliveryStatus, Edition, EditionStatus, utcnow
from service.staff.editors import create_editor
from tests.support.delivery import planned_edition


def test_eta_only_while_sending_with_a_rate():
    assert eta_seconds(EditionStatus.sending, 300, 2.0) == 150
    assert eta_seconds(EditionStatus.sending, 1, 50.0) == 1  # never "0 seconds left" while rows remain
    assert eta_seconds(EditionStatus.sending, 300, 0.0) is None  # no rate yet (or a relay away)
    assert eta_seconds(EditionStatus.sending, 0, 2.0) is None
    for status in (EditionStatus.paused, EditionStatus.planned, EditionStatus.done, EditionStatus.cancelled):
        assert eta_seconds(status, 300, 2.0) is None


def test_a_real_sending_edition_has_an_eta_in_progress_and_the_api(pg_env, queue_redis, smtp_sink):
    eid = planned_edition(200)
    with session_scope() as s:
        _, token = create_editor(s, "منى", "admin")  # a digest: steering it is an admin's
        assert progress(s, eid)["eta_seconds"] is None  # planned: nothing sent, no rate
        ranges = fanout.batch_ranges(s, eid, 50)
    assert len(ranges) == 4
    for first, last in ranges[:2]:  # half of it goes out through the real batches
        send_batch(eid, first, last)
    assert len(smtp_sink.messages) == 100

    with session_scope() as s:
        p = progress(s, eid)
    assert (p["status"], p["sent"], p["remaining"]) == ("sending", 100, 100)
    assert p["rate"] > 0
    assert p["eta_seconds"] == pytest.approx(p["remaining"] / p["rate"], rel=0.05, abs=1)

    from service.web.app import create_app

    with TestClient(create_app()) as client:
        body = client.get(f"/api/editions/{eid}", headers={"Authorization": f"Bearer {token}"}).json()
        assert body["eta_seconds"] == pytest.approx(p["eta_seconds"], rel=0.2, abs=2)

        assert client.post(f"/api/editions/{eid}/pause",
                           headers={"Authorization": f"Bearer {token}"}).status_code == 200
        paused = client.get(f"/api/editions/{eid}", headers={"Authorization": f"Bearer {token}"}).json()
    assert paused["status"] == "paused" and paused["rate"] > 0 and paused["eta_seconds"] is None

    with session_scope() as s:  # the rest goes, the edition is done: no time left to show
        s.get(Edition, eid).status = EditionStatus.sending
    for first, last in ranges[2:]:
        send_batch(eid, first, last)
    with session_scope() as s:
        p = progress(s, eid)
    assert p["remaining"] == 0 and p["eta_seconds"] is None


def test_the_rate_is_the_last_minute_s(pg_env):
    """60 rows sent in the last minute (and one long before): 1 message/s, 150 left → 150 s."""
    eid = planned_edition(211)
    now = utcnow()
    with session_scope() as s:
        s.get(Edition, eid).status = EditionStatus.sending
        ids = s.scalars(sa.select(Delivery.id).where(Delivery.edition_id == eid).order_by(Delivery.id)).all()
        s.execute(sa.update(Delivery).where(Delivery.id.in_(ids[:60]))
                  .values(status=DeliveryStatus.sent, sent_at=now - dt.timedelta(seconds=5)))
        s.execute(sa.update(Delivery).where(Delivery.id == ids[60])
                  .values(status=DeliveryStatus.sent, sent_at=now - dt.timedelta(minutes=10)))
    with session_scope() as s:
        p = progress(s, eid)
    assert (p["sent"], p["remaining"], p["rate"], p["eta_seconds"]) == (61, 150, 1.0, 150)
