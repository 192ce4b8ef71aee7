"""Two bounces for one address at the same moment: one suppression, no error."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from service.db import session_scope
from service.models import AuditLog, Suppression
from service.subscribers.suppression import suppress


def test_concurrent_suppressions_of_one_address_make_one_row(pg_env):
    barrier = threading.Barrier(2)
    results, errors = [], []

    def worker(reason):
        try:
            with session_scope() as s:
                barrier.wait(timeout=10)
                results.append(suppress(s, "Same@Example.com", reason))
        except Exception as exc:  # noqa: BLE001 — the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(r,)) for r in ("hard_bounce", "complaint")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(results) == [False, True]
    with session_scope() as s:
        rows = s.scalars(select(Suppression)).all()
        assert [r.email for r in rows] == ["same@example.com"]
        assert s.scalar(select(func.count()).select_from(AuditLog).where(AuditLog.action == "suppress")) == 1
