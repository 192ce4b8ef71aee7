"""Signed, purpose-bound tokens for the links in every email.

A token names a subscriber id and the subscriber's token_version; bumping the version
(on unsubscribe or address change) invalidates every link already sent.  Tokens carry
no address, so a forwarded email leaks nothing but the power to change preferences.
"""

from __future__ import annotations

from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer

from service.config import Settings, get_settings

PURPOSES = ("confirm", "unsubscribe", "preferences")
CONFIRM_MAX_AGE = 7 * 24 * 3600


class BadToken(ValueError):
    """The token is forged, truncated, for another purpose, or expired."""


def _serializer(purpose: str, settings: Settings) -> URLSafeTimedSerializer:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}")
    return URLSafeTimedSerializer(settings.secret_key, salt=f"nashra.{purpose}")


def make_token(purpose: str, subscriber_id: int, token_version: int, settings: Settings | None = None) -> str:
    return _serializer(purpose, settings or get_settings()).dumps([subscriber_id, token_version])


def read_token(purpose: str, token: str, settings: Settings | None = None, max_age: int | None = None) -> tuple[int, int]:
    """Return (subscriber_id, token_version) or raise BadToken."""
    if purpose == "confirm" and max_age is None:
        max_age = CONFIRM_MAX_AGE
    try:
        value = _serializer(purpose, settings or get_settings()).loads(token, max_age=max_age)
    except SignatureExpired:
        raise BadToken("this link has expired") from None
    except BadData:
        raise BadToken("this link is not valid") from None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise BadToken("this link is not valid")
    return value[0], value[1]


def link(purpose: str, subscriber_id: int, token_version: int, settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    return f"{settings.public_url}/{purpose}/{make_token(purpose, subscriber_id, token_version, settings)}"
