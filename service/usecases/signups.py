"""Which newsletters a signup asked for, made into the subscriptions it writes.

A form names them (`newsletters`: slugs, the checkboxes of our form, the JSON API's
list); an older form speaks of one subscription — `frequency` daily|weekly and `alerts`
yes|no — and is mapped onto the site's first three (catalogue.legacy_slugs).  Either way
a slug that is not a newsletter readers may choose is refused by name, before anything is
written.  Sections apply to the digests chosen, among each digest's own sections.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.models import Newsletter, NewsletterKind
from service.newsletters import catalogue
from service.subscribers.errors import InvalidInput
from service.subscribers.signup_rows import Pick
from service.subscribers.validation import parse_frequency, parse_yes_no

MAX_NEWSLETTERS = 50
MSG_NEWSLETTERS = "اختر النشرات من القائمة المعروضة فقط."
MSG_UNKNOWN = "لا نُصدر نشرة باسم «{slug}». اختر النشرات من القائمة المعروضة فقط."
MSG_NONE = "اختر نشرة واحدة على الأقل."


def _shown(raw: str) -> str:
    """A slug as an error message may repeat it: printable, short."""
    return "".join(ch for ch in raw if ch.isprintable())[:64]


def wanted(newsletters: object, frequency: object, alerts: object) -> list[str] | None:
    """The slugs asked for, checked for shape only (no database): `newsletters` when the
    form sent it, else None — the caller maps the older `frequency`/`alerts`, validated
    here, with `legacy`."""
    if newsletters is None:
        parse_frequency(frequency, allow_none=False)
        parse_yes_no(alerts)
        return None
    if not isinstance(newsletters, list) or len(newsletters) > MAX_NEWSLETTERS:
        raise InvalidInput("newsletters", MSG_NEWSLETTERS)
    slugs = []
    for item in newsletters:
        if not isinstance(item, str) or not item.strip():
            raise InvalidInput("newsletters", MSG_NEWSLETTERS)
        slugs.append(item.strip().lower())
    if not slugs:
        raise InvalidInput("newsletters", MSG_NONE)
    return slugs


def legacy(frequency: object, alerts: object) -> list[str]:
    """The older words (already checked by `wanted`) as slugs of the first three."""
    return catalogue.legacy_slugs(parse_frequency(frequency, allow_none=False), parse_yes_no(alerts))


# Built once and read on the session's Connection: every signup asks it, and rows (not
# ORM objects) are all a signup needs of the newsletters (usecases/subscribers.sign_up).
_N = Newsletter.__table__.c
_EVERY = sa.select(_N.slug, _N.id, _N.kind, _N.sections, _N.hidden, _N.offered).order_by(_N.position, _N.id)


def choose(session: Session, slugs: list[str], *, legacy_words: bool = False) -> list:
    """The newsletters the slugs name (rows: slug, id, kind, sections), in the site's
    order; InvalidInput naming the first that is unknown, hidden or (asked for by name)
    not offered to readers."""
    rows = session.connection().execute(_EVERY).all()
    known = {row.slug: row for row in rows}
    for slug in slugs:
        newsletter = known.get(slug)
        if newsletter is None or newsletter.hidden or not (newsletter.offered or legacy_words):
            raise InvalidInput("newsletters", MSG_UNKNOWN.format(slug=_shown(slug)))
    wanted = set(slugs)
    chosen = [row for row in rows if row.slug in wanted]
    if not chosen:
        raise InvalidInput("newsletters", MSG_NONE)
    return chosen


def for_digest(newsletter, sections: list[int]) -> tuple[int, ...]:
    """The reader's sections that this digest draws from (all of theirs if it draws from
    every section); none left means all of the digest's."""
    if not newsletter.sections:
        return tuple(sections)
    own = set(newsletter.sections)
    return tuple(s for s in sections if s in own)


def picks(newsletters: list, sections: list[int]) -> list[Pick]:
    """The subscription rows a signup writes (signup_rows.Pick), from newsletters (rows of
    `choose`, or Newsletter objects): each one's id, kind and sections."""
    out = []
    for n in newsletters:
        digest = n.kind is NewsletterKind.digest
        out.append(Pick(n.id, digest, for_digest(n, sections) if digest else ()))
    return out

