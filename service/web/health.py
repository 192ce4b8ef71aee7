"""/healthz (the process answers) and /readyz (it can do its job: database at the
migration head, broker reachable).  /readyz names what failed so that an operator
reading a 503 in a load balancer log knows where to look."""

from __future__ import annotations

import functools

import redis
from alembic.script import ScriptDirectory
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import create_engine, text

from service.config import get_settings
from service.db import get_engine
from service.logs import get_logger
from service.migrate import alembic_config
from service.web.access import ANYONE

log = get_logger(__name__)
router = APIRouter(dependencies=[ANYONE])  # load balancers and operators, no credentials
BROKER_TIMEOUT = 2.0


@functools.lru_cache(maxsize=1)
def migration_heads() -> frozenset[str]:
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def check_database() -> str | None:
    """None if the database answers and is migrated to head, else what is wrong."""
    try:
        with get_engine().connect() as conn:
            current = set(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    except Exception as exc:  # noqa: BLE001 — any failure means "not ready"
        return f"unreachable or not migrated ({type(exc).__name__})"
    expected = migration_heads()
    if current != expected:
        return f"at revision {','.join(sorted(current)) or 'none'}, expected {','.join(sorted(expected))} (run `nashra db upgrade`)"
    return None


def check_broker() -> str | None:
    """None if the broker answers.  Redis: PING.  The embedded SQLAlchemy broker: a
    query on its database (kombu connects to it lazily, so a kombu "connect" would
    prove nothing)."""
    settings = get_settings()
    try:
        if settings.redis_url:

            client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=BROKER_TIMEOUT,
                                          socket_timeout=BROKER_TIMEOUT)
            try:
                client.ping()
            finally:
                client.close()
        else:

            engine = create_engine(settings.broker_url.removeprefix("sqla+"))
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            finally:
                engine.dispose()
    except Exception as exc:  # noqa: BLE001
        return f"{settings.broker_name} unreachable ({type(exc).__name__})"
    return None


@router.get("/healthz")
def healthz():
    return {"status": "ok"}


@router.get("/readyz")
def readyz():
    checks = {"database": check_database(), "broker": check_broker()}
    failed = {name: why for name, why in checks.items() if why}
    if failed:
        log.warning("not_ready", failed=sorted(failed))
        return JSONResponse({"status": "unavailable", "failed": failed}, status_code=503)
    return {"status": "ok", "checks": {name: "ok" for name in checks}}
