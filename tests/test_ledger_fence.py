"""The group's ownership check and the fence, against real PostgreSQL.

A batch sends a group only when every row of it is still claimed by this worker with at
least half a lease left on the database's clock (`recipient_states(held=…)`, a read);
anything short of that and it runs the fence proper (`ledger.fence`), which renews the
lease of the rows it still holds and names them.  These are the answers a frozen or
starved worker meets on waking: a row given away is never counted as ours.
"""

from __future__ import annotations

import sqlalchemy as sa

from service.delivery import ledger
from service.models import Delivery, EditionStatus
from tests.support.delivery import planned_edition

LEASE = 20


def _claimed(eid: int, worker: str = "w1") -> list[ledger.Claimed]:
    with ledger_conn() as c:
        ids = c.execute(sa.select(sa.func.min(Delivery.id), sa.func.max(Delivery.id))
                        .where(Delivery.edition_id == eid)).one()
        rows = ledger.claim(c, eid, ids[0], ids[1], worker, LEASE)
        c.commit()
    return rows


def ledger_conn():
    from service.db import get_engine
    return get_engine().connect()


def _held(eid: int, rows: list[ledger.Claimed], worker: str = "w1") -> int | None:
    with ledger_conn() as c:
        status, states, not_held = ledger.recipient_states(
            c, eid, [r.subscriber_id for r in rows], held=(worker, [r.id for r in rows], LEASE))
    assert status == EditionStatus.planned and len(states) == len(rows)
    return not_held


def _set(ids: list[int], **values) -> None:
    with ledger_conn() as c:
        c.execute(sa.update(Delivery.__table__).where(Delivery.id.in_(ids)).values(**values))
        c.commit()


def test_a_group_freshly_claimed_is_held_and_the_check_writes_nothing(pg_env):
    eid = planned_edition(10)
    rows = _claimed(eid)
    with ledger_conn() as c:
        before = c.execute(sa.select(Delivery.id, Delivery.lease_until).order_by(Delivery.id)).all()
    assert _held(eid, rows) == 0
    with ledger_conn() as c:
        assert c.execute(sa.select(Delivery.id, Delivery.lease_until).order_by(Delivery.id)).all() == before


def test_rows_short_of_half_a_lease_given_away_or_answered_are_not_held(pg_env):
    eid = planned_edition(10)
    rows = _claimed(eid)
    ids = [r.id for r in rows]
    # One row with a few seconds left (the heartbeat starved), one swept and taken by
    # another worker, one already answered: three the batch must not send unchecked.
    _set(ids[:1], lease_until=sa.func.now() + sa.text("interval '3 seconds'"))
    _set(ids[1:2], claimed_by="w2")
    _set(ids[2:3], status="sent", claimed_by=None, lease_until=None)
    assert _held(eid, rows) == 3
    assert _held(eid, rows, worker="w2") == 9  # the other worker holds only its one row


def test_the_fence_renews_the_rows_still_ours_and_names_only_them(pg_env):
    eid = planned_edition(10)
    rows = _claimed(eid)
    ids = [r.id for r in rows]
    _set(ids[:5], lease_until=sa.func.now() - sa.text("interval '1 second'"))  # ran out, not swept yet
    _set(ids[5:6], claimed_by="w2", status="claimed")  # swept and given away
    with ledger_conn() as c:
        owned = ledger.fence(c, "w1", ids, LEASE)
        c.commit()
    assert owned == set(ids) - {ids[5]}
    # Renewed on the database's clock: the check now holds all but the given-away row.
    assert _held(eid, rows) == 1
