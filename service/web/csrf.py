"""CSRF tokens for our forms: signed, time-limited, bound to what the form is for.

Stateless on purpose: the signup form is embedded under articles on the news site,
where a cookie of ours is a third-party cookie that browsers drop.  A token minted
for one form (say, one reader's preferences) is refused by every other.
"""

from __future__ import annotations

import secrets

from itsdangerous import BadData, URLSafeTimedSerializer

from service.config import get_settings

FIELD = "csrf_token"
MAX_AGE = 24 * 3600  # a page left open over a day must be reloaded


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(get_settings().secret_key, salt="nashra.csrf")


def issue(purpose: str) -> str:
    return _serializer().dumps([purpose, secrets.token_hex(8)])


def valid(token: object, purpose: str) -> bool:
    if not isinstance(token, str) or not token or len(token) > 500:
        return False
    try:
        value = _serializer().loads(token, max_age=MAX_AGE)
    except BadData:
        return False
    return isinstance(value, list) and len(value) == 2 and value[0] == purpose
