"""Newsletters, for admins (the sections page's «النشرات») and operators (`nashra newsletters …`):
list them with their readers, add one, change one, hide (retire) one or bring it back.

Every change is one transaction and one audit line.  Whatever an admin types is checked
here, once for both doors, before anything is written: a bad value raises NewsletterError
with a message in Arabic for the page and the console alike, and nothing is changed.

What is refused, and why:
* a slug that is not 1-64 of a-z, 0-9 and inner hyphens (it is the stable name the API, the
  CSV and the List-Id use), or one, a name or a List-Id another newsletter has;
* the first three's slugs changing: `daily`, `weekly` and `alerts` are what the older API
  words (`frequency`, `alerts`) are mapped onto (catalogue.legacy_slugs);
* an hour the readers are not offered (DIGEST_HOURS), a day outside 0-6, a section that
  does not exist, an hour or a day or sections on an alerts newsletter;
* a List-Id that is not a dot-atom of at most 200 characters with a dot (RFC 2919), a From
  name with a line break (it goes into a header), any NUL or control character;
* another kind for a newsletter readers are on: their choices are of its kind.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.articles.sections import SectionError, find_section
from service.config import get_settings
from service.db import session_scope
from service.logs import get_logger
from service.models import (
    Edition,
    EditionStatus,
    Frequency,
    Newsletter,
    NewsletterKind,
    Section,
    Subscriber,
    SubscriberStatus,
    Subscription,
    audit,
)
from service.newsletters import catalogue
from service.subscribers.hours import WEEKDAYS_AR, default_hour, offered_hours

log = get_logger(__name__)

NewsletterError = catalogue.NewsletterError
NAME_MAX = 128
FROM_NAME_MAX = 128
DESCRIPTION_MAX = 1000
LIST_ID_MAX = 200
FIRST_SLUGS = (catalogue.DAILY, catalogue.WEEKLY, catalogue.ALERTS)
# RFC 5322 dot-atom-text; RFC 2919 wants at least one dot (list-label "." namespace).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
LIST_ID_RE = re.compile(rf"^{_ATOM}(?:\.{_ATOM})+$")
# What `edit` may change (anything not passed is left as it is).
FIELDS = ("name", "slug", "kind", "frequency", "hour", "day", "sections", "from_name", "list_id",
          "description", "offered")


@dataclass(frozen=True)
class Row:
    id: int
    slug: str
    name: str
    description: str
    kind: str  # digest | alerts
    frequency: str | None  # daily | weekly for a digest
    default_hour: int | None
    default_weekday: int | None
    schedule: str  # in Arabic, as the page shows it
    schedule_en: str  # for the console
    sections: list[str]  # section names; [] = every section
    section_ids: list[int]
    from_name: str | None
    list_id: str  # the List-Id header its mail carries
    own_list_id: str | None  # what the admin set (None: made from its slug)
    offered: bool  # on the signup form: offered and not hidden
    hidden: bool
    readers: int  # confirmed readers on it
    position: int
    # Its editions scheduled and not yet gone (a special edition or an alert with send_at):
    # hiding it does not stop them — an editor made each on purpose — so hiding says so.
    scheduled: list[int] = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------- checks


def _fail(message: str):
    raise NewsletterError(message)


def _no_controls(value: str, what: str, *, newlines: bool = False) -> str:
    for ch in value:
        if ch in "\r\n" and not newlines:
            _fail(f"{what}: لا يُقبل فيه سطر جديد.")
        if ch == "\x00" or unicodedata.category(ch) in ("Cc", "Cs", "Co") and not (newlines and ch in "\r\n\t"):
            _fail(f"{what} فيه محرف تحكّم (U+{ord(ch):04X}): احذفه.")
    return value


def _text(value, what: str) -> str:
    if not isinstance(value, str):
        _fail(f"{what}: نص غير صالح.")
    return value


def clean_name(value) -> str:
    name = " ".join(_no_controls(_text(value, "الاسم"), "الاسم").split())
    if not name or len(name) > NAME_MAX:
        _fail(f"اسم النشرة من حرف واحد إلى {NAME_MAX} حرفاً.")
    return name


def clean_slug(value) -> str:
    slug = _no_controls(_text(value, "المعرّف"), "المعرّف").strip().lower()
    if not catalogue.SLUG_RE.match(slug):
        _fail(f"المعرّف {slug[:70]!r} غير صالح: من 1 إلى 64 من a-z و0-9 والشرطة في وسطه (مثل sports-friday).")
    return slug


def clean_kind(value) -> NewsletterKind:
    try:
        return NewsletterKind(value)
    except ValueError:
        _fail("نوع النشرة إما digest (موجز) أو alerts (عاجل).")


def clean_frequency(value) -> Frequency:
    if value in (Frequency.daily, Frequency.weekly, "daily", "weekly"):
        return Frequency(value)
    _fail("وتيرة الموجز إما daily (يومي) أو weekly (أسبوعي).")


def _small_int(value, what: str) -> int | None:
    """None for "not set" (None, "", "default"): the site's default."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "default")):
        return None
    if isinstance(value, bool):
        _fail(f"{what}: رقم غير صالح.")
    if isinstance(value, str):
        _no_controls(value, what)
        value = value.strip()
        if not (value.isascii() and value.isdigit() and len(value) <= 2):
            _fail(f"{what}: رقم غير صالح ({value[:20]!r}).")
        value = int(value)
    if not isinstance(value, int):
        _fail(f"{what}: رقم غير صالح.")
    return value


def clean_hour(value) -> int | None:
    hour = _small_int(value, "الساعة")
    if hour is not None and hour not in offered_hours():
        hours = "، ".join(f"{h:02d}:00" for h in offered_hours())
        _fail(f"الساعة {hour} ليست من الساعات المعروضة على القراء ({hours}).")
    return hour


def clean_day(value) -> int | None:
    day = _small_int(value, "اليوم")
    if day is not None and not 0 <= day <= 6:
        _fail("اليوم من 0 (الاثنين) إلى 6 (الأحد).")
    return day


def clean_sections(session: Session, values) -> list[int]:
    """Section slugs, names or ids → ids in the order given; NewsletterError for an unknown one."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    ids: list[int] = []
    for value in values:
        if isinstance(value, str):
            _no_controls(value, "القسم")
        try:
            section = find_section(session, value)
        except SectionError:
            shown = value.strip()[:64] if isinstance(value, str) else value
            _fail(f"لا يوجد قسم {shown!r} (الأقسام: `nashra sections list`).")
        if section.id not in ids:
            ids.append(section.id)
    return ids


def clean_from_name(value) -> str | None:
    if value is None:
        return None
    name = _no_controls(_text(value, "اسم المرسل"), "اسم المرسل").strip()
    if len(name) > FROM_NAME_MAX:
        _fail(f"اسم المرسل {FROM_NAME_MAX} حرفاً على الأكثر.")
    return name or None


def clean_list_id(value) -> str | None:
    if value is None:
        return None
    ident = _no_controls(_text(value, "List-Id"), "List-Id").strip()
    if ident.startswith("<") and ident.endswith(">"):
        ident = ident[1:-1].strip()
    if not ident:
        return None
    if len(ident) > LIST_ID_MAX or not LIST_ID_RE.match(ident):
        _fail(f"List-Id {ident[:80]!r} غير صالح: نقاط بين أجزاء من حروف لاتينية وأرقام (مثل sports.nashra.example)، "
              f"{LIST_ID_MAX} حرفاً على الأكثر.")
    return ident


def clean_description(value) -> str:
    if value is None:
        return ""
    text = _no_controls(_text(value, "الوصف"), "الوصف", newlines=True).strip()
    if len(text) > DESCRIPTION_MAX:
        _fail(f"الوصف {DESCRIPTION_MAX} حرف على الأكثر.")
    return text


def _refuse_taken(session: Session, newsletter_id: int | None, **values) -> None:
    for column, label in (("name", "الاسم"), ("slug", "المعرّف"), ("list_id", "List-Id")):
        value = values.get(column)
        if value is None:
            continue
        other = session.scalar(sa.select(Newsletter).where(getattr(Newsletter, column) == value))
        if other is not None and other.id != newsletter_id:
            _fail(f"{label} {value!r} لنشرة أخرى: {other.name} ({other.slug}).")
    # One made from a slug counts too, both ways: two lists must never share a List-Id.
    ident = values.get("list_id")
    if ident is not None:
        for other in session.scalars(sa.select(Newsletter).where(Newsletter.list_id.is_(None))):
            if other.id != newsletter_id and catalogue.list_id(other) == f"<{ident}>":
                _fail(f"List-Id {ident!r} لنشرة أخرى: {other.name} ({other.slug}).")
    elif values.get("slug") is not None:
        made = catalogue.list_id(Newsletter(slug=values["slug"], list_id=None))[1:-1]
        other = session.scalar(sa.select(Newsletter).where(Newsletter.list_id == made))
        if other is not None and other.id != newsletter_id:
            _fail(f"List-Id {made!r} (من المعرّف) لنشرة أخرى: {other.name} ({other.slug}).")


def _flush(session: Session) -> None:
    """Write now; two admins saving the same name at once: the loser's is refused (the
    unique constraints decide), not a 500."""
    try:
        with session.begin_nested():
            session.flush()
    except sa.exc.IntegrityError:
        _fail("الاسم أو المعرّف أو List-Id أُخذ للتو لنشرة أخرى: أعد تحميل الصفحة.")


def _check_shape(n: Newsletter) -> None:
    """What a kind allows: alerts have no cadence, hour, day or sections; a daily digest no day."""
    if n.kind is NewsletterKind.alerts:
        if n.default_hour is not None or n.default_weekday is not None or n.sections:
            _fail("النشرة العاجلة تُرسل لحظة يرسلها المحرر: لا ساعة لها ولا يوم ولا أقسام.")
        n.frequency = None
        return
    if n.frequency is None:
        n.frequency = Frequency.daily
    if n.frequency is Frequency.daily and n.default_weekday is not None:
        _fail("الموجز اليومي لا يوم له: اليوم للموجز الأسبوعي.")


def _has_readers(session: Session, newsletter_id: int) -> bool:
    return session.scalar(sa.select(sa.literal(1)).where(Subscription.newsletter_id == newsletter_id).limit(1)) \
        is not None


# ---------------------------------------------------------------- reading


def _schedule(n: Newsletter) -> tuple[str, str]:
    if n.kind is NewsletterKind.alerts:
        return "لحظة يرسلها المحرر", "when an editor sends one"
    hour = n.default_hour if n.default_hour is not None else default_hour()
    clock = f"{hour:02d}:00"
    default = "" if n.default_hour is not None else " (site default)"
    if n.frequency is Frequency.weekly:
        day = n.default_weekday if n.default_weekday is not None else get_settings().digest_weekly_day
        days_en = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
        return f"أسبوعياً، {WEEKDAYS_AR[day]} {clock}", f"weekly, {days_en[day]} {clock}{default}"
    return f"يومياً {clock}", f"daily {clock}{default}"


def _readers(session: Session) -> dict[int, int]:
    """newsletter id → confirmed readers on it (one query)."""
    rows = session.execute(
        sa.select(Subscription.newsletter_id, sa.func.count())
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(Subscriber.status == SubscriberStatus.active).group_by(Subscription.newsletter_id))
    return dict(rows.all())


def _scheduled(session: Session) -> dict[int, list[int]]:
    """newsletter id → ids of its scheduled editions still waiting (one query)."""
    found: dict[int, list[int]] = {}
    for newsletter_id, edition_id in session.execute(
            sa.select(Edition.newsletter_id, Edition.id)
            .where(Edition.status == EditionStatus.draft, Edition.send_at.is_not(None))
            .order_by(Edition.send_at, Edition.id)):
        found.setdefault(newsletter_id, []).append(edition_id)
    return found


def _row(n: Newsletter, readers: int, names: dict[int, str], scheduled: list[int]) -> Row:
    schedule, schedule_en = _schedule(n)
    ids = [i for i in (n.sections or []) if isinstance(i, int)]
    return Row(n.id, n.slug, n.name, n.description or "", n.kind.value, n.frequency.value if n.frequency else None,
               n.default_hour, n.default_weekday, schedule, schedule_en, [names.get(i, f"#{i}") for i in ids], ids,
               n.from_name, catalogue.list_id(n), n.list_id, bool(n.offered and not n.hidden), bool(n.hidden),
               readers, n.position, scheduled)


def _rows(session: Session, newsletters: list[Newsletter]) -> list[Row]:
    readers = _readers(session)
    names = dict(session.execute(sa.select(Section.id, Section.name)).all())
    scheduled = _scheduled(session)
    return [_row(n, readers.get(n.id, 0), names, scheduled.get(n.id, [])) for n in newsletters]


def listing() -> list[Row]:
    """Every newsletter, hidden ones too, in the site's order."""
    with session_scope() as s:
        return _rows(s, catalogue.every(s, hidden=True))


def get(which: str | int) -> Row:
    with session_scope() as s:
        return _rows(s, [_find(s, which)])[0]


def _find(session: Session, which: str | int) -> Newsletter:
    if isinstance(which, str):
        _no_controls(which, "النشرة")
    try:
        return catalogue.find(session, which)
    except NewsletterError:
        shown = which.strip()[:64] if isinstance(which, str) else which
        raise NewsletterError(f"لا توجد نشرة {shown!r} (النشرات: `nashra newsletters list`).") from None


# ---------------------------------------------------------------- changing


def add(name, *, slug, kind, frequency=None, hour=None, day=None, sections=None, from_name=None, list_id=None,
        description=None, offered: bool = True, actor: str) -> Row:
    """A new newsletter, last in the site's order; NewsletterError (nothing written) if a
    value is refused."""
    with session_scope(write=True) as s, s.no_autoflush:
        kind = clean_kind(kind)
        n = Newsletter(name=clean_name(name), slug=clean_slug(slug), kind=kind,
                       frequency=clean_frequency(frequency) if frequency not in (None, "") else None,
                       default_hour=clean_hour(hour), default_weekday=clean_day(day),
                       sections=clean_sections(s, sections), from_name=clean_from_name(from_name),
                       list_id=clean_list_id(list_id), description=clean_description(description),
                       offered=bool(offered), hidden=False)
        if kind is NewsletterKind.alerts and frequency not in (None, ""):
            _fail("النشرة العاجلة لا وتيرة لها: تُرسل لحظة يرسلها المحرر.")
        _check_shape(n)
        _refuse_taken(s, None, name=n.name, slug=n.slug, list_id=n.list_id)
        n.position = (s.scalar(sa.select(sa.func.max(Newsletter.position))) or 0) + 1
        s.add(n)
        _flush(s)
        audit(s, actor, "newsletter.add", f"newsletter:{n.id}", slug=n.slug, name=n.name, kind=n.kind.value,
              frequency=n.frequency.value if n.frequency else None, hour=n.default_hour, day=n.default_weekday,
              sections=list(n.sections), from_name=n.from_name, list_id=n.list_id, offered=n.offered)
        row = _rows(s, [n])[0]
    log.info("newsletter_added", newsletter_id=row.id, kind=row.kind, actor=actor)
    return row


def _apply(session: Session, n: Newsletter, changes: dict) -> dict:
    """Set the cleaned values on `n`; returns {field: (before, after)} of what changed."""
    cleaners = {
        "name": clean_name, "slug": clean_slug, "kind": clean_kind, "description": clean_description,
        "frequency": lambda v: clean_frequency(v) if v not in (None, "") else None,
        "hour": clean_hour, "day": clean_day, "from_name": clean_from_name, "list_id": clean_list_id,
        "sections": lambda v: clean_sections(session, v), "offered": bool,
    }
    columns = {"hour": "default_hour", "day": "default_weekday"}
    done = {}
    for field, value in changes.items():
        column = columns.get(field, field)
        before, after = getattr(n, column), cleaners[field](value)
        if before != after:
            setattr(n, column, after)
            done[field] = (before, after)
    return done


def edit(which: str | int, *, actor: str, **changes) -> tuple[Row, list[str]]:
    """Change what is given (FIELDS) of one newsletter; returns it and the names of the
    fields that changed ([]: nothing did).  NewsletterError, nothing written, if refused."""
    unknown = set(changes) - set(FIELDS)
    if unknown:
        raise TypeError(f"edit() has no field {sorted(unknown)}")
    with session_scope(write=True) as s:
        n = _find(s, which)
        old_slug, old_kind = n.slug, n.kind
        with s.no_autoflush:  # checked before anything is written (a taken name is a refusal, not a 500)
            done = _apply(s, n, changes)
            if "slug" in done and old_slug in FIRST_SLUGS:
                _fail(f"المعرّف {old_slug!r} ثابت: إليه تُترجم كلمات الواجهة القديمة (frequency، alerts).")
            if "kind" in done and _has_readers(s, n.id):
                _fail("لا يتغير نوع نشرة عليها قراء: اختياراتهم من نوعها. أضف نشرة جديدة بدلاً منها.")
            if "kind" in done and old_kind is NewsletterKind.digest:
                n.frequency = None  # its cadence goes with the kind
            _check_shape(n)
            _refuse_taken(s, n.id, name=n.name, slug=n.slug, list_id=n.list_id)
        if not done:
            return _rows(s, [n])[0], []
        _flush(s)
        audit(s, actor, "newsletter.edit", f"newsletter:{n.id}", slug=n.slug,
              **{k: _plain(after) for k, (_, after) in done.items()})
        row = _rows(s, [n])[0]
    log.info("newsletter_edited", newsletter_id=row.id, fields=sorted(done), actor=actor)
    return row, sorted(done)


def _plain(value):
    """A value as the audit log's JSON holds it."""
    return value.value if hasattr(value, "value") else value


def hide(which: str | int, hidden: bool = True, *, actor: str) -> tuple[Row, bool]:
    """Retire a newsletter (not offered, nothing new made for it; its readers keep their
    subscription) or bring it back; (its row, whether anything changed)."""
    with session_scope(write=True) as s:
        n = _find(s, which)
        changed = n.hidden != hidden
        if changed:
            n.hidden = hidden
            s.flush()
            audit(s, actor, "newsletter.hide" if hidden else "newsletter.show", f"newsletter:{n.id}", slug=n.slug)
        row = _rows(s, [n])[0]
    if changed:
        log.info("newsletter_hidden" if hidden else "newsletter_shown", newsletter_id=row.id, actor=actor)
    return row, changed


def section_choices() -> list[tuple[int, str]]:
    """(id, name) of every section in the site's order, for a newsletter's form."""
    with session_scope() as s:
        return [(sec.id, sec.name) for sec in s.scalars(sa.select(Section).order_by(Section.position, Section.id))]


def digest_choices() -> list[Row]:
    """The digest newsletters a special edition may go to (not hidden), with their readers."""
    return [r for r in listing() if r.kind == NewsletterKind.digest.value and not r.hidden]


def alerts_choices() -> list[Row]:
    """The alerts newsletters an alert may go to (not hidden)."""
    return [r for r in listing() if r.kind == NewsletterKind.alerts.value and not r.hidden]
