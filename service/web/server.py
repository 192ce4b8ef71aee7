"""How `nashra web` runs uvicorn: how many processes, and which proxies' X-Forwarded-For
it believes.

Processes: `--workers N`, else WEB_WORKERS, 0 meaning one per core this process may run
on.  uvicorn's supervisor binds the socket once and *spawns* N fresh interpreters that
accept on it (and starts a new one if one dies), so nothing is shared between them by a
fork: each builds its own database pool, Redis client and Celery producer on first use.
What must be common to all — the signup and login limits, CSRF tokens, editors'
sessions, /metrics — already lives in Redis, the database or a signature, never in a
process's memory.  (/metrics reads the ledger and the workers' files at scrape time; only
its process_* and python_* series describe the one process that answered the scrape.)  On SQLite (the embedded demo) it is always one process: SQLite lets
one writer in at a time, so more processes would only queue on its lock (and each adds
a writer that can meet "database is locked").

Proxies: uvicorn, left to itself, trusts X-Forwarded-For from 127.0.0.1 (or from its own
reading of FORWARDED_ALLOW_IPS): any local client — or a proxy that passes the header
through — could then name its own address and walk past the signup limit.  Here the
header is believed only from the addresses FORWARDED_ALLOW_IPS lists, and by default from
nobody.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from service.config import Settings, get_settings
from service.logs import setup_logging
from service.web.app import create_app

# The factory uvicorn imports in each process it runs (`nashra web`).
APP_FACTORY = "service.web.server:served_app"


def uvicorn_options(settings: Settings | None = None) -> dict:
    """The proxy part of uvicorn.Config / uvicorn.run's keyword arguments."""
    trusted = list((settings or get_settings()).forwarded_allow_ips)
    if not trusted:
        return {"proxy_headers": False, "forwarded_allow_ips": []}
    return {"proxy_headers": True, "forwarded_allow_ips": trusted}


def cores() -> int:
    """CPUs this process may run on (a container's cpuset, taskset), not the host's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def worker_count(requested: int | None = None, settings: Settings | None = None) -> tuple[int, str | None]:
    """(processes to run, why that is fewer than asked — or None)."""
    settings = settings or get_settings()
    wanted = settings.web_workers if requested is None else requested
    wanted = wanted or cores()
    if wanted > 1 and settings.is_sqlite:
        return 1, "sqlite"
    return wanted, None


def served_app() -> FastAPI:
    """The app in a process uvicorn spawned: that fresh interpreter has not run the CLI's
    set-up, so its log lines would otherwise not be Nashra's JSON (or console) lines."""
    setup_logging()
    return create_app()
