"""What newsletters the site runs: their names, kinds, schedules, List-Id and From name.

A site starts with three (migration 0008 made them from the one subscription there was
before): `daily` and `weekly` digests and `alerts`.  An editor adds more (a Friday sports
round-up, a weekly long-read) and hides those it retires (`nashra newsletters …`, the
admins' page): a hidden newsletter is not offered and nothing new is made for it; its
readers keep their subscription should it come back.

Older callers that speak of one subscription — `frequency` daily|weekly|none and
`alerts` yes|no on the API, the CSV, the forms — are mapped onto the first three by
`legacy_slugs`.
"""

from __future__ import annotations

import re
from email.headerregistry import Address
from email.utils import parseaddr

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.config import Settings, get_settings
from service.models import Frequency, Newsletter, NewsletterKind

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
DAILY, WEEKLY, ALERTS = "daily", "weekly", "alerts"

# The three a site starts with: the same rows migration 0008 inserts (it keeps its own
# frozen copy, as migrations do); tests that empty the database put them back with this.
FIRST: tuple[dict, ...] = (
    {"slug": DAILY, "name": "النشرة اليومية", "description": "أهم أخبار اليوم في رسالة واحدة كل صباح.",
     "kind": NewsletterKind.digest, "frequency": Frequency.daily, "position": 0},
    {"slug": WEEKLY, "name": "النشرة الأسبوعية", "description": "خلاصة الأسبوع في رسالة واحدة.",
     "kind": NewsletterKind.digest, "frequency": Frequency.weekly, "position": 1},
    {"slug": ALERTS, "name": "عاجل", "description": "الأخبار العاجلة لحظة نشرها.",
     "kind": NewsletterKind.alerts, "frequency": None, "position": 2},
)


class NewsletterError(ValueError):
    """Bad newsletter input (an unknown slug, a taken name…); nothing was changed."""


def seed_first(session: Session) -> None:
    """Insert the first three if the table is empty (a test database just emptied)."""
    if session.scalar(sa.select(sa.func.count()).select_from(Newsletter)):
        return
    session.add_all(Newsletter(sections=[], offered=True, hidden=False, **row) for row in FIRST)
    session.flush()


def every(session: Session, *, hidden: bool = False) -> list[Newsletter]:
    """The newsletters in the order readers see them (hidden ones only if asked)."""
    query = sa.select(Newsletter).order_by(Newsletter.position, Newsletter.id)
    if not hidden:
        query = query.where(Newsletter.hidden.is_(False))
    return list(session.scalars(query))


def offered(session: Session) -> list[Newsletter]:
    """What the signup form offers."""
    return [n for n in every(session) if n.offered]


def by_slug(session: Session, slug: str) -> Newsletter | None:
    if not isinstance(slug, str) or not SLUG_RE.match(slug):
        return None
    return session.scalar(sa.select(Newsletter).where(Newsletter.slug == slug))


def find(session: Session, value: str | int) -> Newsletter:
    """By slug, or by id (the CLI's argument); NewsletterError when there is none."""
    found = None
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit() and len(value) < 10):
        found = session.get(Newsletter, int(value))
    if found is None and isinstance(value, str):
        found = by_slug(session, value.strip().lower())
    if found is None:
        raise NewsletterError(f"no newsletter {value!r}")
    return found


def legacy_slugs(frequency: str | Frequency | None, alerts: bool) -> list[str]:
    """The newsletters one subscription of before meant: its digest (daily or weekly;
    none: no digest) and, with alerts on, `alerts`."""
    slugs = []
    if frequency is not None and Frequency(frequency) is not Frequency.none:
        slugs.append(DAILY if Frequency(frequency) is Frequency.daily else WEEKLY)
    if alerts:
        slugs.append(ALERTS)
    return slugs


def default_alerts(session: Session) -> Newsletter | None:
    """The alerts newsletter an alert goes to when the editor names none: `alerts` if it is
    there and not hidden, else the first alerts newsletter."""
    alerts = [n for n in every(session) if n.kind is NewsletterKind.alerts]
    return next((n for n in alerts if n.slug == ALERTS), alerts[0] if alerts else None)


def list_domain(settings: Settings | None = None) -> str:
    """LIST_ID without its first label: `nashra.example` for `digest.nashra.example`."""
    ident = (settings or get_settings()).list_id
    return ident.split(".", 1)[1] if "." in ident else ident


def list_id(newsletter: Newsletter, settings: Settings | None = None) -> str:
    """Its List-Id header value: `<slug.nashra.example>` unless the editor set its own."""
    return f"<{newsletter.list_id or newsletter.slug + '.' + list_domain(settings)}>"


def from_header(newsletter: Newsletter | None, settings: Settings | None = None) -> str:
    """MAIL_FROM with the newsletter's own display name (the address is always MAIL_FROM's:
    one domain, one DKIM key, one reputation)."""
    settings = settings or get_settings()
    if newsletter is None or not newsletter.from_name:
        return settings.mail_from
    local, _, domain = parseaddr(settings.mail_from)[1].rpartition("@")
    return str(Address(display_name=newsletter.from_name, username=local, domain=domain))


def digest_for(session: Session, frequency: Frequency | str) -> Newsletter | None:
    """The site's own digest of a cadence (`daily`, `weekly`): what `nashra digest send
    --frequency F` and older callers mean when they name no newsletter."""
    return by_slug(session, DAILY if Frequency(frequency) is Frequency.daily else WEEKLY)
