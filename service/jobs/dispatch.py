"""The Celery side of `service.dispatch.Dispatcher`: what domain code asks for becomes a
message, on the queue `names` picks, sent once the caller's transaction commits."""

from __future__ import annotations

from kombu.exceptions import ChannelError
from sqlalchemy.orm import Session

from service import dispatch
from service.jobs import names
from service.jobs.app import app
from service.logs import get_logger

log = get_logger(__name__)


def _send(task: str, args: tuple, queue: str | None = None):
    return app.send_task(task, args=args, queue=queue or names.FIXED_ROUTES.get(task))


class CeleryDispatcher:
    def plan_edition(self, edition_id: int, kind: str, *, session: Session | None = None) -> None:
        dispatch.after_commit(session, lambda: _send(names.PLAN_EDITION, (edition_id,), names.edition_queue(kind)))

    def send_batches(self, edition_id: int, kind: str, ranges: list[tuple[int, int]], *,
                     session: Session | None = None) -> None:
        ranges = list(ranges)
        if ranges:
            dispatch.after_commit(session, lambda: self._send_batches(edition_id, kind, ranges))

    @staticmethod
    def _send_batches(edition_id: int, kind: str, ranges: list[tuple[int, int]]) -> None:
        # The rows are committed; a broker that is down now must not turn that commit into
        # an error.  Nothing is lost: the sweeper re-dispatches an edition whose queue is
        # empty while claimable rows wait.
        queue = names.edition_queue(kind)
        for i, (first, last) in enumerate(ranges):
            try:
                _send(names.SEND_BATCH, (edition_id, first, last), queue)
            except Exception as exc:  # noqa: BLE001
                log.warning("delivery.dispatch_failed", edition_id=edition_id, batches_left=len(ranges) - i,
                            error=type(exc).__name__, recovery="the sweeper re-dispatches")
                return

    def send_transactional(self, kind: str, subscriber_id: int, *, session: Session | None = None) -> None:
        def send() -> None:
            # Sent after the commit: the reader's row is already saved, so raising would
            # only turn their page into a 500 for a change that happened.  The log line
            # (with the subscriber id) is what an operator needs to resend.
            try:
                _send(names.SEND_TRANSACTIONAL, (kind, subscriber_id))
            except Exception as exc:  # noqa: BLE001 — any broker failure, see above
                log.error("transactional_enqueue_failed", kind=kind, subscriber_id=subscriber_id,
                          error=type(exc).__name__)

        dispatch.after_commit(session, send)

    def make_corrections(self) -> bool:
        try:
            _send(names.MAKE_CORRECTIONS, ())
        except Exception:  # noqa: BLE001 — the articles are committed; the hourly run looks back 48 h
            log.exception("corrections.enqueue_failed")
            return False
        return True

    def waiting(self, kind: str) -> int | None:
        return queue_depth(names.edition_queue(kind))


def queue_depth(queue: str) -> int | None:
    """Messages waiting in a broker queue, or None if the broker cannot be asked."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            channel = conn.default_channel
            size = getattr(channel, "_size", None)
            if size is not None:
                # kombu's virtual transports (Redis, SQLAlchemy) count a queue's messages
                # directly, whether or not its binding was declared (a fresh Redis has none).
                return int(size(queue))
            try:
                return channel.queue_declare(queue=queue, passive=True).message_count
            except ChannelError:
                return 0  # no such queue: nothing waits in it
    except Exception as exc:  # noqa: BLE001 — a broker outage must not stop the sweep
        log.warning("sweep.broker_unavailable", queue=queue, error=type(exc).__name__)
        return None


def install_dispatcher() -> CeleryDispatcher:
    dispatcher = CeleryDispatcher()
    dispatch.install(dispatcher)
    return dispatcher
