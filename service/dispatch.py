"""The port through which domain code asks for work to happen later, in a worker.

Domain code (delivery, subscribers, editions) never imports Celery: it says *what*
must happen next — plan this edition, send these id ranges, send this reader a
confirmation — to a `Dispatcher`, and the jobs layer (`service.jobs.dispatch`) turns
that into Celery messages on the right queue.  Each call that names a `session` takes
effect only once that session's transaction commits (a worker must never look for rows
it cannot see yet) and is forgotten if it rolls back.

The edge (CLI, web app, worker, tests) installs the Celery dispatcher once with
`install()`; a domain function that takes an optional `dispatcher` uses it when none is
passed.  `Recorder` keeps what was asked, for code that must run without a broker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import event
from sqlalchemy.orm import Session


class Dispatcher(Protocol):
    def plan_edition(self, edition_id: int, kind: str, *, session: Session | None = None) -> None:
        """Freeze the edition's audience and send its batches (the planner task)."""

    def send_batches(self, edition_id: int, kind: str, ranges: list[tuple[int, int]], *,
                     session: Session | None = None) -> None:
        """One batch task per (first_id, last_id) range of ledger rows."""

    def send_transactional(self, kind: str, subscriber_id: int, *, session: Session | None = None) -> None:
        """A one-off mail (confirm, welcome) to one reader."""

    def make_corrections(self) -> bool:
        """Look for major updates readers must hear about; False if it could not be asked."""

    def waiting(self, kind: str) -> int | None:
        """Batch messages waiting for the edition kind's workers (None: the broker cannot say)."""


def after_commit(session: Session | None, action: Callable[[], None]) -> None:
    """Run `action` once `session` commits (at once without a session); never after a rollback."""
    if session is None:
        action()
        return

    def _run(_session):
        if event.contains(session, "after_rollback", _forget):
            event.remove(session, "after_rollback", _forget)
        action()

    def _forget(_session):
        # Rolled back: the rows the work would name do not exist; never ask for it.
        if event.contains(session, "after_commit", _run):
            event.remove(session, "after_commit", _run)

    event.listen(session, "after_commit", _run, once=True)
    event.listen(session, "after_rollback", _forget, once=True)


@dataclass
class Recorder:
    """A dispatcher that only remembers: the CLI's dry runs and tests without a broker."""

    calls: list[tuple] = field(default_factory=list)

    def plan_edition(self, edition_id, kind, *, session=None):
        after_commit(session, lambda: self.calls.append(("plan_edition", edition_id, kind)))

    def send_batches(self, edition_id, kind, ranges, *, session=None):
        after_commit(session, lambda: self.calls.append(("send_batches", edition_id, kind, list(ranges))))

    def send_transactional(self, kind, subscriber_id, *, session=None):
        after_commit(session, lambda: self.calls.append(("send_transactional", kind, subscriber_id)))

    def make_corrections(self):
        self.calls.append(("make_corrections",))
        return True

    def waiting(self, kind):
        return 0


_installed: Dispatcher | None = None


def install(dispatcher: Dispatcher) -> None:
    global _installed
    _installed = dispatcher


def current() -> Dispatcher:
    if _installed is None:
        raise RuntimeError("no dispatcher installed: the edge (CLI, web, worker) calls "
                           "service.jobs.install_dispatcher() at start")
    return _installed
