"""`nashra db upgrade`: run the Alembic migrations to head."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from service import resources
from service.config import get_settings
from service.db import make_engine


def alembic_config(url: str | None = None) -> Config:
    """The Alembic config shipped in the package (service/migrations/alembic.ini)."""
    cfg = Config(str(resources.alembic_ini()))
    if url:
        cfg.attributes["url"] = url
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:

    engine = make_engine(url or get_settings().database_url)
    try:
        with engine.begin() as connection:
            cfg = alembic_config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()
