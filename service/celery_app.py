"""The Celery app: queues, routes, reliability settings and the beat schedule.

Reliability comes from the database (the ledger), not the broker: Celery with Redis
is at-least-once, so every task here is safe to run twice.  Messages carry ids only.
"""

from __future__ import annotations

from celery import Celery, signals
from celery.schedules import crontab
from kombu import Queue
from kombu import pools as kombu_pools

from service.config import Settings, get_settings

QUEUES = ("alerts", "digests", "ingest", "default")

# Longer than any task may run: a task not acked by then is handed to another worker.
VISIBILITY_TIMEOUT = 3600


def _redis_options(settings: Settings) -> dict:
    options: dict = {"visibility_timeout": VISIBILITY_TIMEOUT}
    if settings.redis_key_prefix:
        options["global_keyprefix"] = settings.redis_key_prefix
    return options


def celery_config(settings: Settings) -> dict:
    hour, minute = (int(x) for x in settings.digest_daily_at.split(":"))
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        # Redis only: kombu's SQLAlchemy transport hands these to create_engine().
        "broker_transport_options": _redis_options(settings) if settings.redis_url else {},
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": True,  # for Flower
        "task_send_sent_event": True,
        "task_default_queue": "default",
        "task_queues": [Queue(q, routing_key=q) for q in QUEUES],
        "task_routes": {
            "nashra.ingest.*": {"queue": "ingest"},
            "nashra.digest.*": {"queue": "digests"},
            "nashra.alert.*": {"queue": "alerts"},
        },
        "timezone": settings.timezone,
        "enable_utc": True,
        "beat_schedule": {
            "ingest-every-minute": {"task": "nashra.ingest.poll_due", "schedule": 60.0},
            "sweep-leases": {"task": "nashra.delivery.sweep", "schedule": 60.0},
            # Ingest triggers corrections when it sees a major update; this hourly run is
            # the safety net for a trigger lost while the broker was down.
            "corrections-hourly": {"task": "nashra.digest.corrections", "schedule": crontab(minute=17)},
            "daily-digest": {
                "task": "nashra.digest.send_scheduled",
                "schedule": crontab(hour=hour, minute=minute),
                "args": ["daily"],
            },
            "weekly-digest": {
                "task": "nashra.digest.send_scheduled",
                # celery counts Sunday as 0; settings count Monday as 0
                "schedule": crontab(hour=hour, minute=minute, day_of_week=(settings.digest_weekly_day + 1) % 7),
                "args": ["weekly"],
            },
        },
    }


app = Celery("nashra", include=["service.tasks", "service.delivery.tasks"])


def configure(settings: Settings | None = None) -> Celery:
    """(Re)apply settings to the app; drops cached broker connections."""
    settings = settings or get_settings()
    app.conf.update(celery_config(settings))
    if app._pool is not None:  # noqa: SLF001 — a broker change must not reuse old connections
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None  # noqa: SLF001
    # kombu keeps connection and producer pools in process-wide registries; a worker
    # that shut down closes them, so start from fresh ones.
    kombu_pools.reset()
    return app


def make_celery() -> Celery:
    return configure()


configure_on_import = True
try:
    configure()
except Exception:  # noqa: BLE001 — bad settings are reported by the CLI, not at import
    configure_on_import = False


@signals.task_prerun.connect
def _bind_task_context(task_id=None, task=None, **_):
    import structlog

    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id, task=task.name if task else None)


@signals.setup_logging.connect
def _setup_logging(**_):
    from service.logging import setup_logging

    setup_logging()


def send_after_commit(session, signature) -> None:
    """Enqueue a task only once the caller's transaction has committed.

    Otherwise a fast worker can pick the message up before the rows it names are
    visible, or act on rows that a rollback then removes.
    """
    from sqlalchemy import event

    def _send(_session):
        if event.contains(session, "after_rollback", _forget):
            event.remove(session, "after_rollback", _forget)
        signature.apply_async()

    def _forget(_session):
        # Rolled back: the rows the task would name do not exist; never send it.
        if event.contains(session, "after_commit", _send):
            event.remove(session, "after_commit", _send)

    event.listen(session, "after_commit", _send, once=True)
    event.listen(session, "after_rollback", _forget, once=True)


@signals.worker_ready.connect
def _log_broker(sender=None, **_):
    from service.logging import get_logger

    settings = get_settings()
    get_logger("nashra.worker").info(
        "worker.ready", broker=settings.broker_name, queues=sorted(q.name for q in sender.app.amqp.queues.consume_from.values()) if sender else None
    )
