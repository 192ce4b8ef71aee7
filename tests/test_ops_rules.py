"""The operators' alert rules and dashboard (ops/): promtool checks the rules and runs their
unit tests (ops/prometheus/alerts_test.yml and alerts_daily_test.yml: each alert fires on
one input, stays quiet on another); every metric the rules and the dashboard read is one that GET /metrics of the
real app exports; every runbook link lands on a section of docs/operations.md; and a
real worker's heartbeat reaches /metrics.

promtool comes from Debian's `prometheus` package (scripts/install-system-deps.sh): without
it these tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.config import get_settings
from service.db import session_scope
from service.delivery import metrics as delivery_metrics
from service.jobs import heartbeat
from service.models import Edition, EditionStatus, Feed

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "ops" / "prometheus" / "alerts.yml"
# promtool has one evaluation interval per file: minutes, and hours for the day-long rates.
RULE_TESTS = [ROOT / "ops" / "prometheus" / "alerts_test.yml", ROOT / "ops" / "prometheus" / "alerts_daily_test.yml"]
DASHBOARD = ROOT / "ops" / "grafana" / "nashra.json"
RUNBOOK = ROOT / "docs" / "operations.md"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NAME = re.compile(r"(?<![-\w])nashra_[a-z0-9_]+\b")  # not a header's tail (X-PM-Metadata-nashra_…)


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        why = "promtool not on PATH (Debian's prometheus package: scripts/install-system-deps.sh)"
        if IN_CI:
            pytest.fail(f"{why}; required under CI=true")
        pytest.skip(why)
    return path


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def used_metric_names() -> set[str]:
    exprs = [rule["expr"] for rule in rules()] + dashboard_exprs()
    return {name for expr in exprs for name in NAME.findall(expr)}


def test_promtool_checks_the_rules():
    run = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(rules())} rules found" in run.stdout


def test_every_alert_fires_on_its_case_and_not_on_its_look_alike():
    run = subprocess.run([promtool(), "test", "rules", *(p.name for p in RULE_TESTS)], cwd=RULES.parent,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    tests = [case for p in RULE_TESTS for case in yaml.safe_load(p.read_text())["tests"]]
    fired, quiet = set(), set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in rules()}
    assert names - fired == set(), "alerts no test sees fire"
    assert names - quiet == set(), "alerts no test sees stay quiet"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            out.add(text.replace(" ", "-"))
    return out


def test_every_rule_points_at_a_section_of_the_runbook():
    anchors = _anchors(RUNBOOK.read_text())
    for rule in rules():
        notes = rule["annotations"]
        assert notes.get("summary") and notes.get("description"), rule["alert"]
        link = notes["runbook"]
        assert link in notes["description"], rule["alert"]
        path, _, anchor = link.partition("#")
        assert path == "docs/operations.md" and anchor in anchors, (rule["alert"], link)


def test_every_command_the_runbook_names_exists():
    """Each `nashra …` in docs/operations.md: its subcommands, its options, its choices."""
    from service.cli.main import build_parser

    commands = re.findall(r"`(nashra [^`]+)`", RUNBOOK.read_text())
    assert len(commands) > 20
    for command in commands:
        parser, words = build_parser(), command.split()[1:]
        choices_left = None
        for word in words:
            subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            if subs and not word.startswith("-"):
                assert word in subs[0].choices, (command, word)
                parser = subs[0].choices[word]
                continue
            if word.startswith("-"):
                assert word.split("=")[0] in parser._option_string_actions, (command, word)
                continue
            if choices_left is None:  # the leaf's first positional with choices (nashra edition ACTION)
                choices_left = [a.choices for a in parser._actions if not a.option_strings and a.choices]
                if choices_left:
                    assert word in choices_left[0], (command, word)


def test_the_dashboard_is_grafana_json_with_the_panels_operators_look_at():
    board = json.loads(DASHBOARD.read_text())
    titles = " | ".join(p["title"] for p in board["panels"]).lower()
    for what in ("send rate", "edition", "failures by class", "queue depth", "complaint", "bounce", "feed",
                 "heartbeat"):
        assert what in titles, what
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for p in board["panels"]:
        if p["type"] != "row":
            assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"]), p["title"]


def test_the_dashboard_queries_are_promql(tmp_path):
    """promtool parses each panel's query (as a recording rule: it has no other parser)."""
    rules_file = tmp_path / "dashboard.yml"
    recorded = [{"record": f"nashra:dashboard:{i}", "expr": expr} for i, expr in enumerate(dashboard_exprs())]
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    run = subprocess.run([promtool(), "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def _scrape() -> tuple[set[str], dict[tuple[str, tuple], float]]:
    from service.web.app import create_app

    with TestClient(create_app()) as client:
        resp = client.get("/metrics")
    assert resp.status_code == 200
    names, samples = set(), {}
    for family in text_string_to_metric_families(resp.text):
        names.add(family.name)
        for s in family.samples:
            names.add(s.name)
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return names, samples


def test_every_metric_the_rules_and_the_dashboard_read_is_exported(pg_env, redis_url):
    """The real app's /metrics, after the events that make each series appear: an edition
    sending, a failing feed, a worker's beat, messages decided and accepted."""
    from service.jobs.app import configure
    from tests.support.delivery import planned_edition

    configure()  # the broker of this test (its Redis, its key prefix): the queues' depths
    eid = planned_edition(3)
    with session_scope() as s:
        s.get(Edition, eid).status = EditionStatus.sending
        s.add(Feed(url="https://news.example/broken.xml", consecutive_failures=4))
    heartbeat.beat(get_settings(), "celery@test-host", ["alerts", "digests"])
    delivery_metrics.message("alert", "sent", 250, latency=1.5)
    delivery_metrics.message("alert", "unavailable")

    names, samples = _scrape()
    missing = used_metric_names() - names
    assert missing == set(), f"not exported by GET /metrics: {sorted(missing)}"
    named = set(NAME.findall(RUNBOOK.read_text()))
    assert named - names == set(), "the runbook names metrics /metrics does not export"
    key = (("edition_id", str(eid)), ("kind", "digest"))
    assert samples[("nashra_edition_due", key)] == 3
    assert samples[("nashra_edition_remaining", key)] == 3
    assert abs(samples[("nashra_edition_last_progress_timestamp_seconds", key)] - time.time()) < 120
    assert samples[("nashra_queue_messages", (("queue", "alerts"),))] >= 0
    assert samples[("nashra_broker_up", ())] == 1
    beat = samples[("nashra_worker_heartbeat_timestamp_seconds", (("queue", "alerts"), ("worker", "celery@test-host")))]
    assert abs(beat - time.time()) < 60


def test_a_finished_edition_has_no_sending_series(pg_env, redis_url):
    from tests.support.delivery import planned_edition

    eid = planned_edition(2)
    with session_scope() as s:
        s.get(Edition, eid).status = EditionStatus.done
    _, samples = _scrape()
    assert not [k for k in samples if k[0].startswith("nashra_edition_") and ("edition_id", str(eid)) in k[1]]


def test_a_real_workers_heartbeat_reaches_metrics_per_queue(pg_env, redis_url, smtp_sink):
    from tests.support.workers import start_worker, stop, worker_env

    proc = start_worker("beating", worker_env(smtp_sink.port), queues="alerts,default", concurrency=1)
    try:
        deadline = time.monotonic() + 60
        seen = []
        while time.monotonic() < deadline and len(seen) < 2:
            seen = [b for b in heartbeat.read(get_settings()) if b[1].startswith("beating@")]
            time.sleep(0.5)
    finally:
        stop(proc)
    assert sorted(q for q, _, _ in seen) == ["alerts", "default"]
    _, samples = _scrape()
    beats = {dict(k[1])["queue"]: v for k, v in samples.items()
             if k[0] == "nashra_worker_heartbeat_timestamp_seconds" and dict(k[1])["worker"].startswith("beating@")}
    assert set(beats) == {"alerts", "default"}
    assert all(abs(v - time.time()) < 60 for v in beats.values())


def test_a_heartbeat_a_day_old_is_forgotten(redis_url):
    settings = get_settings()
    now = time.time()
    heartbeat.beat(settings, "celery@gone", ["digests"], now=now - heartbeat.FORGET_AFTER - 5)
    heartbeat.beat(settings, "celery@here", ["digests"], now=now)
    assert [(q, w) for q, w, _ in heartbeat.read(settings, now=now)] == [("digests", "celery@here")]
    assert [(q, w) for q, w, _ in heartbeat.read(settings, now=now)] == [("digests", "celery@here")]


def test_a_paused_feed_is_no_failing_feed(pg_env, redis_url):
    """`nashra feeds pause` is how the runbook silences a feed gone for good."""
    with session_scope() as s:
        s.add(Feed(url="https://news.example/gone.xml", consecutive_failures=7, active=False))
        s.add(Feed(url="https://news.example/flaky.xml", consecutive_failures=3))
        s.flush()
        flaky = s.scalar(sa.select(Feed.id).where(Feed.url.like("%flaky%")))
    _, samples = _scrape()
    assert samples[("nashra_feeds_failing", ())] == 1
    failing = {dict(k[1])["feed_id"] for k in samples if k[0] == "nashra_feed_consecutive_failures"}
    assert failing == {str(flaky)}
