"""The limits a real IB Gateway enforces, with IB's numbers; on by default, each switchable while the simulator runs.

Sources (IB's TWS API documentation):
- Historical Data Limitations, "Pacing Violations for Small Bars (30 secs or less)": identical requests within
  15 seconds; 6 or more requests for the same contract, exchange and tick type within 2 seconds; more than 60
  requests within any 10-minute period; at most 50 simultaneous open historical data requests. A violation is
  error 162 "Historical Market Data Service error message:Historical data request pacing violation".
- Message pacing: at most 50 messages per second from a client; error 100 "Max rate of messages per second has
  been exceeded", then the connection is closed if the client keeps it up (unless it connected with +PACEAPI,
  in which case the gateway paces instead). Measured here as a rate with a burst allowance of two seconds'
  worth (100), since arrival times on a loaded machine bunch up a throttled client's batches.
- Market data lines: 100 by default; one more streaming subscription gets error 101 "Max number of tickers has
  been reached".
- reqExecutions: "only the current day's executions" are returned (see ExecutionFilter in IB's docs).
"""
from __future__ import annotations

import re
from collections import deque
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from zoneinfo import ZoneInfo

PACING_VIOLATION = 'Historical Market Data Service error message:Historical data request pacing violation'
SMALL_BAR_SECONDS = 30
IDENTICAL_WINDOW, SAME_CONTRACT_WINDOW, SAME_CONTRACT_MAX = 15.0, 2.0, 5
TEN_MINUTES, TEN_MINUTE_MAX = 600.0, 60
EXECUTION_DAY_ZONE = ZoneInfo('America/New_York')   # where the simulated markets and the gateway's day live

_BAR_SECONDS = re.compile(r'^\s*(\d+)\s+secs?\s*$')


@dataclass(eq=False)
class Limits:
    """What the simulated gateway refuses, as a real one does. Set a field to None/False to switch it off."""

    message_rate: int | None = 50           # client messages per second: error 100, closed when sustained 1 s
    hist_pacing: bool = True                # small-bar pacing rules -> error 162 pacing violation
    hist_open_requests: int | None = 50     # simultaneous open historical data requests
    market_data_lines: int | None = 100     # streaming market-data subscriptions, all clients together -> 101
    executions_current_day: bool = True     # reqExecutions returns today's executions only (New York day)
    _history: deque = field(default_factory=deque, repr=False)   # (instant, identical key, contract key)

    @classmethod
    def off(cls) -> 'Limits':
        """Every limit switched off: the simulator as it was before it modelled them."""
        return cls(message_rate=None, hist_pacing=False, hist_open_requests=None, market_data_lines=None,
                   executions_current_day=False)

    def reset(self) -> None:
        """Back to a real gateway's limits, with no request history."""
        for f in fields(self):
            setattr(self, f.name, f.default_factory() if f.default_factory is not MISSING else f.default)

    def pacing_violation(self, now: datetime, contract: tuple, exchange: str, bar_size: str, duration: str,
                         end: str, what: str, use_rth: str) -> bool:
        """Record a historical data request; True if a real gateway would refuse it for pacing."""
        if not self.hist_pacing or not is_small_bar(bar_size):
            return False
        history = self._history
        while history and (now - history[0][0]).total_seconds() > TEN_MINUTES:
            history.popleft()
        identical = (contract, exchange, bar_size, duration, end, what, use_rth)
        same_contract = (contract, exchange, what)
        violation = (
            len(history) >= TEN_MINUTE_MAX
            or any(key == identical and (now - at).total_seconds() <= IDENTICAL_WINDOW for at, key, _ in history)
            or sum(1 for at, _, key in history
                   if key == same_contract and (now - at).total_seconds() <= SAME_CONTRACT_WINDOW) >= SAME_CONTRACT_MAX)
        history.append((now, identical, same_contract))   # refused requests count too, as they do at IB
        return violation

    def execution_day_start(self, now: datetime) -> datetime | None:
        """The earliest execution reqExecutions returns, or None for all of them."""
        if not self.executions_current_day:
            return None
        local = now.astimezone(EXECUTION_DAY_ZONE)
        return local.replace(hour=0, minute=0, second=0, microsecond=0)


def is_small_bar(bar_size: str) -> bool:
    """'30 secs' or less: the bar sizes IB's pacing rules apply to."""
    match = _BAR_SECONDS.match(bar_size)
    return bool(match) and int(match[1]) <= SMALL_BAR_SECONDS


class MessageRate:
    """One connection's message rate against Limits.message_rate: a token bucket refilled at the limit per second
    that holds two seconds' worth, so a client that throttles itself to 45 per second (ib_insync, ib_async) never
    trips it however its batches bunch up on a loaded machine, and one that blasts does within a burst of 100."""

    BURST_SECONDS = 2.0

    def __init__(self) -> None:
        self._tokens: float | None = None
        self._last = 0.0
        self._over_since: float | None = None

    def record(self, now: float, limit: int | None) -> str:
        """'ok', 'warn' (the first message over the limit: error 100), 'over', or 'close' (over it for a second)."""
        if not limit:
            return 'ok'
        capacity = limit * self.BURST_SECONDS
        tokens = capacity if self._tokens is None else min(capacity, self._tokens + (now - self._last) * limit)
        self._last = now
        if tokens >= limit / 2:     # half a second's budget to spare: the client is back under the rate
            self._over_since = None
        if tokens >= 1:
            self._tokens = tokens - 1
            return 'ok' if self._over_since is None else 'over'
        self._tokens = tokens
        if self._over_since is None:
            self._over_since = now
            return 'warn'
        return 'close' if now - self._over_since >= 1.0 else 'over'
