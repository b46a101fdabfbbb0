"""The simulator's clock: a settable instant that advances in real time."""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone


def as_utc(instant: datetime) -> datetime:
    """`instant` in UTC; a naive datetime is taken to be UTC already."""
    if instant.tzinfo is None:
        return instant.replace(tzinfo=timezone.utc)
    return instant.astimezone(timezone.utc)


class SimClock:
    """Simulated clock: starts at `start` (tz-aware; naive means UTC; None = wall clock) and advances in real time."""

    def __init__(self, start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._base = as_utc(start) if start is not None else datetime.now(timezone.utc)
        self._since = time.monotonic()
        self._frozen = False

    def now(self) -> datetime:
        """The simulated instant, tz-aware UTC."""
        with self._lock:
            return self._base if self._frozen else self._base + timedelta(seconds=time.monotonic() - self._since)

    def freeze(self, frozen: bool = True) -> None:
        """Stop the clock where it is (prices stand still), or with False let it run on from there."""
        with self._lock:
            if not self._frozen:
                self._base += timedelta(seconds=time.monotonic() - self._since)
            self._frozen, self._since = frozen, time.monotonic()

    def set(self, instant: datetime) -> None:
        """Jump to `instant`; time keeps running from there."""
        with self._lock:
            self._base, self._since = as_utc(instant), time.monotonic()

    def advance(self, seconds: float) -> None:
        """Move the clock `seconds` forward (backward when negative)."""
        with self._lock:
            self._base += timedelta(seconds=seconds)
