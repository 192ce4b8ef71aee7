"""docker-compose.yml cannot run here (no Docker engine): check it against the real CLI instead."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from service.cli.main import build_parser

REPO = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES = COMPOSE["services"]


def _command(service: dict) -> list[str]:
    cmd = service.get("command")
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd or [])


NASHRA_SERVICES = [name for name, s in SERVICES.items() if _command(s)[:1] == ["nashra"]]


def test_compose_has_the_production_shape():
    assert {"postgres", "redis", "web", "beat", "mailpit", "flower", "worker-alerts", "worker-digests",
            "bounces"} <= set(SERVICES)


def test_bounce_server_listens_on_all_interfaces_on_the_published_port():
    args = build_parser().parse_args(_command(SERVICES["bounces"])[1:])
    assert args.host == "0.0.0.0"
    assert any(p.endswith(f":{args.port}") for p in SERVICES["bounces"]["ports"])


@pytest.mark.parametrize("name", NASHRA_SERVICES)
def test_each_nashra_command_parses_with_the_real_cli(name):
    args = build_parser().parse_args(_command(SERVICES[name])[1:])
    assert callable(args.func)


def test_alert_and_digest_workers_consume_separate_queues():
    alerts = build_parser().parse_args(_command(SERVICES["worker-alerts"])[1:]).queues.split(",")
    digests = build_parser().parse_args(_command(SERVICES["worker-digests"])[1:]).queues.split(",")
    assert alerts == ["alerts"]
    assert "alerts" not in digests and {"digests", "ingest", "default"} <= set(digests)
    from service.jobs.names import QUEUES

    assert set(alerts) | set(digests) == set(QUEUES)


def test_services_use_postgres_and_redis_and_require_a_secret():
    env = SERVICES["web"]["environment"]
    assert env["DATABASE_URL"].startswith("postgresql")
    assert env["REDIS_URL"].startswith("redis://redis:")
    assert ":?" in env["SECRET_KEY"]  # compose refuses to start without one
    for name in NASHRA_SERVICES:
        assert SERVICES[name]["environment"]["DATABASE_URL"] == env["DATABASE_URL"]


def test_dockerfile_installs_the_wheel_not_the_source_tree():
    """The image runs what a wheel carries (templates and migrations inside the package),
    so a file missing from the wheel fails the build, not production."""
    dockerfile = (REPO / "Dockerfile").read_text()
    build, _, runtime = dockerfile.rpartition("\nFROM ")  # the last stage is the image
    assert "pip wheel" in build and "COPY templates" in build and "COPY service" in build
    assert "pip install /tmp/dist/*.whl" in runtime
    assert "COPY service" not in runtime and "COPY templates" not in runtime
    assert "-e" not in runtime.split()
