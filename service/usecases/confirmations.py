"""Beat's trickle of confirmations held back by the signup budget
(service/subscribers/confirm_budget.py): one transaction per batch, so no lock is held
for long and two trickles at once share the rows."""

from __future__ import annotations

import datetime as dt

from service.db import session_scope
from service.models import utcnow
from service.subscribers import confirm_budget


def release_held(now: dt.datetime | None = None) -> dict:
    """Send the held confirmations that are due while the hour's budgets have room."""
    now = now or utcnow()
    total = confirm_budget.Release()
    while True:
        with session_scope() as session:
            report = confirm_budget.release_due(session, now)
        total.sent += report.sent
        total.deferred += report.deferred
        total.domains |= report.domains
        # Every row a batch took left the due set (sent, or moved to the next hour): a
        # full batch means there may be more, a short one that there are none.
        if report.sent + report.deferred < confirm_budget.RELEASE_BATCH:
            return total.as_dict()
