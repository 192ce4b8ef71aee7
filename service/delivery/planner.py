"""Freeze an edition's audience into the ledger, then render it once per variant.

The audience is written by ONE `INSERT … SELECT` (the database does the work, so a
million readers cost seconds and no Python memory), guarded by the unique
(edition, subscriber) constraint so that planning twice inserts nothing new.  Each row
carries its audience variant (the reader's section list as stored, 'all' when empty)
and each distinct variant is rendered exactly once into `edition_variants`.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
import sqlalchemy.orm
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.logging import get_logger
from service.models import (
    Article,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionArticle,
    EditionKind,
    EditionStatus,
    EditionVariant,
    Subscriber,
    SubscriberStatus,
    Suppression,
    utcnow,
)
from service.rendering.views import RenderedVariant

log = get_logger(__name__)

Renderer = Callable[[Session, Edition, str], "RenderedVariant | None"]
VARIANT_MAX = 200  # deliveries.variant is VARCHAR(200)
ALL = "all"


class PlanError(ValueError):
    """The edition cannot be planned (unknown id, missing frequency…); nothing was changed."""


def _default_renderer() -> Renderer:
    from service.editions.variants import render_variant_for

    return render_variant_for


def _variant_expr(edition: Edition) -> sa.ColumnElement[str]:
    if edition.kind != EditionKind.digest:
        # An alert or a correction is one story, the same for every reader.
        return sa.literal(ALL)
    as_text = sa.cast(Subscriber.sections, sa.Text)
    return sa.case(
        (Subscriber.sections.is_(None), ALL),
        (as_text.in_(["[]", "null", ""]), ALL),
        # Longer than the column: better every section than a failed plan (logged below).
        (sa.func.length(as_text) > VARIANT_MAX, ALL),
        else_=as_text,
    )


def _audience(edition: Edition, dialect: str) -> sa.Select:
    not_suppressed = ~sa.exists().where(Suppression.email == Subscriber.email)
    conds = [Subscriber.status == SubscriberStatus.active, not_suppressed]
    if edition.kind == EditionKind.digest:
        if edition.frequency is None:
            raise PlanError(f"edition {edition.id}: a digest needs a frequency")
        conds.append(Subscriber.frequency == edition.frequency)
    elif edition.kind == EditionKind.alert:
        conds.append(Subscriber.alerts.is_(True))
    elif edition.kind == EditionKind.correction:
        conds.append(_received_corrected_article(edition, dialect))
    else:  # pragma: no cover - the enum has three members
        raise PlanError(f"edition {edition.id}: unknown kind {edition.kind}")
    now = utcnow()
    return sa.select(
        sa.literal(edition.id),
        Subscriber.id,
        _variant_expr(edition),
        sa.literal(DeliveryStatus.queued.value),
        sa.literal(0),
        sa.literal(now, type_=Delivery.__table__.c.updated_at.type),
    ).where(*conds)


def _variant_shows(variant: sa.ColumnElement, section_id: sa.ColumnElement, dialect: str) -> sa.ColumnElement[bool]:
    """Did a reader of this variant see an article of this section?  'all' sees every
    section (and the unsectioned articles); a list sees only its own sections."""
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


def _insert_audience(session: Session, edition: Edition) -> None:
    table = Delivery.__table__
    cols = ["edition_id", "subscriber_id", "variant", "status", "attempts", "updated_at"]
    dialect = session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(dialect)
    if insert is None:
        raise PlanError(f"planning needs PostgreSQL or SQLite, not {dialect}")
    stmt = insert(table).from_select(cols, _audience(edition, dialect)).on_conflict_do_nothing(
        index_elements=["edition_id", "subscriber_id"]
    )
    session.execute(stmt)


def count_rows(session: Session, edition_id: int) -> int:
    return session.scalar(
        sa.select(sa.func.count()).select_from(Delivery).where(Delivery.edition_id == edition_id)
    ) or 0


def render_variants(session: Session, edition: Edition, renderer: Renderer | None = None) -> dict[str, bool]:
    """Render each variant not yet stored; rows of a variant with nothing to send are skipped."""
    wanted = session.scalars(
        sa.select(Delivery.variant).where(Delivery.edition_id == edition.id).distinct()
    ).all()
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


def plan(session: Session, edition_id: int, renderer: Renderer | None = None) -> int:
    """Freeze the audience of a draft edition; return its number of ledger rows.

    Safe to call twice (double click, retried task): the second call inserts nothing.
    Only a draft or planned edition is (re)planned; for any other state the existing
    count is returned unchanged.
    """
    # Lock the edition row so two planners of the same edition take turns (PostgreSQL;
    # SQLite serialises writers anyway).
    edition = session.scalar(sa.select(Edition).where(Edition.id == edition_id).with_for_update())
    if edition is None:
        raise PlanError(f"no edition {edition_id}")
    if edition.status not in (EditionStatus.draft, EditionStatus.planned):
        return count_rows(session, edition_id)
    _insert_audience(session, edition)
    total = count_rows(session, edition_id)
    variants = render_variants(session, edition, renderer)
    edition.recipients = total
    if edition.status == EditionStatus.draft:
        edition.status = EditionStatus.planned
        edition.planned_at = utcnow()
    session.flush()
    log.info(
        "delivery.planned",
        edition_id=edition_id,
        kind=edition.kind.value,
        recipients=total,
        variants=len(variants),
        empty_variants=sum(1 for ok in variants.values() if not ok),
    )
    return total
