"""/metrics for the operators' alert rules (ops/prometheus/alerts.yml): editions that
are sending, the broker's queues, the workers' heartbeats.

* ``nashra_edition_remaining{edition_id, kind}`` — rows of a *sending* edition not yet
  decided (queued, claimed, retry); ``nashra_edition_due{edition_id, kind}`` — those of
  them that should be moving now (queued, claimed, or a retry whose time has come);
  ``nashra_edition_last_progress_timestamp_seconds{edition_id, kind}`` — when its last
  row was decided (sent, failed, skipped…), or when it started.  Only sending editions
  have these series: a stuck one is due rows and an old timestamp.
* ``nashra_queue_messages{queue}`` — Celery messages waiting in each broker queue
  (absent when the broker cannot be asked: ``nashra_broker_up`` 0).
* ``nashra_worker_heartbeat_timestamp_seconds{queue, worker}`` — each worker's last beat
  per queue it consumes (service/jobs/heartbeat.py; Redis only).
* ``nashra_confirmations_held`` — signups whose confirmation waits for the signup budget
  (CONFIRM_BUDGET_*: a flood, or a budget too small for a promotion);
  ``nashra_confirmations_held_overdue`` — those of them due more than ten minutes ago
  (beat's trickle is not running).

Read at scrape time, like the ledger's numbers (service/web/metrics.py).
"""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from service.config import get_settings
from service.db import session_scope
from service.jobs import heartbeat, names
from service.jobs.dispatch import queue_depth
from service.logs import get_logger
from service.models import Delivery, DeliveryStatus, Edition, EditionStatus, utcnow
from service.subscribers import confirm_budget

log = get_logger(__name__)

_OPEN = (DeliveryStatus.queued, DeliveryStatus.claimed, DeliveryStatus.retry)
_MOVING = (DeliveryStatus.queued, DeliveryStatus.claimed)


def _unix(moment) -> float:
    return moment.timestamp()  # aware datetimes (UTCDateTime): seconds since the epoch


class EditionCollector:
    def collect(self):
        try:
            now = utcnow()
            with session_scope() as s:
                rows = s.execute(
                    select(
                        Edition.id, Edition.kind, Edition.started_at, Edition.created_at,
                        func.count(Delivery.id).filter(Delivery.status.in_(_OPEN)),
                        func.count(Delivery.id).filter(
                            Delivery.status.in_(_MOVING)
                            | ((Delivery.status == DeliveryStatus.retry) & (Delivery.next_attempt_at <= now))),
                        func.max(Delivery.updated_at).filter(Delivery.status.not_in(_OPEN)),
                    )
                    .join(Delivery, Delivery.edition_id == Edition.id, isouter=True)
                    .where(Edition.status == EditionStatus.sending)
                    .group_by(Edition.id, Edition.kind, Edition.started_at, Edition.created_at)
                ).all()
        except Exception as exc:  # noqa: BLE001 — nashra_database_up already says so
            log.warning("metrics_editions_error", error=type(exc).__name__)
            return
        labels = ["edition_id", "kind"]
        remaining = GaugeMetricFamily("nashra_edition_remaining",
                                      "Rows of a sending edition not yet decided (queued, claimed, retry)", labels=labels)
        due = GaugeMetricFamily("nashra_edition_due",
                                "Rows of a sending edition that should be moving now (queued, claimed, retry due)",
                                labels=labels)
        last = GaugeMetricFamily("nashra_edition_last_progress_timestamp_seconds",
                                 "When a sending edition last decided a row (or started)", labels=labels)
        for edition_id, kind, started_at, created_at, n_open, n_due, last_at in rows:
            key = [str(edition_id), getattr(kind, "value", str(kind))]
            remaining.add_metric(key, n_open)
            due.add_metric(key, n_due)
            moments = [m for m in (last_at, started_at) if m is not None] or [created_at]
            last.add_metric(key, _unix(max(moments)))
        yield remaining
        yield due
        yield last


class BrokerCollector:
    def collect(self):
        up = GaugeMetricFamily("nashra_broker_up", "1 if the metrics could ask the broker its queues' lengths")
        depth = GaugeMetricFamily("nashra_queue_messages", "Celery messages waiting in the broker, per queue",
                                  labels=["queue"])
        ok = True
        for queue in names.QUEUES:
            n = queue_depth(queue)
            if n is None:
                ok = False
                break
            depth.add_metric([queue], n)
        up.add_metric([], 1 if ok else 0)
        yield up
        if ok:
            yield depth
        beats = GaugeMetricFamily("nashra_worker_heartbeat_timestamp_seconds",
                                  "Each worker's last heartbeat, per queue it consumes (Redis only)",
                                  labels=["queue", "worker"])
        try:
            for queue, worker, at in heartbeat.read(get_settings()):
                beats.add_metric([queue, worker], at)
        except Exception as exc:  # noqa: BLE001 — Redis away: no heartbeats is what the rule sees
            log.warning("metrics_heartbeats_unreadable", error=type(exc).__name__)
        yield beats


class HeldConfirmationsCollector:
    def collect(self):
        try:
            with session_scope() as s:
                held, overdue = confirm_budget.held_counts(s, utcnow())
        except Exception as exc:  # noqa: BLE001 — nashra_database_up already says so
            log.warning("metrics_held_confirmations_error", error=type(exc).__name__)
            return
        yield GaugeMetricFamily("nashra_confirmations_held",
                                "Signups whose confirmation waits for the signup budget (CONFIRM_BUDGET_*)", value=held)
        yield GaugeMetricFamily("nashra_confirmations_held_overdue",
                                "Held confirmations due more than ten minutes ago (the trickle is not running)",
                                value=overdue)


def register(registry) -> None:
    registry.register(EditionCollector())
    registry.register(BrokerCollector())
    registry.register(HeldConfirmationsCollector())
