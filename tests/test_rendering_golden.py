"""Golden files: the exact HTML, text and subject of every kind for the fixed sample inputs.

A change in what readers see must show up here as a diff a person reviews.
Regenerate with `UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_rendering_golden.py`,
then read the diff (git diff tests/golden) before committing it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.rendering.render import render_variant
from tests.support import email_samples as samples
from tests.support.email_checks import check_email

GOLDEN = Path(__file__).resolve().parent / "golden"
KINDS = ("digest", "alert", "confirm", "welcome", "correction")
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _compare(path: Path, actual: str) -> None:
    if UPDATE or not path.exists():
        if not UPDATE:
            pytest.fail(f"{path.name} is missing: run with UPDATE_GOLDEN=1 and review it")
        path.write_text(actual, encoding="utf-8")
        return
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"{path.name} changed: rerun with UPDATE_GOLDEN=1 and review the diff"


@pytest.mark.parametrize("kind", KINDS)
def test_golden(kind):
    variant = render_variant(kind, samples.all_contexts()[kind])
    assert check_email(variant.html, variant.text) == []
    _compare(GOLDEN / f"{kind}.html", variant.html)
    _compare(GOLDEN / f"{kind}.txt", variant.text)
    _compare(GOLDEN / f"{kind}.subject.txt", variant.subject + "\n")
