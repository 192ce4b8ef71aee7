"""Reading what the service logs, the way an operator's log shipper would."""

from __future__ import annotations

import contextlib
import io
import json
import logging


@contextlib.contextmanager
def json_log_lines():
    """Collect the service's JSON log lines (through its own formatter) while inside."""
    from service.logs import setup_logging

    setup_logging(fmt="json", level="INFO")
    root = logging.getLogger()
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(root.handlers[0].formatter)
    root.addHandler(handler)
    lines: list[dict] = []
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        lines.extend(json.loads(x) for x in sink.getvalue().splitlines() if x.startswith("{"))
