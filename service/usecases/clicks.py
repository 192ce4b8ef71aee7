"""A reader follows a link from a mail (`GET /r/…`): where to send them, counted on the way
(service/clicks/follow.py); and the clicks /metrics shows."""

from __future__ import annotations

from collections.abc import Mapping

from service.clicks import follow as following
from service.clicks.follow import Followed, Refused
from service.db import session_scope
from service.models import utcnow

__all__ = ["Followed", "Refused", "follow", "totals_by_kind"]


def follow(ref: str, method: str, headers: Mapping[str, str]) -> Followed | Refused:
    # A HEAD writes nothing; a GET may count, so on SQLite it takes the write lock at once.
    with session_scope(write=method.upper() == "GET") as session:
        result = following.follow(session, ref, method, headers, utcnow())
    if isinstance(result, Followed):
        result.count_unique()  # Redis, after the commit: no lock held during the round trip
    return result


def totals_by_kind() -> dict[str, tuple[int, int]]:
    with session_scope() as session:
        return following.totals_by_kind(session)
