"""The NYSE calendar against the exchange's published holiday and early-close lists."""
from datetime import date, time, timedelta

import pytest

from trading.exchange_calendar import is_trading_day, nyse_early_closes, nyse_holidays, regular_session

PUBLISHED_HOLIDAYS = {
    2025: ['2025-01-01', '2025-01-09', '2025-01-20', '2025-02-17', '2025-04-18', '2025-05-26', '2025-06-19',
           '2025-07-04', '2025-09-01', '2025-11-27', '2025-12-25'],
    2026: ['2026-01-01', '2026-01-19', '2026-02-16', '2026-04-03', '2026-05-25', '2026-06-19', '2026-07-03',
           '2026-09-07', '2026-11-26', '2026-12-25'],
    2027: ['2027-01-01', '2027-01-18', '2027-02-15', '2027-03-26', '2027-05-31', '2027-06-18', '2027-07-05',
           '2027-09-06', '2027-11-25', '2027-12-24'],
}
PUBLISHED_EARLY_CLOSES = {
    2021: ['2021-11-26'],                              # July 4 on Sunday, Christmas Eve the observed holiday
    2024: ['2024-07-03', '2024-11-29', '2024-12-24'],
    2025: ['2025-07-03', '2025-11-28', '2025-12-24'],
    2026: ['2026-11-27', '2026-12-24'],                # July 3 is the observed Independence Day
    2027: ['2027-11-26'],
}


@pytest.mark.parametrize('year', sorted(PUBLISHED_HOLIDAYS))
def test_holidays_match_the_published_nyse_calendar(year):
    assert [d.isoformat() for d in nyse_holidays(year)] == PUBLISHED_HOLIDAYS[year]


@pytest.mark.parametrize('year', sorted(PUBLISHED_EARLY_CLOSES))
def test_early_closes_match_the_published_nyse_calendar(year):
    closes = nyse_early_closes(year)
    assert sorted(d.isoformat() for d in closes) == PUBLISHED_EARLY_CLOSES[year]
    assert set(closes.values()) == {time(13, 0)}


def test_holidays_are_named():
    holidays = nyse_holidays(2026)
    assert holidays[date(2026, 11, 26)] == 'Thanksgiving Day'
    assert holidays[date(2026, 4, 3)] == 'Good Friday'
    assert holidays[date(2026, 7, 3)] == 'Independence Day'


@pytest.mark.parametrize('good_friday', ['2019-04-19', '2024-03-29', '2028-04-14', '2030-04-19', '2038-04-23'])
def test_good_friday_follows_easter(good_friday):
    day = date.fromisoformat(good_friday)
    assert nyse_holidays(day.year)[day] == 'Good Friday'


def test_new_year_on_saturday_is_not_observed_on_the_friday_before():
    assert date(2022, 1, 1).weekday() == 5
    assert regular_session(date(2021, 12, 31)) == (time(9, 30), time(16, 0))
    assert min(nyse_holidays(2022)) == date(2022, 1, 17)        # Martin Luther King Day comes first
    assert date(2021, 12, 31) not in nyse_holidays(2021)


def test_new_year_on_sunday_is_observed_on_monday():
    assert nyse_holidays(2023)[date(2023, 1, 2)] == "New Year's Day"


def test_juneteenth_starts_in_2022():
    assert not [name for name in nyse_holidays(2021).values() if 'Juneteenth' in name]
    assert 'Juneteenth' in nyse_holidays(2022)[date(2022, 6, 20)]      # June 19 2022 was a Sunday


def test_regular_sessions_around_thanksgiving_and_christmas_2026():
    assert regular_session(date(2026, 11, 25)) == (time(9, 30), time(16, 0))
    assert regular_session(date(2026, 11, 26)) is None
    assert regular_session(date(2026, 11, 27)) == (time(9, 30), time(13, 0))
    assert regular_session(date(2026, 12, 24)) == (time(9, 30), time(13, 0))
    assert regular_session(date(2026, 12, 25)) is None
    assert regular_session(date(2026, 4, 3)) is None


def test_weekends_are_closed():
    saturday = date(2026, 11, 28)
    for day in (saturday, saturday + timedelta(days=1)):
        assert regular_session(day) is None
        assert not is_trading_day(day)
    assert is_trading_day(saturday + timedelta(days=2))


def test_trading_days_are_the_weekdays_that_are_not_holidays():
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(365)]
    assert sum(map(is_trading_day, days)) == 365 - 104 - len(nyse_holidays(2026))
