"""Turning what a reader (or a CSV row) typed into values the schema accepts.

Each function either returns a clean value or raises InvalidInput; none writes.
"""

from __future__ import annotations

from collections.abc import Iterable

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from service.models import Frequency, Section
from service.subscribers.errors import InvalidInput

# RFC 5321 caps a path at 256 octets including the angle brackets: 254 for the address;
# and the local part (before the @) at 64 octets (4.5.3.1.1).  email_validator lets a
# longer local part through; relays refuse it, so we refuse it first.
MAX_EMAIL_LENGTH = 254
MAX_LOCAL_PART = 64

MSG_EMAIL_MISSING = "أدخل عنوان بريدك الإلكتروني."
MSG_EMAIL_INVALID = "عنوان البريد الإلكتروني غير صالح. تأكّد منه وحاول مرة أخرى."
MSG_SECTION_UNKNOWN = "اختر الأقسام من القائمة المعروضة فقط."
MSG_FREQUENCY = "اختر وتيرة الرسائل: يومية أو أسبوعية."
MSG_ALERTS = "اختر نعم أو لا للتنبيهات العاجلة."


def normalise_email(raw: object) -> str:
    """A deliverable-looking address in the form we store: ASCII, lower-cased.

    No DNS lookup (a signup must not wait on, or leak to, a resolver).  Addresses whose
    local part needs SMTPUTF8 are refused because not every relay on the way takes them.
    """
    if not isinstance(raw, str):
        raise InvalidInput("email", MSG_EMAIL_MISSING)
    value = raw.strip()
    if not value:
        raise InvalidInput("email", MSG_EMAIL_MISSING)
    # Checked before the parser sees it: a header injection or a 10 KB string is
    # refused outright, whatever the parser would make of it.
    if len(value) > MAX_EMAIL_LENGTH or any(ch in value for ch in "\r\n\t\0<>,;") or not value.isprintable():
        raise InvalidInput("email", MSG_EMAIL_INVALID)
    try:
        info = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        raise InvalidInput("email", MSG_EMAIL_INVALID) from None
    address = (info.ascii_email or info.normalized).lower()
    if len(address) > MAX_EMAIL_LENGTH or len(address.rpartition("@")[0].encode()) > MAX_LOCAL_PART:
        raise InvalidInput("email", MSG_EMAIL_INVALID)
    return address


def parse_frequency(raw: object, *, allow_none: bool = True) -> Frequency:
    allowed = {f.value for f in Frequency if allow_none or f is not Frequency.none}
    if not isinstance(raw, str) or raw.strip() not in allowed:
        raise InvalidInput("frequency", MSG_FREQUENCY)
    return Frequency(raw.strip())


def parse_yes_no(raw: object, field: str = "alerts") -> bool:
    if isinstance(raw, bool):
        return raw
    value = raw.strip().lower() if isinstance(raw, str) else ""
    if value in ("yes", "true", "1", "on", "نعم"):
        return True
    if value in ("no", "false", "0", "off", "لا"):
        return False
    raise InvalidInput(field, MSG_ALERTS)


# Built once: every signup asks it (building and hashing a statement per call cost more
# CPU than the lookup).
_KNOWN_SECTIONS = select(Section.id).where(Section.id.in_(bindparam("ids", expanding=True)))


def section_ids(session: Session, raw: Iterable[object], known: set[int] | None = None) -> list[int]:
    """Known section ids, in the order given, without repeats.

    Anything that is not the id of a row in `sections` is an error, not silently
    dropped: a reader who ticked a box must get what they ticked.  `known`: every
    section id, when the caller has just read them (no second query).
    """
    wanted: list[int] = []
    for item in raw:
        text = str(item).strip()
        if not text.isascii() or not text.isdigit() or len(text) > 9:
            raise InvalidInput("sections", MSG_SECTION_UNKNOWN)
        value = int(text)
        if value not in wanted:
            wanted.append(value)
    if not wanted:
        return []
    if known is None:
        known = set(session.scalars(_KNOWN_SECTIONS, {"ids": wanted}))
    if any(value not in known for value in wanted):
        raise InvalidInput("sections", MSG_SECTION_UNKNOWN)
    return wanted


def all_sections(session: Session, *, keep: list[int] | tuple[int, ...] | None = None) -> list[Section]:
    """The sections offered to readers, in the site's order: every one an admin has not
    hidden, and (`keep`) the hidden ones this reader chose, so that they can keep them."""
    shown = Section.hidden.is_(False)
    if keep:
        shown = shown | Section.id.in_(list(keep))
    return list(session.scalars(select(Section).where(shown).order_by(Section.position, Section.id)))
