"""The Celery app: broker, reliability settings, routes and the beat schedule.

Reliability comes from the database (the ledger), not the broker: Celery with Redis
is at-least-once, so every task is safe to run twice.  Messages carry ids only.
"""

from __future__ import annotations

from celery import Celery
from celery.beat import PersistentScheduler
from celery.schedules import crontab
from kombu import Queue
from kombu import pools as kombu_pools

from service.config import Settings, get_settings
from service.jobs import names

# Longer than any task may run: a task not acked by then is handed to another worker.
VISIBILITY_TIMEOUT = 3600
# Beat wakes at least this often (seconds), and touches VAR_DIR/HEARTBEAT_FILE after every
# tick: docker-compose.yml's health check calls beat wedged when the file is much older.
BEAT_MAX_LOOP_SECONDS = 30
HEARTBEAT_FILE = "beat-heartbeat"


class HeartbeatScheduler(PersistentScheduler):
    """Celery's own scheduler, plus a file touched once each tick has run (so a beat stuck
    sending a due task, on a broker that does not answer, goes stale and unhealthy)."""

    def tick(self, *args, **kwargs):
        interval = super().tick(*args, **kwargs)
        try:
            (get_settings().var_dir / HEARTBEAT_FILE).touch()
        except OSError:  # a read-only VAR_DIR: the health check says so, beat goes on
            pass
        return interval


def _redis_options(settings: Settings) -> dict:
    options: dict = {"visibility_timeout": VISIBILITY_TIMEOUT}
    if settings.redis_key_prefix:
        options["global_keyprefix"] = settings.redis_key_prefix
    return options


def celery_config(settings: Settings) -> dict:
    config = {
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
        # No "task-sent" event: it made every publish a second Redis command (a PUBLISH
        # beside the LPUSH), 0.3 ms of CPU on each signup's confirmation in the web
        # process (bench/bench_signup_load.py).  Flower still sees every task from the
        # moment a worker receives it.
        "task_send_sent_event": False,
        "task_default_queue": names.DEFAULT,
        "task_queues": [Queue(q, routing_key=q) for q in names.QUEUES],
        # Edition tasks (planning, batches) are sent with the edition's queue
        # (names.edition_queue); the rest always go to the same one.
        "task_routes": {task: {"queue": queue} for task, queue in names.FIXED_ROUTES.items()},
        "timezone": settings.timezone,
        "enable_utc": True,
        "beat_scheduler": f"{__name__}:HeartbeatScheduler",
        "beat_max_loop_interval": BEAT_MAX_LOOP_SECONDS,
        "beat_schedule": {
            "ingest-every-minute": {"task": names.POLL_FEEDS, "schedule": 60.0},
            # Every SWEEP_SECONDS (5 s): dead workers' rows back, due retries sent, lost
            # batches re-dispatched within seconds.  A sweep not started by the time the
            # next is due is dropped (a backed-up queue must not pile them up).
            "sweep": {"task": names.SWEEP, "schedule": float(settings.sweep_seconds),
                      "options": {"expires": float(settings.sweep_seconds)}},
            # Ingest triggers corrections when it sees a major update; this hourly run is
            # the safety net for a trigger lost while the broker was down.
            "corrections-hourly": {"task": names.MAKE_CORRECTIONS, "schedule": crontab(minute=17)},
            # Each reader's digest at their own local hour, and the catch-ups of held alerts:
            # every DIGEST_CHECK_SECONDS the tick makes what is due (service/editions/schedule.py).
            # A tick not started by the next is dropped: after an outage one tick catches up.
            "digests-due": {"task": names.SEND_DUE_DIGESTS, "schedule": float(settings.digest_check_seconds),
                            "options": {"expires": float(settings.digest_check_seconds)}},
            # Scheduled sends (send_at) leave within DIGEST_CHECK_SECONDS of their time.
            "scheduled-sends": {"task": names.START_SCHEDULED, "schedule": float(settings.digest_check_seconds),
                                "options": {"expires": float(settings.digest_check_seconds)}},
            # Unconfirmed signups after PENDING_DAYS, unsubscribed readers after UNSUBSCRIBED_DAYS.
            "purge-readers": {"task": names.PURGE_READERS, "schedule": crontab(minute=41)},
            # Confirmations held back by the signup budget, sent as the hour's budget allows.
            "release-held-confirmations": {"task": names.RELEASE_HELD_CONFIRMATIONS, "schedule": 60.0,
                                           "options": {"expires": 60.0}},
        },
    }
    if settings.bounce_imap_url:
        # The bounce mailbox (service/inbound/mailbox.py), every BOUNCE_IMAP_SECONDS; a run
        # not started by the next is dropped (the next reads whatever is there).
        config["beat_schedule"]["bounces-mailbox"] = {
            "task": names.FETCH_BOUNCES, "schedule": float(settings.bounce_imap_seconds),
            "options": {"expires": float(settings.bounce_imap_seconds)}}
    return config


app = Celery("nashra", include=["service.jobs.tasks"])


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


try:
    configure()
except Exception:  # noqa: BLE001 — bad settings are reported by the CLI, which configures again
    pass
