"""The one error readers' input raises: it names the field and says what is wrong, in Arabic.

The web pages show `message` next to the form; the CLI and the CSV importer print it.
Raising it before any write keeps the rule "bad input changes nothing".
"""

from __future__ import annotations


class InvalidInput(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
