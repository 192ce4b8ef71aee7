"""A reader's choices of *when*, as typed into a form or a JSON body, made into values.

Each function returns a clean value or raises InvalidInput (field and an Arabic message);
none writes.  An empty value means the default: the site's hour or day, no quiet hours,
no cap.
"""

from __future__ import annotations

import datetime as dt

from service.subscribers.errors import InvalidInput
from service.subscribers.hours import offered_hours
from service.subscribers.quiet import CAPS, MODES, PAUSE_WEEKS

MSG_HOUR = "اختر موعد النشرة من المواعيد المعروضة."
MSG_WEEKDAY = "اختر يوم النشرة الأسبوعية من الأيام المعروضة."
MSG_QUIET = "اختر بداية ساعات الهدوء ونهايتها معاً (ساعتين مختلفتين)، أو اتركهما فارغتين."
MSG_QUIET_MODE = "اختر ما نفعله بالتنبيهات في ساعات الهدوء: نؤجّلها أو لا نرسلها."
MSG_CAP = "اختر الحد الأقصى للتنبيهات في اليوم من القائمة."
MSG_PAUSE = "اختر مدة الإيقاف المؤقت من القائمة."


def _small_int(raw: object) -> int | None:
    """An int from a form ("7") or JSON (7); None for anything else (bool included)."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        text = raw.strip()
        if text.isascii() and text.isdigit() and len(text) <= 2:
            return int(text)
    return None


def _empty(raw: object) -> bool:
    return raw is None or (isinstance(raw, str) and not raw.strip())


def digest_hour(raw: object, newsletter=None) -> int | None:
    """An hour among those offered (for `newsletter`: its own default hour is one)."""
    if _empty(raw):
        return None
    value = _small_int(raw)
    if value is None or value not in offered_hours(newsletter=newsletter):
        raise InvalidInput("digest_hour", MSG_HOUR)
    return value


def digest_weekday(raw: object) -> int | None:
    if _empty(raw):
        return None
    value = _small_int(raw)
    if value is None or not 0 <= value <= 6:
        raise InvalidInput("digest_weekday", MSG_WEEKDAY)
    return value


def quiet_hours(start_raw: object, end_raw: object, mode_raw: object) -> tuple[int | None, int | None, str]:
    mode = mode_raw.strip() if isinstance(mode_raw, str) and mode_raw.strip() else "hold"
    if mode not in MODES:
        raise InvalidInput("quiet_mode", MSG_QUIET_MODE)
    if _empty(start_raw) and _empty(end_raw):
        return None, None, mode
    start, end = _small_int(start_raw), _small_int(end_raw)
    if start is None or end is None or not (0 <= start <= 23 and 0 <= end <= 23) or start == end:
        raise InvalidInput("quiet_start", MSG_QUIET)
    return start, end, mode


def alert_cap(raw: object) -> int | None:
    if _empty(raw):
        return None
    value = _small_int(raw)
    if value not in CAPS:
        raise InvalidInput("alert_cap", MSG_CAP)
    return value


def pause(raw: object, current: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
    """The reader's paused_until after their choice: "" keeps it, "resume" ends it, 1/2/4 weeks from now."""
    if _empty(raw):
        return current if current is not None and current > now else None
    if isinstance(raw, str) and raw.strip() == "resume":
        return None
    weeks = _small_int(raw)
    if weeks not in PAUSE_WEEKS:
        raise InvalidInput("pause", MSG_PAUSE)
    return now + dt.timedelta(weeks=weeks)
