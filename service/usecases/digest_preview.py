"""Tomorrow's digest, today: what the next scheduled digest holds, per audience variant,
with nothing written (`nashra digest preview`, the editors' digest page).

The edition is the one beat would make at its next send (service/editions/upcoming.py);
the variants and their readers are the planner's (`audience_by_variant`); each variant is
rendered by the same `render_variant_for` that renders the real one, which also says
which articles the size budget (HTML_BUDGET_BYTES, under Gmail's clipping) left out.
Everything happens in a transaction that is rolled back.  Links that are per reader in
the real mail (unsubscribe, preferences) point at the site's front page.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from service.articles.sections import SectionError, find_section
from service.config import get_settings
from service.db import session_factory
from service.delivery.planner import audience_by_variant
from service.editions.digests import alerted_article_ids
from service.editions.upcoming import upcoming_digest
from service.editions.variants import (
    ALERTED_PREFIX,
    HTML_BUDGET_BYTES,
    parse_variant,
    render_variant_for,
    split_variant,
)
from service.models import Frequency, Section, Subscriber, SubscriberStatus, Suppression, fits_id
from service.rendering.personalise import personalise
from service.usecases import audience

MAX_RENDERED = 10  # variants rendered on one page; the others are listed with their readers
ALL = "all"


class PreviewRefused(ValueError):
    """The preview cannot be made as asked (unknown section, a reader who gets no digest)."""


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
    raise PreviewRefused(f"subscriber {subscriber_id} gets the {sub.frequency.value} digest, not this one")


def preview(frequency: str | None = None, *, sections: list[str] | None = None, subscriber_id: int | None = None,
            every_section: bool = False, variant: str | None = None,
            max_rendered: int = MAX_RENDERED) -> DigestPreview:
    """The next `frequency` digest (for a subscriber: theirs, default their frequency).

    Without `sections` or `subscriber_id`: every variant its readers have, most readers
    first, the first `max_rendered` (and `variant`, if named) rendered.  With `sections`
    (names or slugs, in the reader's order), or `every_section` (a reader with no list):
    that copy, with and without alerts when the two differ.  Raises PreviewRefused.
    """
    settings = get_settings()
    home = settings.public_url + "/"
    session = session_factory()()
    try:
        if subscriber_id is not None and frequency is None:
            sub = session.get(Subscriber, subscriber_id) if fits_id(Subscriber, subscriber_id) else None
            if sub is None:
                raise PreviewRefused(f"no subscriber {subscriber_id}")
            if sub.frequency is Frequency.none:
                raise PreviewRefused(f"subscriber {subscriber_id} chose no digest (breaking alerts only)")
            frequency = sub.frequency.value
        frequency = frequency or "daily"
        if frequency not in ("daily", "weekly"):
            raise PreviewRefused("a digest is daily or weekly")
        edition, send_at = upcoming_digest(session, frequency)
        out = DigestPreview(frequency=frequency, send_at=send_at)
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


def _count_for(counts: dict[str, int], key: str, plain: str) -> int:
    """Readers of this exact key; a sections list is stored as its readers' JSON, which
    may be spaced differently from the one a preview builds ("[3,1]" / "[3, 1]")."""
    if key in counts:
        return counts[key]
    wanted = parse_variant(plain)
    prefix = ALERTED_PREFIX if key.startswith(ALERTED_PREFIX) else ""
    return sum(n for k, n in counts.items() if (k.startswith(ALERTED_PREFIX) == bool(prefix))
               and parse_variant(split_variant(k)[0]) == wanted)


def file_stem(frequency: str, v: VariantPreview, *, subscriber_id: int | None = None) -> str:
    """digest-daily-all, digest-daily-sports-economy-alerts, digest-weekly-subscriber-7."""
    if subscriber_id is not None:
        what = f"subscriber-{subscriber_id}"
    else:
        what = "-".join(v.slugs)[:120] or "all"
    return f"digest-{frequency}-{what}" + ("-alerts" if v.alerts else "")


def write_files(result: DigestPreview, out_dir: Path, *,
                subscriber_id: int | None = None) -> list[tuple[VariantPreview, Path, Path]]:
    """Each rendered, non-empty variant as DIR/<stem>.html and .txt; what was written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for v in result.variants:
        if not v.rendered or v.empty:
            continue
        stem = file_stem(result.frequency, v, subscriber_id=subscriber_id)
        html, text = out_dir / f"{stem}.html", out_dir / f"{stem}.txt"
        html.write_text(v.html, encoding="utf-8")
        text.write_text(v.text, encoding="utf-8")
        written.append((v, html, text))
    return written
