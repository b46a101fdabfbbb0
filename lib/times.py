"""Instants as results, logs of decisions and the store write them: UTC, ISO 8601 with a trailing Z."""
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
