"""structlog: JSON lines for machines, readable console for people.

Log lines carry ids (edition_id, subscriber_id, delivery_id, task_id), never an email
address or a token: `redact()` tags anything address-like that must be correlated with
a keyed hash (HMAC), so that the logs alone cannot confirm a guessed address.
"""

from __future__ import annotations

import hashlib
import hmac
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


def _redact_key(secret_key: str) -> bytes:
    # A key of its own, derived from SECRET_KEY: the tags in the logs say nothing about
    # the key that signs links, and a reader of the logs who lacks SECRET_KEY cannot
    # test a guessed address against a tag (a bare sha256 can be checked by anyone).
    return hmac.new(secret_key.encode("utf-8", "surrogatepass"), b"nashra.logs.redact", hashlib.sha256).digest()


def redact(value: str) -> str:
    """A stable keyed tag (HMAC-SHA256 under a key derived from SECRET_KEY) for an
    address or token, for correlating log lines without being able to reverse them."""
    key = _redact_key(get_settings().secret_key)
    data = value.strip().lower().encode("utf-8", "surrogatepass")
    return "h:" + hmac.new(key, data, hashlib.sha256).hexdigest()[:16]
