"""Arabic dates as the site writes them, absolute times and their zone, Hijri and Arabic-Indic digits."""

from __future__ import annotations

import datetime as dt

import pytest

from service.rendering.dates import (
    arabic_date,
    clock_time,
    date_and_time,
    hijri_date,
    local_time,
    zone_label,
)


def test_levantine_and_egyptian_month_names_together():
    assert arabic_date(dt.date(2021, 11, 24)) == "24 تشرين الثاني/نوفمبر 2021"
    assert arabic_date(dt.date(2022, 1, 3)) == "3 كانون الثاني/يناير 2022"
    assert arabic_date(dt.datetime(2023, 6, 18, 12, 17)) == "18 حزيران/يونيو 2023"


def test_hijri_umm_al_qura_and_arabic_indic_digits():
    assert hijri_date(dt.date(2021, 11, 24)) == "19 ربيع الثاني 1443 هـ"
    assert arabic_date(dt.date(2021, 11, 24), hijri=True) == "24 تشرين الثاني/نوفمبر 2021 — 19 ربيع الثاني 1443 هـ"
    assert arabic_date(dt.date(2021, 11, 24), arabic_digits=True) == "٢٤ تشرين الثاني/نوفمبر ٢٠٢١"
    assert clock_time(dt.datetime(2021, 1, 1, 7, 5), arabic_digits=True) == "٠٧:٠٥"


def test_hijri_outside_the_calendar_is_a_clear_error():
    with pytest.raises(ValueError, match="Umm al-Qura"):
        hijri_date(dt.date(1800, 1, 1))


def test_bad_values_are_refused():
    with pytest.raises(TypeError):
        arabic_date("2021-11-24")  # type: ignore[arg-type]


def test_date_then_time_as_the_site_prints_them():
    assert date_and_time(dt.datetime(2021, 11, 24, 17, 33)) == "24 تشرين الثاني/نوفمبر 2021، 17:33"
    assert date_and_time(dt.datetime(2023, 6, 18, 12, 17), arabic_digits=True) == "١٨ حزيران/يونيو ٢٠٢٣، ١٢:١٧"


def test_the_zone_is_named_in_arabic():
    assert zone_label("Asia/Amman") == "توقيت الأردن"
    assert zone_label("Africa/Cairo") == "توقيت مصر"
    assert zone_label("UTC") == "التوقيت العالمي (UTC)"


def test_local_time_uses_the_site_zone_and_reads_naive_as_utc():
    assert local_time(dt.datetime(2021, 11, 24, 15, 33), "Asia/Amman").hour == 17
    assert local_time(dt.datetime(2021, 11, 24, 22, 30, tzinfo=dt.UTC), "Asia/Amman").day == 25
