"""Deterministic seeded price model.

Each instrument's log price follows a random walk around its basePrice: one mean-reverting step per UTC day
since 2000-01-01, refined by Brownian bridges into hours, minutes, 10-second steps and seconds. Every random
number comes from a hash of (seed, conId, position), so an instant has one price at every bar resolution and in
every process. Outside trading hours the price stands still at the last session's close.
"""
from __future__ import annotations

import hashlib
import math
import re
import struct
import threading
from calendar import monthrange
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo

from .clock import as_utc
from .model import Instrument
from .universe import Universe

EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)       # where every walk starts; no bars before it
MAX_BARS = 100_000
HMDS_ERROR = 'Historical Market Data Service error message:'
WHAT_TO_SHOW = ('TRADES', 'MIDPOINT', 'BID_ASK')
INTRADAY_BAR_SECONDS = {
    '1 secs': 1, '5 secs': 5, '10 secs': 10, '15 secs': 15, '30 secs': 30, '1 min': 60, '2 mins': 120,
    '3 mins': 180, '5 mins': 300, '10 mins': 600, '15 mins': 900, '20 mins': 1200, '30 mins': 1800,
    '1 hour': 3600, '2 hours': 7200, '3 hours': 10800, '4 hours': 14400, '8 hours': 28800}
PERIOD_BARS = {  # bar size -> first day of the period a session date belongs to
    '1 day': lambda d: d,
    '1 week': lambda d: d - timedelta(days=d.weekday()),
    '1 month': lambda d: d.replace(day=1)}

_YEAR = 365 * 86400
_REVERSION = 1 / 90               # daily pull back to basePrice: prices stay within tens of percent of it for years
_STEPS = (86400, 3600, 60, 10, 1)  # seconds per step of the walk and of each bridge level below it
_LOOKBACK = timedelta(days=10)     # long enough to reach the previous session across any holiday
_UNITS_PER_SECOND = {'STK': 1000.0, 'FUT': 20.0}      # traded volume per second
_LOT = {'STK': 100, 'FUT': 1, 'CASH': 100_000}


@dataclass
class Bar:
    date: date | datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    wap: float
    count: int


@dataclass
class Quote:
    bid: float
    ask: float
    last: float
    close: float
    open: float
    high: float
    low: float
    bidSize: float
    askSize: float
    lastSize: float
    volume: float


def _normals(key: str, n: int) -> list[float]:
    """n standard normal numbers determined by `key` (Box-Muller on blake2b output)."""
    out: list[float] = []
    block = 0
    while len(out) < n:
        words = struct.unpack('<8Q', hashlib.blake2b(f'{key}/{block}'.encode(), digest_size=64).digest())
        for u, v in zip(words[::2], words[1::2]):
            radius = math.sqrt(-2.0 * math.log((u + 0.5) / 2.0**64))
            angle = 2.0 * math.pi * v / 2.0**64
            out += (radius * math.cos(angle), radius * math.sin(angle))
        block += 1
    return out[:n]


def _uniform(key: str) -> float:
    """A number in [0, 1) determined by `key`."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), 'big') / 2.0**64


def _bridge(a: float, b: float, normals: list[float], step_variance: float) -> list[float]:
    """Brownian bridge from a to b in len(normals) steps: values at both ends and every step between."""
    n, sd = len(normals), math.sqrt(step_variance)
    walk = [0.0]
    for z in normals:
        walk.append(walk[-1] + sd * z)
    pull = (b - a - walk[n]) / n
    return [a + walk[i] + pull * i for i in range(n)] + [b]


@lru_cache(maxsize=None)
def _decimals(tick: float) -> int:
    return max(0, -Decimal(str(tick)).normalize().as_tuple().exponent)


def _on_tick(x: float, tick: float) -> float:
    return round(round(x / tick) * tick, _decimals(tick))


def _tick_below(x: float, tick: float) -> float:
    return round(math.floor(x / tick + 1e-9) * tick, _decimals(tick))


def _seconds(at: datetime) -> int:
    """Whole seconds from EPOCH to `at`."""
    return (as_utc(at) - EPOCH) // timedelta(seconds=1)


def _sample_times(first: int, last: int) -> list[int]:
    """first, last and the points between them on the coarsest walk step that gives at least 4 intervals."""
    step = next((s for s in _STEPS[1:] if 4 * s <= last - first), None)
    inner = range(first - first % step + step, last, step) if step else ()
    return [first, *inner, last]


def duration_start(end: datetime, duration: str) -> datetime:
    """Start of a TWS duration ('N S', 'N D', 'N W', 'N M', 'N Y') ending at the tz-aware `end`.

    Days, weeks, months and years are calendar units on `end`'s wall clock, so pass `end` in the exchange's zone.
    """
    match = re.fullmatch(r'([1-9]\d*) ([SDWMY])', duration.strip())
    if not match:
        raise ValueError(f"{HMDS_ERROR}invalid duration {duration!r}; expected 'N S', 'N D', 'N W', 'N M' or 'N Y'")
    n, unit = int(match[1]), match[2]
    if unit == 'S':
        return as_utc(end) - timedelta(seconds=n)
    if unit in 'DW':
        return end - timedelta(days=n * (7 if unit == 'W' else 1))     # aware arithmetic keeps the wall clock
    year, month = divmod(end.year * 12 + end.month - 1 - n * (12 if unit == 'Y' else 1), 12)
    if year < EPOCH.year:
        return EPOCH
    return end.replace(year=year, month=month + 1, day=min(end.day, monthrange(year, month + 1)[1]))


class PriceModel:
    """Prices, quotes and historical bars of every instrument, fixed by `seed` (plus any set_price moves)."""

    def __init__(self, seed: int, universe: Universe) -> None:
        self._seed, self._universe = seed, universe
        self._lock = threading.Lock()
        self._walks: dict[int, list[float]] = {}                 # conId -> daily values of the unit walk
        self._shifts: dict[int, list[tuple[int, float]]] = {}    # conId -> (from second, price factor), in order
        self._bridge_path = lru_cache(maxsize=16384)(self._compute_bridge_path)
        self._day_range = lru_cache(maxsize=1024)(self._compute_day_range)

    # --- the path ---------------------------------------------------------------------------------

    def _daily(self, con_id: int, day: int) -> float:
        if day < 0:
            raise ValueError(f'{HMDS_ERROR}no data before {EPOCH:%Y-%m-%d}')
        with self._lock:
            walk = self._walks.setdefault(con_id, [0.0])
            while len(walk) <= day:
                k = len(walk)
                for z in _normals(f'{self._seed}:{con_id}:day:{k // 8}', 8)[k % 8:]:
                    walk.append(walk[-1] * (1 - _REVERSION) + math.sqrt(86400 / _YEAR) * z)
            return walk[day]

    def _compute_bridge_path(self, con_id: int, level: int, start: int) -> tuple[float, ...]:
        parent, step = _STEPS[level - 1], _STEPS[level]
        normals = _normals(f'{self._seed}:{con_id}:{level}:{start}', parent // step)
        return tuple(_bridge(self._unit(con_id, start), self._unit(con_id, start + parent), normals, step / _YEAR))

    def _unit(self, con_id: int, t: int) -> float:
        """Log deviation from basePrice at second t, for a volatility of 1."""
        if t % _STEPS[0] == 0:
            return self._daily(con_id, t // _STEPS[0])
        level = 1 if t % 3600 == 0 else 2 if t % 60 == 0 else 3 if t % 10 == 0 else 4
        start = t - t % _STEPS[level - 1]
        return self._bridge_path(con_id, level, start)[(t - start) // _STEPS[level]]

    def _shift(self, con_id: int, t: int) -> float:
        factor = 1.0
        for since, f in self._shifts.get(con_id, ()):
            if since > t:
                break
            factor = f
        return factor

    def _raw(self, inst: Instrument, t: int) -> float:
        """Unrounded price at second t."""
        return inst.basePrice * math.exp(inst.volatility * self._unit(inst.conId, t)) * self._shift(inst.conId, t)

    def _effective(self, inst: Instrument, at: datetime) -> datetime:
        """`at` inside trading hours, else the end of the last trading session before it."""
        at = as_utc(at)
        ends = [e for _, s, e in self._universe.sessions_between(inst, at - _LOOKBACK, at, liquid=False) if s <= at]
        return min(at, as_utc(ends[-1])) if ends else at

    # --- public API ---------------------------------------------------------------------------------

    def price(self, inst: Instrument, at: datetime) -> float:
        """Last trade price at `at`, on the instrument's tick grid."""
        return _on_tick(self._raw(inst, _seconds(self._effective(inst, at))), inst.minTick)

    def set_price(self, conId: int, price: float, at: datetime) -> None:
        """Shift the instrument's path from `at` on (from the last close when closed) so price(at) == price."""
        inst = self._universe.get(conId)
        if inst is None or price <= 0:
            raise ValueError(f'cannot set price {price} for conId {conId}')
        t = _seconds(self._effective(inst, at))
        unshifted = inst.basePrice * math.exp(inst.volatility * self._unit(conId, t))
        with self._lock:
            kept = [(since, f) for since, f in self._shifts.get(conId, []) if since < t]
            self._shifts[conId] = kept + [(t, price / unshifted)]
        self._day_range.cache_clear()

    def quote(self, inst: Instrument, at: datetime) -> Quote:
        """Top of book at `at`: a one-tick spread around the price; open/high/low of the day so far;
        close = the previous session's close. While the market is closed the quote stands still."""
        at = self._effective(inst, at)
        t, tick = _seconds(at), inst.minTick
        raw = self._raw(inst, t)
        bid, last = _tick_below(raw, tick), _on_tick(raw, tick)
        day_start, prev_close = self._day(inst, at)
        first = _seconds(day_start)
        open_, high, low = self._day_range(inst, first, (t - 1) // 60 * 60 + 1)
        lot = _LOT.get(inst.secType, 1)
        size = [lot * (1 + int(20 * _uniform(f'{self._seed}:{inst.conId}:{side}:{t}'))) for side in 'bal']
        return Quote(bid=bid, ask=round(bid + tick, _decimals(tick)), last=last,
                     close=prev_close if prev_close is not None else open_, open=open_,
                     high=max(high, last), low=min(low, last), bidSize=size[0], askSize=size[1], lastSize=size[2],
                     volume=round(_UNITS_PER_SECOND.get(inst.secType, 0.0) * max(0, t - first)))

    def _compute_day_range(self, inst: Instrument, first: int, before: int) -> tuple[float, float, float]:
        """Open, high and low at second `first` and the whole minutes after it, before second `before`."""
        seconds = (first, *range(first - first % 60 + 60, before, 60))
        prices = [_on_tick(self._raw(inst, s), inst.minTick) for s in seconds]
        return prices[0], max(prices), min(prices)

    def _day(self, inst: Instrument, at: datetime) -> tuple[datetime, float | None]:
        """Where today's range starts (the liquid open once passed, else the trading open), and the previous close."""
        trading = self._universe.sessions_between(inst, at - _LOOKBACK, at, liquid=False)
        liquid = self._universe.sessions_between(inst, at - _LOOKBACK, at, liquid=True)
        if not trading:
            return at, None
        day, start = trading[-1][0], trading[-1][1]
        start = next((s for d, s, _ in liquid if d == day), start)
        closes = [e for d, _, e in liquid if d < day]
        return start, _on_tick(self._raw(inst, _seconds(closes[-1])), inst.minTick) if closes else None

    def bars(self, inst: Instrument, end: datetime, duration: str, bar_size: str, what_to_show: str,
             use_rth: bool) -> list[Bar]:
        """Historical bars ending at `end`, as reqHistoricalData returns them; ValueError with TWS's text if refused."""
        tz = ZoneInfo(inst.timeZoneId)
        end = as_utc(end)
        start = max(as_utc(duration_start(end.astimezone(tz), duration)), EPOCH)
        if bar_size not in INTRADAY_BAR_SECONDS and bar_size not in PERIOD_BARS:
            raise ValueError(f'{HMDS_ERROR}invalid bar size {bar_size!r}')
        if what_to_show not in WHAT_TO_SHOW:
            raise ValueError(f'{HMDS_ERROR}invalid what to show {what_to_show!r}; this simulator serves '
                             f'{", ".join(WHAT_TO_SHOW)}')
        if what_to_show == 'TRADES' and inst.secType == 'CASH':
            raise ValueError(f'{HMDS_ERROR}No historical market data for {inst.localSymbol}/CASH@{inst.exchange} '
                             f'Last {bar_size}; use MIDPOINT or BID_ASK for forex')
        sessions = self._universe.sessions_between(inst, start, end, liquid=use_rth)
        if bar_size in INTRADAY_BAR_SECONDS:
            spans = _intraday_spans(sessions, start, end, INTRADAY_BAR_SECONDS[bar_size], tz)
        else:
            spans = _period_spans(sessions, start.astimezone(tz).date(), end, PERIOD_BARS[bar_size])
        return [self._bar(inst, label, parts, what_to_show) for label, parts in spans]

    def _bar(self, inst: Instrument, label, parts: list[tuple[datetime, datetime]], what: str) -> Bar:
        tick, digits = inst.minTick, _decimals(inst.minTick) + 2
        raw = [self._raw(inst, t) for s, e in parts for t in _sample_times(_seconds(s), _seconds(e))]
        if what == 'BID_ASK':
            bids = [_tick_below(x, tick) for x in raw]
            asks = [b + tick for b in bids]
            return Bar(label, round(sum(bids) / len(bids), digits), round(max(asks), digits), min(bids),
                       round(sum(asks) / len(asks), digits), -1, -1, -1)
        if what == 'MIDPOINT':
            mids = [round(_tick_below(x, tick) + tick / 2, digits) for x in raw]
            return Bar(label, mids[0], max(mids), min(mids), mids[-1], -1, -1, -1)
        prices = [_on_tick(x, tick) for x in raw]
        seconds = sum(_seconds(e) - _seconds(s) for s, e in parts)
        noise = _uniform(f'{self._seed}:{inst.conId}:volume:{_seconds(parts[0][0])}:{seconds}')
        volume = max(1, round(_UNITS_PER_SECOND.get(inst.secType, 1.0) * seconds * (0.5 + noise)))
        return Bar(label, prices[0], max(prices), min(prices), prices[-1], volume,
                   round(sum(prices) / len(prices), digits), max(1, volume // _LOT.get(inst.secType, 1)))


def _intraday_spans(sessions, start: datetime, end: datetime, step: int, tz: ZoneInfo):
    """(bar start in `tz`, [(start, end)]) for bars of `step` seconds aligned to the local clock, within sessions."""
    def since_midnight(t: datetime) -> timedelta:
        local = t.astimezone(tz)
        return timedelta(hours=local.hour, minutes=local.minute, seconds=local.second, microseconds=local.microsecond)

    first = start - since_midnight(start) % timedelta(seconds=step)
    spans = []
    for _, session_start, session_end in sessions:     # all arithmetic in UTC: local wall clocks repeat in autumn
        lo, hi = max(as_utc(session_start), first), min(as_utc(session_end), end)
        while lo < hi:
            nxt = min(hi, lo + timedelta(seconds=step) - since_midnight(lo) % timedelta(seconds=step))
            spans.append((lo.astimezone(tz), [(lo, nxt)]))
            if len(spans) > MAX_BARS:
                raise ValueError(f'{HMDS_ERROR}more than {MAX_BARS} bars requested; '
                                 'use a shorter duration or a larger bar size')
            lo = nxt
    return spans


def _period_spans(sessions, first_day: date, end: datetime, period_of):
    """(first session date, [(start, end) per session]) per day, week or month, for sessions dated after first_day."""
    periods: dict[date, list] = {}
    for day, start, stop in sessions:
        if day > first_day and start < end:
            periods.setdefault(period_of(day), []).append((day, start, min(stop, end)))
    return [(parts[0][0], [(s, e) for _, s, e in parts]) for parts in periods.values()]
