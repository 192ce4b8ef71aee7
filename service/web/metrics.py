"""/metrics: what the ledger and the subscriber table say, the reports that came back and
the suppression list, and what the senders measured.

The ledger's numbers come from the database at scrape time, not from counters in this
process, so every web replica reports the same truth and a restart loses nothing.  A
scrape that cannot reach the database still answers, with nashra_database_up 0.

The senders' numbers (latency from the editor's click to each acceptance, messages by
outcome and SMTP reply class: service/delivery/metrics.py) are counted in the worker
processes, in prometheus_client's multiprocess files under PROMETHEUS_MULTIPROC_DIR
(default VAR_DIR/metrics); this endpoint adds every process's files up.  A web app on
another host than its workers reads them from a directory they share.
"""

from __future__ import annotations

from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from sqlalchemy import func, select

from service.config import get_settings
from service.db import session_scope
from service.delivery import metrics as delivery_metrics
from service.inbound.actions import KINDS as FEEDBACK_KINDS
from service.inbound.actions import SOURCES as FEEDBACK_SOURCES
from service.logs import get_logger
from service.models import (
    Delivery,
    Edition,
    EditionKind,
    Feed,
    FeedbackEvent,
    Subscriber,
    Suppression,
)
from service.subscribers.suppression import REASONS as SUPPRESSION_REASONS
from service.usecases import clicks
from service.web import ops_metrics

log = get_logger(__name__)


def _value(enum_or_str) -> str:
    return getattr(enum_or_str, "value", str(enum_or_str))


class LedgerCollector:
    def collect(self):
        up = GaugeMetricFamily("nashra_database_up", "1 if the metrics query reached the database")
        try:
            with session_scope() as s:
                deliveries = s.execute(
                    select(Edition.kind, Delivery.status, func.count())
                    .join(Edition, Edition.id == Delivery.edition_id)
                    .group_by(Edition.kind, Delivery.status)
                ).all()
                subscribers = s.execute(select(Subscriber.status, func.count()).group_by(Subscriber.status)).all()
                editions = s.execute(
                    select(Edition.kind, Edition.status, func.count()).group_by(Edition.kind, Edition.status)
                ).all()
                feeds_total = s.scalar(select(func.count()).select_from(Feed).where(Feed.active.is_(True)))
                failing = s.execute(
                    # A paused feed is not polled: its old failures are no alert.
                    select(Feed.id, Feed.consecutive_failures).where(Feed.consecutive_failures > 0,
                                                                     Feed.active.is_(True))
                ).all()
                # Reports are received by other processes (the bounce server, the mailbox
                # fetch, the webhooks): the table is what they all wrote.  (A lift's mark
                # in it, kind `lifted`, is no report.)
                feedback = s.execute(
                    select(FeedbackEvent.source, FeedbackEvent.kind, func.count())
                    .where(FeedbackEvent.kind.in_(FEEDBACK_KINDS))
                    .group_by(FeedbackEvent.source, FeedbackEvent.kind)
                ).all()
                suppressed = s.execute(select(Suppression.reason, func.count()).group_by(Suppression.reason)).all()
        except Exception as exc:  # noqa: BLE001 — report it as a metric, not a 500
            log.warning("metrics_database_error", error=type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        g = GaugeMetricFamily("nashra_deliveries", "Ledger rows by edition kind and status", labels=["kind", "status"])
        for kind, status, n in deliveries:
            g.add_metric([_value(kind), _value(status)], n)
        yield g
        g = GaugeMetricFamily("nashra_subscribers", "Subscribers by status", labels=["status"])
        for status, n in subscribers:
            g.add_metric([_value(status)], n)
        yield g
        g = GaugeMetricFamily("nashra_editions", "Editions by kind and status", labels=["kind", "status"])
        for kind, status, n in editions:
            g.add_metric([_value(kind), _value(status)], n)
        yield g
        g = GaugeMetricFamily("nashra_feeds_active", "Active feeds")
        g.add_metric([], feeds_total or 0)
        yield g
        g = GaugeMetricFamily("nashra_feeds_failing", "Active feeds whose last poll failed")
        g.add_metric([], len(failing))
        yield g
        g = GaugeMetricFamily(
            "nashra_feed_consecutive_failures", "Consecutive failed polls, per failing feed", labels=["feed_id"]
        )
        for feed_id, n in failing:
            g.add_metric([str(feed_id)], n)
        yield g
        # Every known pair, 0 included, so that a rule sees a series before its first report.
        counts = dict.fromkeys(((src, kind) for src in FEEDBACK_SOURCES for kind in FEEDBACK_KINDS), 0)
        counts.update({(src, kind): n for src, kind, n in feedback})
        g = GaugeMetricFamily(
            "nashra_feedback_events",
            "Bounce, complaint and delivery reports on record, by source and kind (a gauge: a forgotten "
            "reader's go with them)", labels=["source", "kind"],
        )
        for (src, kind), n in sorted(counts.items()):
            g.add_metric([src, kind], n)
        yield g
        counts = dict.fromkeys(SUPPRESSION_REASONS, 0)
        counts.update(dict(suppressed))
        g = GaugeMetricFamily("nashra_suppressions", "Addresses on the suppression list, by reason", labels=["reason"])
        for reason, n in sorted(counts.items()):
            g.add_metric([reason], n)
        yield g


class DeliveryCollector:
    """The senders' metrics, from every worker process's files."""

    def collect(self):
        try:
            yield from delivery_metrics.collect_all(get_settings())
        except Exception as exc:  # noqa: BLE001 — a bad file must not take /metrics down
            log.warning("metrics_delivery_files_unreadable", error=type(exc).__name__)


class ClicksCollector:
    """Clicks on mails' links by edition kind, from the database (every replica says the
    same): `nashra_clicks_total` counts readers' clicks, `nashra_clicks_ignored_total`
    the scanners' and prefetches' (service/clicks/scanners.py).  Both drop when the hourly
    purge forgets counts older than CLICK_DAYS, which Prometheus reads as a reset."""

    def collect(self):
        try:
            totals = clicks.totals_by_kind()
        except Exception as exc:  # noqa: BLE001 — reported by nashra_database_up, not a 500
            log.warning("metrics_clicks_unreadable", error=type(exc).__name__)
            return
        counted = CounterMetricFamily("nashra_clicks", "Readers' clicks on links in mail, by edition kind",
                                      labels=["kind"])
        ignored = CounterMetricFamily("nashra_clicks_ignored",
                                      "Link scanners' and prefetches' requests, not counted as clicks, by edition kind",
                                      labels=["kind"])
        for kind in EditionKind:
            n, i = totals.get(kind.value, (0, 0))
            counted.add_metric([kind.value], n)
            ignored.add_metric([kind.value], i)
        yield counted
        yield ignored


def make_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(LedgerCollector())
    registry.register(DeliveryCollector())
    registry.register(ClicksCollector())
    ops_metrics.register(registry)  # sending editions, queues, workers' heartbeats: what the alert rules read
    return registry


def install(app) -> None:
    registry = make_registry()

    @app.get("/metrics", include_in_schema=False)
    def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
