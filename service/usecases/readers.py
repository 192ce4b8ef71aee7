"""What a reader does from our pages and the links in our mails, one function each:
see the signup form, confirm, see and save their preferences, take or delete their data,
unsubscribe (the page's button or RFC 8058 one-click).  Signing up itself is
`usecases.subscribers.sign_up`, shared with the JSON API.

The routers (service/web/readers.py, signup_api.py) parse HTTP and render; everything
that reads or writes the database happens here, one transaction per call.  What goes
back to a router is plain values — the data a page shows, never a row — and the
exceptions a page answers with a 4xx: `InvalidInput` (a field and an Arabic message,
nothing written) and `BadToken` (a forged, stale or expired link).

A check that belongs to the web door but needs the reader the link names (the CSRF
token is bound to the subscriber id) is passed in as `authorised(subscriber_id)`, and
asked inside the transaction, before anything is written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from service.config import get_settings
from service.db import session_scope
from service.editions import unsubscribes
from service.logs import get_logger
from service.models import (
    Frequency,
    Newsletter,
    NewsletterKind,
    Subscriber,
    SubscriberStatus,
    Subscription,
    utcnow,
)
from service.newsletters import catalogue, membership
from service.subscribers import choices, clocks, consent, lifecycle
from service.subscribers.consent import Evidence
from service.subscribers.errors import InvalidInput
from service.subscribers.hours import WEEKDAYS_AR, effective_hour, effective_weekday, offered_hours
from service.subscribers.quiet import CAPS, PAUSE_WEEKS
from service.subscribers.tokens import BadToken, link, read_token
from service.subscribers.validation import MAX_EMAIL_LENGTH, all_sections, section_ids
from service.usecases import subscribers

__all__ = [
    "MAX_EMAIL_LENGTH", "MAX_SECTIONS_FIELDS", "BadToken", "Evidence", "InvalidInput",
    "PreferencesForm", "clean_url", "consent_version_known", "CONSENT_VERSION",
]

log = get_logger(__name__)

MAX_SECTIONS_FIELDS = 100
MSG_SECTIONS = "اختر الأقسام من القائمة المعروضة فقط."
Authorised = Callable[[int], bool]

# The consent sentence's helpers a form needs (pure functions: no database).
clean_url = consent.clean_url
consent_version_known = consent.known
CONSENT_VERSION = consent.CURRENT


def evidence(*, ip: str | None, user_agent: str | None, form_url: object = None,
             text_version: object = None) -> Evidence:
    """Where a signup or confirmation came from, for the consent record (never for logs)."""
    return Evidence(ip=ip, user_agent=user_agent, form_url=consent.clean_url(form_url),
                    text_version=text_version if consent.known(text_version) else consent.CURRENT)


# ---------------------------------------------------------------- the signup form


def _hour_options(newsletter: Newsletter | None = None) -> list[dict]:
    """The hours a reader may choose (a newsletter's own default hour among them)."""
    return [{"value": h, "label": f"{h:02d}:00"} for h in offered_hours(newsletter=newsletter)]


def _weekday_options() -> list[dict]:
    return [{"value": i, "label": name} for i, name in enumerate(WEEKDAYS_AR)]


def default_newsletters(offered: list[dict]) -> list[str]:
    """What the form has ticked before the reader chooses: as it had before there were
    several (the daily digest and alerts), else the first one offered."""
    slugs = [n["slug"] for n in offered]
    first = [x for x in (catalogue.DAILY, catalogue.ALERTS) if x in slugs]
    return first or slugs[:1]


def signup_form() -> dict:
    """What the signup form offers: the newsletters, the sections, the hours and days,
    the consent sentence."""
    with session_scope() as s:
        sections = [{"id": x.id, "name": x.name, "slug": x.slug} for x in all_sections(s)]
        newsletters = [{"id": n.id, "slug": n.slug, "name": n.name, "description": n.description,
                        "kind": n.kind.value, "weekly": n.frequency is Frequency.weekly}
                       for n in catalogue.offered(s)]
    return {
        "newsletters": newsletters,
        "default_newsletters": default_newsletters(newsletters),
        "any_digest": any(n["kind"] == "digest" for n in newsletters),
        "any_weekly": any(n["weekly"] for n in newsletters),
        "sections": sections,
        "hours": _hour_options(),
        "default_hour": effective_hour(None),
        "weekdays": _weekday_options(),
        "default_weekday": effective_weekday(None),
        "consent_text": consent.text_of(consent.CURRENT),
        "consent_version": consent.CURRENT,
        # Their clock: the browser's zone fills it (a script in the page); without it, ours.
        "time_zone": get_settings().timezone,
        "zones": clocks.zone_names(),
        "challenge": subscribers.new_challenge(),  # None unless SIGNUP_CHALLENGE is on
    }


# ---------------------------------------------------------------- confirmation


@dataclass(frozen=True)
class Reader:
    """A reader as the confirmation pages see them: no address (pages never show it)."""

    id: int
    confirmed: bool
    preferences_url: str
    newsletters: tuple[str, ...] = ()  # the names of those they are on, in the site's order


def _reader(s: Session, sub: Subscriber) -> Reader:
    return Reader(sub.id, sub.status is SubscriberStatus.active, link("preferences", sub.id, sub.token_version),
                  tuple(x.newsletter.name for x in membership.of(s, sub.id)))


def confirmation(token: str) -> Reader:
    """The reader a confirmation link names (raises BadToken); changes nothing — mail
    scanners and link previews follow GET links."""
    with session_scope() as s:
        return _reader(s, lifecycle.subscriber_to_confirm(s, token))


@dataclass(frozen=True)
class Confirmed:
    reader: Reader
    refused: bool = False  # `authorised` said no: nothing changed


def confirm(token: str, *, authorised: Authorised, evidence: Evidence) -> Confirmed:
    """pending → active (once; raises BadToken), the welcome queued after the commit."""
    with session_scope() as s:
        sub = lifecycle.subscriber_to_confirm(s, token, lock=True)
        if not authorised(sub.id):
            log.info("confirm_bad_csrf", subscriber_id=sub.id)
            return Confirmed(_reader(s, sub), refused=True)
        return Confirmed(_reader(s, lifecycle.confirm(s, token, evidence=evidence)))


# ---------------------------------------------------------------- preferences


@dataclass(frozen=True)
class NewsletterChoices:
    """One newsletter's part of the preferences form, as typed.  `sections`: the ticked
    section ids in the reader's order (a digest's); the rest as the form sent them."""

    sections: list = field(default_factory=list)
    digest_hour: object = None
    digest_weekday: object = None
    quiet_start: object = None
    quiet_end: object = None
    quiet_mode: object = None
    alert_cap: object = None


@dataclass(frozen=True)
class PreferencesForm:
    """The preferences form, as typed (validated by `save_preferences`): each newsletter's
    choices by its id (as the form wrote it), the reader-wide pause and clock, and which
    button was pressed — save (all), `join` or `leave` (a newsletter's id), `leave_all`."""

    newsletters: dict = field(default_factory=dict)
    pause: object = None
    time_zone: object = None
    join: object = None
    leave: object = None
    leave_all: bool = False


@dataclass(frozen=True)
class PreferencesPage:
    """What the preferences page shows (`values`, for its template), and how the request went."""

    subscriber_id: int
    values: dict = field(default_factory=dict)
    saved: bool = False
    refused: bool = False  # `authorised` said no: nothing changed
    error: InvalidInput | None = None  # a bad field: nothing changed
    left_all: bool = False  # they are on no newsletter now: the «you have left» page


MSG_NEWSLETTER = "اختر النشرة من القائمة المعروضة."


def _section_options(s: Session, chosen: list[int], newsletter: Newsletter) -> list[dict]:
    """A digest's sections as checkboxes: the reader's order first, then the rest (the
    digest's own sections, or every one if it draws from all)."""
    offered = all_sections(s, keep=chosen)
    if newsletter.sections:
        own = set(newsletter.sections) | set(chosen)
        offered = [x for x in offered if x.id in own]
    rank = {sid: i + 1 for i, sid in enumerate(chosen)}
    options = [{"id": x.id, "name": x.name, "checked": x.id in rank, "rank": rank.get(x.id, "")} for x in offered]
    options.sort(key=lambda o: (0, o["rank"]) if o["checked"] else (1, 0))
    return options


def _subscription_values(s: Session, subscription: Subscription) -> dict:
    n = subscription.newsletter
    values = {"id": n.id, "slug": n.slug, "name": n.name, "description": n.description, "kind": n.kind.value,
              "weekly": n.frequency is Frequency.weekly}
    if n.kind is NewsletterKind.digest:
        values.update(sections=_section_options(s, list(subscription.sections or []), n),
                      hours=_hour_options(n),
                      digest_hour=effective_hour(subscription.digest_hour, newsletter=n),
                      digest_weekday=effective_weekday(subscription.digest_weekday, newsletter=n))
    else:
        values.update(quiet_start=subscription.quiet_start, quiet_end=subscription.quiet_end,
                      quiet_mode=subscription.quiet_mode or "hold", alert_cap=subscription.alert_cap)
    return values


def _preferences_values(s: Session, sub: Subscriber) -> dict:
    mine = membership.of(s, sub.id)
    on = {x.newsletter_id for x in mine}
    return {
        "newsletters": [_subscription_values(s, x) for x in mine],
        "others": [{"id": n.id, "name": n.name, "description": n.description}
                   for n in catalogue.offered(s) if n.id not in on],
        "pending": sub.status is SubscriberStatus.pending,
        **_schedule_values(s, sub),
    }


def _schedule_values(s: Session, sub: Subscriber) -> dict:
    """The preferences page's reader-wide «when» (clock, pause) and «your data» parts."""
    now = utcnow()
    tz = clocks.zone(sub.time_zone)  # their times on their clock
    paused = sub.paused_until if sub.paused_until is not None and sub.paused_until > now else None
    record = consent.history(s, sub)
    for entry in record:  # shown in local time; the export keeps UTC
        entry["at_local"] = dt.datetime.fromisoformat(entry["at"]).astimezone(tz).strftime("%Y-%m-%d %H:%M")
    return {
        "time_zone": clocks.name_of(sub.time_zone),
        "time_zone_chosen": sub.time_zone is not None,  # else the page offers the browser's zone
        "zones": clocks.zone_names(),
        "weekdays": _weekday_options(),
        "caps": CAPS,
        "pause_weeks": PAUSE_WEEKS,
        "paused_until": paused.astimezone(tz).strftime("%Y-%m-%d %H:%M") if paused else None,
        "consent_record": record,
    }


def preferences(token: str) -> PreferencesPage:
    """The preferences page of the reader a link names (raises BadToken)."""
    with session_scope() as s:
        sub = lifecycle.subscriber_for_token(s, "preferences", token)
        return PreferencesPage(sub.id, _preferences_values(s, sub))


def _newsletter_id(raw: object, field_name: str) -> int:
    """A newsletter id as a button sent it; InvalidInput for anything else."""
    text = raw.strip() if isinstance(raw, str) else ""
    if not (text.isascii() and text.isdigit() and 0 < len(text) <= 9):
        raise InvalidInput(field_name, MSG_NEWSLETTER)
    return int(text)


def _digest_changes(s: Session, subscription: Subscription, form: NewsletterChoices) -> dict:
    if len(form.sections) > MAX_SECTIONS_FIELDS:
        raise InvalidInput("sections", MSG_SECTIONS)
    n = subscription.newsletter
    sections = section_ids(s, form.sections)
    # A digest of some sections offers those (and any the reader had): nothing else is theirs to tick.
    if n.sections and not set(sections) <= set(n.sections) | set(subscription.sections or []):
        raise InvalidInput("sections", MSG_SECTIONS)
    changes = {"sections": sections, "digest_hour": choices.digest_hour(form.digest_hour, n)}
    if n.frequency is Frequency.weekly:
        changes["digest_weekday"] = choices.digest_weekday(form.digest_weekday)
    # The hour shown for a reader who never chose is the newsletter's (or the site's):
    # saving the page as it was keeps them following it.
    if subscription.digest_hour is None and changes["digest_hour"] == effective_hour(None, newsletter=n):
        changes["digest_hour"] = None
    if (subscription.digest_weekday is None and "digest_weekday" in changes
            and changes["digest_weekday"] == effective_weekday(None, newsletter=n)):
        changes["digest_weekday"] = None
    return changes


def _alert_changes(form: NewsletterChoices) -> dict:
    quiet_start, quiet_end, quiet_mode = choices.quiet_hours(form.quiet_start, form.quiet_end, form.quiet_mode)
    return {"quiet_start": quiet_start, "quiet_end": quiet_end, "quiet_mode": quiet_mode,
            "alert_cap": choices.alert_cap(form.alert_cap)}


def _validated(s: Session, sub: Subscriber, form: PreferencesForm) -> tuple[list, dt.datetime | None, str | None]:
    """Every field checked before anything is written: (subscription, changes) pairs, the
    pause, the zone.  A newsletter the reader is no longer on (a page from before) is skipped."""
    planned = []
    for subscription in membership.of(s, sub.id):
        typed = form.newsletters.get(str(subscription.newsletter_id))
        if typed is None:
            continue
        if subscription.newsletter.kind is NewsletterKind.digest:
            planned.append((subscription, _digest_changes(s, subscription, typed)))
        else:
            planned.append((subscription, _alert_changes(typed)))
    paused_until = choices.pause(form.pause, sub.paused_until, utcnow())
    zone = clocks.check(form.time_zone)
    if zone == get_settings().timezone and sub.time_zone is None:
        zone = None  # the site's clock, as shown: they keep following TIMEZONE
    return planned, paused_until, zone


def _join(s: Session, sub: Subscriber, raw: object) -> None:
    newsletter_id = _newsletter_id(raw, "join")
    if newsletter_id not in {n.id for n in catalogue.offered(s)}:
        raise InvalidInput("join", MSG_NEWSLETTER)
    lifecycle.join(s, sub, newsletter_id)


def save_preferences(token: str, form: PreferencesForm, *, authorised: Authorised) -> PreferencesPage:
    """Validate every field, then save them all, or none (raises BadToken).  The buttons
    `join` and `leave` do only that; `leave_all` is the unsubscribe page's «all»."""
    with session_scope() as s:
        sub = lifecycle.subscriber_for_token(s, "preferences", token, lock=True)
        if not authorised(sub.id):
            log.info("preferences_bad_csrf", subscriber_id=sub.id)
            return PreferencesPage(sub.id, _preferences_values(s, sub), refused=True)
        actor = f"subscriber:{sub.id}"
        try:
            if form.leave_all:
                lifecycle.unsubscribe(s, sub, actor=actor)
                return PreferencesPage(sub.id, left_all=True)
            if form.leave is not None:
                lifecycle.leave_newsletter(s, sub, _newsletter_id(form.leave, "leave"), actor=actor)
                if sub.status is SubscriberStatus.unsubscribed:  # that was their last one
                    return PreferencesPage(sub.id, left_all=True)
                return PreferencesPage(sub.id, _preferences_values(s, sub), saved=True)
            if form.join is not None:
                _join(s, sub, form.join)
                return PreferencesPage(sub.id, _preferences_values(s, sub), saved=True)
            planned, paused_until, zone = _validated(s, sub, form)
        except InvalidInput as exc:
            log.info("preferences_invalid", subscriber_id=sub.id, field=exc.field)
            return PreferencesPage(sub.id, _preferences_values(s, sub), error=exc)
        for subscription, changes in planned:
            lifecycle.update_subscription(s, sub, subscription, changes)
        lifecycle.update_reader(s, sub, paused_until=paused_until, time_zone=zone)
        return PreferencesPage(sub.id, _preferences_values(s, sub), saved=True)


# ---------------------------------------------------------------- their data


@dataclass(frozen=True)
class DataAnswer:
    """The outcome of a «your data» request: `page` is what the router shows —
    refused (the preferences page again, `preferences` set), export (`data`), ask (the
    «really delete?» page), forgotten."""

    page: str
    subscriber_id: int
    data: dict | None = None
    preferences: PreferencesPage | None = None


DATA_ACTIONS = ("export", "forget", "forget_confirm")


def reader_data(token: str, action: str, *, authorised: Authorised) -> DataAnswer:
    """Download their data, or delete it (asked once more first: `forget`, then
    `forget_confirm`).  Raises BadToken.  `authorised` is asked before anything is read."""
    if action not in DATA_ACTIONS:
        raise ValueError(f"unknown data action {action!r}")
    sub_id, _ = read_token("preferences", token)
    if not authorised(sub_id):
        log.info("reader_data_bad_csrf", subscriber_id=sub_id)
        page = preferences(token)
        return DataAnswer("refused", page.subscriber_id, preferences=PreferencesPage(page.subscriber_id, page.values,
                                                                                     refused=True))
    if action == "export":
        sub_id, data = subscribers.export_for(token)
        log.info("reader_data_exported", subscriber_id=sub_id)
        return DataAnswer("export", sub_id, data=data)
    if action == "forget":
        with session_scope() as s:
            sub = lifecycle.subscriber_for_token(s, "preferences", token)
        return DataAnswer("ask", sub.id)
    return DataAnswer("forgotten", subscribers.forget_for(token))


# ---------------------------------------------------------------- unsubscribe

MSG_BAD_NEWSLETTER = "هذا الرابط لا يسمّي نشرة من نشراتنا. إن نسخته من رسالة، فتأكد من نسخه كاملاً."


def newsletter_ref(raw: object) -> int | None:
    """The newsletter an unsubscribe link names (`n=`): None when it names none; raises
    InvalidInput for a value that is not a newsletter id at all (not digits, past 32 bits,
    a NUL…) — that link was not ours, and guessing what it meant could leave too much."""
    if raw is None:
        return None
    text = raw if isinstance(raw, str) else ""
    if not (text.isascii() and text.isdigit() and 0 < len(text) <= 10) or not 0 < int(text) <= unsubscribes.MAX_ID:
        raise InvalidInput("n", MSG_BAD_NEWSLETTER)
    return int(text)


@dataclass(frozen=True)
class UnsubscribeState:
    """What the unsubscribe page shows: "subscribed" (its buttons) or "unsubscribed"
    (already done); the newsletter the link names, if any, and whether they are still on it."""

    state: str
    newsletter_id: int | None = None
    newsletter_name: str | None = None
    on_it: bool = False


def _named(s: Session, newsletter_id: int | None) -> Newsletter | None:
    """The newsletter `n=` names; InvalidInput if there is no such newsletter."""
    if newsletter_id is None:
        return None
    newsletter = s.get(Newsletter, newsletter_id)
    if newsletter is None:
        raise InvalidInput("n", MSG_BAD_NEWSLETTER)
    return newsletter


def unsubscribe_state(token: str, newsletter: object = None) -> UnsubscribeState:
    """The page's state (raises BadToken, or InvalidInput for a bad `n=`).  Changes
    nothing: mail scanners and link previews follow GET links."""
    sub_id, version = read_token("unsubscribe", token)
    newsletter_id = newsletter_ref(newsletter)
    with session_scope() as s:
        named = _named(s, newsletter_id)
        sub = s.get(Subscriber, sub_id)
        if sub is not None and sub.token_version == version:
            on_it = named is not None and membership.find(s, sub.id, named.id) is not None
            return UnsubscribeState("subscribed", newsletter_id, named.name if named else None, on_it)
        if sub is not None and sub.status is SubscriberStatus.unsubscribed and version < sub.token_version:
            return UnsubscribeState("unsubscribed")
    raise BadToken("this link is no longer valid")


# The edition an unsubscribe link names (`e=`): an id, or None for anything else.
edition_ref = unsubscribes.edition_ref


@dataclass(frozen=True)
class Left:
    """What a click did: `everything` (they are on no newsletter now) or only the one
    named (`newsletter_name`); `counted` if the edition's unsubscribe count went up."""

    everything: bool
    newsletter_name: str | None = None
    counted: bool = False
    preferences_url: str | None = None  # still on others: where to see them


def unsubscribe(token: str, edition: object = None, newsletter: object = None) -> Left:
    """The page's buttons or RFC 8058 one-click: idempotent (raises BadToken, or
    InvalidInput for a bad `n=`, with nothing changed).  `newsletter`: the link's raw
    `n=` — leave only that one (all, if it was the last); absent, leave all.  `edition`:
    the link's raw `e=`; the edition it names counts this reader's departure once, when
    this call is the one that moved them (and only if they were sent it)."""
    edition_id = unsubscribes.edition_ref(edition)
    newsletter_id = newsletter_ref(newsletter)
    with session_scope() as s:
        named = _named(s, newsletter_id)
        sub, left = lifecycle.leave_by_token(s, token, newsletter_id)
        counted = bool(left and edition_id is not None and unsubscribes.count(s, edition_id, sub.id))
        if sub.status is SubscriberStatus.unsubscribed:
            return Left(True, named.name if named else None, counted)
        return Left(False, named.name if named else None, counted, link("preferences", sub.id, sub.token_version))
