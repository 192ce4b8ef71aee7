"""The consent record: what a reader agreed to, when, and from where.

One `consents` row at signup (the form, the embed, the signup API) and one at
confirmation: the time, the client's IP — in full, or only its network (/24 for IPv4,
/48 for IPv6) with CONSENT_IP=network, the default —, the user agent, the URL of the
form, and the consent sentence itself with its version.  It is what a regulator or a
mailbox provider's abuse desk asks for, and what the reader sees on their preferences
page and in their export.  Nothing of it is ever logged; it goes with the reader when
they are forgotten.

The consent sentences are versioned here: a site's own form (POST /api/subscribe) shows
the sentence of a version Nashra knows and sends that version; a new wording is a new
version, and the old ones stay so that old records still say what was shown.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.config import get_settings
from service.models import Consent, Subscriber, utcnow

TEXTS = {
    "2026-12": ("أوافق على أن ترسل لي {site} رسائل بالبريد الإلكتروني وفق اختياراتي أعلاه. يمكنني إلغاء "
                "الاشتراك في أي وقت من رابط في كل رسالة، ولن يُستخدم بريدي لأي غرض آخر."),
}
CURRENT = "2026-12"
USER_AGENT_MAX = 500
URL_MAX = 2000


def text_of(version: str, site_name: str | None = None) -> str | None:
    template = TEXTS.get(version)
    return template.format(site=site_name or get_settings().site_name) if template else None


def known(version: object) -> bool:
    return isinstance(version, str) and version in TEXTS


def ip_for_record(ip: str | None, mode: str | None = None) -> str | None:
    """The client's address as CONSENT_IP says to keep it: in full, or its /24 (/48)."""
    try:
        address = ipaddress.ip_address((ip or "").strip())
    except ValueError:
        return None
    if (mode or get_settings().consent_ip) == "full":
        return str(address)
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def _printable(value: object, limit: int) -> str | None:
    if not isinstance(value, str):
        return None
    text = "".join(c for c in value if c.isprintable() and not "\ud800" <= c <= "\udfff").strip()
    return text[:limit] or None


def clean_url(value: object) -> str | None:
    """An absolute http(s) URL of at most URL_MAX characters, or None."""
    text = _printable(value, URL_MAX + 1)
    if text is None or len(text) > URL_MAX or any(c.isspace() for c in text):
        return None
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    return text if parts.scheme in ("http", "https") and parts.netloc else None


@dataclass(frozen=True)
class Evidence:
    """Where a signup or a confirmation came from (the edge reads it off the request)."""

    ip: str | None = None
    user_agent: str | None = None
    form_url: str | None = None
    text_version: str | None = None


def record(session: Session, subscriber_id: int, event: str, evidence: Evidence | None, *, source: str | None = None,
           now: dt.datetime | None = None) -> None:
    evidence = evidence or Evidence()
    version = evidence.text_version if known(evidence.text_version) else None
    session.add(Consent(
        subscriber_id=subscriber_id, event=event, at=now or utcnow(), source=(source or "")[:200] or None,
        ip=ip_for_record(evidence.ip), user_agent=_printable(evidence.user_agent, USER_AGENT_MAX),
        form_url=clean_url(evidence.form_url), text_version=version,
        text=text_of(version) if version else None,
    ))


def history(session: Session, sub: Subscriber) -> list[dict]:
    """The reader's consent record, oldest first, as they are shown it."""
    rows = session.scalars(sa.select(Consent).where(Consent.subscriber_id == sub.id).order_by(Consent.at, Consent.id))
    out = [{"event": c.event, "at": c.at.isoformat(), "source": c.source, "ip": c.ip, "user_agent": c.user_agent,
            "form_url": c.form_url, "consent_text_version": c.text_version, "consent_text": c.text} for c in rows]
    if not out and sub.consented_at is not None:  # a reader from before the record existed
        out.append({"event": "signup", "at": sub.consented_at.isoformat(), "source": sub.consent_source, "ip": None,
                    "user_agent": None, "form_url": None, "consent_text_version": None, "consent_text": None})
    return out
