"""The `collect-market-data` intent: historical bars for a few instruments, returned in the result.

The result is bounded: at most MAX_INSTRUMENTS instruments and `maxBars` bars each (the most recent
are kept and `truncated` says so). When the historical-data service is down the run fails with a
retryable HistoricalDataUnavailable error naming it.
"""
from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from intents.base import Intent, IntentParams, IntentRejected
from intents.outcome import Outcome
from lib.ibapi import Contract
from trading.market_data import ContractInfo, UnknownContract, contract_infos, fetch_bars

MAX_INSTRUMENTS = 20
MAX_BARS = 5000


class InstrumentParams(IntentParams):
    symbol: str = Field(min_length=1, max_length=32)
    sec_type: Literal['STK', 'FUT', 'CASH', 'IND'] = 'STK'
    exchange: str = 'SMART'
    currency: str = Field('USD', min_length=3, max_length=3)
    last_trade_date: str = Field('', pattern=r'^(\d{6}|\d{8})?$')
    """Futures: the contract month YYYYMM or last trading day YYYYMMDD."""


class CollectMarketDataParams(IntentParams):
    instruments: list[InstrumentParams] = Field(min_length=1, max_length=MAX_INSTRUMENTS)
    bar_size: str = Field('1 day', pattern=r'^\d+ (secs?|mins?|hours?|day|week|month)$')
    """IB bar size, e.g. '1 day', '1 hour', '5 mins'."""
    duration: str = Field('30 D', pattern=r'^\d+ [SDWMY]$')
    """IB duration, e.g. '30 D', '6 M', '1 Y'."""
    what_to_show: Literal['TRADES', 'MIDPOINT', 'BID_ASK'] = 'TRADES'
    use_rth: bool = True
    max_bars: int = Field(1000, ge=1, le=MAX_BARS)
    """Per instrument; older bars beyond it are dropped."""


class CollectMarketData(Intent):
    name = 'collect-market-data'
    Params = CollectMarketDataParams

    async def run(self) -> Outcome:
        p = self.params
        infos = await self._infos()
        series = await fetch_bars(self.ib, [(info.contract, p.bar_size, p.duration, p.what_to_show) for info in infos],
                                  use_rth=p.use_rth)
        data = []
        for info, bars in zip(infos, series):
            kept = bars[-p.max_bars:]
            data.append({'contract': info.describe(), 'count': len(kept), 'truncated': len(bars) > len(kept),
                         'bars': [{'date': b.date.isoformat(), 'open': b.open, 'high': b.high, 'low': b.low,
                                   'close': b.close, 'volume': b.volume} for b in kept]})
        return Outcome.ok({'barSize': p.bar_size, 'duration': p.duration, 'whatToShow': p.what_to_show,
                                    'useRth': p.use_rth, 'instruments': data})

    async def session_contracts(self, now: datetime) -> list[ContractInfo]:
        return await self._infos()

    async def _infos(self) -> list[ContractInfo]:
        """The requested instruments as the gateway describes them; an unknown one rejects the run."""
        contracts = [Contract(secType=i.sec_type, symbol=i.symbol.upper(), exchange=i.exchange.upper(),
                              currency=i.currency.upper(), lastTradeDateOrContractMonth=i.last_trade_date)
                     for i in self.params.instruments]
        try:
            return await contract_infos(self.ib, contracts)
        except UnknownContract as exc:
            raise IntentRejected(str(exc)) from None
