"""unix-cron expressions as Cloud Scheduler reads them: five fields, validated and evaluated.

Each field is `*`, a value, a range `a-b`, a step `*/n` or `a-b/n`, or a comma list of those.
Months and weekdays may be names (JAN-DEC, SUN-SAT); weekday 7 is Sunday, like 0. When both the
day of month and the day of week are restricted, a day matching either one runs (as in cron).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

_MONTHS = {name: number for number, name in enumerate(
    ('JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC'), start=1)}
_WEEKDAYS = {name: number for number, name in enumerate(('SUN', 'MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT'))}
_FIELDS = (('minute', 0, 59, {}), ('hour', 0, 23, {}), ('day of month', 1, 31, {}),
           ('month', 1, 12, _MONTHS), ('day of week', 0, 7, _WEEKDAYS))
_PART = re.compile(r'^(?P<range>\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(?P<step>[0-9]+))?$')


class CronError(ValueError):
    """Not a valid unix-cron expression; the message names the field and the problem."""


@dataclass(frozen=True)
class CronSchedule:
    """The values each field allows."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]          # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    def matches(self, moment: datetime) -> bool:
        """Whether a run starts at this wall-clock minute."""
        if moment.minute not in self.minutes or moment.hour not in self.hours or moment.month not in self.months:
            return False
        day_ok = moment.day in self.days
        weekday_ok = (moment.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return day_ok or weekday_ok
        return day_ok and weekday_ok


def parse_cron(expression: str) -> CronSchedule:
    """Parse five cron fields; raise CronError saying what is wrong."""
    fields = expression.split()
    if len(fields) != 5:
        raise CronError(f'{expression!r}: expected 5 fields (minute hour day-of-month month day-of-week), '
                        f'got {len(fields)}')
    values = [_parse_field(text, *spec) for text, spec in zip(fields, _FIELDS, strict=True)]
    weekdays = frozenset(day % 7 for day in values[4])
    return CronSchedule(values[0], values[1], values[2], values[3], weekdays,
                        days_restricted=fields[2] != '*', weekdays_restricted=fields[4] != '*')


def _parse_field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    allowed: set[int] = set()
    for part in text.split(','):
        match = _PART.match(part)
        if not match:
            raise CronError(f'{name} {text!r}: {part!r} is not a value, range or step')
        step = int(match['step']) if match['step'] else 1
        if step < 1:
            raise CronError(f'{name} {text!r}: a step must be at least 1')
        if match['range'] == '*':
            first, last = low, high
        elif '-' in match['range']:
            start, end = match['range'].split('-')
            first, last = _value(start, name, low, high, names), _value(end, name, low, high, names)
            if first > last:
                raise CronError(f'{name} {text!r}: range {part!r} runs backwards')
        else:
            if match['step']:
                raise CronError(f'{name} {text!r}: a step needs * or a range before it, not {part!r}')
            first = last = _value(match['range'], name, low, high, names)
        allowed.update(range(first, last + 1, step))
    return frozenset(allowed)


def _value(token: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    if token.isdigit():
        number = int(token)
    elif token.upper() in names:
        number = names[token.upper()]
    else:
        raise CronError(f'{name}: {token!r} is not a number' + (f' or one of {", ".join(names)}' if names else ''))
    if not low <= number <= high:
        raise CronError(f'{name}: {number} is outside {low}-{high}')
    return number
