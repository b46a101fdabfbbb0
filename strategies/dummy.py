"""`dummy`: a deterministic pseudo-random signal in {-1, 0, 1} per day, for exercising the trading path."""
from __future__ import annotations

import hashlib
from datetime import date
from typing import Any, Mapping

from strategies.base import ConfigReader, DataNeed, InstrumentSpec, MarketData, Strategy
from strategies.futures import front_and_previous

DEFAULT_EXCHANGE = {'FUT': 'CME', 'STK': 'SMART'}


class Dummy(Strategy):
    """One instrument, weight drawn from (date, strategy name); needs no data.

    Config: symbol (MNQ), sec_type (FUT or STK), exchange (CME for futures, SMART for stocks), currency (USD),
    roll_days_before_expiry (3). Futures follow the quarterly equity-index cycle (third Friday of Mar/Jun/Sep/Dec).
    """

    name = 'dummy'

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        settings = ConfigReader(self.name, config,
                                ('symbol', 'sec_type', 'exchange', 'currency', 'roll_days_before_expiry'))
        self.symbol = settings.text('symbol', 'MNQ', pattern=r'[A-Za-z0-9.]+').upper()
        self.sec_type = settings.choice('sec_type', 'FUT', ('FUT', 'STK'))
        self.exchange = settings.text('exchange', DEFAULT_EXCHANGE[self.sec_type], pattern=r'[A-Za-z0-9]+').upper()
        self.currency = settings.text('currency', 'USD', pattern=r'[A-Za-z]{3}').upper()
        self.roll_days_before_expiry = settings.integer('roll_days_before_expiry', 3, minimum=0, maximum=60)

    def instruments(self, today: date) -> list[InstrumentSpec]:
        """The instrument to hold today; for a future right after a roll, also the contract rolled out of."""
        if self.sec_type == 'STK':
            return [InstrumentSpec(self.symbol, self.symbol, 'STK', self.exchange, self.currency)]
        front, previous = front_and_previous(today, self.roll_days_before_expiry)
        return [self._future(expiry) for expiry in (front, previous) if expiry is not None]

    def data_needs(self, today: date) -> list[DataNeed]:
        return []

    def targets(self, data: MarketData) -> dict[str, float]:
        """The day's signal on the instrument to hold; 0 (flat) on a contract rolled out of."""
        held, *rolled_out = self.instruments(data.today)
        return {held.key: float(daily_signal(self.name, data.today)), **{spec.key: 0.0 for spec in rolled_out}}

    def _future(self, expiry: date) -> InstrumentSpec:
        last_trade_date = f'{expiry:%Y%m%d}'
        return InstrumentSpec(f'{self.symbol}:{last_trade_date}', self.symbol, 'FUT', self.exchange, self.currency,
                              last_trade_date)


def daily_signal(seed: str, day: date) -> int:
    """-1, 0 or 1 from a hash of (day, seed): the same in every process and on every machine."""
    digest = hashlib.sha256(f'{day.isoformat()}|{seed}'.encode()).digest()
    return int.from_bytes(digest[:8], 'big') % 3 - 1
