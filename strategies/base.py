"""What every strategy is: the instruments and data it declares, and a pure map from data to target weights."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date
from typing import Any, ClassVar, Mapping


@dataclass(frozen=True)
class Bar:
    """One OHLCV bar; `date` is a date for daily bars and a datetime for intraday ones."""

    date: date
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True)
class InstrumentSpec:
    """A contract a strategy trades, named by `key` (e.g. 'SPY', 'MNQ:20261218') in its targets."""

    key: str
    symbol: str
    sec_type: str
    exchange: str
    currency: str
    last_trade_date: str = ''
    """Futures only: the last trading day, YYYYMMDD."""


@dataclass(frozen=True)
class DataNeed:
    """Historical bars a strategy needs for the instrument `key`, in IB's bar size and duration terms."""

    key: str
    bar_size: str
    duration: str
    what_to_show: str = 'TRADES'


@dataclass(frozen=True)
class MarketData:
    """What a strategy sees: the day it decides for and the bars fetched per instrument key, oldest first."""

    today: date
    bars: dict[str, list[Bar]]


class Strategy:
    """A pure plugin: no I/O, no clock, no state. Subclasses set `name` and implement the three methods.

    `targets` returns key -> weight in [-1, 1] of the exposure allocated to the strategy, or None for
    "no opinion" (the caller keeps the last targets), which is different from a weight of 0 (flat).
    """

    name: ClassVar[str]

    def __init__(self, config: Mapping[str, Any]) -> None:
        """Validate `config`; a bad or unknown setting raises ValueError naming the key."""
        if not isinstance(config, Mapping):
            raise ValueError(f'{self.name}: config must be a table of settings, got {config!r}')
        self.config = dict(config)

    def instruments(self, today: date) -> list[InstrumentSpec]:
        """Every contract the strategy may hold on `today` (its universe)."""
        raise NotImplementedError

    def data_needs(self, today: date) -> list[DataNeed]:
        """The bars `targets` expects in MarketData on `today`."""
        raise NotImplementedError

    def targets(self, data: MarketData) -> dict[str, float] | None:
        """Target weight per instrument key, or None for no opinion."""
        raise NotImplementedError


def check_targets(strategy: Strategy, today: date, targets: Mapping[str, float] | None) -> dict[str, float] | None:
    """`targets` as floats if every key is in the strategy's universe and every weight a number in [-1, 1].

    Callers run it on whatever a plugin returns, so a faulty plugin fails loudly instead of trading.
    """
    if targets is None:
        return None
    universe = {spec.key for spec in strategy.instruments(today)}
    checked = {}
    for key, weight in targets.items():
        if key not in universe:
            known = ', '.join(sorted(universe))
            raise ValueError(f'{strategy.name}: target {key!r} is not one of its instruments ({known})')
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not -1 <= weight <= 1:
            raise ValueError(f'{strategy.name}: target weight for {key!r} must be a number in [-1, 1], got {weight!r}')
        checked[key] = float(weight)
    return checked


class ConfigReader:
    """Reads a strategy's config: typed getters that raise ValueError naming the key, and no unknown keys."""

    def __init__(self, strategy: str, config: Mapping[str, Any], known: tuple[str, ...]) -> None:
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise ValueError(f'{strategy}: unknown config key {unknown[0]!r}; known keys: {", ".join(known)}')
        self._strategy = strategy
        self._config = config

    def integer(self, key: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        """An integer in [minimum, maximum] (integral floats accepted, booleans not)."""
        value = self._config.get(key, default)
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if (isinstance(value, bool) or not isinstance(value, int) or value < minimum
                or (maximum is not None and value > maximum)):
            bounds = f'>= {minimum}' if maximum is None else f'from {minimum} to {maximum}'
            raise self.error(key, value, f'an integer {bounds}')
        return value

    def text(self, key: str, default: str, *, pattern: str) -> str:
        """A string matching `pattern` in full, surrounding blanks removed."""
        value = self._config.get(key, default)
        if not isinstance(value, str) or not re.fullmatch(pattern, value.strip()):
            raise self.error(key, value, f'text matching {pattern}')
        return value.strip()

    def choice(self, key: str, default: str, options: tuple[str, ...]) -> str:
        """One of `options`, compared case-insensitively and returned as listed."""
        value = self._config.get(key, default)
        for option in options:
            if isinstance(value, str) and value.strip().upper() == option.upper():
                return option
        raise self.error(key, value, f'one of {", ".join(options)}')

    def error(self, key: str, value: Any, expected: str) -> ValueError:
        """The ValueError for a bad `key`."""
        return ValueError(f'{self._strategy}: config {key!r} must be {expected}, got {value!r}')
