"""NYSE trading calendar computed by rule for any year: holidays, early closes, regular session times (US/Eastern).

Pure (no I/O, nothing of ours imported): the simulator builds its sessions from it and the deploy expands
session-relative schedules with it; the function itself judges hours from what the gateway reports.

The rules are those NYSE applies since 2022 (Juneteenth added that year; Martin Luther King Day since 1998).
"""
from __future__ import annotations

from datetime import date, time, timedelta
from functools import lru_cache

REGULAR_OPEN = time(9, 30)
REGULAR_CLOSE = time(16, 0)
EARLY_CLOSE = time(13, 0)

# Closures NYSE ordered outside its rules (national days of mourning); no rule can predict these.
_SPECIAL_CLOSURES = {date(2025, 1, 9): 'National Day of Mourning for President Jimmy Carter'}


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th `weekday` (Monday = 0) of the month; n = -1 is the last one."""
    if n > 0:
        first = date(year, month, 1)
        return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    last = date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _easter(year: int) -> date:
    """Western Easter Sunday (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 19 * l) // 433
    month, day = divmod(h + l - 7 * m + 90, 25)
    return date(year, month, (h + l - 7 * m + 33 * month + 19) % 32)


def _observed(d: date) -> date:
    """A fixed-date holiday falling on Saturday is observed on Friday, on Sunday on Monday."""
    return d + timedelta(days={5: -1, 6: 1}.get(d.weekday(), 0))


@lru_cache(maxsize=None)
def _holidays(year: int) -> tuple[tuple[date, str], ...]:
    days = {}
    new_year = date(year, 1, 1)
    if new_year.weekday() != 5:     # Saturday: NYSE does not close on the Friday before (Rule 7.2)
        days[_observed(new_year)] = "New Year's Day"
    days[_nth_weekday(year, 1, 0, 3)] = 'Martin Luther King, Jr. Day'
    days[_nth_weekday(year, 2, 0, 3)] = "Washington's Birthday"
    days[_easter(year) - timedelta(days=2)] = 'Good Friday'
    days[_nth_weekday(year, 5, 0, -1)] = 'Memorial Day'
    if year >= 2022:
        days[_observed(date(year, 6, 19))] = 'Juneteenth National Independence Day'
    days[_observed(date(year, 7, 4))] = 'Independence Day'
    days[_nth_weekday(year, 9, 0, 1)] = 'Labor Day'
    days[_nth_weekday(year, 11, 3, 4)] = 'Thanksgiving Day'
    days[_observed(date(year, 12, 25))] = 'Christmas Day'
    days.update({d: name for d, name in _SPECIAL_CLOSURES.items() if d.year == year})
    return tuple(sorted(days.items()))


def nyse_holidays(year: int) -> dict[date, str]:
    """Full-day NYSE closures of `year` (weekdays only), date -> holiday name, in date order."""
    return dict(_holidays(year))


def nyse_early_closes(year: int) -> dict[date, time]:
    """NYSE 13:00 ET early closes of `year`.

    The rule: July 3, the day after Thanksgiving and December 24 close early when they are trading weekdays.
    So there is no July early close when July 4 falls on Saturday (July 3 is then the holiday), Sunday or
    Monday, and none on December 24 when it is a weekend day or the observed Christmas holiday.
    """
    holidays = _holidays_set(year)
    candidates = (date(year, 7, 3), _nth_weekday(year, 11, 3, 4) + timedelta(days=1), date(year, 12, 24))
    return {d: EARLY_CLOSE for d in candidates if d.weekday() < 5 and d not in holidays}


@lru_cache(maxsize=None)
def _holidays_set(year: int) -> frozenset[date]:
    return frozenset(d for d, _ in _holidays(year))


def is_trading_day(d: date) -> bool:
    """True on NYSE trading days (weekdays that are not holidays)."""
    return d.weekday() < 5 and d not in _holidays_set(d.year)


def regular_session(d: date) -> tuple[time, time] | None:
    """NYSE regular session (open, close) in US/Eastern on `d`, or None when the exchange is closed."""
    if not is_trading_day(d):
        return None
    return REGULAR_OPEN, nyse_early_closes(d.year).get(d, REGULAR_CLOSE)
