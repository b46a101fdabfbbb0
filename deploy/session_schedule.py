"""Session-relative schedules: `session: {beforeClose: 15m}` in schedules.yaml, expanded into cron entries.

Cloud Scheduler cannot follow an exchange calendar, so a job relative to the session becomes one cron
entry per distinct close (or open) time in the coming year of the NYSE calendar — for US equities the
13:00 early closes and the 16:00 regular ones: 12:45 and 15:45 on weekdays for `beforeClose: 15m`. Each
entry's request carries a `window`, so on any day only the entry that matches the day's real session
runs; the others answer `skipped`. The window carried is the duration plus GRACE_SECONDS: Scheduler
publishes a few seconds after its minute and a gateway clock a little behind it must not skip the run.
The expansion is checked against every day of the coming year: exactly one entry runs on each trading
day, none on the others.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from trading.exchange_calendar import regular_session

CALENDAR_ZONE = 'America/New_York'     # the zone the NYSE calendar's times are in
GRACE_SECONDS = 60
MIN_SECONDS = 60
HORIZON_DAYS = 366
_DURATION = re.compile(r'^\s*(\d+(?:\.\d+)?)\s*([smh])\s*$')
_UNIT_SECONDS = {'s': 1, 'm': 60, 'h': 3600}


class SessionScheduleError(ValueError):
    """The `session` form is unusable; the message says why."""


@dataclass(frozen=True)
class SessionEntry:
    """One cron entry of an expanded job, with the window its request carries."""

    schedule: str               # unix-cron, in CALENDAR_ZONE
    window: dict[str, float]    # the request's `window`


def parse_duration(raw: object) -> float:
    """'15m', '90s', '1h' (or a number of seconds) as seconds."""
    if isinstance(raw, bool):
        raise SessionScheduleError(f'{raw!r} is not a duration; use s, m or h, e.g. 15m')
    if isinstance(raw, (int, float)):
        seconds = float(raw)
    else:
        match = _DURATION.match(str(raw))
        if not match:
            raise SessionScheduleError(f'{raw!r} is not a duration; use s, m or h, e.g. 15m')
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not math.isfinite(seconds) or seconds < MIN_SECONDS:
        raise SessionScheduleError(f'{raw!r}: a session window must be at least {MIN_SECONDS} s')
    return seconds


def expand(session: object, *, today: date) -> list[SessionEntry]:
    """The cron entries (weekdays, CALENDAR_ZONE) and windows for a `session` mapping with one key."""
    if not isinstance(session, dict) or len(session) != 1 or next(iter(session)) not in ('beforeClose', 'afterOpen'):
        raise SessionScheduleError('session must have exactly one key, beforeClose or afterOpen, '
                                   'with a duration such as 15m')
    (key, raw), = session.items()
    seconds = parse_duration(raw)
    days = [today + timedelta(days=n) for n in range(HORIZON_DAYS)]
    hours = sorted({_session_time(d, key) for d in days if regular_session(d)})
    if key == 'beforeClose':
        fires = [_minute_at_or_after(_minus(close, seconds)) for close in hours]
    else:
        fires = [_plus(opening, 60) for opening in hours]
    window = {key: seconds + GRACE_SECONDS}
    entries = [SessionEntry(f'{fire.minute} {fire.hour} * * MON-FRI', window) for fire in sorted(set(fires))]
    _check_one_run_a_day(key, window[key], [fire for fire in sorted(set(fires))], days)
    return entries


def runs_on(day: date, key: str, window: float, fires: list[time]) -> list[time]:
    """The fire times of `day` (weekday crons) that fall inside the window of that day's NYSE session."""
    session = regular_session(day)
    if session is None or day.weekday() >= 5:
        return []
    opening, close = (datetime.combine(day, t) for t in session)
    inside = []
    for fire in fires:
        moment = datetime.combine(day, fire)
        if not opening <= moment < close:
            continue
        if (key == 'beforeClose' and (close - moment).total_seconds() <= window) or \
                (key == 'afterOpen' and (moment - opening).total_seconds() < window):
            inside.append(fire)
    return inside


def _check_one_run_a_day(key: str, window: float, fires: list[time], days: list[date]) -> None:
    for day in days:
        ran = runs_on(day, key, window, fires)
        expected = 1 if regular_session(day) else 0
        if len(ran) != expected:
            times = ', '.join(t.strftime('%H:%M') for t in ran) or 'none'
            raise SessionScheduleError(f'{key} {window - GRACE_SECONDS:g} s would run {len(ran)} times on '
                                       f'{day.isoformat()} (at {times}); choose a shorter window')


def _session_time(day: date, key: str) -> time:
    opening, close = regular_session(day)
    return close if key == 'beforeClose' else opening


def _minus(moment: time, seconds: float) -> datetime:
    return datetime.combine(date(2000, 1, 3), moment) - timedelta(seconds=seconds)


def _plus(moment: time, seconds: float) -> time:
    return (datetime.combine(date(2000, 1, 3), moment) + timedelta(seconds=seconds)).time()


def _minute_at_or_after(moment: datetime) -> time:
    if moment.second or moment.microsecond:
        moment = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return moment.time()


def zone_ok(zone: str) -> bool:
    """Session jobs are read in the calendar's own zone."""
    return ZoneInfo(zone) == ZoneInfo(CALENDAR_ZONE)
