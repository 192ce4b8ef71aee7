"""The senders' metrics, from every worker process, on the web app's /metrics.

A real Celery worker (a subprocess, prefork: two processes that send) writes its
delivery metrics in prometheus_client's multiprocess files; the web app in this process
reads them through /metrics.  Counts only (no speed is asserted).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.config import get_settings, reset_settings
from service.delivery import metrics
from service.delivery.metrics import reply_class
from service.jobs.app import configure
from service.web.app import create_app
from tests.support.delivery import planned_edition
from tests.support.workers import dispatch, report, start_worker, stop, wait_done, worker_env


def scrape() -> dict[tuple[str, tuple], float]:
    with TestClient(create_app()) as client:
        resp = client.get("/metrics")
    assert resp.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_worker_processes_count_latency_and_outcomes_and_metrics_adds_them_up(pg_env, redis_url, smtp_sink,
                                                                              tmp_path, monkeypatch, capsys):
    files = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(files))  # the web app's, and the worker's below
    n = 300
    smtp_sink.rcpt_replies["reader7@example.com"] = "550 5.1.1 no such user"
    eid = planned_edition(n)
    before = scrape()  # whatever this test process counted itself before
    configure()  # this process enqueues onto the test Redis
    worker = start_worker("metrics", worker_env(smtp_sink.port, PROMETHEUS_MULTIPROC_DIR=str(files)),
                          queues="digests")
    try:
        dispatch(eid)
        wait_done(eid, timeout=60)
        time.sleep(0.2)
    finally:
        stop(worker)
        monkeypatch.delenv("REDIS_URL")
        reset_settings()
        configure()  # the Celery app back to no test broker of ours
    after = scrape()

    def grew(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    sent = len(smtp_sink.messages)
    assert sent == n - 1
    assert grew("nashra_delivery_latency_seconds_count", kind="digest") == sent  # one per accepted message
    assert grew("nashra_delivery_latency_seconds_sum", kind="digest") > 0
    assert grew("nashra_delivery_messages_total", kind="digest", outcome="sent", reply_class="2xx") == sent
    assert grew("nashra_delivery_messages_total", kind="digest", outcome="bounced", reply_class="5xx") == 1
    assert value(after, "nashra_deliveries", kind="digest", status="sent") == sent  # the ledger's own, still there
    processes = {f.stem.rsplit("_", 1)[1] for f in files.glob("histogram_*.db")}
    report(capsys, f"/metrics added up the delivery metrics of {len(processes)} worker process(es): "
                   f"{sent} acceptances in the latency histogram, mean "
                   f"{grew('nashra_delivery_latency_seconds_sum', kind='digest') / sent:.2f} s from the click")
    assert processes


def test_reply_classes():
    assert [reply_class(c) for c in (250, 251, 421, 451, 550, 554, None, -1)] == [
        "2xx", "2xx", "4xx", "4xx", "5xx", "5xx", "none", "none"]


def test_a_process_that_counts_in_memory_is_added_to_the_files(tmp_path, monkeypatch):
    (tmp_path / "none-yet").mkdir()  # no files yet (a process already in file mode writes here)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "none-yet"))
    before = {s.name: s.value for f in metrics.collect_all(get_settings()) for s in f.samples
              if s.labels.get("kind") == "correction" and "count" in s.name}
    metrics.message("correction", "sent", 250, latency=1.5)
    after = {s.name: s.value for f in metrics.collect_all(get_settings()) for s in f.samples
             if s.labels.get("kind") == "correction" and "count" in s.name}
    if not metrics.multiprocess():  # this test process counts in memory unless a worker here enabled files
        assert after["nashra_delivery_latency_seconds_count"] - before.get("nashra_delivery_latency_seconds_count",
                                                                           0) == 1


def test_metrics_adds_up_the_files_of_every_container(tmp_path, monkeypatch):
    """docker compose gives each worker container its own subdirectory (their process ids
    overlap); /metrics adds every subdirectory's files to its own."""
    files = tmp_path / "metrics"
    files.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(files))
    reset_settings()
    before = scrape()  # what this process may have counted in memory already
    for container in ("worker-alerts", "worker-digests"):
        folder = files / container
        folder.mkdir(parents=True)
        subprocess.run([sys.executable, "-c",
                        "from service.delivery import metrics; from service.config import get_settings;"
                        "metrics.enable_multiprocess(get_settings());"
                        "metrics.message('alert', 'sent', 250, 0.2)"],
                       env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}, check=True)
    after = scrape()
    sent = {"kind": "alert", "outcome": "sent", "reply_class": "2xx"}
    assert value(after, "nashra_delivery_messages_total", **sent) - value(before, "nashra_delivery_messages_total",
                                                                          **sent) == 2
    assert (value(after, "nashra_delivery_latency_seconds_count", kind="alert")
            - value(before, "nashra_delivery_latency_seconds_count", kind="alert")) == 2
