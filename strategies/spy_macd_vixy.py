"""`spy-macd-vixy`: long SPY when SPY's daily MACD is above its signal line, else short SPY and long VIXY."""
from __future__ import annotations

from datetime import date, datetime
from typing import Any, Mapping

from strategies.base import Bar, ConfigReader, DataNeed, InstrumentSpec, MarketData, Strategy
from strategies.indicators import macd

SPY = InstrumentSpec('SPY', 'SPY', 'STK', 'SMART', 'USD')
VIXY = InstrumentSpec('VIXY', 'VIXY', 'STK', 'SMART', 'USD')
# MACD and its signal line closer than this share of the last close count as equal (float noise, no opinion)
EQUAL_TOLERANCE = 1e-9


class SpyMacdVixy(Strategy):
    """MACD(fast, slow, signal) on SPY daily closes.

    Config: fast (12), slow (26), signal (9), lookback ('200 D', the IB duration of daily bars to fetch).
    """

    name = 'spy-macd-vixy'

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        settings = ConfigReader(self.name, config, ('fast', 'slow', 'signal', 'lookback'))
        self.fast = settings.integer('fast', 12, minimum=1)
        self.slow = settings.integer('slow', 26, minimum=2)
        self.signal = settings.integer('signal', 9, minimum=1)
        self.lookback = settings.text('lookback', '200 D', pattern=r'[1-9]\d* [DWMY]')
        if self.fast >= self.slow:
            raise settings.error('fast', self.fast, f'less than slow ({self.slow})')

    @property
    def min_bars(self) -> int:
        """Fewer daily bars than this give no opinion."""
        return self.slow + self.signal

    def instruments(self, today: date) -> list[InstrumentSpec]:
        return [SPY, VIXY]

    def data_needs(self, today: date) -> list[DataNeed]:
        return [DataNeed(SPY.key, '1 day', self.lookback, 'TRADES')]

    def targets(self, data: MarketData) -> dict[str, float] | None:
        """{SPY: 1, VIXY: 0} when MACD > signal, {SPY: -1, VIXY: 1} when below; None when equal or too few bars."""
        bars = sorted((b for b in data.bars.get(SPY.key, []) if _day(b) <= data.today), key=_day)
        closes = [b.close for b in bars]
        if len(closes) < self.min_bars:
            return None
        series = macd(closes, self.fast, self.slow, self.signal)
        difference = series.histogram[-1]
        if abs(difference) <= EQUAL_TOLERANCE * abs(closes[-1]):
            return None
        if difference > 0:
            return {SPY.key: 1.0, VIXY.key: 0.0}
        return {SPY.key: -1.0, VIXY.key: 1.0}


def _day(bar: Bar) -> date:
    """The bar's calendar day (intraday bars carry a datetime)."""
    return bar.date.date() if isinstance(bar.date, datetime) else bar.date
