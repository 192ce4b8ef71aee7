"""Where the service's own files are: templates, the editor's script, the migrations.

Every lookup of a file that ships with the code goes through here, so the service runs
the same from a wheel and from a source checkout:

* installed from a wheel, everything is inside the package: pyproject.toml maps the
  repository's top-level ``templates/`` to ``service/templates/``, and the Alembic
  scripts (with an ``alembic.ini`` of their own) are ``service/migrations/``;
* from a source checkout (``pip install -e .``, or ``PYTHONPATH`` on the repository)
  ``templates/`` is still where the repository keeps it, beside the package.

State the service writes (SQLite files, the outbox, logs) is never looked up here: it
goes under the configurable VAR_DIR (service.config).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Literal

PACKAGE = "service"


def package_dir() -> Path:
    """The directory of the installed `service` package (it must be unpacked, as pip does)."""
    root = files(PACKAGE)
    path = Path(str(root))
    if not path.is_dir():  # e.g. imported from a zip archive
        raise FileNotFoundError(f"the {PACKAGE!r} package is not a directory on disk: {root}")
    return path


def templates_dir(kind: Literal["emails", "web"]) -> Path:
    """templates/emails (the mail Jinja templates) or templates/web (the pages)."""
    packaged = package_dir() / "templates" / kind
    if packaged.is_dir():
        return packaged
    checkout = package_dir().parent / "templates" / kind  # source checkout: the repo's layout
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"templates/{kind} is neither in the package ({packaged}) nor beside it ({checkout})")


def email_templates_dir() -> Path:
    return templates_dir("emails")


def web_templates_dir() -> Path:
    return templates_dir("web")


def editor_live_js() -> str:
    """The editors' page script (served at /editor/live.js)."""
    return (web_templates_dir() / "editor_live.js").read_text(encoding="utf-8")


def signup_challenge_js() -> str:
    """The signup form's proof-of-work script (served at /signup-challenge.js)."""
    return (web_templates_dir() / "signup_challenge.js").read_text(encoding="utf-8")


def time_zone_js() -> str:
    """The readers' pages' time-zone script (served at /time-zone.js): the browser's zone."""
    return (web_templates_dir() / "time_zone.js").read_text(encoding="utf-8")


def migrations_dir() -> Path:
    """The Alembic script directory (env.py, versions/)."""
    return package_dir() / "migrations"


def alembic_ini() -> Path:
    """The Alembic config that ships with the migrations (script_location = its own dir)."""
    return migrations_dir() / "alembic.ini"


def demo_dir() -> Path:
    """The demo's sample feeds and article (package data of service.demo)."""
    return package_dir() / "demo"
