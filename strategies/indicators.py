"""Technical indicators on plain lists of floats: exponential moving averages and MACD."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


def ema(values: Sequence[float], period: int) -> list[float | None]:
    """Exponential moving average, aligned with `values`: None for the first period - 1 entries.

    Smoothing 2 / (period + 1), seeded with the simple average of the first `period` values (the
    convention of TA-Lib and most charting tools).
    """
    if period < 1:
        raise ValueError(f'period must be >= 1, got {period}')
    out: list[float | None] = [None] * len(values)
    if len(values) < period:
        return out
    alpha = 2 / (period + 1)
    current = sum(values[:period]) / period
    out[period - 1] = current
    for i in range(period, len(values)):
        current += alpha * (values[i] - current)
        out[i] = current
    return out


@dataclass(frozen=True)
class Macd:
    """MACD series aligned with the closes they came from; None where there is not enough history yet."""

    line: list[float | None]
    signal: list[float | None]

    @property
    def histogram(self) -> list[float | None]:
        """line − signal."""
        return [None if s is None else m - s for m, s in zip(self.line, self.signal)]


def macd(closes: Sequence[float], fast: int = 12, slow: int = 26, signal: int = 9) -> Macd:
    """MACD line = EMA(fast) − EMA(slow) of the closes; signal line = EMA(signal) of the MACD line.

    The line starts at index slow − 1 and the signal line at slow + signal − 2.
    """
    if not 1 <= fast < slow:
        raise ValueError(f'need 1 <= fast < slow, got fast={fast} slow={slow}')
    fast_ema, slow_ema = ema(closes, fast), ema(closes, slow)
    line = [None if s is None else f - s for f, s in zip(fast_ema, slow_ema)]
    start = slow - 1    # line[:start] is all None
    return Macd(line, line[:start] + ema(line[start:], signal))
