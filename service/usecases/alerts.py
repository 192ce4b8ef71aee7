"""Breaking-news alerts: send one, preview it, and send one test copy first.

`send_alert` is what the API, the editor's page and `nashra alert send` all call: the
alert is made by `service.editions.alerts.create_alert` in one short transaction, and
its planning is asked for only after that commit, on the alerts queue, so that a worker
never looks for an edition that is not there yet.

The preview goes through the same path as the real send: create_alert validates the
input and builds the edition, and the edition code renders it, inside a transaction
that is then rolled back.  So the preview cannot drift from what readers get, and
previewing writes nothing.  Per-recipient links point at the site's front page.  The
preview (and the API's dry run, and the CLI's question) also says how many readers the
alert reaches now, counted by the planner's own rule (`audience_by_variant`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from service.articles.queries import article_by_id, recent_articles
from service.config import ConfigError, get_settings
from service.db import session_scope
from service.delivery.compose import Sender
from service.dispatch import Dispatcher, current
from service.editions.alerts import AlertError, Prefill, create_alert, prefill
from service.logs import get_logger
from service.models import EditionStatus, audit
from service.subscribers.quiet import OVERRIDE
from service.usecases import audience, previews, test_copies

log = get_logger(__name__)


class PreviewError(ValueError):
    """Why the preview (or the test copy) could not be made, for the editor to read."""


@dataclass(frozen=True)
class Preview:
    subject: str
    html: str
    text: str
    audience: int = 0  # readers it would reach now: on its newsletter, confirmed, not suppressed (the planner's rule)
    newsletter: object = None  # a detached copy of its newsletter: its List-Id and From name on a test copy

    @property
    def reach(self) -> str:
        return audience.reach(self.audience)


def send_alert(*, editor_id: int | None, actor: str | None = None, article_url: str | None = None,
               headline: str | None = None, url: str | None = None, summary: str | None = None,
               idempotency_key: str | None = None, dispatcher: Dispatcher | None = None,
               override_quiet_hours: bool = False, send_at: dt.datetime | None = None,
               newsletter: str | None = None) -> int:
    """Create the alert edition and ask for its planning after commit; returns its id.

    `send_at` (UTC, from `usecases.scheduled.parse_send_at`): the alert waits as a
    scheduled draft and beat starts it then; it can be cancelled until it leaves.

    `override_quiet_hours`: the editor says this one may not wait — readers in their quiet
    hours get it too (service/subscribers/quiet.py), and the audit log says who decided.
    `newsletter`: the slug of the alerts newsletter whose readers get it (None: `alerts`).
    Raises AlertError for bad input, or without a POSTAL_ADDRESS in production
    (nothing is written then).
    """
    try:  # no edition leaves without the footer's postal address (production)
        get_settings().require_postal_address()
    except ConfigError as exc:
        raise AlertError(str(exc)) from None
    dispatcher = dispatcher or current()
    with session_scope() as s:
        edition = create_alert(s, editor_id=editor_id, article_url=article_url, headline=headline, url=url,
                               summary=summary, idempotency_key=idempotency_key, actor=actor, send_at=send_at,
                               newsletter=newsletter)
        s.flush()
        edition_id = edition.id
        if override_quiet_hours and edition.status is EditionStatus.draft \
                and not edition.params.get(OVERRIDE):
            edition.params = {**edition.params, OVERRIDE: True}  # a new dict: JSON columns track no change in place
            audit(s, actor or (f"editor:{editor_id}" if editor_id else "cli"), "alert.override_quiet_hours",
                  f"edition:{edition_id}")
        # A retry with the same key returns the existing edition: plan it only if it
        # has not been planned yet (planning is idempotent, but there is no need).
        if edition.status is EditionStatus.draft and edition.send_at is None:
            dispatcher.plan_edition(edition_id, edition.kind.value, session=s)
    log.info("alert_requested", edition_id=edition_id, editor_id=editor_id, scheduled=send_at is not None)
    return edition_id


def dry_run(*, editor_id: int | None, article_url: str | None = None, headline: str | None = None,
            url: str | None = None, summary: str | None = None, newsletter: str | None = None) -> Preview:
    """The alert as readers would get it, and how many would get it, with nothing queued
    or kept (the API's `"dry_run": true`, the CLI's confirmation, the page's preview).
    The count is of `newsletter`'s readers (None: the default alerts newsletter's).

    Raises AlertError for bad input, PreviewError when it cannot be rendered.
    """
    shown = previews.unsaved(
        lambda session: create_alert(session, editor_id=editor_id, article_url=article_url, headline=headline,
                                     url=url, summary=summary, newsletter=newsletter),
        PreviewError, "nothing to render for this alert")
    return Preview(subject=shown.subject, html=shown.html, text=shown.text, audience=sum(shown.audience.values()),
                   newsletter=shown.newsletter)


def preview_alert(values: dict, editor_id: int | None = None) -> Preview:
    """The editor's form (`article_url` and/or `headline`, `url`, `summary`, `newsletter`)
    as a preview."""
    try:
        return dry_run(
            editor_id=editor_id,
            article_url=values.get("article_url") or None,
            headline=values.get("headline") or None,
            url=values.get("url") or None,
            summary=values.get("summary") or None,
            newsletter=values.get("newsletter") or None,
        )
    except AlertError as exc:
        raise PreviewError(str(exc)) from None


RECENT_ARTICLES = 15


def recent(limit: int = RECENT_ARTICLES) -> list[Prefill]:
    """The newest articles, each as the alert form would be filled from it."""
    with session_scope() as s:
        return [prefill(a) for a in recent_articles(s, limit)]


def prefill_for(article_id: int) -> Prefill | None:
    """The alert form filled from this article (None: no such article)."""
    with session_scope() as s:
        article = article_by_id(s, article_id)
        return prefill(article) if article is not None else None


def send_test_alert(values: dict, to: str, editor, sender: Sender | None = None) -> Preview:
    """Render the alert as a preview and send it to one address, now, marked as a test.

    It is composed like every other message (kind "test": the alerts' List-Id, DKIM, a
    VERP envelope sender naming the editor, `X-Nashra-Test` and the `[تجربة]` subject
    prefix, no List-Unsubscribe: it goes to an editor, not to a subscriber).
    """
    address = test_copies.address(to, PreviewError)
    preview = preview_alert(values, editor.id)
    test_copies.send(preview, address, editor, sender, what="alert", error=PreviewError)
    return preview
