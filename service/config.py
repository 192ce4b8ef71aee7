"""One settings class for the whole service.

Every knob an operator can turn is here, read from the environment (or a `.env`
file).  A bad value stops start-up with a message that names the variable, because
a worker that starts with a typo in SMTP_URL only fails later, at 3 a.m., mid-edition.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import zoneinfo
from email.utils import parseaddr, quote
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

try:  # IDNA 2008 (with UTS 46 mapping); without it, Python's own IDNA 2003 codec
    import idna as _idna
except ImportError:  # pragma: no cover — idna comes with httpx/requests
    _idna = None

DEMO_SECRET_KEY = "nashra-demo-secret-change-me"
# The demo's footer address (a made-up one): production must set its own POSTAL_ADDRESS
# (Settings.require_postal_address, checked before an edition is made).
DEMO_POSTAL_ADDRESS = "نشرة، شارع المدينة المنورة، عمّان، الأردن"


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


_HOST_CHARS = re.compile(r"[A-Za-z0-9._-]+")


def parse_smtp_urls(value: str) -> list[SmtpTarget]:
    """SMTP_URL as a comma-separated list of relays, each checked by SmtpTarget.

    A message never quotes an item (it may hold a password): it names the relay by its
    position.  A comma inside a user name or password is written %2C.
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("contains a control character (NUL, tab, newline…); remove it")
    items = [item.strip(" ") for item in value.split(",")]
    if items == [""]:
        raise ValueError("at least one relay is required, e.g. smtp://127.0.0.1:1025")
    many = len(items) > 1
    hint = " (relays are comma-separated: write a comma inside a user name or password as %2C)"
    targets = []
    for n, item in enumerate(items, 1):
        where = f"relay {n} of {len(items)}: " if many else ""
        if not item:
            raise ValueError(f"{where}empty (two commas in a row, or one at an end?)")
        # Our own checks first: urllib's and SmtpTarget's messages quote parts of the
        # item (the netloc, a "port" or "scheme" that is really half a password).
        try:
            parts = urlsplit(item)
            parts.port  # noqa: B018 — raises on a bad port
        except ValueError:
            raise ValueError(
                f"{where}not a valid URL (is the port a number from 1 to 65535?){hint if many else ''}"
            ) from None
        if parts.scheme not in SmtpTarget.SCHEMES:
            raise ValueError(
                f"{where}must start with smtp://, smtp+starttls:// or smtps://{hint if many else ''}"
            )
        if not parts.hostname:
            raise ValueError(f"{where}a host is required, e.g. smtp://127.0.0.1:1025")
        if not _valid_host(parts.hostname):
            raise ValueError(f"{where}the host is not a valid host name or IP address")
        try:
            targets.append(SmtpTarget(item))
        except ValueError:
            raise ValueError(f"{where}not a valid SMTP URL") from None
    return targets


def _valid_host(host: str) -> bool:
    if ":" in host:  # an IPv6 literal, [::1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    if host.isascii():
        return bool(_HOST_CHARS.fullmatch(host))
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return True


# An addr-spec every part of the send path can write as is: the MAIL FROM command, the
# From header (service/rendering/mime.py accepts the same shape), the Message-ID's domain.
_ASCII_ADDR = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+$")


def ascii_domain(domain: str) -> str:
    """A domain as SMTP and mail headers carry it: an ASCII one as it is, an
    internationalised one as A-labels (`أخبار.example` → `xn--igbicxr.example`).

    IDNA 2008 with the UTS 46 mapping (the `idna` package, as browsers do), else Python's
    IDNA 2003 codec.  Raises UnicodeError when the name cannot be encoded.
    """
    if domain.isascii():
        return domain
    if _idna is not None:
        return _idna.encode(domain, uts46=True).decode("ascii")
    return domain.encode("idna").decode("ascii")


def ascii_mail_from(value: str) -> str:
    """MAIL_FROM with its domain as A-labels, the display name untouched; ValueError
    (naming what to fix) for an address no message could be sent from.

    We do not speak SMTPUTF8, so the local part must be ASCII; the domain may be
    internationalised, and is sent as its A-label form (RFC 5890) in the envelope sender,
    the From header, the Message-IDs and the HELO name.
    """
    if any(c in value for c in "\r\n\x00"):
        raise ValueError("contains a line break or NUL; give one address, e.g. 'نشرة <newsletter@example.com>'")
    name, addr = parseaddr(value)
    local, at, domain = addr.rpartition("@")
    if not (at and local and domain):
        raise ValueError("must be an address, e.g. 'نشرة <newsletter@example.com>'")
    if not local.isascii():
        raise ValueError(
            "the part before @ must be ASCII (e.g. newsletter@…): a non-ASCII mailbox needs "
            "SMTPUTF8, which Nashra does not send; the domain may be Arabic"
        )
    try:
        encoded = f"{local}@{ascii_domain(domain)}"
    except UnicodeError as exc:
        raise ValueError(
            f"the domain {domain[:80]!r} is not a valid internationalised domain name "
            f"(IDNA 2008: {str(exc)[:120]})"
        ) from None
    labels = encoded.rpartition("@")[2].removesuffix(".").split(".")
    if not all(0 < len(label) <= 63 and label[0] != "-" and label[-1] != "-" for label in labels):
        raise ValueError(
            f"the domain {domain[:80]!r} is not a valid host name (an empty label, a label "
            "longer than 63 characters, or one that starts or ends with a hyphen)"
        )
    if not _ASCII_ADDR.match(encoded):
        raise ValueError(
            "must be a plain address, e.g. 'نشرة <newsletter@example.com>': no spaces or "
            "quotes before the @, a host name (letters, digits, dots, hyphens) after it"
        )
    if encoded == addr:
        return value
    # Swap the address in place (the last occurrence: a display name may quote it), so
    # that the display name is kept exactly as written.
    at_pos = value.rfind(addr)
    if at_pos >= 0:
        return value[:at_pos] + encoded + value[at_pos + len(addr):]
    return f'"{quote(name)}" <{encoded}>' if name else encoded


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # --- the public contract (README, Settings) ---
    database_url: str = ""
    redis_url: str | None = None
    # Prefix for every Redis key Celery uses: lets two deployments (or two test runs)
    # share one Redis without taking each other's tasks.
    redis_key_prefix: str = ""
    smtp_url: str = "smtp://127.0.0.1:1025"
    # The From header and the envelope sender's base.  An internationalised domain is
    # kept as A-labels (xn--…) from validation on; the part before @ must be ASCII.
    mail_from: str = "نشرة <newsletter@nashra.example>"
    public_url: str = "http://127.0.0.1:8000"
    secret_key: str = DEMO_SECRET_KEY
    feed_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    timezone: str = "Asia/Amman"
    # The footer's postal address: the default is the demo's, refused (with an empty one)
    # for editions once PUBLIC_URL is not local (require_postal_address).
    postal_address: str = DEMO_POSTAL_ADDRESS
    feed_allow_private: bool = False
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto `nashra web` believes (IPs or
    # CIDR networks, comma-separated).  Empty: nobody's, so a client cannot pick its
    # own address for the signup limit by sending the header.
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- the rest ---
    demo: bool = Field(default=False, alias="NASHRA_DEMO")
    # State (SQLite files, the outbox, demo logs, beat's schedule): VAR_DIR (NASHRA_VAR_DIR is
    # still read), else ./var under the directory the process starts in, never the package's.
    var_dir: Path = Field(default_factory=lambda: Path.cwd() / "var",
                          validation_alias=AliasChoices("VAR_DIR", "NASHRA_VAR_DIR"))
    site_name: str = "نشرة"
    # The List-Id of mail no newsletter sends; each newsletter's is `<slug>.` + its domain
    # (service/newsletters/catalogue.list_id) unless an admin set its own.
    list_id: str = "digest.nashra.example"
    log_format: Literal["auto", "json", "console"] = Field(default="auto", alias="LOG_FORMAT")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", alias="LOG_LEVEL")
    digest_daily_at: str = "07:00"  # local time in TIMEZONE
    digest_weekly_day: int = 5  # 0 = Monday … 5 = Saturday, the start of the Arab work week
    # Readers' own hours (service/editions/schedule.py): the local hours a reader may pick
    # for their digest (DIGEST_DAILY_AT's hour is always one of them; every slot leaves at
    # DIGEST_DAILY_AT's minute).  A slot missed while workers were down goes when they are
    # back, up to DIGEST_MAX_LATE_HOURS late, never twice; beat looks every DIGEST_CHECK_SECONDS.
    digest_hours: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [6, 7, 8, 12, 18, 21])
    digest_max_late_hours: int = Field(default=4, ge=1, le=23)
    digest_check_seconds: float = Field(default=60.0, ge=1, le=3600)
    # Readers' data (service/subscribers/privacy.py, consent.py): unconfirmed signups are
    # deleted after PENDING_DAYS; an unsubscribed reader after UNSUBSCRIBED_DAYS (a keyed
    # hash of the address stays, so an old list cannot add them back); the consent record
    # keeps the signup's IP in full or only its network (/24 for IPv4, /48 for IPv6).
    pending_days: int = Field(default=7, ge=1, le=90)
    unsubscribed_days: int = Field(default=30, ge=1, le=3650)
    consent_ip: Literal["full", "network"] = "network"
    # Origins (scheme://host[:port]) whose pages may call POST /api/subscribe from the browser.
    signup_allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Rows per send task: a batch costs a claim, a Celery message and a ramp up and down of
    # the SMTP sessions, so fewer, larger batches send faster (bench/bench_send_engine.py).
    batch_size: int = 500
    # A running batch renews its rows' lease every third of LEASE_SECONDS, so a dead
    # worker's rows are back in work within LEASE_SECONDS + SWEEP_SECONDS.
    lease_seconds: int = Field(default=25, ge=1, le=86_400)
    # How often beat runs the sweeper (expired leases, lost batches, due retries).
    sweep_seconds: float = Field(default=5.0, ge=1, le=3600)
    # A pooled SMTP session unused this long is closed (QUIT) and its slot of the cap freed.
    smtp_idle_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Backoff after a 4xx: RETRY_BASE_SECONDS, doubling per attempt up to RETRY_MAX_SECONDS (±50 %).
    retry_base_seconds: float = Field(default=60.0, gt=0, le=86_400)
    retry_max_seconds: float = Field(default=3600.0, gt=0, le=86_400)
    smtp_timeout: float = Field(default=30.0, gt=0, le=600)
    # The reply to the final dot may wait on the relay's content filter: RFC 5321
    # §4.5.3.2.6 gives it 10 minutes, so it has a timeout of its own.
    smtp_data_timeout: float = Field(default=600.0, gt=0, le=3600)
    # TCP connect and the server's greeting: a relay that accepts and never greets is set
    # aside after this long, and the next relay carries the mail.
    smtp_connect_timeout: float = Field(default=5.0, gt=0, le=300)
    # The final dot may have left and no answer came (reset, timeout, write error): send
    # the message once more with the same Message-ID (`resend`, as Postfix does), or keep
    # the row `unknown` for a person (`hold`: nashra edition resend-unknown).
    smtp_ambiguous: Literal["resend", "hold"] = "resend"
    # Concurrent SMTP (service/delivery/connection_cap.py): sessions one worker process
    # drives, the cap per relay across every worker on every host (a relay limits how
    # many connections one sender may hold), and the part of that cap kept for alerts.
    smtp_connections: int = Field(default=20, ge=1, le=1000)
    smtp_max_connections: int = Field(default=100, ge=1, le=10_000)
    smtp_alert_connections: int = Field(default=20, ge=1, le=10_000)
    # A relay that refuses us (auth, TLS, 5.7.x, connection refused) rests this long
    # while the other relays of SMTP_URL carry the mail (service/delivery/relays.py).
    smtp_relay_set_aside_seconds: float = Field(default=60.0, gt=0, le=86_400)
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
    # An editor's API token (which is also their login) opens nothing this many days
    # after `nashra editors add` or `rotate` made it.
    editor_token_days: int = Field(default=90, ge=1, le=3650)
    # Bounces and complaints (service/inbound/).  A bounce mailbox read over IMAP by
    # `nashra bounces fetch` (and by beat every BOUNCE_IMAP_SECONDS when set):
    # imaps://user:password@host[:993][/FOLDER]; read messages move to BOUNCE_IMAP_DONE_FOLDER.
    bounce_imap_url: str | None = None
    bounce_imap_done_folder: str = "Nashra-processed"
    bounce_imap_seconds: float = Field(default=300.0, ge=10, le=86_400)
    # SOFT_BOUNCE_LIMIT soft bounces (mailbox full, over quota…) for different editions
    # within SOFT_BOUNCE_DAYS suppress the address (reason soft_bounce); a delivery
    # report for the reader starts the count again.
    soft_bounce_limit: int = Field(default=3, ge=1, le=100)
    soft_bounce_days: int = Field(default=15, ge=1, le=365)
    # Provider webhooks (POST /webhooks/{provider}); a provider without its secret set is
    # refused (404).  SES: the SNS topic ARNs whose notifications are taken, comma-separated.
    ses_topic_arns: Annotated[list[str], NoDecode] = Field(default_factory=list)
    mailgun_webhook_signing_key: str | None = None
    postmark_webhook_user: str | None = None
    postmark_webhook_password: str | None = None
    # SendGrid's "Verification Key" (the base64 ECDSA public key of the signed Event Webhook).
    sendgrid_webhook_public_key: str | None = None
    # A signed event older (or further in the future) than this is refused as stale.
    webhook_max_age_seconds: int = Field(default=300, ge=30, le=3600)
    # Clicks (service/clicks/): links in mail go through GET /r/… and count for the
    # edition, variant and article — never for a reader.  CLICK_TRACKING=false sends links
    # straight to the site and counts nothing.  Counts and unique-click sketches older
    # than CLICK_DAYS are deleted by the hourly purge.
    click_tracking: bool = True
    click_days: int = Field(default=90, ge=1, le=3650)
    # The public archive (GET /archive and its Atom feed): off by default; an edition's
    # web copy is always reachable from its own mail, but `noindex` unless this is on.
    archive_public: bool = False
    # Signing up again with an active (or paused) address mails the reader their
    # preferences link, at most once per MANAGE_LINK_MINUTES.
    manage_link_minutes: int = Field(default=60, ge=1, le=10_080)
    # Confirmation budget against signup floods: beyond this many confirmation mails an
    # hour to one address domain, or overall, signups are still accepted but their
    # confirmations wait and go out slower (0 = no budget).
    confirm_budget_per_domain: int = Field(default=100, ge=0, le=1_000_000)
    confirm_budget_total: int = Field(default=2000, ge=0, le=10_000_000)
    # An optional self-hosted proof-of-work on the signup form and POST /api/subscribe
    # (no third party, no cookie); SIGNUP_CHALLENGE_BITS is its difficulty (leading zero
    # bits of a SHA-256): 16 is about 65,000 hashes, a median of 0.2-0.5 s in Chromium
    # with the CPU throttled 6× (bench/bench_signup_challenge.py); 17 came to 1 s there
    # when the machine was busy, 18 over it.
    signup_challenge: bool = False
    signup_challenge_bits: int = Field(default=16, ge=8, le=28)
    # `nashra web` processes (0 = one per core); `nashra web --workers N` overrides it.
    web_workers: int = Field(default=0, ge=0, le=64)
    # Flower's login, "user:password" (comma-separated for several): not read by Nashra but
    # by Flower itself (docker-compose.yml's `flower` profile refuses to start without it).
    flower_basic_auth: str | None = None

    @field_validator("feed_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [u.strip() for u in value.split(",") if u.strip()]
        return value

    @field_validator("ses_topic_arns", mode="before")
    @classmethod
    def _split_arns(cls, value: object) -> object:
        if isinstance(value, str):
            return [u.strip() for u in value.split(",") if u.strip()]
        return value

    @field_validator("flower_basic_auth")
    @classmethod
    def _valid_basic_auth(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        for pair in value.split(","):
            user, sep, password = pair.partition(":")
            if not (sep and user.strip() and password):
                raise ValueError("must be user:password (several joined by commas)")
        return value

    @field_validator("bounce_imap_url")
    @classmethod
    def _valid_imap_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("imap", "imaps") or not parts.hostname or not parts.username:
            raise ValueError("must be imaps://user:password@host[:port][/FOLDER] (imap:// only on a trusted network)")
        return value

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _trusted_proxies(cls, value: object) -> object:
        items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        for item in items if isinstance(items, list) else []:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item[:50]!r} is not an IP address or a CIDR network (e.g. 10.0.0.5, 10.0.0.0/24)") from None
        return items

    @field_validator("digest_hours", mode="before")
    @classmethod
    def _digest_hours(cls, value: object) -> object:
        items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        if not isinstance(items, list):
            return items
        hours = []
        for item in items:
            text = str(item).strip()
            if not (text.isascii() and text.isdigit() and int(text) < 24):
                raise ValueError(f"{text[:20]!r} is not an hour: give local hours 0 to 23, comma-separated (e.g. 6,7,12,20)")
            if int(text) not in hours:
                hours.append(int(text))
        if len(hours) > 12:
            raise ValueError("at most 12 hours: a short list readers can choose from")
        return sorted(hours)

    @field_validator("signup_allowed_origins", mode="before")
    @classmethod
    def _signup_origins(cls, value: object) -> object:
        items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        if not isinstance(items, list):
            return items
        origins = []
        for item in items:
            parts = urlsplit(str(item))
            try:
                parts.port  # noqa: B018 — raises on a bad port
            except ValueError:
                parts = None
            if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname
                    or parts.path not in ("", "/") or parts.query or parts.fragment or parts.username):
                raise ValueError(f"{str(item)[:80]!r} is not an origin: write scheme://host[:port], e.g. https://news.example")
            origins.append(f"{parts.scheme}://{parts.netloc.lower()}")
        return origins

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
        parse_smtp_urls(value)
        return value

    @field_validator("smtp_alert_connections")
    @classmethod
    def _alert_share_below_max(cls, value: int, info) -> int:
        maximum = info.data.get("smtp_max_connections")
        if maximum is not None and value >= maximum:
            raise ValueError(
                f"must be less than SMTP_MAX_CONNECTIONS ({maximum}): it is the part of the "
                "cap kept for alerts, and digests need at least one connection"
            )
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
        # Checked and encoded once, here: an address no message can carry used to pass
        # and then fail every row of every edition.
        return ascii_mail_from(value)

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
        """The first relay of SMTP_URL (callers that know only one)."""
        return self.smtp_targets[0]

    @property
    def smtp_targets(self) -> list[SmtpTarget]:
        """Every relay of SMTP_URL, in the order given (tried in that order)."""
        return parse_smtp_urls(self.smtp_url)

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def mail_from_address(self) -> str:
        """The bare sender address, its domain as A-labels: the envelope sender's base."""
        return parseaddr(self.mail_from)[1]

    @property
    def mail_from_header(self) -> str:
        """The From header's value: MAIL_FROM with its domain as A-labels."""
        return self.mail_from

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

    @property
    def public_url_is_local(self) -> bool:
        """PUBLIC_URL on this machine (the demo, a laptop, the tests), not a real site."""
        host = (urlsplit(self.public_url).hostname or "").lower()
        if host == "localhost" or host.endswith(".localhost"):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback  # 127.0.0.0/8, ::1
        except ValueError:
            return False

    def require_postal_address(self) -> None:
        """Every edition's footer carries a postal address (CAN-SPAM; mailbox providers'
        bulk-sender rules).  Outside a local PUBLIC_URL an edition needs one set
        explicitly: empty, or the demo's made-up default, is refused."""
        if self.public_url_is_local:
            return
        address = self.postal_address.strip()
        if not address or address == DEMO_POSTAL_ADDRESS:
            raise ConfigError(
                "POSTAL_ADDRESS: set the postal address every edition's footer must carry (in .env); "
                + ("it is empty" if not address else "the built-in one is the demo's")
                + f" and PUBLIC_URL ({self.public_url}) is not local, so no edition is sent"
            )

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
