"""One settings class for the whole service.

Every knob an operator can turn is here, read from the environment (or a `.env`
file).  A bad value stops start-up with a message that names the variable, because
a worker that starts with a typo in SMTP_URL only fails later, at 3 a.m., mid-edition.
"""

from __future__ import annotations

import functools
import zoneinfo
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEMO_SECRET_KEY = "nashra-demo-secret-change-me"


class ConfigError(RuntimeError):
    """Raised when the environment does not describe a runnable service."""


class SmtpTarget:
    """SMTP_URL, parsed: smtp://host:port, smtp+starttls://user:pass@host:587, smtps://…"""

    SCHEMES = {"smtp": "plain", "smtp+starttls": "starttls", "smtps": "ssl"}

    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme not in self.SCHEMES:
            raise ValueError(
                f"scheme must be one of {', '.join(sorted(self.SCHEMES))}, got {parts.scheme!r}"
            )
        if not parts.hostname:
            raise ValueError("a host is required, e.g. smtp://127.0.0.1:1025")
        self.security = self.SCHEMES[parts.scheme]
        self.host = parts.hostname
        default_port = {"plain": 25, "starttls": 587, "ssl": 465}[self.security]
        try:
            self.port = parts.port or default_port
        except ValueError as exc:  # port out of range / not a number
            raise ValueError(f"bad port: {exc}") from None
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None

    def __repr__(self) -> str:  # never print the password
        return f"SmtpTarget({self.security}://{self.host}:{self.port})"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # --- the public contract (DESIGN.md) ---
    database_url: str = ""
    redis_url: str | None = None
    # Prefix for every Redis key Celery uses: lets two deployments (or two test runs)
    # share one Redis without taking each other's tasks.
    redis_key_prefix: str = ""
    smtp_url: str = "smtp://127.0.0.1:1025"
    mail_from: str = "نشرة <newsletter@nashra.example>"
    public_url: str = "http://127.0.0.1:8000"
    secret_key: str = DEMO_SECRET_KEY
    feed_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    timezone: str = "Asia/Amman"
    postal_address: str = "نشرة، شارع المدينة المنورة، عمّان، الأردن"
    feed_allow_private: bool = False

    # --- the rest ---
    demo: bool = Field(default=False, alias="NASHRA_DEMO")
    # State (SQLite files, the outbox, demo logs, beat's schedule): VAR_DIR (NASHRA_VAR_DIR is
    # still read), else ./var under the directory the process starts in, never the package's.
    var_dir: Path = Field(default_factory=lambda: Path.cwd() / "var",
                          validation_alias=AliasChoices("VAR_DIR", "NASHRA_VAR_DIR"))
    site_name: str = "نشرة"
    list_id: str = "digest.nashra.example"
    log_format: Literal["auto", "json", "console"] = Field(default="auto", alias="LOG_FORMAT")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", alias="LOG_LEVEL")
    digest_daily_at: str = "07:00"  # local time in TIMEZONE
    digest_weekly_day: int = 5  # 0 = Monday … 5 = Saturday, the start of the Arab work week
    batch_size: int = 200
    lease_seconds: int = Field(default=300, ge=1, le=86_400)
    # How often beat runs the sweeper (expired leases, lost batches, due retries).
    sweep_seconds: float = Field(default=60.0, ge=1, le=3600)
    smtp_timeout: float = Field(default=30.0, gt=0, le=600)
    retry_max_age_hours: int = Field(default=24, ge=1, le=24 * 14)
    rate_per_second: float = Field(default=0.0, ge=0)  # 0 = unlimited (the SMTP server paces us)
    rate_per_hour: int = Field(default=0, ge=0)
    alert_rate_per_second: float = Field(default=0.0, ge=0)
    domain_rates: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    feed_timeout: float = Field(default=10.0, gt=0, le=300)
    feed_max_bytes: int = Field(default=5_000_000, gt=0)
    hijri_dates: bool = False
    arabic_indic_digits: bool = False
    dkim_selector: str | None = None
    dkim_private_key_path: Path | None = None
    # Corrections (service/editions/corrections.py): mail the readers of an article again
    # when it gets a major update.  off | notes (only when the site published a
    # correction/update note) | major (every major update).
    corrections: Literal["off", "notes", "major"] = "notes"
    corrections_max_age_days: int = 7  # only editions that mailed the article this recently

    @field_validator("feed_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [u.strip() for u in value.split(",") if u.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("domain_rates", mode="before")
    @classmethod
    def _parse_domain_rates(cls, value: object) -> object:
        # DOMAIN_RATES="gmail.com=20,yahoo.com=5" (messages per second)
        if isinstance(value, str):
            rates: dict[str, float] = {}
            for item in filter(None, (p.strip() for p in value.split(","))):
                domain, sep, rate = item.partition("=")
                if not sep:
                    raise ValueError(f"expected domain=rate, got {item!r}")
                rates[domain.strip().lower()] = float(rate)
            return rates
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Asia/Amman)") from None
        return value

    @field_validator("smtp_url")
    @classmethod
    def _valid_smtp_url(cls, value: str) -> str:
        SmtpTarget(value)
        return value

    @field_validator("public_url")
    @classmethod
    def _valid_public_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL, e.g. https://news.example/nashra")
        return value.rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _valid_redis_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if urlsplit(value).scheme not in ("redis", "rediss"):
            raise ValueError("must start with redis:// or rediss://")
        return value

    @field_validator("digest_daily_at")
    @classmethod
    def _valid_hhmm(cls, value: str) -> str:
        hour, sep, minute = value.partition(":")
        if not (sep and hour.isdigit() and minute.isdigit() and int(hour) < 24 and int(minute) < 60):
            raise ValueError("must be HH:MM")
        return value

    @field_validator("digest_weekly_day")
    @classmethod
    def _valid_weekday(cls, value: int) -> int:
        if not 0 <= value <= 6:
            raise ValueError("must be 0 (Monday) to 6 (Sunday)")
        return value

    @field_validator("batch_size")
    @classmethod
    def _valid_batch(cls, value: int) -> int:
        if not 1 <= value <= 5000:
            raise ValueError("must be between 1 and 5000")
        return value

    @field_validator("corrections", mode="before")
    @classmethod
    def _corrections_policy(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("corrections_max_age_days")
    @classmethod
    def _valid_correction_age(cls, value: int) -> int:
        if not 1 <= value <= 90:
            raise ValueError("must be between 1 and 90 days")
        return value

    @field_validator("mail_from")
    @classmethod
    def _valid_from(cls, value: str) -> str:
        from email.utils import parseaddr

        _, addr = parseaddr(value)
        if "@" not in addr or any(c in value for c in "\r\n"):
            raise ValueError("must be an address, e.g. 'نشرة <newsletter@example.com>'")
        return value

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.var_dir / 'nashra.sqlite3'}"
        if self.database_url.startswith("postgresql://"):
            # psycopg 3 is the driver we ship; accept the URL people paste.
            self.database_url = "postgresql+psycopg://" + self.database_url[len("postgresql://") :]
        return self

    # --- derived values ---
    @property
    def smtp(self) -> SmtpTarget:
        return SmtpTarget(self.smtp_url)

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def mail_from_address(self) -> str:
        from email.utils import parseaddr

        return parseaddr(self.mail_from)[1]

    @property
    def broker_url(self) -> str:
        if self.redis_url:
            return self.redis_url
        return f"sqla+sqlite:///{self.var_dir / 'broker.sqlite3'}"

    @property
    def broker_name(self) -> str:
        return "redis" if self.redis_url else "sqlalchemy (embedded SQLite)"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def outbox_dir(self) -> Path:
        return self.var_dir / "outbox"

    def require_production_secret(self) -> None:
        """The demo key is public (it is in this file); refuse it for real service."""
        if not self.demo and self.secret_key == DEMO_SECRET_KEY:
            raise ConfigError(
                "SECRET_KEY: the built-in demo key is refused outside `nashra demo`; "
                "set SECRET_KEY to a long random string (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        if not self.demo and len(self.secret_key) < 16:
            raise ConfigError("SECRET_KEY: must be at least 16 characters")


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's error into one line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = str(err["loc"][0]).upper() if err["loc"] else "?"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{name}: {msg}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


# What else must be forgotten with the settings (the database engine registers itself
# here, so that this module needs no import of the modules that read it).
_on_reset: list = []


def on_reset(callback) -> None:
    _on_reset.append(callback)


def reset_settings() -> None:
    """Forget cached settings (tests and the demo change the environment)."""
    get_settings.cache_clear()
    for callback in _on_reset:
        callback()
