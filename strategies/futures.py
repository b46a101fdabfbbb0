"""Quarterly equity-index futures (CME ES, MNQ, ...): expiries and the front month to trade on a given day."""
from __future__ import annotations

from datetime import date, timedelta
from typing import Iterator

QUARTER_MONTHS = (3, 6, 9, 12)


def quarterly_expiry(year: int, month: int) -> date:
    """Last trading day: the third Friday of the month, or the business day before when that Friday is a holiday.

    Only two exchange holidays can fall on a third Friday of Mar/Jun/Sep/Dec: Good Friday (March 20 or 21)
    and Juneteenth (June 19, or Friday June 18 when the 19th is a Saturday; observed since 2022).
    """
    first = date(year, month, 1)
    friday = first + timedelta(days=(4 - first.weekday()) % 7 + 14)
    good_friday = _easter(year) - timedelta(days=2)
    juneteenth = (date(year, 6, 18), date(year, 6, 19)) if year >= 2022 else ()
    if friday == good_friday or friday in juneteenth:
        return friday - timedelta(days=1)
    return friday


def quarterly_expiries_from(today: date) -> Iterator[date]:
    """Quarterly expiries on or after `today`, in order, without end."""
    year, quarter = today.year, (today.month - 1) // 3
    while True:
        expiry = quarterly_expiry(year, QUARTER_MONTHS[quarter])
        if expiry >= today:
            yield expiry
        year, quarter = (year + 1, 0) if quarter == 3 else (year, quarter + 1)


def front_and_previous(today: date, roll_days_before_expiry: int) -> tuple[date, date | None]:
    """The expiry to hold on `today` and, while it is still trading after a roll, the one rolled out of.

    A contract is held until `roll_days_before_expiry` calendar days before its expiry; from that day on
    the next quarter is the front month.
    """
    expiries = quarterly_expiries_from(today)
    previous, front = None, next(expiries)
    while today >= front - timedelta(days=roll_days_before_expiry):
        previous, front = front, next(expiries)
    return front, previous


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
