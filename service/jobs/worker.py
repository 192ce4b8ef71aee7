"""What a worker process does around its tasks: logging, metrics, per-task context, warm-up, close.

Connected to Celery's signals when the worker imports the tasks (service.jobs.tasks
imports this module), so web and CLI processes never pay for it.
"""

from __future__ import annotations

import datetime as dt
import threading

import structlog
from celery import signals

from service.config import get_settings
from service.db import get_engine, session_factory
from service.delivery import fanout, ledger, metrics, planner, smtp_pool
from service.jobs import heartbeat, names
from service.jobs.app import app
from service.logs import get_logger, setup_logging
from service.rendering import contexts
from service.rendering.render import render_variant

log = get_logger(__name__)


@signals.setup_logging.connect
def _setup_logging(**_):
    setup_logging()


@signals.task_prerun.connect
def _bind_task_context(task_id=None, task=None, **_):
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id, task=task.name if task else None)


@signals.worker_init.connect
def _count_into_files(**_):
    """Before any task (and before prefork's children are forked): this worker's delivery
    metrics go to the multiprocess directory that the web app's /metrics adds up."""
    metrics.enable_multiprocess(get_settings())


@signals.worker_ready.connect
def _log_broker(sender=None, **_):
    queues = sorted(q.name for q in sender.app.amqp.queues.consume_from.values()) if sender else None
    log.info("worker.ready", broker=get_settings().broker_name, queues=queues)
    if sender is not None and queues:  # the operators' "no worker takes queue Q" alert reads these
        heartbeat.start(get_settings(), sender.hostname, queues)


@signals.worker_process_init.connect
def _warm_up(**_):
    """Make a fresh worker process ready before its first alert, not during it.

    A new prefork child would otherwise spend its first alert compiling the alert
    templates and connecting to PostgreSQL, to the broker (to queue the batches) and
    to the SMTP server.  This runs in a thread so that a slow database or SMTP server
    cannot hold up the worker's start (Celery gives a child a few seconds to report
    ready); a task that arrives meanwhile simply waits on the same connections.
    """
    metrics.enable_multiprocess(get_settings())  # inherited from worker_init; made sure of
    queues = {q.name for q in app.amqp.queues.consume_from.values()} if app.amqp.queues else set()
    if queues and names.ALERTS not in queues:
        return
    get_engine()  # created here, once, so the thread below cannot race a task to it
    threading.Thread(target=_prepare_process, name="nashra-warm-up", daemon=True).start()


def _prepare_process() -> None:
    try:
        settings = get_settings()
        ctx = contexts.alert_context(contexts.site_view(settings), headline="تجربة", url="https://example.com/",
                                     summary="", sent_at=dt.datetime.now(dt.UTC))
        render_variant("alert", ctx)  # compiles and caches the templates; premailer's first run
        with session_factory()() as session:  # one pooled connection, the planner's
            planner.warm_up(session)  # statements compiled; nothing is written
            fanout.batch_ranges(session, -1, fanout.ALERT_BATCH_MIN, subscribers=(0, 0))
            ledger.start_sending(session, -1)  # and a batch's: all on an edition that does not exist
            ledger.claim(session, -1, 0, 0, "warm-up", 1)
            ledger.recipient_states(session, -1, [-1])
            if session.get_bind().dialect.name == "postgresql":  # with the group's ownership check
                ledger.recipient_states(session, -1, [-1], held=("warm-up", [-1], 1))
            ledger.finish_if_complete(session, -1)
            session.rollback()
        with app.producer_or_acquire() as producer:  # the planner's batch messages: a pooled
            producer.connection.ensure_connection(max_retries=1)  # broker connection, open
        smtp_pool.prewarm(settings, smtp_pool.ALERT)  # one alert session open (and its cap slot)
        log.info("worker.warmed_up")
    except Exception as exc:  # noqa: BLE001 — warming up is an optimisation, never a failure
        log.warning("worker.warm_up_failed", error=type(exc).__name__)


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _close_smtp(**_):
    """QUIT every pooled session and give its slot of the connection cap back (prefork
    children at their exit; the main process of a threads or solo pool at shutdown)."""
    smtp_pool.close_all()
