"""Addresses kept only as a keyed hash (`suppressed_hashes`): what is left of a reader who
asked to be forgotten, or who unsubscribed long ago (service/subscribers/privacy.py).

The hash is an HMAC-SHA256 of the address as we store it (normalised, lower-cased) under
a key derived from SECRET_KEY: the table alone cannot confirm a guessed address, yet the
same address always gives the same hash, so an old list cannot add it back.  (Changing
SECRET_KEY changes every hash: the old ones then match nothing.)

What a hash blocks depends on why it is there: every hash refuses an import; a hash of a
bounced or complained-about address (it was on the suppression list when the reader was
forgotten) refuses everything, the signup form too, as the suppression list does; a
forgotten or long-unsubscribed reader may still sign up again themselves, through double
opt-in, and their hash goes when they confirm.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

import sqlalchemy as sa

from service.config import get_settings
from service.db import insert_ignoring
from service.models import SuppressedHash, utcnow

SELF_SERVICE = ("forgotten", "unsubscribed")  # the reader's own signup may lift these


def _key() -> bytes:
    secret = get_settings().secret_key.encode("utf-8", "surrogatepass")
    return hmac.new(secret, b"nashra.suppressed-address", hashlib.sha256).digest()


def address_hash(email: str) -> str:
    return hmac.new(_key(), email.strip().lower().encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def address_hasher() -> Callable[[str], str]:
    """`address_hash` with the key derived once: for many addresses (an import's chunk)."""
    key = _key()
    return lambda email: hmac.new(key, email.strip().lower().encode("utf-8", "surrogatepass"),
                                  hashlib.sha256).hexdigest()


def reason_for(session, email: str) -> str | None:
    """Why this address is kept as a hash, or None."""
    return session.scalar(sa.select(SuppressedHash.reason).where(SuppressedHash.hash == address_hash(email)))


def hashed_among(session, emails: list[str]) -> set[str]:
    """The addresses of `emails` (as given) that are kept as a hash."""
    by_hash = {address_hash(e): e for e in emails}
    if not by_hash:
        return set()
    found = session.scalars(sa.select(SuppressedHash.hash).where(SuppressedHash.hash.in_(list(by_hash))))
    return {by_hash[h] for h in found}


def keep(session, email: str, reason: str) -> None:
    """Keep the address as a hash (a first reason that blocks more is never weakened)."""
    table = SuppressedHash.__table__
    digest = address_hash(email)
    if reason not in SELF_SERVICE:
        session.execute(sa.delete(table).where(table.c.hash == digest, table.c.reason.in_(SELF_SERVICE)))
    session.execute(insert_ignoring(session, table, ["hash"]).values(hash=digest, reason=reason[:50],
                                                                      created_at=utcnow()))


def lift_self_service(session, email: str) -> bool:
    """The reader came back (confirmed a new signup): their forgotten/unsubscribed hash goes."""
    table = SuppressedHash.__table__
    return session.execute(sa.delete(table).where(table.c.hash == address_hash(email),
                                                  table.c.reason.in_(SELF_SERVICE))).rowcount > 0


def unblock(session, email: str) -> bool:
    """An admin lifted the block of a bounced or complained-about address: its hash stays,
    as a forgotten reader's (see service/subscribers/suppression.py, `lift_hashed`)."""
    table = SuppressedHash.__table__
    return session.execute(sa.update(table).where(table.c.hash == address_hash(email),
                                                  table.c.reason.not_in(SELF_SERVICE))
                           .values(reason="forgotten")).rowcount > 0
