"""Is a contract's market open? Judged from the liquidHours and timeZoneId the gateway reports.

IB writes hours as `;`-separated days, each `YYYYMMDD:CLOSED` or comma-separated ranges. Since API
9.72 a range is `YYYYMMDD:HHMM-YYYYMMDD:HHMM` (it may cross midnight); older gateways write
`YYYYMMDD:HHMM-HHMM`, with the date only in front. Both are read here.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lib.times import iso

Span = tuple[datetime, datetime]


class HoursUnreadable(ValueError):
    """The hours text or its time zone cannot be understood."""


@dataclass(frozen=True)
class MarketState:
    """Whether the market is open at `now`, and when it closes or next opens (UTC; None if not reported)."""

    open: bool
    now: datetime
    closes_at: datetime | None = None
    next_open: datetime | None = None

    def describe(self, name: str) -> str:
        """One line for results: 'SPY: market closed at ...; next open ...'."""
        if self.open:
            return f'{name}: market open until {iso(self.closes_at) if self.closes_at else "unknown"}'
        when = iso(self.next_open) if self.next_open else 'not within the hours the gateway reported'
        return f'{name}: market closed at {iso(self.now)}; next open {when}'


def sessions(hours: str, time_zone: str) -> list[Span]:
    """The open spans in `hours`, as UTC datetimes in time order."""
    try:
        zone = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise HoursUnreadable(f'unknown time zone {time_zone!r}') from None
    spans: list[Span] = []
    for day_text in filter(None, (part.strip() for part in hours.split(';'))):
        day, _, ranges = day_text.partition(':')
        if ranges.upper() == 'CLOSED':
            continue
        for text in ranges.split(','):
            start_text, separator, end_text = text.partition('-')
            if not separator:
                raise HoursUnreadable(f'cannot read the range {text!r} in {hours!r}')
            start = _moment(day, start_text, zone, hours)
            end = _moment(day, end_text, zone, hours)
            if end <= start:      # old format: an overnight range ends on the next day
                end += timedelta(days=1)
            spans.append((start.astimezone(timezone.utc), end.astimezone(timezone.utc)))
    return _merged(sorted(spans))


def market_state(hours: str, time_zone: str, now: datetime) -> MarketState:
    """Open or closed at `now` (a tz-aware instant, e.g. the gateway's reqCurrentTime)."""
    spans = sessions(hours, time_zone)
    now = now.astimezone(timezone.utc)
    for start, end in spans:
        if start <= now < end:
            return MarketState(True, now, closes_at=end)
    upcoming = [start for start, _ in spans if start > now]
    return MarketState(False, now, next_open=min(upcoming) if upcoming else None)


def _merged(spans: list[Span]) -> list[Span]:
    """Back-to-back or overlapping spans as one (IB splits a day's session at midnight or a break of 0 min)."""
    merged: list[Span] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _moment(day: str, text: str, zone: ZoneInfo, hours: str) -> datetime:
    day_part, _, clock = text.strip().rpartition(':')
    day_text = day_part or day
    try:
        if not (len(day_text) == 8 and day_text.isdigit() and len(clock) == 4 and clock.isdigit()):
            raise ValueError(text)
        on = datetime.strptime(day_text, '%Y%m%d').date()
        hour, minute = int(clock[:2]), int(clock[2:])
        if (hour, minute) == (24, 0):
            on, hour = on + timedelta(days=1), 0
        return datetime(on.year, on.month, on.day, hour, minute, tzinfo=zone)
    except ValueError:
        raise HoursUnreadable(f'cannot read the time {text!r} in {hours!r}') from None


