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
from service.models import Subscriber, SubscriberStatus, utcnow
from service.subscribers import choices, clocks, consent, lifecycle
from service.subscribers.consent import Evidence
from service.subscribers.errors import InvalidInput
from service.subscribers.hours import WEEKDAYS_AR, effective_hour, effective_weekday, offered_hours
from service.subscribers.quiet import CAPS, PAUSE_WEEKS
from service.subscribers.tokens import BadToken, link, read_token
from service.subscribers.validation import (
    MAX_EMAIL_LENGTH,
    all_sections,
    parse_frequency,
    parse_yes_no,
    section_ids,
)
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


def _hour_options() -> list[dict]:
    return [{"value": h, "label": f"{h:02d}:00"} for h in offered_hours()]


def _weekday_options() -> list[dict]:
    return [{"value": i, "label": name} for i, name in enumerate(WEEKDAYS_AR)]


def signup_form() -> dict:
    """What the signup form offers: the sections, the hours and days, the consent sentence."""
    with session_scope() as s:
        sections = [{"id": x.id, "name": x.name, "slug": x.slug} for x in all_sections(s)]
    return {
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


def _reader(sub: Subscriber) -> Reader:
    return Reader(sub.id, sub.status is SubscriberStatus.active, link("preferences", sub.id, sub.token_version))


def confirmation(token: str) -> Reader:
    """The reader a confirmation link names (raises BadToken); changes nothing — mail
    scanners and link previews follow GET links."""
    with session_scope() as s:
        return _reader(lifecycle.subscriber_to_confirm(s, token))


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
            return Confirmed(_reader(sub), refused=True)
        return Confirmed(_reader(lifecycle.confirm(s, token, evidence=evidence)))


# ---------------------------------------------------------------- preferences


@dataclass(frozen=True)
class PreferencesForm:
    """The preferences form, as typed (validated by `save_preferences`).  `sections`: the
    ticked section ids in the reader's order."""

    sections: list
    frequency: object = None
    alerts: object = None
    digest_hour: object = None
    digest_weekday: object = None
    quiet_start: object = None
    quiet_end: object = None
    quiet_mode: object = None
    alert_cap: object = None
    pause: object = None
    time_zone: object = None


@dataclass(frozen=True)
class PreferencesPage:
    """What the preferences page shows (`values`, for its template), and how the request went."""

    subscriber_id: int
    values: dict = field(default_factory=dict)
    saved: bool = False
    refused: bool = False  # `authorised` said no: nothing changed
    error: InvalidInput | None = None  # a bad field: nothing changed


def _preferences_values(s: Session, sub: Subscriber) -> dict:
    chosen = list(sub.sections or [])
    options = [{"id": x.id, "name": x.name} for x in all_sections(s, keep=chosen)]
    rank = {sid: i + 1 for i, sid in enumerate(chosen)}
    for opt in options:
        opt["checked"] = opt["id"] in rank
        opt["rank"] = rank.get(opt["id"], "")
    # The reader's own order first, then the rest in the site's order.
    options.sort(key=lambda o: (0, o["rank"]) if o["checked"] else (1, 0))
    return {
        "sections": options,
        "frequency": sub.frequency.value,
        "alerts": sub.alerts,
        "pending": sub.status is SubscriberStatus.pending,
        "unsubscribe_url": link("unsubscribe", sub.id, sub.token_version),
        **_schedule_values(s, sub),
    }


def _schedule_values(s: Session, sub: Subscriber) -> dict:
    """The preferences page's «when» and «your data» parts."""
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
        "hours": _hour_options(),
        "digest_hour": effective_hour(sub.digest_hour),
        "weekdays": _weekday_options(),
        "digest_weekday": effective_weekday(sub.digest_weekday),
        "quiet_start": sub.quiet_start,
        "quiet_end": sub.quiet_end,
        "quiet_mode": sub.quiet_mode or "hold",
        "alert_cap": sub.alert_cap,
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


def save_preferences(token: str, form: PreferencesForm, *, authorised: Authorised) -> PreferencesPage:
    """Validate every field, then save them all, or none (raises BadToken)."""
    with session_scope() as s:
        sub = lifecycle.subscriber_for_token(s, "preferences", token, lock=True)
        if not authorised(sub.id):
            log.info("preferences_bad_csrf", subscriber_id=sub.id)
            return PreferencesPage(sub.id, _preferences_values(s, sub), refused=True)
        try:
            if len(form.sections) > MAX_SECTIONS_FIELDS:
                raise InvalidInput("sections", MSG_SECTIONS)
            chosen = section_ids(s, form.sections)
            frequency = parse_frequency(form.frequency)
            alerts = parse_yes_no(form.alerts or "no")
            hour = choices.digest_hour(form.digest_hour)
            weekday = choices.digest_weekday(form.digest_weekday)
            quiet_start, quiet_end, quiet_mode = choices.quiet_hours(form.quiet_start, form.quiet_end,
                                                                     form.quiet_mode)
            cap = choices.alert_cap(form.alert_cap)
            paused_until = choices.pause(form.pause, sub.paused_until, utcnow())
            zone = clocks.check(form.time_zone)
            if zone == get_settings().timezone and sub.time_zone is None:
                zone = None  # the site's clock, as shown: they keep following TIMEZONE
        except InvalidInput as exc:
            log.info("preferences_invalid", subscriber_id=sub.id, field=exc.field)
            return PreferencesPage(sub.id, _preferences_values(s, sub), error=exc)
        lifecycle.update_preferences(s, sub, sections=chosen, frequency=frequency, alerts=alerts)
        lifecycle.update_schedule(s, sub, digest_hour=hour, digest_weekday=weekday, quiet_start=quiet_start,
                                  quiet_end=quiet_end, quiet_mode=quiet_mode, alert_cap=cap,
                                  paused_until=paused_until, time_zone=zone)
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


def unsubscribe_state(token: str) -> str:
    """"subscribed" (the page shows the button) or "unsubscribed" (already done: the
    link of a reader who has not come back since); raises BadToken otherwise.  Changes
    nothing: mail scanners and link previews follow GET links."""
    sub_id, version = read_token("unsubscribe", token)
    with session_scope() as s:
        sub = s.get(Subscriber, sub_id)
        if sub is not None and sub.token_version == version:
            return "subscribed"
        if sub is not None and sub.status is SubscriberStatus.unsubscribed and version < sub.token_version:
            return "unsubscribed"
    raise BadToken("this link is no longer valid")


# The edition an unsubscribe link names (`e=`): an id, or None for anything else.
edition_ref = unsubscribes.edition_ref


def unsubscribe(token: str, edition: object = None) -> bool:
    """The page's button or RFC 8058 one-click: idempotent (raises BadToken).  `edition`:
    the link's raw `e=`; the edition it names counts this reader's departure once, when
    this call is the one that moved them out (and only if they were sent it).  True if
    counted."""
    edition_id = unsubscribes.edition_ref(edition)
    with session_scope() as s:
        sub, left = lifecycle.leave_by_token(s, token)
        return left and edition_id is not None and unsubscribes.count(s, edition_id, sub.id)
