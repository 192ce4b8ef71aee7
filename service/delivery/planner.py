"""Freeze an edition's audience into the ledger, then render it once per variant.

The audience is written by `INSERT … SELECT` (the database does the work, so a million
readers cost seconds and no Python memory), guarded by the unique (edition,
subscriber) constraint so that planning twice inserts nothing new.  Each row carries
its audience variant (the reader's section list as stored, 'all' when empty, with one
more bit for a digest that carries stories an alert already mailed: `_variant_expr`)
and each distinct variant is rendered exactly once into `edition_variants`.

`plan()` writes the whole audience in one statement.  `plan_chunk()` writes one range
of subscriber ids per call, so that the caller can commit and dispatch the first
readers' batches while the rest is still being written: an alert to 100,000 readers
leaves after its first thousand rows, not after all of them (see `tasks.py`).  While
an audience is incomplete the edition's params carry PLANNING (the time of the last
chunk) and the edition cannot be marked done (`ledger.finish_if_complete`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
import sqlalchemy.orm
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from service.clicks import links
from service.db import insert_ignoring
from service.delivery import held
from service.delivery.ledger import PLANNING
from service.editions import schedule, scheduled, special
from service.editions.digests import alerted_article_ids
from service.editions.variants import ALERTED_PREFIX, render_variant_for
from service.logs import get_logger
from service.models import (
    INT64_MAX,
    Article,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionArticle,
    EditionKind,
    EditionStatus,
    EditionVariant,
    Newsletter,
    NewsletterKind,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Suppression,
    utcnow,
)
from service.rendering.viewmodels import RenderedVariant
from service.subscribers import hours

log = get_logger(__name__)

Renderer = Callable[[Session, Edition, str], "RenderedVariant | None"]
VARIANT_MAX = 200  # deliveries.variant is VARCHAR(200)
ALL = "all"
# Subscriber ids per chunk: a small first chunk (its INSERT takes ~10 ms) so the first
# batches leave at once, then larger ones so that a big audience costs few transactions.
CHUNK_FIRST = 1_000
CHUNK_GROWTH = 4
CHUNK_MAX = 50_000


class PlanError(ValueError):
    """The edition cannot be planned (unknown id, missing frequency…); nothing was changed."""


def _default_renderer() -> Renderer:
    return render_variant_for


def _variant_expr(edition: Edition, alerted: bool = False) -> sa.ColumnElement[str]:
    """The reader's audience variant: what makes their copy of the edition differ.

    A digest's is the reader's section list for its newsletter as stored (their
    Subscription's; 'all' when empty); when the digest carries stories a breaking alert
    already mailed (`alerted`), readers on an alerts newsletter (any: the alert may have
    been another newsletter's) get ALERTED_PREFIX before it — their copy lists those
    stories in a short «فاتك؟» block instead of in full.  One bit more, so at most twice
    the renders, and only on days when an alert went out.
    """
    if edition.kind != EditionKind.digest:
        # An alert or a correction is one story, the same for every reader.
        return sa.literal(ALL)
    as_text = sa.cast(Subscription.sections, sa.Text)
    room = VARIANT_MAX - (len(ALERTED_PREFIX) if alerted else 0)
    sections = sa.case(
        (Subscription.sections.is_(None), ALL),
        (as_text.in_(["[]", "null", ""]), ALL),
        # Longer than the column: better every section than a failed plan (logged below).
        (sa.func.length(as_text) > room, ALL),
        else_=as_text,
    )
    if not alerted:
        return sections
    return sa.case(
        (_on_alerts(), sa.literal(ALERTED_PREFIX, sa.Text).op("||")(sections)),
        else_=sections,
    )


def _on_alerts() -> sa.ColumnElement[bool]:
    """SQL: the reader (Subscriber) is on some alerts newsletter."""
    theirs = sa.orm.aliased(Subscription)
    return sa.exists().where(theirs.subscriber_id == Subscriber.id, theirs.newsletter_id == Newsletter.id,
                             Newsletter.kind == NewsletterKind.alerts)


# The kinds whose audience is one newsletter's readers (a correction follows the editions
# it corrects; a catch-up, the held rows: service/delivery/held.py).
_OF_A_NEWSLETTER = (EditionKind.digest, EditionKind.alert, EditionKind.special)


def _audience(edition: Edition, dialect: str, after: int, through: int, alerted: bool = False,
              newsletter: Newsletter | None = None) -> sa.Select:
    """The audience as a SELECT of ledger rows.  `newsletter`: the edition's (a digest's
    slot needs its default hour and day; the caller loads it)."""
    not_suppressed = ~sa.exists().where(Suppression.email == Subscriber.email)
    now = utcnow()
    # A paused reader is left out (the batch re-checks a pause that starts later).
    conds = [Subscriber.status == SubscriberStatus.active, not_suppressed, hours.not_paused(now),
             Subscriber.id > after, Subscriber.id <= through]
    source = Subscriber.__table__
    if edition.kind in _OF_A_NEWSLETTER:
        if edition.newsletter_id is None:
            raise PlanError(f"edition {edition.id}: a {edition.kind.value} names the newsletter it is for")
        # Its readers are those with a subscription to it: one join, by the subscriptions'
        # primary key (newsletter, subscriber) over the chunk's range of ids.
        source = source.join(Subscription.__table__, sa.and_(
            Subscription.subscriber_id == Subscriber.id, Subscription.newsletter_id == edition.newsletter_id))
        conds += [Subscription.subscriber_id > after, Subscription.subscriber_id <= through]
    if edition.kind == EditionKind.digest:
        if edition.frequency is None:
            raise PlanError(f"edition {edition.id}: a digest needs a frequency")
        # A scheduled digest is one slot's: the readers of its hour (and day).
        conds.append(_slot_condition(edition, newsletter))
    elif edition.kind == EditionKind.correction:
        conds.append(_received_corrected_article(edition, dialect))
    elif edition.kind == EditionKind.special:
        conds.append(special.audience_condition(edition, dialect))
    elif edition.kind != EditionKind.alert:  # pragma: no cover - every kind is above (an alert: all its readers)
        raise PlanError(f"edition {edition.id}: unknown kind {edition.kind}")
    return sa.select(
        sa.literal(edition.id),
        Subscriber.id,
        _variant_expr(edition, alerted),
        sa.literal(DeliveryStatus.queued.value),
        sa.literal(0),
        sa.literal(now, type_=Delivery.__table__.c.updated_at.type),
    ).select_from(source).where(*conds)


def _slot_condition(edition: Edition, newsletter: Newsletter | None) -> sa.ColumnElement[bool]:
    """The readers of the digest's slot, by their subscription's hour and day (the
    newsletter's default hour and day for those who never chose)."""
    return schedule.audience_condition((edition.params or {}).get("slot"), newsletter)


def _newsletter(session: Session, edition: Edition) -> Newsletter | None:
    """A digest's newsletter (its slot's default hour and day); other kinds need only its id."""
    if edition.kind != EditionKind.digest or edition.newsletter_id is None:
        return None
    return session.get(Newsletter, edition.newsletter_id)


def _variant_shows(variant: sa.ColumnElement, section_id: sa.ColumnElement, dialect: str) -> sa.ColumnElement[bool]:
    """Did a reader of this variant see an article of this section?  'all' sees every
    section (and the unsectioned articles); a list sees only its own sections.  (A
    reader of an ALERTED_PREFIX variant saw it at least in the «فاتك؟» block.)"""
    skip = len(ALERTED_PREFIX)
    variant = sa.case(
        (sa.func.substr(variant, 1, skip) == ALERTED_PREFIX, sa.func.substr(variant, skip + 1)), else_=variant
    )
    if dialect == "postgresql":
        listed = sa.cast(variant, postgresql.JSONB).op("@>")(sa.func.to_jsonb(section_id))
    else:
        items = sa.func.json_each(variant).table_valued("value")
        listed = sa.exists(sa.select(sa.literal(1)).select_from(items).where(items.c.value == section_id))
    return sa.case((variant == ALL, sa.true()), else_=listed)


def _received_corrected_article(edition: Edition, dialect: str) -> sa.ColumnElement[bool]:
    """Readers who were mailed (or maybe mailed: `unknown`) an earlier edition in which
    the corrected article appeared — in *their* variant of it, not just in the edition."""
    named = (edition.params or {}).get("edition_ids")
    if named is not None and not (
        isinstance(named, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in named)
    ):
        raise PlanError(f"edition {edition.id}: params.edition_ids must be a list of ids")
    received = [
        Delivery.subscriber_id == Subscriber.id,
        Delivery.status.in_([DeliveryStatus.sent, DeliveryStatus.unknown]),
        Delivery.edition_id != edition.id,
    ]
    if named:
        received.append(Delivery.edition_id.in_(named))
    if not edition.articles:
        # Nothing to match on: the named editions decide alone (none named: nobody).
        return sa.exists().where(*received) if named else sa.false()
    carried = sa.orm.aliased(EditionArticle)
    article = sa.orm.aliased(Article)
    mine = sa.select(EditionArticle.article_id).where(EditionArticle.edition_id == edition.id)
    return sa.exists().where(
        *received,
        carried.edition_id == Delivery.edition_id,
        carried.article_id.in_(mine),
        article.id == carried.article_id,
        _variant_shows(Delivery.variant, article.section_id, dialect),
    )


def _insert_audience(session: Session, edition: Edition, after: int, through: int) -> int:
    """Ledger rows for the audience among subscribers after < id <= through; how many were new."""
    if edition.kind == EditionKind.catchup:  # readers whose quiet hours held alerts (delivery/held.py)
        return held.insert_catchup_audience(session, edition, after, through)
    table = Delivery.__table__
    cols = ["edition_id", "subscriber_id", "variant", "status", "attempts", "updated_at"]
    dialect = session.get_bind().dialect.name
    # One query per chunk: does this digest carry stories an alert already mailed?
    alerted = edition.kind == EditionKind.digest and bool(alerted_article_ids(session, edition))
    stmt = insert_ignoring(session, table, ["edition_id", "subscriber_id"]).from_select(
        cols, _audience(edition, dialect, after, through, alerted, _newsletter(session, edition)))
    # SQLAlchemy reports an INSERT's row count only when asked to keep it.
    inserted = session.execute(stmt.execution_options(preserve_rowcount=True)).rowcount
    if inserted is None or inserted < 0:  # without it a chunk could not tell "complete" from "added rows"
        raise PlanError(f"the {dialect} driver did not report how many ledger rows were inserted")
    return inserted


def _chunk_end(session: Session, after: int, limit: int | None) -> tuple[int, bool]:
    """(last subscriber id of the chunk, whether it reaches the end of the table).

    Counted in subscribers, not in audience rows: one index-only walk of the primary
    key, whatever the audience's conditions cost.
    """
    if limit is not None:
        end = session.scalar(
            sa.select(Subscriber.id).where(Subscriber.id > after).order_by(Subscriber.id).offset(limit - 1).limit(1)
        )
        if end is not None:
            return end, False
    last = session.scalar(sa.select(sa.func.max(Subscriber.id)))
    return max(last or 0, after), True


def count_rows(session: Session, edition_id: int) -> int:
    return session.scalar(
        sa.select(sa.func.count()).select_from(Delivery).where(Delivery.edition_id == edition_id)
    ) or 0


def render_variants(session: Session, edition: Edition, renderer: Renderer | None = None,
                    subscribers: tuple[int, int] | None = None) -> dict[str, bool]:
    """Render each variant not yet stored; rows of a variant with nothing to send are skipped.

    subscribers=(after, through): look only at the rows of that chunk of subscriber ids.
    """
    query = sa.select(Delivery.variant).where(Delivery.edition_id == edition.id)
    if subscribers is not None:
        query = query.where(Delivery.subscriber_id > subscribers[0], Delivery.subscriber_id <= subscribers[1])
    wanted = session.scalars(query.distinct()).all()
    have = set(
        session.scalars(sa.select(EditionVariant.variant).where(EditionVariant.edition_id == edition.id))
    )
    done: dict[str, bool] = {}
    for variant in sorted(wanted):
        if variant in have:
            done[variant] = True
            continue
        renderer = renderer or _default_renderer()  # imported only when something is to render
        rendered = renderer(session, edition, variant)
        if rendered is None:
            session.execute(
                sa.update(Delivery)
                .where(
                    Delivery.edition_id == edition.id,
                    Delivery.variant == variant,
                    Delivery.status == DeliveryStatus.queued,
                )
                .values(status=DeliveryStatus.skipped, smtp_reply="nothing to send for this variant", updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            done[variant] = False
            continue
        # Links through /r/ (service/clicks), registered once for this variant.
        rendered = links.track(session, edition, variant, rendered)
        session.add(
            EditionVariant(
                edition_id=edition.id,
                variant=variant,
                subject=rendered.subject,
                html=rendered.html,
                text=rendered.text,
            )
        )
        done[variant] = True
    session.flush()
    return done


@dataclass(frozen=True)
class Chunk:
    """What one planning call did."""
    inserted: int  # ledger rows this call added
    total: int  # ledger rows of the edition now
    after: int  # the chunk covered subscribers with after < id <= through
    through: int
    finished: bool  # nothing more to plan: the audience is complete (or the edition left planning)
    status: EditionStatus


def _may_plan(edition: Edition) -> bool:
    if scheduled.not_yet(edition):
        return False  # its time has not come (a lost message, the sweeper, a stray retry)
    if edition.status in (EditionStatus.draft, EditionStatus.planned):
        return True
    # Batches of the first chunks are already out (sending) or held (paused): the
    # rest of the audience must still be written.  Cancelled or done: never.
    return PLANNING in (edition.params or {}) and edition.status in (EditionStatus.sending, EditionStatus.paused)


def plan_chunk(session: Session, edition_id: int, after: int = 0, limit: int | None = None,
               renderer: Renderer | None = None) -> Chunk:
    """Write the audience among the next `limit` subscribers after id `after` (None: all).

    The caller commits after each call, then dispatches the chunk's batches
    (`fanout.dispatch(..., subscribers=(chunk.after, chunk.through))`), and calls again
    with after=chunk.through until `finished`.  Safe to run twice or in two processes
    at once: the edition row is locked for the chunk, and the unique constraint keeps
    one row per reader.

    The edition becomes `planned` with its first chunk, so batches can start.  The
    audience is declared complete only by a call that reaches the end of the table and
    adds no row while batches may already be running: a batch that finishes the rows
    it can see must never mark the edition done while rows it cannot see yet are
    being written.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise PlanError(f"a chunk needs a limit of at least one subscriber, not {limit!r}")
    # Lock the edition row so two planners of the same edition take turns (PostgreSQL;
    # SQLite serialises writers anyway), and so that a cancel waits for this chunk.
    edition = session.scalar(sa.select(Edition).where(Edition.id == edition_id).with_for_update())
    if edition is None:
        raise PlanError(f"no edition {edition_id}")
    if not _may_plan(edition):
        total = count_rows(session, edition_id)
        return Chunk(0, total, after, after, True, edition.status)
    through, at_end = _chunk_end(session, after, limit)
    inserted = _insert_audience(session, edition, after, through)
    variants = render_variants(session, edition, renderer, (after, through))
    now = utcnow()
    was_draft = edition.status == EditionStatus.draft
    if was_draft:
        edition.status = EditionStatus.planned
    was_chunked = PLANNING in (edition.params or {})
    finished = at_end and not (was_chunked and inserted)
    if finished or not (was_draft or was_chunked):
        total = count_rows(session, edition_id)
    else:
        # Mid-audience: add this chunk's rows (exact: the edition row is locked and the
        # unique constraint counts each reader once) instead of counting a growing
        # ledger once per chunk; the last chunk counts.
        total = (0 if was_draft else edition.recipients or 0) + inserted
    edition.recipients = total
    params = {k: v for k, v in (edition.params or {}).items() if k != PLANNING}
    if not finished:
        params[PLANNING] = now.isoformat()
    if params != edition.params:
        edition.params = params  # a new dict: JSON columns do not track changes in place
    if finished and edition.planned_at is None:
        edition.planned_at = now
    session.flush()
    log.info(
        "delivery.planned" if finished else "delivery.planned_chunk",
        edition_id=edition_id,
        kind=edition.kind.value,
        recipients=total,
        inserted=inserted,
        subscribers_through=through,
        variants=len(variants),
        empty_variants=sum(1 for ok in variants.values() if not ok),
    )
    return Chunk(inserted, total, after, through, finished, edition.status)


def warm_up(session: Session) -> None:
    """Run a chunk's statements once on nothing (no such edition, an empty range of
    subscribers), so that a new worker process has the ORM configured and the
    statements compiled and cached before its first alert.  Writes no row; the
    caller rolls back."""
    session.scalar(sa.select(Edition).where(Edition.id == -1).with_for_update())
    _chunk_end(session, 0, CHUNK_FIRST)
    probe = Edition(id=-1, kind=EditionKind.alert, status=EditionStatus.draft, params={},
                    newsletter_id=-1)  # never added
    _insert_audience(session, probe, 0, 0)
    render_variants(session, probe, subscribers=(0, 0))
    count_rows(session, -1)


def audience_by_variant(session: Session, edition: Edition, subscriber_id: int | None = None) -> dict[str, int]:
    """The readers planning `edition` now would write, counted per audience variant, with
    the planner's own rule (`_audience`, `_variant_expr`) and without writing a row: what
    an editor is told before sending («سيصل إلى …», the API's dry run) and what the digest
    preview shows per variant.  `subscriber_id`: that one reader only ({} when the rule
    leaves them out).  The edition may be unsaved (no id) for an alert or a digest."""
    dialect = session.get_bind().dialect.name
    alerted = edition.kind == EditionKind.digest and bool(alerted_article_ids(session, edition))
    after, through = (subscriber_id - 1, subscriber_id) if subscriber_id is not None else (-1, INT64_MAX)
    variant = _variant_expr(edition, alerted)
    stmt = _audience(edition, dialect, after, through, alerted, _newsletter(session, edition)).with_only_columns(
        variant, sa.func.count())
    return {v: n for v, n in session.execute(stmt.group_by(variant)).all()}


def next_chunk_size(size: int | None) -> int:
    """CHUNK_FIRST, then growing by CHUNK_GROWTH up to CHUNK_MAX."""
    return CHUNK_FIRST if size is None else min(size * CHUNK_GROWTH, CHUNK_MAX)


def plan(session: Session, edition_id: int, renderer: Renderer | None = None) -> int:
    """Freeze the audience of a draft edition in one statement; return its number of ledger rows.

    Safe to call twice (double click, retried task): the second call inserts nothing.
    Only a draft or planned edition is (re)planned (or one whose chunked planning is
    unfinished); for any other state the existing count is returned unchanged.
    """
    return plan_chunk(session, edition_id, after=0, limit=None, renderer=renderer).total
