"""What one edition did (issue 18 item 4): the editor's report page and `nashra report
EDITION [--csv]`, computed here once for both doors.

From the ledger and the reports that came back:

- `sent`: messages we handed to a relay (rows sent, failed — a refusal at the door or a
  bounce after acceptance — or with no answer after the dot);
- `bounced_hard`: rows failed (refused by the receiver, or hard-bounced later);
- `bounced_soft`: rows with a soft-bounce report (mailbox full…): delivered late or not;
- `delivered`: sent − hard − soft;
- `complaints`: spam complaints about this edition;
- `unsubscribes`: readers who left from this edition's mail (`editions.unsubscribes`).

From the clicks (service/clicks, nothing about who): clicks and unique clicks per story
and per section, the click-through rate (unique clicks ÷ delivered), and clicks per hour
over the first 24 hours from the edition's start.  Scanners' requests are shown apart
(`ignored`), never in the clicks.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass, field

import sqlalchemy as sa

from service.clicks import unique
from service.config import get_settings
from service.db import session_scope
from service.editions.variants import parse_variant, split_variant
from service.models import (
    Article,
    ClickCount,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionLink,
    FeedbackEvent,
    Newsletter,
    Section,
)

HOURS = 24
KIND_AR = {"digest": "نشرة", "alert": "تنبيه", "correction": "تصحيح", "catchup": "بينما كنت نائماً"}


@dataclass(frozen=True)
class Line:
    """A story (an article, or a link that is no article of the edition) or a section."""

    label: str
    url: str | None
    clicks: int
    unique: int | None  # None: not estimated (a link that is no article)


@dataclass
class Report:
    edition_id: int
    kind: str
    title: str
    status: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    recipients: int
    sent: int = 0
    delivered: int = 0
    bounced_hard: int = 0
    bounced_soft: int = 0
    complaints: int = 0
    unsubscribes: int = 0
    clicks: int = 0
    ignored: int = 0
    unique_clicks: int = 0
    tracking: bool = True
    stories: list[Line] = field(default_factory=list)
    sections: list[Line] = field(default_factory=list)
    variants: list[Line] = field(default_factory=list)  # a digest's copies by readers' sections
    hours: list[int] = field(default_factory=lambda: [0] * HOURS)  # clicks in hour h after the start
    # The newsletter it went out for (slug, name); None for a correction, a catch-up…
    newsletter: tuple[str, str] | None = None

    @property
    def kind_ar(self) -> str:
        return KIND_AR.get(self.kind, self.kind)

    @property
    def ctr(self) -> float | None:
        """Unique clicks per delivered message (None before anything was delivered)."""
        return self.unique_clicks / self.delivered if self.delivered else None

    @property
    def ctr_text(self) -> str:
        return "—" if self.ctr is None else f"{self.ctr * 100:.1f}%"

    @property
    def peak(self) -> int:
        return max(self.hours) if self.hours else 0


class ReportError(LookupError):
    """No such edition."""


def _hour(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def report(edition_id: int) -> Report:
    with session_scope() as s:
        edition = s.get(Edition, edition_id)
        if edition is None:
            raise ReportError(f"no edition {edition_id}")
        out = Report(
            edition_id=edition.id, kind=edition.kind.value, title=edition.title or (edition.params or {}).get(
                "headline", ""),
            status=edition.status.value, created_at=edition.created_at, started_at=edition.started_at,
            recipients=edition.recipients or 0, unsubscribes=edition.unsubscribes or 0,
            tracking=get_settings().click_tracking,
        )
        if edition.newsletter_id is not None:
            found = s.execute(sa.select(Newsletter.slug, Newsletter.name)
                              .where(Newsletter.id == edition.newsletter_id)).one_or_none()
            out.newsletter = (found.slug, found.name) if found else None
        by_status = dict(s.execute(
            sa.select(Delivery.status, sa.func.count()).where(Delivery.edition_id == edition_id)
            .group_by(Delivery.status)).all())
        n = {getattr(k, "value", k): v for k, v in by_status.items()}
        fe = FeedbackEvent.__table__
        events = dict(s.execute(
            sa.select(fe.c.kind, sa.func.count(sa.distinct(sa.func.coalesce(fe.c.delivery_id, -fe.c.id))))
            .where(fe.c.edition_id == edition_id, fe.c.kind.in_(["soft", "complaint"]))
            .group_by(fe.c.kind)).all())
        out.bounced_hard = n.get(DeliveryStatus.failed.value, 0)
        out.sent = n.get(DeliveryStatus.sent.value, 0) + n.get(DeliveryStatus.unknown.value, 0) + out.bounced_hard
        out.bounced_soft = events.get("soft", 0)
        out.complaints = events.get("complaint", 0)
        out.delivered = max(0, out.sent - out.bounced_hard - out.bounced_soft)

        C = ClickCount.__table__
        links = s.execute(
            sa.select(EditionLink.id, EditionLink.url, EditionLink.article_id, EditionLink.section_id,
                      EditionLink.variant)
            .where(EditionLink.edition_id == edition_id)).all()
        per_link = {lid: (c, i) for lid, c, i in s.execute(
            sa.select(C.c.link_id, sa.func.sum(C.c.clicks), sa.func.sum(C.c.ignored))
            .join(EditionLink, EditionLink.id == C.c.link_id)
            .where(EditionLink.edition_id == edition_id).group_by(C.c.link_id)).all()}
        start = _hour(edition.started_at or edition.created_at)
        for hour, clicks in s.execute(
            sa.select(C.c.hour, sa.func.sum(C.c.clicks)).join(EditionLink, EditionLink.id == C.c.link_id)
            .where(EditionLink.edition_id == edition_id, C.c.hour >= start,
                   C.c.hour < start + dt.timedelta(hours=HOURS)).group_by(C.c.hour)).all():
            out.hours[int((_hour(hour) - start).total_seconds() // 3600)] += int(clicks or 0)
        out.clicks = sum(int(c or 0) for c, _ in per_link.values())
        out.ignored = sum(int(i or 0) for _, i in per_link.values())

        # Stories: the edition's articles (in the edition's order), then any other link.
        article_ids = [a for a in dict.fromkeys(link.article_id for link in links) if a is not None]
        section_ids = [x for x in dict.fromkeys(link.section_id for link in links) if x is not None]
        named = set(section_ids)  # the sections' names: those of the links, and those readers chose
        for variant in variant_keys(links):
            named.update(parse_variant(split_variant(variant)[0]) or [])
        scopes = ["edition"] + [f"article:{a}" for a in article_ids] + [f"section:{x}" for x in section_ids]
        estimates = unique.estimate(s, edition_id, scopes)
        out.unique_clicks = estimates["edition"]
        titles = dict(s.execute(sa.select(Article.id, Article.title).where(Article.id.in_(article_ids))).all())
        names = dict(s.execute(sa.select(Section.id, Section.name).where(Section.id.in_(named))).all())
        story_clicks: dict[object, list] = {}
        section_clicks: dict[int, int] = {}
        variant_clicks: dict[str, int] = {}
        for lid, url, article_id, section_id, variant in links:
            clicks = int((per_link.get(lid) or (0, 0))[0] or 0)
            variant_clicks[variant] = variant_clicks.get(variant, 0) + clicks
            key = article_id if article_id is not None else url
            entry = story_clicks.setdefault(key, [url, 0])
            entry[1] += clicks
            if section_id is not None:
                section_clicks[section_id] = section_clicks.get(section_id, 0) + clicks
        for key, (url, clicks) in story_clicks.items():
            if isinstance(key, int):
                out.stories.append(Line(titles.get(key, url), url, clicks, estimates.get(f"article:{key}", 0)))
            elif clicks:  # other links only once they were followed: the list stays about stories
                out.stories.append(Line(url, url, clicks, None))
        out.stories.sort(key=lambda line: (-line.clicks, line.unique is None))
        if len(variant_clicks) > 1:  # one copy for everybody says nothing more than the total
            out.variants = sorted((Line(_variant_label(v, names), None, n, None) for v, n in variant_clicks.items()),
                                  key=lambda line: -line.clicks)
        out.sections = sorted(
            (Line(names.get(sid, str(sid)), None, clicks, estimates.get(f"section:{sid}", 0))
             for sid, clicks in section_clicks.items()),
            key=lambda line: -line.clicks)
    return out


def variant_keys(links) -> list[str]:
    return list(dict.fromkeys(link.variant for link in links))


def _variant_label(key: str, names: dict[int, str]) -> str:
    """A digest variant as an editor reads it: its readers' sections (and the «فاتك؟» copy)."""
    sections_key, alerted = split_variant(key)
    ids = parse_variant(sections_key)
    label = "كل الأقسام" if ids is None else "، ".join(names.get(i, f"قسم {i}") for i in ids)
    return label + (" · لمن يتلقّى التنبيهات" if alerted else "")


def as_rows(r: Report) -> list[list[object]]:
    """The report as rows (section, name, value…): what `--csv` writes."""
    rows: list[list[object]] = [["metric", "name", "clicks", "unique"]]
    if r.newsletter:
        rows.append(["newsletter", r.newsletter[0], "", ""])
    for name, value in (("recipients", r.recipients), ("sent", r.sent), ("delivered", r.delivered),
                        ("bounced_hard", r.bounced_hard), ("bounced_soft", r.bounced_soft),
                        ("complaints", r.complaints), ("unsubscribes", r.unsubscribes)):
        rows.append([name, "", value, ""])
    rows.append(["clicks", "edition", r.clicks, r.unique_clicks])
    rows.append(["ignored", "scanners and prefetches", r.ignored, ""])
    rows.append(["click_through_rate", "unique / delivered", f"{r.ctr:.4f}" if r.ctr is not None else "", ""])
    for line in r.stories:
        rows.append(["story", line.label, line.clicks, "" if line.unique is None else line.unique])
    for line in r.sections:
        rows.append(["section", line.label, line.clicks, line.unique])
    for line in r.variants:
        rows.append(["variant", line.label, line.clicks, ""])
    for h, n in enumerate(r.hours):
        rows.append(["hour", f"+{h}", n, ""])
    return rows


def to_csv(r: Report) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(as_rows(r))
    return buf.getvalue()

