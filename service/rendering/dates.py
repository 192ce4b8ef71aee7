"""Arabic dates and times the way the site prints them.

`24 تشرين الثاني/نوفمبر 2021`: readers from the Levant know the Syriac month names,
readers from Egypt and the Gulf the Latin-derived ones, so the site writes both. The
names come from CLDR through Babel (`ar_JO` and `ar_EG`), not from a list typed here.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

from babel import Locale
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


# Arabic counts agree with the noun: 1 and 2 have their own forms (singular, dual),
# 3–10 take the plural, 11–99 the singular (accusative for يوم), and from 100 on the
# last two digits decide again.  (one, two, plural, singular-after-11, singular-after-100)
_UNITS = {
    "minute": ("دقيقة", "دقيقتين", "دقائق", "دقيقة", "دقيقة"),
    "hour": ("ساعة", "ساعتين", "ساعات", "ساعة", "ساعة"),
    "day": ("يوم", "يومين", "أيام", "يوماً", "يوم"),
}


def _count(n: int, unit: str) -> str:
    one, two, plural, eleven, hundred = _UNITS[unit]
    if n == 1:
        return one
    if n == 2:
        return two
    tail = n % 100
    if 3 <= tail <= 10:
        return f"{n} {plural}"
    if 11 <= tail <= 99:
        return f"{n} {eleven}"
    return f"{n} {hundred}"


def relative_time(d: dt.datetime, now: dt.datetime, *, arabic_digits: bool = False) -> str:
    """`قبل ساعتين`, `قبل 3 دقائق`, `الآن`; `بعد …` for the future.

    Beyond 30 days a relative time stops helping the reader: the date is given instead.
    Both values must be aware, or both naive (then taken as UTC).
    """
    if (d.tzinfo is None) != (now.tzinfo is None):
        raise ValueError("relative_time needs two aware or two naive datetimes")
    seconds = (now - d).total_seconds()
    ahead = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        return "الآن"
    if seconds < 3600:
        phrase = _count(int(seconds // 60), "minute")
    elif seconds < 86400:
        phrase = _count(int(seconds // 3600), "hour")
    elif seconds < 31 * 86400:
        phrase = _count(int(seconds // 86400), "day")
    else:
        return arabic_date(d, arabic_digits=arabic_digits)
    text = f"{'بعد' if ahead else 'قبل'} {phrase}"
    return to_arabic_digits(text) if arabic_digits else text
