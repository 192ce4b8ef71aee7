"""Readers in bulk: import a CSV (with double opt-in for `pending` rows) and export one."""

from __future__ import annotations

from typing import IO

from service.db import session_scope
from service.subscribers.csvio import ImportReport, export_csv, import_csv


def import_file(path: str, actor: str = "cli") -> ImportReport:
    """Import readers from a CSV file: all of it or nothing if the file breaks the contract
    (CsvError, OSError, UnicodeDecodeError), bad rows reported by line and skipped.
    Confirmations for `pending` rows are asked for after the commit."""
    with open(path, encoding="utf-8-sig", newline="") as fh, session_scope() as session:
        return import_csv(session, fh, actor=actor)


def export_to(out: IO[str]) -> int:
    """Write every subscribed reader in the import format; returns how many."""
    with session_scope() as session:
        return export_csv(session, out)
