"""What the senders measure, in every worker process: latency from the click, and outcomes.

* ``nashra_delivery_latency_seconds{kind}`` — a histogram of the seconds from the
  editor's click (the edition's ``created_at``) to each message's acceptance by the
  relay (its 250): the alert latency the benchmark measures, in production;
* ``nashra_delivery_messages_total{kind, outcome, reply_class}`` — every message a batch
  decided about: outcome = sent | retry | failed | bounced | unknown | sender_refused |
  unavailable | skipped | suppressed | resent_ambiguous (the final dot may have left with
  no answer and the message went once more: a possible duplicate), reply class = 2xx | 4xx | 5xx | none (no SMTP reply).

Workers are many processes (prefork children, several hosts' worth of them), so the
numbers go through prometheus_client's multiprocess mode: each process writes its own
files under PROMETHEUS_MULTIPROC_DIR (default ``VAR_DIR/metrics``) and the web app's
``/metrics`` adds them up (`collect_all`).  A worker calls `enable_multiprocess` when it
starts, before its first metric exists.  A process that never did (the web app, a test
running batches in-process, the embedded demo) counts in memory, and `collect_all` adds
its own numbers to the files'.  Counters of dead processes stay in their files (totals
survive restarts); wipe the directory when a host is redeployed if it grows large.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from prometheus_client import Counter, Histogram, values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from service.config import Settings

LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)

_lock = threading.Lock()
_metrics: tuple[Histogram, Counter] | None = None
_in_files = False  # whether _metrics were made file-backed (multiprocess mode on at the time)


def directory(settings: Settings) -> Path:
    return Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or settings.var_dir / "metrics")


def multiprocess() -> bool:
    """True when this process's metrics are written to files (see the module doc)."""
    return values.ValueClass is not values.MutexValue


def enable_multiprocess(settings: Settings) -> Path:
    """Count into files under `directory(settings)` from now on (a worker, at start)."""
    path = directory(settings)
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    if not multiprocess():
        # prometheus_client picks its value class when it is first imported, from this
        # environment variable; a worker may have imported it before it knew VAR_DIR.
        values.ValueClass = values.MultiProcessValue(process_identifier=_process_id)
    return path


_pid = os.getpid()


def _process_id() -> int:
    """os.getpid() without the system call: the multiprocess values ask for it at every
    increment (three per message sent), to notice a fork.  A fork still shows: the child
    updates it before anything else runs there (os.register_at_fork)."""
    return _pid


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def _get() -> tuple[Histogram, Counter]:
    global _metrics, _in_files
    with _lock:
        if _metrics is None:
            latency = Histogram(
                "nashra_delivery_latency_seconds",
                "Seconds from the edition's creation (the editor's click) to the relay accepting each message",
                ["kind"], buckets=LATENCY_BUCKETS, registry=None,
            )
            messages = Counter(
                "nashra_delivery_messages",
                "Messages by edition kind, outcome and SMTP reply class",
                ["kind", "outcome", "reply_class"], registry=None,
            )
            _metrics, _in_files = (latency, messages), multiprocess()
        return _metrics


def reply_class(code: int | None) -> str:
    if code is None or not 200 <= code < 600:
        return "none"
    return f"{code // 100}xx"


# The labelled children, by (kind, outcome, reply class): `labels()` takes a lock and
# builds its key each time, as much CPU as the increment itself (the same child comes
# back every time, so keeping it changes nothing else).
_children: dict[tuple[str, str, str], tuple] = {}


def message(kind: str, outcome: str, code: int | None = None, latency: float | None = None) -> None:
    """One message decided: its outcome, and for an accepted one its latency from the click."""
    key = (kind, outcome, reply_class(code))
    pair = _children.get(key)
    if pair is None:
        hist, counter = _get()
        pair = _children[key] = (counter.labels(*key), hist.labels(kind))
    pair[0].inc()
    if latency is not None:
        pair[1].observe(max(latency, 0.0))


def possible_duplicate(kind: str) -> None:
    """A message sent once more after an ambiguous end (SMTP_AMBIGUOUS=resend)."""
    message(kind, "resent_ambiguous")


def _add(families: dict[str, Metric], family: Metric) -> None:
    """Add `family`'s samples into the family of that name (one family per name)."""
    into = families.get(family.name)
    if into is None:
        families[family.name] = family
        return
    totals = {(s.name, tuple(sorted(s.labels.items()))): s for s in into.samples}
    for sample in family.samples:
        if sample.name.endswith("_created"):
            continue
        key = (sample.name, tuple(sorted(sample.labels.items())))
        old = totals.get(key)
        totals[key] = sample._replace(value=sample.value + (old.value if old else 0.0))
    into.samples = list(totals.values())


def collect_all(settings: Settings) -> list[Metric]:
    """Every process's delivery metrics: the files of the multiprocess directory and of its
    subdirectories (one per container in docker compose, whose process ids overlap), plus
    this process's own when it counts in memory."""
    families: dict[str, Metric] = {}
    path = directory(settings)
    if path.is_dir():
        for folder in [path, *sorted(p for p in path.iterdir() if p.is_dir())]:
            for family in MultiProcessCollector(None, path=str(folder)).collect():
                _add(families, family)
    if _metrics is not None and not _in_files:
        for metric in _metrics:
            for family in metric.collect():
                _add(families, family)
    return list(families.values())
