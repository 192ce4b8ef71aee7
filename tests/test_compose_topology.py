"""docker-compose.yml's topology, started without Docker (issue 19).

There is no Docker engine here, so the test does what compose would, with the pieces it
has: docker-compose.yml read with PyYAML and `${VAR:-default}` interpolated as compose
does (from the project's `.env`), then each Nashra service's `command` run as a process
with the environment compose gives its container — the image's ENV (the Dockerfile),
`env_file: .env`, then `environment` — in a working directory of its own.  The only
changes are what a container network would provide: DATABASE_URL and REDIS_URL point at
this run's PostgreSQL (a scratch database, empty: the `migrate` service makes the schema)
and Redis (its own key prefix), SMTP_URL (set in .env, as an operator does) at an
in-test SMTP sink, container paths at temporary directories, and the published ports at
free ones.  Then, as a user would: readers imported, a feed ingested, an editor made, an
alert sent through `POST /api/alerts` and a digest with `nashra digest send --now`; the
sink must get both for every reader, and every service's health check (its `test`, with
the same ports) must pass.  The file itself is validated against the Compose
specification's JSON schema (tests/data/compose/, vendored from PyPI's docker-compose).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import jsonschema
import pytest
import sqlalchemy as sa
import yaml

from tests.support.net import free_port

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
SCHEMA = REPO / "tests" / "data" / "compose" / "compose_spec.json"
VENV_BIN = Path(sys.executable).parent
SAMPLE_FEED = REPO / "service" / "demo" / "sample_feed.xml"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

NASHRA_SERVICES = ("migrate", "web", "worker-alerts", "worker-digests", "beat", "bounces")
LONG_RUNNING = NASHRA_SERVICES[1:]
READERS = [f"reader{i}@example.com" for i in range(3)]
# What an operator fills in after `cp .env.example .env` (README, "Deploying").
FILLED = {
    "SECRET_KEY": "topology-secret-0123456789abcdef0123456789",
    "MAIL_FROM": "نشرة <newsletter@news.example>",
    "PUBLIC_URL": "https://news.example",  # not local: POSTAL_ADDRESS is required
    "POSTAL_ADDRESS": "جريدة الخبر، ص.ب. 1234، عمّان 11118، الأردن",
}


def _missing(what: str, why: object) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true but is not reachable: {why}")
    pytest.skip(f"{what} not reachable: {why}")


# ---------------------------------------------------------------- compose's rules, done here


_VAR = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
                  r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: object, env: Mapping[str, str]) -> object:
    """Compose's interpolation of every string in the file: `$$` → `$`, `$VAR`, `${VAR}`,
    `${VAR:-default}` / `${VAR-default}`, `${VAR:?error}` / `${VAR?error}`, `${VAR:+alt}`."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        if m["escaped"]:
            return "$"
        name = m["braced"] or m["named"]
        op, arg = m["op"], m["arg"] or ""
        current = env.get(name)
        unset_or_empty = not current
        if op in (":-", "-"):
            return arg if (unset_or_empty if op == ":-" else current is None) else current
        if op in (":?", "?"):
            if unset_or_empty if op == ":?" else current is None:
                raise ValueError(f"required variable {name} is missing a value: {arg}")
            return current
        if op in (":+", "+"):
            return arg if not (unset_or_empty if op == ":+" else current is None) else ""
        return current or ""

    return _VAR.sub(one, value)


def read_env_file(path: Path) -> dict[str, str]:
    """A compose env_file (and the project .env): NAME=value lines, `#` comments, a value
    in double or single quotes taken without them."""
    env: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"{path.name}: not NAME=value: {line!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[name.strip().removeprefix("export ").strip()] = value
    return env


def image_env() -> dict[str, str]:
    """The runtime stage's ENV lines of the Dockerfile: what every container starts with."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    runtime = text.rpartition("\nFROM ")[2]
    env: dict[str, str] = {}
    for line in runtime.splitlines():
        if line.startswith("ENV "):
            for item in shlex.split(line[4:]):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def filled_env_example(values: Mapping[str, str]) -> str:
    """.env.example with the given settings set (their commented lines replaced)."""
    lines = (REPO / ".env.example").read_text(encoding="utf-8").splitlines()
    left = dict(values)
    for n, line in enumerate(lines):
        m = re.match(r"^#\s?([A-Z][A-Z0-9_]*)=", line)
        if m and m[1] in left:
            lines[n] = f"{m[1]}={json.dumps(left.pop(m[1]), ensure_ascii=False)}"
    assert not left, f".env.example has no line for {sorted(left)}"
    return "\n".join(lines) + "\n"


def _command(service: dict) -> list[str]:
    cmd = service.get("command")
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd or [])


# ---------------------------------------------------------------- the file, without processes


def test_compose_file_is_valid_under_the_compose_specification():
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    assert not errors, "docker-compose.yml breaks the Compose specification:\n" + "\n".join(errors)
    # the schema does catch a mistake (it is not a schema that takes anything)
    broken = {**doc, "services": {**doc["services"], "web": {**doc["services"]["web"], "helthcheck": {}}}}
    assert not validator.is_valid(broken)


def test_every_nashra_service_reads_env_and_long_running_ones_restart_and_report_health():
    services = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]
    assert {n for n, s in services.items() if _command(s)[:1] == ["nashra"]} == set(NASHRA_SERVICES)
    for name in NASHRA_SERVICES:
        assert services[name]["env_file"] == ".env", name
        # only what the compose file decides; every setting comes from .env
        assert set(services[name]["environment"]) <= {"DATABASE_URL", "REDIS_URL", "SECRET_KEY",
                                                      "PROMETHEUS_MULTIPROC_DIR"}, name
    for name, service in services.items():
        if name != "migrate":
            assert service.get("restart") == "unless-stopped", name
    for name in LONG_RUNNING:
        assert services[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name


def test_flower_is_not_started_unless_asked_and_then_only_with_a_login():
    flower = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]["flower"]
    assert flower["profiles"] == ["flower"]
    assert "FLOWER_BASIC_AUTH" in flower["environment"]  # Flower reads it natively
    script = flower["command"][-1]
    assert script.startswith('test -n "$$FLOWER_BASIC_AUTH" ||') and "exit 1" in script
    # the guard, as the container's shell runs it: without a login Flower never starts
    guard = interpolate(script, {}).rpartition("exec ")[0] + "echo started"  # Flower itself is not here
    refused = subprocess.run(["sh", "-c", guard], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True)
    assert refused.returncode == 1 and "FLOWER_BASIC_AUTH" in refused.stderr and "started" not in refused.stdout
    allowed = subprocess.run(["sh", "-c", guard], env={"PATH": os.environ["PATH"], "FLOWER_BASIC_AUTH": "ops:pw"},
                             capture_output=True, text=True)
    assert allowed.returncode == 0 and "started" in allowed.stdout


def test_interpolation_follows_compose():
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${UNSET:-d} ${EMPTY-d} $$HOSTNAME $SET", env) == "x d d  $HOSTNAME x"
    with pytest.raises(ValueError, match="SECRET_KEY"):
        interpolate("${SECRET_KEY:?set it}", env)


# ---------------------------------------------------------------- the topology, as processes


@pytest.fixture
def scratch_database() -> Iterator[str]:
    """An empty database of its own: the compose file's `migrate` service makes the schema."""
    try:
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        _missing("PostgreSQL", exc)
    name = f"nashra_topology_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as c:
            c.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    import redis

    try:
        client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2)
        client.ping()
    except Exception as exc:  # noqa: BLE001
        _missing("Redis", exc)
    prefix = f"nashra-topology-{os.getpid()}-{uuid.uuid4().hex[:6]}:"
    try:
        yield prefix
    finally:
        for key in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(key)
        client.close()


class Topology:
    """The compose services as processes: each in its own session (process group)."""

    def __init__(self, root: Path, services: dict, dotenv: dict[str, str], overrides: dict[str, str],
                 ports: dict[str, dict[int, int]]):
        self.root, self.services, self.dotenv, self.overrides, self.ports = root, services, dotenv, overrides, ports
        self.procs: dict[str, subprocess.Popen] = {}
        self.volumes = {name: root / "volumes" / name for name in ("metrics",)}

    def _local(self, name: str, value: str) -> str:
        """A container path on this machine: a named volume's directory (shared, as the
        volume is), else the container's own filesystem under root/<service>."""
        for mount in self.services[name].get("volumes", []):
            volume, _, target = mount.partition(":")
            if volume in self.volumes and (value == target or value.startswith(target + "/")):
                return str(self.volumes[volume]) + value[len(target):]
        if value.startswith("/var/lib/nashra"):
            return str(self.root / name / "var") + value[len("/var/lib/nashra"):]
        return value

    def _remap_ports(self, name: str, text: str) -> str:
        for container, local in self.ports.get(name, {}).items():
            text = re.sub(rf"(?<![0-9]){container}(?![0-9])", str(local), text)
        return text

    def env(self, name: str) -> dict[str, str]:
        """What the container's processes see: the image's ENV, env_file, environment."""
        service = self.services[name]
        env = {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}", "LANG": "C.UTF-8",
               "HOME": str(self.root / name / "home"), "HOSTNAME": socket.gethostname()}
        env.update({k: self._local(name, v) for k, v in image_env().items()})
        assert service.get("env_file") == ".env", f"{name} does not read .env"
        env.update(self.dotenv)
        for key, value in (service.get("environment") or {}).items():
            env[key] = self._local(name, str(value))
        env.update(self.overrides)  # the compose network's postgres and redis → this run's
        for d in (env["HOME"], env["VAR_DIR"], self.root / name / "app"):
            Path(d).mkdir(parents=True, exist_ok=True)
        return env

    def argv(self, name: str) -> list[str]:
        cmd = [self._remap_ports(name, a) for a in _command(self.services[name])]
        assert cmd[0] == "nashra"
        return [str(VENV_BIN / "nashra"), *cmd[1:]]

    def run(self, name: str, *args: str, timeout: float = 60, stdin: str | None = None) -> subprocess.CompletedProcess:
        """`docker compose run --rm <name> nashra …` (or the service's own command)."""
        argv = [str(VENV_BIN / "nashra"), *args] if args else self.argv(name)
        out = subprocess.run(argv, env=self.env(name), cwd=self.root / name / "app", capture_output=True, text=True,
                             timeout=timeout, input=stdin)
        assert out.returncode == 0, f"{name}: {' '.join(argv[1:])} → {out.returncode}\n{out.stdout}\n{out.stderr}"
        return out

    def start(self, name: str) -> None:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 — closed with the process
        self.procs[name] = subprocess.Popen(self.argv(name), env=self.env(name), cwd=self.root / name / "app",
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def healthcheck(self, name: str, timeout: float = 30) -> subprocess.CompletedProcess:
        test = self.services[name]["healthcheck"]["test"]
        kind, rest = test[0], [self._remap_ports(name, a) for a in test[1:]]
        argv = ["sh", "-c", rest[0]] if kind == "CMD-SHELL" else rest
        return subprocess.run(argv, env=self.env(name), cwd=self.root / name / "app", capture_output=True,
                              text=True, timeout=timeout)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(encoding="utf-8", errors="replace")[-3000:] if path.exists() else ""

    def assert_running(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}:\n{self.log(name)}"

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():  # and whatever a process left behind in its group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_healthy(topology: Topology, names: tuple[str, ...], timeout: float) -> None:
    """Each health check, again and again until it passes (compose's start_period)."""
    deadline = time.monotonic() + timeout

    def until_healthy(name: str) -> None:
        last = None
        while time.monotonic() < deadline:
            topology.assert_running()
            last = topology.healthcheck(name)
            if last.returncode == 0:
                return
            time.sleep(0.5)
        raise AssertionError(f"{name} never became healthy: {last and (last.stdout + last.stderr)[-800:]}\n"
                             f"{topology.log(name)}")

    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        for future in [pool.submit(until_healthy, n) for n in names]:
            future.result()


def _wait_until_serving(url: str, topology: Topology, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topology.assert_running()
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.3)
    raise AssertionError(f"{url} never answered:\n{topology.log('web')}")


def _post_json(url: str, body: dict, token: str) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _wait_for(sink, predicate, timeout: float, what: str, topology: Topology) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = [m for m in list(sink.messages) if predicate(m)]
        if len(got) >= len(READERS):
            return got
        topology.assert_running()
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {len(got)} of {len(READERS)}\n"
                         + "\n".join(f"--- {n}\n{topology.log(n)}" for n in topology.procs))


@pytest.mark.timeout(180)
def test_the_compose_topology_sends_an_alert_and_a_digest(tmp_path, scratch_database, redis_prefix, smtp_sink,
                                                          feed_server):
    started = time.monotonic()
    feed_url = feed_server.serve("/feed.xml", SAMPLE_FEED.read_bytes())
    # cp .env.example .env, and fill in what the README says (SMTP_URL: the relay, here the
    # sink); the feed is on loopback, which only the demo and tests allow.
    dotenv_path = tmp_path / ".env"
    dotenv_path.write_text(filled_env_example({
        **FILLED, "SMTP_URL": f"smtp://127.0.0.1:{smtp_sink.port}", "FEED_URLS": feed_url,
        "FEED_ALLOW_PRIVATE": "true", "REDIS_KEY_PREFIX": redis_prefix,
    }), encoding="utf-8")
    dotenv = read_env_file(dotenv_path)
    services = interpolate(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")), dotenv)["services"]

    ports = {name: {int(p.rpartition(":")[2]): free_port() for p in services[name].get("ports", [])}
             for name in NASHRA_SERVICES}
    topology = Topology(tmp_path, services, dotenv,
                        {"DATABASE_URL": scratch_database, "REDIS_URL": TEST_REDIS_URL}, ports)
    web = f"http://127.0.0.1:{ports['web'][8000]}"
    try:
        # depends_on: migrate first, to completion; then everything else
        topology.run("migrate")
        for name in LONG_RUNNING:
            topology.start(name)

        # meanwhile, as the newsroom would (`docker compose run --rm web nashra …`), at once
        csv = tmp_path / "web" / "app" / "readers.csv"
        csv.parent.mkdir(parents=True, exist_ok=True)
        csv.write_text("email,sections,frequency,alerts,status,consent_source,consented_at\n"
                       + "".join(f"{r},,daily,yes,active,topology test,2026-01-01T00:00:00Z\n" for r in READERS),
                       encoding="utf-8")
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            one_offs = [pool.submit(topology.run, "web", *args) for args in
                        (("subscribers", "import", "readers.csv"), ("ingest",), ("editors", "add", "desk"))]
            token = [f.result() for f in one_offs][-1].stdout.strip().splitlines()[-1]
        _wait_until_serving(f"{web}/healthz", topology, timeout=60)  # the alert waits in Redis for its worker

        status, body = _post_json(f"{web}/api/alerts", {"headline": "عاجل: اختبار التشغيل الكامل",
                                                        "url": "https://news.example/topology",
                                                        "summary": "سطر عن الخبر."}, token)
        assert status == 202, body
        alerts = _wait_for(smtp_sink, lambda m: m.message["List-Id"] and "alerts." in m.message["List-Id"], 60,
                           "the alert", topology)

        topology.run("web", "digest", "send", "--now")
        # The daily digest newsletter's own List-Id (catalogue.list_id: `<daily.` + LIST_ID's domain).
        digests = _wait_for(smtp_sink, lambda m: m.message["List-Id"] and "<daily." in m.message["List-Id"], 60,
                            "the digest", topology)

        for got in (alerts, digests):
            assert sorted(r for m in got for r in m.rcpt_tos) == READERS
            for m in got:
                assert FILLED["POSTAL_ADDRESS"] in m.message.get_body(("plain",)).get_content()
                assert m.message["From"].addresses[0].addr_spec == "newsletter@news.example"

        # every service healthy, as compose's checks see it, once the work is done; and the
        # checks are no formality: each fails once what it watches is gone
        _wait_healthy(topology, LONG_RUNNING, timeout=60)
        topology.assert_running()
        for name in ("beat", "bounces", "worker-alerts"):
            os.killpg(topology.procs[name].pid, signal.SIGKILL)
            topology.procs[name].wait()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:  # a ping waits out its --timeout
            gone = {name: pool.submit(topology.healthcheck, name) for name in ("worker-alerts", "bounces")}
            heartbeat = Path(topology.env("beat")["VAR_DIR"]) / "beat-heartbeat"
            assert topology.healthcheck("beat").returncode == 0  # the last tick's touch is still fresh
            os.utime(heartbeat, (time.time() - 121, time.time() - 121))  # as if beat were stuck two minutes
            assert topology.healthcheck("beat").returncode != 0
            for name, check in gone.items():
                assert check.result().returncode != 0, name
        assert topology.healthcheck("worker-digests").returncode == 0  # the other worker's node still answers
    finally:
        topology.stop()
    print(f"\ncompose topology: {time.monotonic() - started:.1f} s")
