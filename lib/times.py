"""Instants as results, logs of decisions and the store write them: UTC, ISO 8601 with a trailing Z; and the
one parser of the instants people and messages give us (`parse_instant`)."""
from __future__ import annotations

from datetime import datetime, timezone


def utc(moment: datetime, name: str = 'now') -> datetime:
    """`moment` in UTC; naive datetimes are refused because their zone is a guess."""
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f'{name} must be a timezone-aware datetime, got {moment!r}')
    return moment.astimezone(timezone.utc)


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a trailing Z, as every timestamp in results."""
    return utc(moment).isoformat().replace('+00:00', 'Z')


def parse_instant(text: str) -> datetime:
    """An ISO 8601 instant (a trailing Z or an offset; without either, UTC) as a timezone-aware datetime;
    ValueError when `text` is not one."""
    parsed = datetime.fromisoformat(text.replace('Z', '+00:00'))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
