"""The settings as the running service sees them, for the admins' read-only page:
every value, with secrets and the passwords inside URLs replaced by a mark."""

from __future__ import annotations

import re

from service.config import DEMO_SECRET_KEY, get_settings

_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
SECRET_FIELDS = {"secret_key"}


def _shown(name: str, value: object) -> str:
    if name in SECRET_FIELDS:
        return "(the demo key)" if value == DEMO_SECRET_KEY else "(set; not shown)"
    if value is None or value == "" or value == [] or value == {}:
        return "—"
    if isinstance(value, list | tuple):
        text = ", ".join(str(v) for v in value)
    elif isinstance(value, dict):
        text = ", ".join(f"{k}={v}" for k, v in value.items())
    else:
        text = str(value)
    return _PASSWORD_IN_URL.sub(r"\1***@", text)


def settings_rows() -> list[tuple[str, str]]:
    """(environment variable, value as shown), in the order the settings class lists them."""
    settings = get_settings()
    rows = []
    for name, field in type(settings).model_fields.items():
        env = field.alias if isinstance(field.alias, str) and field.alias else name.upper()
        rows.append((env, _shown(name, getattr(settings, name))))
    return rows
