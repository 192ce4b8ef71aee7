"""The console's one question before something goes to readers."""

from __future__ import annotations

YES = ("y", "yes", "نعم")


def confirmed(question: str) -> bool:
    """Ask `question` ([y/N]); only a yes (in English or Arabic) goes on."""
    return input(f"{question} [y/N] ").strip().lower() in YES
