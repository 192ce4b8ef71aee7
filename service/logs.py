"""structlog: JSON lines for machines, readable console for people.

Log lines carry ids (edition_id, subscriber_id, delivery_id, task_id), never an email
address or a token: `redact()` hashes anything address-like that must be correlated.
"""

from __future__ import annotations

import hashlib
import logging
import sys

import structlog

from service.config import get_settings

_configured = False


def setup_logging(fmt: str | None = None, level: str | None = None) -> None:
    global _configured

    settings = get_settings()
    fmt = fmt or settings.log_format
    level = (level or settings.log_level).upper()
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer(ensure_ascii=False)
    )
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a logger bound at import would keep the processors of that moment,
        # and structlog.testing.capture_logs (the tests' window on our logs) would miss it.
        # Nothing logs per recipient, so the few µs per call do not show.
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Chatty libraries: their warnings are ours to translate, not to forward.
    for noisy in ("cssutils", "httpx", "httpcore", "aiosmtpd", "mail.log", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("cssutils").setLevel(logging.CRITICAL)
    _configured = True


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)


def redact(value: str) -> str:
    """A stable, non-reversible tag for an address or token, for correlating log lines."""
    return "h:" + hashlib.sha256(value.strip().lower().encode()).hexdigest()[:12]
