"""Workers' heartbeats, for the operator's alert "no worker consumes queue Q".

Every worker's main process writes, every BEAT_SECONDS, the time into one Redis hash
(`nashra:workers`, under REDIS_KEY_PREFIX): a field per queue it consumes and worker
(`alerts|celery@host`).  The web app's /metrics reads it back as
``nashra_worker_heartbeat_timestamp_seconds{queue, worker}`` (service/web/ops_metrics.py),
so one rule — the newest heartbeat of a queue older than two minutes — says that nobody
takes that queue's work, whichever host the workers were on.  Redis, not the metric
files: workers on other hosts than the web app are seen too.  Without REDIS_URL (the
embedded demo) there are no heartbeats.  Redis may forget them (a restart): every live
worker writes its own again within BEAT_SECONDS.  A field older than FORGET_AFTER (a
worker gone for good, a renamed host) is dropped when read.
"""

from __future__ import annotations

import threading
import time

import redis

from service.config import Settings
from service.logs import get_logger

log = get_logger(__name__)

BEAT_SECONDS = 15.0
FORGET_AFTER = 86_400.0  # a day without a beat: that worker is gone, not late


def key(settings: Settings) -> str:
    return f"{settings.redis_key_prefix}nashra:workers"


def _client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)


def beat(settings: Settings, worker: str, queues: list[str], now: float | None = None,
         client: redis.Redis | None = None) -> None:
    """This worker is alive and takes `queues` (one field per queue)."""
    if not settings.redis_url or not queues:
        return
    now = time.time() if now is None else now
    client = client or _client(settings)
    client.hset(key(settings), mapping={f"{q}|{worker}": f"{now:.3f}" for q in queues})


def read(settings: Settings, now: float | None = None) -> list[tuple[str, str, float]]:
    """(queue, worker, unix time of its last beat) for every worker seen in FORGET_AFTER."""
    if not settings.redis_url:
        return []
    now = time.time() if now is None else now
    client = _client(settings)
    try:
        fields = client.hgetall(key(settings))
        beats, gone = [], []
        for field, value in fields.items():
            name = field.decode()
            queue, _, worker = name.partition("|")
            at = float(value)
            if now - at > FORGET_AFTER:
                gone.append(name)
            else:
                beats.append((queue, worker, at))
        if gone:
            client.hdel(key(settings), *gone)
        return sorted(beats)
    finally:
        client.close()


def start(settings: Settings, worker: str, queues: list[str]) -> threading.Thread | None:
    """Beat from a daemon thread for as long as the process lives (the worker's main process)."""
    if not settings.redis_url or not queues:
        return None

    def run() -> None:
        client = _client(settings)
        failing = False
        while True:
            try:
                beat(settings, worker, queues, client=client)
                if failing:
                    log.info("worker.heartbeat_back")
                failing = False
            except Exception as exc:  # noqa: BLE001 — Redis away: try again at the next beat
                if not failing:
                    log.warning("worker.heartbeat_failed", error=type(exc).__name__)
                failing = True
            time.sleep(BEAT_SECONDS)

    thread = threading.Thread(target=run, name="nashra-heartbeat", daemon=True)
    thread.start()
    return thread
