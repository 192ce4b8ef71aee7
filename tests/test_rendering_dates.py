"""Arabic dates as the site writes them, relative times, Hijri and Arabic-Indic digits."""

from __future__ import annotations

import datetime as dt

import pytest

from service.rendering.dates import arabic_date, clock_time, hijri_date, local_time, relative_time

NOW = dt.datetime(2021, 11, 24, 19, 33, tzinfo=dt.UTC)


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
    with pytest.raises(ValueError, match="aware"):
        relative_time(dt.datetime(2021, 11, 24), NOW)


@pytest.mark.parametrize(
    ("ago", "expected"),
    [
        (dt.timedelta(seconds=20), "الآن"),
        (dt.timedelta(minutes=1), "قبل دقيقة"),
        (dt.timedelta(minutes=2), "قبل دقيقتين"),
        (dt.timedelta(minutes=5), "قبل 5 دقائق"),
        (dt.timedelta(minutes=11), "قبل 11 دقيقة"),
        (dt.timedelta(hours=1, minutes=10), "قبل ساعة"),
        (dt.timedelta(hours=2), "قبل ساعتين"),
        (dt.timedelta(hours=3), "قبل 3 ساعات"),
        (dt.timedelta(hours=13), "قبل 13 ساعة"),
        (dt.timedelta(days=1), "قبل يوم"),
        (dt.timedelta(days=2), "قبل يومين"),
        (dt.timedelta(days=7), "قبل 7 أيام"),
        (dt.timedelta(days=12), "قبل 12 يوماً"),
        (dt.timedelta(days=45), "10 تشرين الأول/أكتوبر 2021"),
        (-dt.timedelta(hours=2), "بعد ساعتين"),
    ],
)
def test_relative_time_agrees_with_the_count(ago, expected):
    assert relative_time(NOW - ago, NOW) == expected


def test_relative_time_with_arabic_digits():
    assert relative_time(NOW - dt.timedelta(hours=5), NOW, arabic_digits=True) == "قبل ٥ ساعات"


def test_local_time_uses_the_site_zone_and_reads_naive_as_utc():
    assert local_time(dt.datetime(2021, 11, 24, 15, 33), "Asia/Amman").hour == 17
    assert local_time(dt.datetime(2021, 11, 24, 22, 30, tzinfo=dt.UTC), "Asia/Amman").day == 25
