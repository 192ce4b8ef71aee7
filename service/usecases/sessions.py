"""Who is asking: an editor's page session (log in, look up, log out) and the API token.

The pages and the API have separate credentials.  The API takes the editor's token as
a Bearer header; the pages take a server-side session (service.staff.sessions) made
by logging in with name and token, rotated at every login and ended by logout.

Failed logins are counted per client address and per name (service.limits, which
works without Redis); past either limit every attempt — right or wrong — is refused
with a wait until the window ends, so guessing is slowed to a few tries an hour and
a distributed guess at one editor's token as much as a local one.
"""

from __future__ import annotations

from dataclasses import dataclass

from service import limits
from service.db import session_scope
from service.logs import get_logger
from service.models import audit
from service.staff import sessions
from service.staff.editors import authenticate, authenticate_login, has_role, normalise_name

log = get_logger(__name__)

LOGIN_FAILURES_PER_CLIENT = 10  # failed logins from one address …
LOGIN_FAILURES_PER_NAME = 10  # … or for one name …
LOGIN_WINDOW = 15 * 60  # … per this many seconds
NAME_KEY_MAX = 200


@dataclass(frozen=True)
class Staff:
    """An authenticated editor or admin; `session_id` is set for the pages' session."""

    id: int
    name: str
    role: str
    session_id: int | None = None

    @property
    def actor(self) -> str:
        return f"editor:{self.id}"

    def may(self, needed: str) -> bool:
        return has_role(self.role, needed)


class LoginThrottled(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"too many failed logins; retry after {retry_after} s")
        self.retry_after = retry_after


def _name_key(name: object) -> str:
    return normalise_name(name).casefold()[:NAME_KEY_MAX]


def api_staff(token: str | None) -> Staff | None:
    """The editor holding this API token, or None."""
    with session_scope() as s:
        editor = authenticate(s, token)
        if editor is None:
            return None
        return Staff(editor.id, editor.name, editor.role.value)


def page_staff(secret: str | None) -> Staff | None:
    """The editor whose live page session this cookie secret names, or None."""
    with session_scope() as s:
        found = sessions.lookup(s, secret)
    if found is None:
        return None
    return Staff(found.editor_id, found.name, found.role, found.session_id)


def log_in(name: str | None, token: str | None, client: str, old_secret: str | None = None) -> tuple[Staff, str] | None:
    """A new page session for the editor with this name and token: (who, cookie secret).

    None when name and token do not match an active editor (the failure is counted);
    raises LoginThrottled while the client or the name is over its limit.  The session
    the browser held before (if any) is ended: a session never survives a login.
    """
    name_key = _name_key(name)
    checks = [limits.peek("login-client", client, LOGIN_FAILURES_PER_CLIENT, LOGIN_WINDOW)]
    if name_key:
        checks.append(limits.peek("login-name", name_key, LOGIN_FAILURES_PER_NAME, LOGIN_WINDOW))
    refused = [c for c in checks if not c.allowed]
    if refused:
        log.info("editor_login_throttled")
        raise LoginThrottled(max(c.retry_after for c in refused))
    with session_scope() as s:
        editor = authenticate_login(s, name, token)
        if editor is not None:
            sessions.end(s, old_secret)
            row, secret = sessions.start(s, editor)
            audit(s, f"editor:{editor.id}", "editor.login", f"editor:{editor.id}")
            who = Staff(editor.id, editor.name, editor.role.value, row.id)
    if editor is None:
        limits.hit("login-client", client, LOGIN_FAILURES_PER_CLIENT, LOGIN_WINDOW)
        if name_key:
            limits.hit("login-name", name_key, LOGIN_FAILURES_PER_NAME, LOGIN_WINDOW)
        log.info("editor_login_failed")
        return None
    log.info("editor_login", editor_id=who.id)
    return who, secret


def log_out(staff: Staff, secret: str | None) -> None:
    with session_scope() as s:
        sessions.end(s, secret)
        audit(s, staff.actor, "editor.logout", f"editor:{staff.id}")
    log.info("editor_logout", editor_id=staff.id)
