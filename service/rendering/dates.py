"""Arabic dates and times the way the site prints them.

`24 تشرين الثاني/نوفمبر 2021`: readers from the Levant know the Syriac month names,
readers from Egypt and the Gulf the Latin-derived ones, so the site writes both. The
names come from CLDR through Babel (`ar_JO` and `ar_EG`), not from a list typed here.
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo

from babel import Locale
from babel.dates import get_timezone, get_timezone_location
from hijridate import Gregorian

_LEVANTINE = Locale.parse("ar_JO").months["format"]["wide"]
_EGYPTIAN = Locale.parse("ar_EG").months["format"]["wide"]
MONTHS: dict[int, str] = {m: f"{_LEVANTINE[m]}/{_EGYPTIAN[m]}" for m in range(1, 13)}

_ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def to_arabic_digits(text: str) -> str:
    """Western digits → Arabic-Indic (٠١٢…); everything else untouched."""
    return text.translate(_ARABIC_INDIC)


def _as_date(d: dt.date | dt.datetime) -> dt.date:
    if not isinstance(d, dt.date):
        raise TypeError(f"expected a date or datetime, got {type(d).__name__}")
    return d.date() if isinstance(d, dt.datetime) else d


def local_time(d: dt.datetime, tz: str | zoneinfo.ZoneInfo) -> dt.datetime:
    """An aware datetime in the site's zone; naive values are taken as UTC (how we store them)."""
    zone = zoneinfo.ZoneInfo(tz) if isinstance(tz, str) else tz
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    return d.astimezone(zone)


def hijri_date(d: dt.date | dt.datetime) -> str:
    """`19 ربيع الثاني 1443 هـ` (Umm al-Qura calendar). ValueError outside 1343–1500 AH."""
    day = _as_date(d)
    try:
        h = Gregorian(day.year, day.month, day.day).to_hijri()
    except (OverflowError, ValueError) as exc:
        raise ValueError(f"{day.isoformat()} is outside the Umm al-Qura calendar's range: {exc}") from None
    return f"{h.day} {h.month_name('ar')} {h.year} {h.notation('ar')}"


def arabic_date(d: dt.date | dt.datetime, *, hijri: bool = False, arabic_digits: bool = False) -> str:
    """`24 تشرين الثاني/نوفمبر 2021`, optionally followed by the Hijri date."""
    day = _as_date(d)
    text = f"{day.day} {MONTHS[day.month]} {day.year}"
    if hijri:
        text = f"{text} — {hijri_date(day)}"
    return to_arabic_digits(text) if arabic_digits else text


def clock_time(d: dt.datetime, *, arabic_digits: bool = False) -> str:
    """`17:33` (24-hour, as the site prints publish times)."""
    text = f"{d.hour:02d}:{d.minute:02d}"
    return to_arabic_digits(text) if arabic_digits else text


def date_and_time(d: dt.datetime, *, arabic_digits: bool = False) -> str:
    """`24 تشرين الثاني/نوفمبر 2021، 17:33`: the date, then the time (as the site prints
    "نشر: 2021-11-24 17:33"), never relative: a mail is read long after it is sent."""
    return f"{arabic_date(d, arabic_digits=arabic_digits)}، {clock_time(d, arabic_digits=arabic_digits)}"


@functools.lru_cache(maxsize=16)
def zone_label(tz: str) -> str:
    """`توقيت الأردن` for Asia/Amman (CLDR through Babel): the clock a mail's times are on."""
    if tz.upper() in ("UTC", "ETC/UTC", "GMT", "ETC/GMT", "Z"):
        return "التوقيت العالمي (UTC)"
    return get_timezone_location(get_timezone(tz), locale="ar_JO")
