"""Tomorrow's digest, today: what a digest newsletter's next scheduled edition holds, per
audience variant, with nothing written (`nashra digest preview`, the editors' digest page).

Each digest newsletter (`daily`, `weekly`, a Friday sports round-up…) is previewed on its
own: named by its slug, or by a frequency for the site's own two.  Readers choose their
hour (and weekly day) for each, and beat makes one edition per newsletter and slot
(service/editions/schedule.py).  The preview shows one slot: by default the next one
that has readers, whatever its hour; or the one the editor picks (`hour`, `weekday`);
or, for one subscriber, theirs.  It lists the upcoming slots that have readers, each
with its readers, for the editor to pick from.  The edition is the one beat would make
at that slot's time (service/editions/upcoming.py), with that slot's own window (a
later slot holds what was ingested after an earlier one's cut-off);
the variants and their readers are the planner's (`audience_by_variant`); each variant is
rendered by the same `render_variant_for` that renders the real one, which also says
which articles the size budget (HTML_BUDGET_BYTES, under Gmail's clipping) left out.
Everything happens in a transaction that is rolled back.  Links that are per reader in
the real mail (unsubscribe, preferences) point at the site's front page.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from service.articles.sections import SectionError, find_section
from service.config import get_settings
from service.db import session_factory
from service.delivery.planner import audience_by_variant
from service.editions.digests import alerted_article_ids
from service.editions.schedule import DigestRef, digest_ref
from service.editions.upcoming import (
    UpcomingSlot,
    next_slot,
    readers_of,
    slot_digest,
    upcoming_slots,
)
from service.editions.variants import (
    ALERTED_PREFIX,
    HTML_BUDGET_BYTES,
    parse_variant,
    render_variant_for,
    split_variant,
)
from service.models import (
    Frequency,
    Newsletter,
    NewsletterKind,
    Section,
    Subscriber,
    SubscriberStatus,
    Suppression,
    fits_id,
    utcnow,
)
from service.newsletters import catalogue, membership
from service.rendering.personalise import personalise
from service.subscribers.hours import (
    WEEKDAYS_AR,
    effective_hour,
    effective_weekday,
    not_paused,
    offered_hours,
    slot_minute,
)
from service.usecases import audience

MAX_RENDERED = 10  # variants rendered on one page; the others are listed with their readers
ALL = "all"


WEEKDAYS_EN = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_HOUR = re.compile(r"([0-9]{1,2})(?::([0-9]{2}))?")
_CODE = re.compile(r"(?:d([0-6]))?h([0-9]{2})")  # Slot.code: h07 (daily), d5h07 (weekly, Saturday)


class PreviewRefused(ValueError):
    """The preview cannot be made as asked (unknown section, a reader who gets no digest,
    an hour or a day no reader can choose).  `arabic`: what the editors' page says."""

    def __init__(self, message: str, arabic: str | None = None):
        super().__init__(message)
        self.arabic = arabic or "لا يمكن عرض هذه المعاينة: " + message


def _hours_text(newsletter=None) -> str:
    return ", ".join(f"{h:02d}" for h in offered_hours(newsletter=newsletter))


def parse_hour(value) -> int | None:
    """A digest hour as an editor gives it ("18", "7", "07:00"; None or "" for none), on
    the newsroom's clock (TIMEZONE): 0 to 23, or PreviewRefused.  Whether a digest leaves
    then (an offered hour, or the slot of readers on another clock) is `_choose_slot`'s."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise PreviewRefused("the hour is a number", "الساعة رقم من 0 إلى 23.")
    text = str(value).strip()
    found = _HOUR.fullmatch(text) if len(text) <= 5 else None
    if found is None:
        raise PreviewRefused(f"{text[:20]!r} is not an hour: give one of {_hours_text()}",
                             f"هذه ليست ساعة. الساعات التي يختارها القراء: {_hours_text()}.")
    hour = int(found.group(1))
    if found.group(2) is not None and int(found.group(2)) != slot_minute():
        raise PreviewRefused(f"digests leave at minute {slot_minute():02d} of the hour",
                             f"تُرسل النشرات في الدقيقة {slot_minute():02d} من الساعة.")
    if hour > 23:
        raise _no_digest_at(hour)
    return hour


def _no_digest_at(hour: int, newsletter=None) -> PreviewRefused:
    hours = _hours_text(newsletter)
    return PreviewRefused(f"no digest leaves at {hour}: readers choose one of {hours} (DIGEST_HOURS)",
                          f"لا نشرة في الساعة {hour}. الساعات التي يختارها القراء: {hours}.")


def parse_weekday(value) -> int | None:
    """A weekly digest's day: 0 (Monday) to 6 (Sunday), or its English or Arabic name."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise PreviewRefused("the day is 0 (Monday) to 6 (Sunday)", "اليوم رقم من 0 (الاثنين) إلى 6 (الأحد).")
    text = str(value).strip()
    if text in {"0", "1", "2", "3", "4", "5", "6"}:
        return int(text)
    for i, (en, ar) in enumerate(zip(WEEKDAYS_EN, WEEKDAYS_AR, strict=True)):
        if text.lower() in (en.lower(), en.lower()[:3]) or text == ar:
            return i
    raise PreviewRefused(f"{text[:20]!r} is not a day: 0 (Monday) to 6 (Sunday), or its name",
                         "هذا ليس يوماً: من 0 (الاثنين) إلى 6 (الأحد)، أو اسمه.")


def parse_slot_code(code) -> tuple[int | None, int | None]:
    """(hour, weekday) of a slot's code as the editors' page sends it (h18, d5h07)."""
    if code is None or code == "":
        return None, None
    found = _CODE.fullmatch(code) if isinstance(code, str) and len(code) <= 6 else None
    if found is None:
        raise PreviewRefused("not a digest slot", "هذا ليس موعد نشرة. اختر موعداً من القائمة.")
    weekday = int(found.group(1)) if found.group(1) is not None else None
    return parse_hour(found.group(2)), weekday


@dataclass(frozen=True)
class SlotLine:
    """One digest slot as the preview shows it: when it leaves and to how many."""

    frequency: str
    hour: int  # on the newsroom's clock (TIMEZONE), like the date and day
    weekday: int | None  # weekly only
    date: dt.date  # local date of its next send
    send_at: dt.datetime  # UTC
    readers: int
    code: str  # h07 / d5h07: what the editors' page selects it by

    @classmethod
    def of(cls, u: UpcomingSlot) -> SlotLine:
        return cls(u.slot.frequency.value, u.slot.hour, u.slot.weekday, u.slot.date, u.send_at, u.readers,
                   u.slot.page_code)

    @property
    def clock(self) -> str:
        return f"{self.hour:02d}:{slot_minute():02d}"

    @property
    def day_ar(self) -> str:
        return WEEKDAYS_AR[self.date.weekday()]

    @property
    def readers_ar(self) -> str:
        return audience.readers(self.readers) if self.readers else "لا أحد"

    @property
    def label(self) -> str:
        """«18:00، الأحد 2026-03-29 — 3 مشتركين»."""
        return f"{self.clock}، {self.day_ar} {self.date.isoformat()} — {self.readers_ar}"

    @property
    def label_en(self) -> str:
        return (f"{self.clock} on {WEEKDAYS_EN[self.date.weekday()]} {self.date.isoformat()} "
                f"({self.readers:,} reader(s))")


@dataclass(frozen=True)
class ArticleLine:
    id: int
    title: str
    url: str
    section: str | None
    updated: bool = False


@dataclass
class VariantPreview:
    key: str  # the planner's variant key
    label: str  # «كل الأقسام» or the sections' names in the reader's order
    alerts: bool  # readers with breaking alerts on (their copy lists already-alerted stories in «فاتك؟»)
    audience: int
    slugs: tuple[str, ...] = ()  # the sections' slugs, in order; () for every section
    rendered: bool = False
    empty: bool = False  # nothing in these sections: these readers get no digest
    subject: str = ""
    html: str = ""
    text: str = ""
    html_bytes: int = 0
    lead: ArticleLine | None = None
    articles: list[ArticleLine] = field(default_factory=list)  # what the mail carries, in order
    cut: list[ArticleLine] = field(default_factory=list)  # left out by the size budget
    missed: list[ArticleLine] = field(default_factory=list)  # already alerted: in «فاتك؟» for these readers

    @property
    def reach(self) -> str:
        return audience.reach(self.audience)

    @property
    def readers(self) -> str:
        return audience.readers(self.audience) if self.audience else "لا أحد"


@dataclass
class DigestPreview:
    frequency: str
    send_at: dt.datetime
    newsletter: str = catalogue.DAILY  # its slug
    newsletter_name: str = ""
    slot: SlotLine | None = None  # the slot shown
    slots: list[SlotLine] = field(default_factory=list)  # the upcoming slots that have readers (and the one shown)
    picked: bool = False  # the editor chose the slot (else: the next one with readers, or the reader's own)
    window_start: dt.datetime | None = None
    window_end: dt.datetime | None = None
    articles: list[ArticleLine] = field(default_factory=list)  # everything in the window
    variants: list[VariantPreview] = field(default_factory=list)
    audience: int = 0
    budget_bytes: int = HTML_BUDGET_BYTES

    @property
    def reach(self) -> str:
        return audience.reach(self.audience)

    def variant(self, key: str | None) -> VariantPreview | None:
        return next((v for v in self.variants if v.key == key), None)


def _label(key: str, names: dict[int, str]) -> str:
    ids = parse_variant(split_variant(key)[0])
    if ids is None:
        return "كل الأقسام"
    return "، ".join(names.get(i, f"قسم {i}") for i in ids)


def _line(view, names_by_slug: dict[str, str]) -> ArticleLine:
    return ArticleLine(view.id, view.title, view.url, view.section_name or names_by_slug.get(view.section_slug),
                       bool(getattr(view, "updated", False)))


def _render(session, edition, variant: VariantPreview, home: str, slugs: dict[str, str]) -> None:
    report: dict = {}
    rendered = render_variant_for(session, edition, variant.key, report)
    variant.rendered = True
    if rendered is None:
        variant.empty = True
        return
    html, text = personalise(rendered, unsubscribe_url=home, preferences_url=home)
    variant.subject, variant.html, variant.text = rendered.subject, html, text
    variant.html_bytes = report.get("html_bytes", len(rendered.html.encode("utf-8")))
    kept = [a for s in report.get("kept", ()) for a in s.articles]
    offered = [a for s in report.get("offered", ()) for a in s.articles]
    kept_ids = {a.id for a in kept}
    alerted = set(report.get("alerted") or ())
    variant.lead = _line(report["lead"], slugs) if report.get("lead") is not None else None
    variant.articles = [_line(a, slugs) for a in kept if a.id not in alerted]
    variant.missed = [_line(a, slugs) for a in kept if a.id in alerted]
    variant.cut = [_line(a, slugs) for a in offered if a.id not in kept_ids]


def _reader_key(session, edition, subscriber_id: int) -> str:
    """The reader's variant, or why they get no such digest."""
    found = audience_by_variant(session, edition, subscriber_id)
    if found:
        return next(iter(found))
    sub = session.get(Subscriber, subscriber_id) if fits_id(Subscriber, subscriber_id) else None
    if sub is None:
        raise PreviewRefused(f"no subscriber {subscriber_id}")
    if sub.status is not SubscriberStatus.active:
        raise PreviewRefused(f"subscriber {subscriber_id} is {sub.status.value}: they get no digest")
    if session.scalar(select(Suppression.id).where(Suppression.email == sub.email)) is not None:
        raise PreviewRefused(f"subscriber {subscriber_id}'s address is suppressed: they get no mail")
    newsletter = session.get(Newsletter, edition.newsletter_id) if edition.newsletter_id is not None else None
    subscription = membership.find(session, sub.id, newsletter.id) if newsletter is not None else None
    if subscription is None:
        name = newsletter.slug if newsletter is not None else "this"
        raise PreviewRefused(f"subscriber {subscriber_id} is not on the {name} newsletter")
    if session.scalar(select(Subscriber.id).where(Subscriber.id == sub.id, ~not_paused(utcnow()))) is not None:
        raise PreviewRefused(f"subscriber {subscriber_id} has paused their mail until {sub.paused_until:%Y-%m-%d}")
    slot = (edition.params or {}).get("slot") or {}
    at = dt.datetime.fromisoformat(slot["at"]).astimezone(get_settings().tz) if "at" in slot else None
    weekly = newsletter.frequency is Frequency.weekly
    hour, weekday = (at.hour, at.weekday() if weekly else None) if at else (None, None)
    raise PreviewRefused(f"subscriber {subscriber_id} gets their digest at "
                         f"{_their_slot_text(sub, subscription, newsletter)}, not at {_slot_text(hour, weekday)}")


def _slot_text(hour, weekday) -> str:
    clock = f"{int(hour):02d}:{slot_minute():02d}" if hour is not None else "?"
    return clock + (f" on {WEEKDAYS_EN[int(weekday)]}s" if weekday is not None else "")


def _their_slot_text(sub: Subscriber, subscription, newsletter: Newsletter) -> str:
    weekly = newsletter.frequency is Frequency.weekly
    text = _slot_text(effective_hour(subscription.digest_hour, newsletter=newsletter),
                      effective_weekday(subscription.digest_weekday, newsletter=newsletter) if weekly else None)
    return text + (f" ({sub.time_zone})" if sub.time_zone else "")


def _choose_slot(session, ref: DigestRef, hour: int | None, weekday: int | None,
                 now: dt.datetime) -> tuple[UpcomingSlot, list[UpcomingSlot]]:
    """(the slot to show, every upcoming slot): the soonest one matching what was asked
    that has readers; else the newsletter's default hour's (and day's) among those matching."""
    upcoming = upcoming_slots(session, ref, now)
    matching = [u for u in upcoming if (hour is None or u.slot.hour == hour)
                and (weekday is None or u.slot.weekday == weekday)]
    chosen = next((u for u in matching if u.readers), None)
    if chosen is None:
        chosen = next((u for u in matching if (hour is not None or u.slot.hour == ref.hour())
                       and (weekday is not None or u.slot.weekday == ref.weekday())), None)
    if chosen is None:
        if hour is not None and hour not in offered_hours(newsletter=ref):  # no reader's slot here, nor could be
            raise _no_digest_at(hour, ref)
        slot = next_slot(session, ref, hour if hour is not None else ref.hour(), weekday, now)
        chosen = UpcomingSlot(slot, slot.due(), readers_of(session, slot))
    return chosen, upcoming


def _newsletter(session, frequency: str | None, slug: str | None, sub: Subscriber | None,
                subscriber_id: int | None) -> Newsletter:
    """The digest newsletter to preview: the one named (slug), the site's own of a
    frequency, a subscriber's first digest, else `daily`.  PreviewRefused otherwise."""
    if frequency is not None and frequency not in ("daily", "weekly"):
        raise PreviewRefused("a digest is daily or weekly", "النشرة يومية أو أسبوعية.")
    if slug:
        found = catalogue.by_slug(session, slug.strip().lower()) if isinstance(slug, str) else None
        if found is None:
            raise PreviewRefused(f"no newsletter {str(slug)[:64]!r}", "لا توجد نشرة بهذا الاسم.")
        if frequency is not None and found.frequency is not Frequency(frequency):
            raise PreviewRefused(f"the {found.slug} newsletter is not a {frequency} digest",
                                 "هذه النشرة ليست بهذا التواتر.")
    elif frequency is None and subscriber_id is not None:
        if sub is None:
            raise PreviewRefused(f"no subscriber {subscriber_id}")
        found = next((s.newsletter for s in membership.of(session, sub.id)
                      if s.newsletter.kind is NewsletterKind.digest and not s.newsletter.hidden), None)
        if found is None:
            raise PreviewRefused(f"subscriber {subscriber_id} is on no digest (breaking alerts only)")
    else:
        found = catalogue.digest_for(session, frequency or "daily")
        if found is None:
            raise PreviewRefused(f"the site has no {frequency or 'daily'} digest newsletter",
                                 "لا توجد نشرة بهذا التواتر.")
    if found.kind is not NewsletterKind.digest or found.frequency not in (Frequency.daily, Frequency.weekly):
        raise PreviewRefused(f"the {found.slug} newsletter is not a digest", "هذه النشرة ليست نشرة أخبار دورية.")
    if found.hidden:
        raise PreviewRefused(f"the {found.slug} newsletter is hidden: nothing new is made for it",
                             "هذه النشرة موقوفة: لا يُعدّ لها جديد.")
    return found


def preview(frequency: str | None = None, *, newsletter: str | None = None, sections: list[str] | None = None,
            subscriber_id: int | None = None, every_section: bool = False, variant: str | None = None,
            hour: int | str | None = None, weekday: int | str | None = None, now: dt.datetime | None = None,
            max_rendered: int = MAX_RENDERED) -> DigestPreview:
    """The next digest of one slot of `newsletter` (a slug; or the site's own of
    `frequency`; for a subscriber without either: their first digest, at their hour).

    The slot: `hour` (one of DIGEST_HOURS) and, weekly, `weekday` (0 = Monday) when
    given, else the soonest slot that has readers (the default hour's when none has).
    Without `sections` or `subscriber_id`: every variant its readers have, most readers
    first, the first `max_rendered` (and `variant`, if named) rendered.  With `sections`
    (names or slugs, in the reader's order), or `every_section` (a reader with no list):
    that copy, with and without alerts when the two differ.  Raises PreviewRefused.
    """
    settings = get_settings()
    home = settings.public_url + "/"
    hour, weekday = parse_hour(hour), parse_weekday(weekday)
    now = now or utcnow()
    session = session_factory()()
    try:
        sub = None
        if subscriber_id is not None:
            sub = session.get(Subscriber, subscriber_id) if fits_id(Subscriber, subscriber_id) else None
        letter = _newsletter(session, frequency, newsletter, sub, subscriber_id)
        ref = digest_ref(session, letter)
        frequency = ref.frequency.value
        weekly = ref.frequency is Frequency.weekly
        if weekday is not None and not weekly:
            raise PreviewRefused("a day is for a weekly digest (--frequency weekly)",
                                 "اليوم للنشرة الأسبوعية وحدها.")
        picked = hour is not None or weekday is not None
        own = None
        mine = membership.find(session, sub.id, letter.id) if sub is not None else None
        if mine is not None and hour is None and weekday is None:
            # Their own slot, on their own clock (unless one was asked).
            own = next_slot(session, ref, effective_hour(mine.digest_hour, newsletter=ref),
                            effective_weekday(mine.digest_weekday, newsletter=ref) if weekly else None, now,
                            zone=sub.time_zone)
            hour, weekday = own.hour, own.weekday
        elif mine is not None:
            hour = effective_hour(mine.digest_hour, newsletter=ref) if hour is None else hour
            if weekly and weekday is None:
                weekday = effective_weekday(mine.digest_weekday, newsletter=ref)
        chosen, upcoming = _choose_slot(session, ref, hour, weekday, now)
        if own is not None and chosen.slot != own:
            chosen = UpcomingSlot(own, own.due(), readers_of(session, own))
        shown = SlotLine.of(chosen)
        listed = [SlotLine.of(u) for u in upcoming if u.readers or u.slot == chosen.slot]
        if shown not in listed:
            listed = sorted([*listed, shown], key=lambda x: x.send_at)
        out = DigestPreview(frequency=frequency, send_at=chosen.send_at, newsletter=letter.slug,
                            newsletter_name=letter.name, slot=shown, picked=picked, slots=listed,
                            audience=chosen.readers)
        edition = slot_digest(session, chosen.slot)
        if edition is None:
            return out
        names = dict(session.execute(select(Section.id, Section.name)).all())
        slug_of = dict(session.execute(select(Section.id, Section.slug)).all())
        slugs = dict(session.execute(select(Section.slug, Section.name)).all())
        out.window_start, out.window_end = edition.window_start, edition.window_end
        out.articles = [ArticleLine(ea.article.id, ea.article.title, ea.article.url,
                                    names.get(ea.article.section_id), ea.updated) for ea in edition.articles]
        counts = audience_by_variant(session, edition)
        out.audience = sum(counts.values())
        # Readers with alerts on get a copy of their own when the digest carries alerted stories.
        alerted_differs = bool(alerted_article_ids(session, edition))
        if subscriber_id is not None:
            keys = [_reader_key(session, edition, subscriber_id)]
        elif sections or every_section:
            try:
                ids = [find_section(session, name).id for name in sections or ()]
            except SectionError as exc:
                raise PreviewRefused(str(exc)) from None
            base = json.dumps(list(dict.fromkeys(ids))) if ids else ALL
            keys = [base] + ([ALERTED_PREFIX + base] if alerted_differs else [])
        else:
            keys = sorted(counts, key=lambda k: (-counts[k], k)) or [ALL]
            if not counts and alerted_differs:
                keys.append(ALERTED_PREFIX + ALL)
        for i, key in enumerate(keys):
            plain, with_alerts = split_variant(key)
            v = VariantPreview(key=key, label=_label(plain, names), alerts=with_alerts,
                               audience=_count_for(counts, key, plain),
                               slugs=tuple(slug_of.get(i, str(i)) for i in parse_variant(plain) or ()))
            if i < max_rendered or key == variant or sections or every_section or subscriber_id is not None:
                _render(session, edition, v, home, slugs)
            out.variants.append(v)
        if variant and out.variant(variant) is None:
            v = VariantPreview(key=variant, label=_label(split_variant(variant)[0], names),
                               alerts=split_variant(variant)[1], audience=0)
            _render(session, edition, v, home, slugs)
            out.variants.append(v)
        return out
    finally:
        session.rollback()  # the preview leaves no edition behind
        session.close()


def digest_newsletters() -> list[tuple[str, str]]:
    """(slug, name) of every digest newsletter a preview can show, in the site's order
    (the editors' page's selector)."""
    session = session_factory()()
    try:
        return [(n.slug, n.name) for n in catalogue.every(session)
                if n.kind is NewsletterKind.digest and n.frequency in (Frequency.daily, Frequency.weekly)]
    finally:
        session.close()


def _count_for(counts: dict[str, int], key: str, plain: str) -> int:
    """Readers of this exact key; a sections list is stored as its readers' JSON, which
    may be spaced differently from the one a preview builds ("[3,1]" / "[3, 1]")."""
    if key in counts:
        return counts[key]
    wanted = parse_variant(plain)
    prefix = ALERTED_PREFIX if key.startswith(ALERTED_PREFIX) else ""
    return sum(n for k, n in counts.items() if (k.startswith(ALERTED_PREFIX) == bool(prefix))
               and parse_variant(split_variant(k)[0]) == wanted)


def file_stem(newsletter: str, v: VariantPreview, *, subscriber_id: int | None = None) -> str:
    """digest-daily-all, digest-daily-sports-economy-alerts, digest-weekly-subscriber-7
    (`newsletter`: its slug; the site's own two are named by their frequency)."""
    if subscriber_id is not None:
        what = f"subscriber-{subscriber_id}"
    else:
        what = "-".join(v.slugs)[:120] or "all"
    return f"digest-{newsletter}-{what}" + ("-alerts" if v.alerts else "")


def write_files(result: DigestPreview, out_dir: Path, *,
                subscriber_id: int | None = None) -> list[tuple[VariantPreview, Path, Path]]:
    """Each rendered, non-empty variant as DIR/<stem>.html and .txt; what was written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for v in result.variants:
        if not v.rendered or v.empty:
            continue
        stem = file_stem(result.newsletter, v, subscriber_id=subscriber_id)
        html, text = out_dir / f"{stem}.html", out_dir / f"{stem}.txt"
        html.write_text(v.html, encoding="utf-8")
        text.write_text(v.text, encoding="utf-8")
        written.append((v, html, text))
    return written
