"""`nashra db upgrade`: run the Alembic migrations to head."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from service.config import REPO_ROOT, get_settings


def alembic_config(url: str | None = None) -> Config:
    cfg = Config(str(REPO_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    if url:
        cfg.attributes["url"] = url
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    from service.db import make_engine

    engine = make_engine(url or get_settings().database_url)
    try:
        with engine.begin() as connection:
            cfg = alembic_config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()
