"""What order-placing intents read from the gateway: contract details, quotes, bars, account values."""
from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass
from datetime import datetime, timezone

from lib.ib_values import price
from lib.ibapi import IB, Contract
from trading.session_window import ContractHours

HMDS_ERROR = 162
REQUEST_TIMEOUT_SECONDS = 20.0


# Error 162 means many things; its text tells them apart. First match (case-insensitive substring) wins:
#   no-data:   the request is fine, there are no bars: an empty list
#   transient: the service failed or paces us: HistoricalDataUnavailable (retryable)
#   permanent: the request itself is refused: HistoricalDataError (rejected, never retried)
# A 162 text matching nothing is taken as transient: a needless retry ends in the dead-letter topic,
# a wrong "permanent" would lose the run. Add texts here as IB (or the simulator) is seen sending them.
HMDS_162_TEXTS: tuple[tuple[str, str], ...] = (
    ('query returned no data', 'no-data'),                 # IB: "HMDS query returned no data: ..."
    ('no data', 'no-data'),                                # simulator: "no data before 1990-01-01"
    ('pacing violation', 'transient'),                     # IB: "Historical data request pacing violation"
    ('connection was broken', 'transient'),                # IB and simulator: "HMDS server connection was broken"
    ('hmds server disconnect', 'transient'),
    ('invalid bar size', 'permanent'),                     # simulator (IB: "Invalid bar size")
    ('invalid duration', 'permanent'),                     # simulator; IB: "... Invalid duration"
    ('invalid what to show', 'permanent'),                 # simulator
    ('no historical market data for', 'permanent'),        # simulator: TRADES for forex
    ('bars requested', 'permanent'),                       # simulator: "more than N bars requested"
    ('no market data permissions', 'permanent'),           # IB: permission missing for the exchange
    ('permission', 'permanent'),
)


def hmds_162_kind(message: str) -> str:
    """'no-data', 'transient' or 'permanent' for the text of an error 162 (see HMDS_162_TEXTS)."""
    text = message.lower()
    return next((kind for fragment, kind in HMDS_162_TEXTS if fragment in text), 'transient')


class UnknownContract(LookupError):
    """The gateway knows no contract, or several, matching a description."""


class HistoricalDataUnavailable(ConnectionError):
    """The historical-data service (HMDS) failed; a later attempt may succeed."""


class HistoricalDataError(LookupError):
    """The gateway refused a historical data request for another reason than an outage (e.g. unknown contract)."""


class MissingAccountValue(LookupError):
    """The gateway did not report an account value an intent needs (NetLiquidation, an ExchangeRate)."""


@dataclass(frozen=True)
class ContractInfo:
    """A contract as the gateway describes it, with what ordering needs: tick size and trading hours."""

    contract: Contract
    min_tick: float
    liquid_hours: str
    time_zone: str

    @property
    def con_id(self) -> int:
        return self.contract.conId

    @property
    def multiplier(self) -> float:
        return float(self.contract.multiplier) if self.contract.multiplier else 1.0

    @property
    def name(self) -> str:
        """What results call it: SPY, MNQZ6, EUR.USD."""
        return self.contract.localSymbol or self.contract.symbol

    def hours(self) -> ContractHours:
        """Its liquid hours, for session windows."""
        return ContractHours(self.name, self.liquid_hours, self.time_zone)

    def describe(self) -> dict:
        """The contract in result documents."""
        c = self.contract
        data = {'conId': c.conId, 'symbol': c.symbol, 'secType': c.secType, 'localSymbol': c.localSymbol,
                'exchange': c.exchange, 'currency': c.currency}
        if c.lastTradeDateOrContractMonth:
            data['lastTradeDateOrContractMonth'] = c.lastTradeDateOrContractMonth
        return data


@dataclass(frozen=True)
class Quote:
    """A snapshot of one contract's prices; None where the gateway gave no usable value."""

    bid: float | None
    ask: float | None
    last: float | None
    close: float | None

    def price(self) -> float | None:
        """The best guess of the price now: last inside the spread, else the midpoint, else last or close."""
        if self.bid and self.ask and self.last and self.bid <= self.last <= self.ask:
            return self.last
        if self.bid and self.ask:
            return (self.bid + self.ask) / 2
        return self.last or self.close

    def live_price(self) -> float | None:
        """price() from live prices only (last, bid, ask): None when the quote has only a close."""
        if self.bid and self.ask:
            return self.price()
        return self.last

    def expected_fill(self, buy: bool) -> float | None:
        """Where a market order would fill: the ask for a buy, the bid for a sell, else live_price()."""
        return (self.ask if buy else self.bid) or self.live_price()

    def describe(self) -> dict:
        return {'bid': self.bid, 'ask': self.ask, 'last': self.last, 'close': self.close}


@dataclass(frozen=True)
class AccountSnapshot:
    """Net liquidation value in the base currency and the rates to convert other currencies into it."""

    account: str
    base_currency: str
    net_liquidation: float
    rates: dict[str, float]           # currency -> base currency per unit
    cash: dict[str, float]            # currency -> cash balance (BASE excluded)

    def rate(self, currency: str) -> float:
        """Base currency per unit of `currency`."""
        if currency == self.base_currency:
            return 1.0
        try:
            return self.rates[currency]
        except KeyError:
            raise MissingAccountValue(f'the gateway reported no ExchangeRate for {currency} '
                                      f'in account {self.account}') from None

    def describe(self) -> dict:
        return {'account': self.account, 'baseCurrency': self.base_currency,
                'netLiquidation': self.net_liquidation, 'exchangeRates': dict(sorted(self.rates.items()))}


async def contract_info(ib: IB, contract: Contract) -> ContractInfo:
    """The one contract the gateway matches to `contract`; UnknownContract for none or several."""
    details = await asyncio.wait_for(ib.reqContractDetailsAsync(contract), REQUEST_TIMEOUT_SECONDS)
    described = _describe_request(contract)
    if not details:
        raise UnknownContract(f'the gateway knows no contract {described}')
    if len(details) > 1:
        found = ', '.join(d.contract.localSymbol for d in details)
        raise UnknownContract(f'{described} is ambiguous at the gateway: {found}')
    d = details[0]
    return ContractInfo(d.contract, d.minTick or 0.01, d.liquidHours, d.timeZoneId)


async def contract_infos(ib: IB, contracts: list[Contract]) -> list[ContractInfo]:
    """contract_info for each, concurrently."""
    return list(await asyncio.gather(*(contract_info(ib, c) for c in contracts)))


async def quotes(ib: IB, infos: list[ContractInfo]) -> dict[int, Quote]:
    """A snapshot quote per conId."""
    if not infos:
        return {}
    tickers = await asyncio.wait_for(ib.reqTickersAsync(*(i.contract for i in infos)), REQUEST_TIMEOUT_SECONDS)
    by_id = {t.contract.conId: t for t in tickers}
    return {i.con_id: Quote(*(price(getattr(by_id[i.con_id], name, None)) if i.con_id in by_id else None
                              for name in ('bid', 'ask', 'last', 'close')))
            for i in infos}


async def gateway_time(ib: IB) -> datetime:
    """The gateway's clock (reqCurrentTime), in UTC."""
    moment = await asyncio.wait_for(ib.reqCurrentTimeAsync(), REQUEST_TIMEOUT_SECONDS)
    return moment.astimezone(timezone.utc)


def execution_filter_time(moment: datetime) -> str:
    """An ExecutionFilter's time: yyyymmdd-hh:mm:ss in UTC (the form TWS reads as UTC), whole seconds, rounded down."""
    # TWS reads 'yyyymmdd-hh:mm:ss' as UTC, 'yyyymmdd hh:mm:ss ZONE' in ZONE, and 'yyyymmdd hh:mm:ss' in the TWS
    # login's own time zone (deprecated: warning 2174). Sources: TWS's error 10314 text ("If no time-zone is
    # specified, local time-zone is assumed(deprecated). You can also provide yyyymmddd-hh:mm:ss time is in UTC")
    # and warning 2174 ("Please switch to use yyyymmdd-hh:mm:ss in UTC or use instrument time zone"); IB's
    # ibapi 10.50 EClient.reqExecutions ("Time format must be 'yyyymmdd-hh:mm:ss'"). A naive moment would be
    # read in this machine's zone, so it is refused. tests/trading/test_execution_filter_time.py holds us to it.
    if moment.tzinfo is None:
        raise ValueError(f'an ExecutionFilter time needs a time zone: {moment!r}')
    return moment.astimezone(timezone.utc).strftime('%Y%m%d-%H:%M:%S')


async def fetch_bars(ib: IB, requests: list[tuple[Contract, str, str, str]], use_rth: bool = True) -> list[list]:
    """Bars (the client library's BarData) for each (contract, bar size, duration, what to show), oldest
    first, fetched concurrently.

    Raises HistoricalDataUnavailable when the historical-data service fails or paces us (error 162 by
    its text, see HMDS_162_TEXTS, or no answer in time), HistoricalDataError for a refused request
    (a permanent 162, or any other error); "no data" is [].
    """
    return list(await asyncio.gather(*(_bars(ib, *request, use_rth) for request in requests)))


async def _bars(ib: IB, contract: Contract, bar_size: str, duration: str, what: str, use_rth: bool) -> list:
    # ib_insync ends a failed request with no bars and reports the error on errorEvent with the
    # request's contract object, so a copy of our own tells our errors apart from other requests'.
    mine = copy.copy(contract)
    failures: list[tuple[int, str]] = []

    def on_error(req_id: int, code: int, message: str, about: Contract | None) -> None:
        if about is mine and not _is_notice(code):
            failures.append((code, message))

    described = _describe_request(contract)
    ib.errorEvent += on_error
    try:
        request = ib.reqHistoricalDataAsync(mine, '', duration, bar_size, what, use_rth, timeout=0)
        data = await asyncio.wait_for(request, REQUEST_TIMEOUT_SECONDS)
    except asyncio.TimeoutError:
        raise HistoricalDataUnavailable(f'the historical data service did not answer for {described} '
                                        f'within {REQUEST_TIMEOUT_SECONDS:g} s') from None
    finally:
        ib.errorEvent -= on_error
    if failures:
        code, message = failures[0]
        kind = hmds_162_kind(message) if code == HMDS_ERROR else 'permanent'
        if kind == 'no-data':
            return []
        if kind == 'transient':
            raise HistoricalDataUnavailable(f'the historical data service failed for {described}: {message}')
        raise HistoricalDataError(f'historical data for {described} refused: error {code}: {message}')
    return list(data)


def account_snapshot(ib: IB, account: str) -> AccountSnapshot:
    """NetLiquidation, exchange rates and cash balances from the account values the session subscribed to."""
    values = ib.accountValues(account)
    nlv_rows = [v for v in values if v.tag == 'NetLiquidation' and v.currency not in ('', 'BASE')]
    if not nlv_rows:
        raise MissingAccountValue(f'the gateway reported no NetLiquidation for account {account}')
    base, nlv = nlv_rows[0].currency, float(nlv_rows[0].value)
    rates, cash = {}, {}
    for v in values:
        if v.currency in ('', 'BASE'):
            continue
        if v.tag == 'ExchangeRate':
            rates[v.currency] = float(v.value)
        elif v.tag == 'CashBalance':
            cash[v.currency] = float(v.value)
    return AccountSnapshot(account, base, nlv, rates, cash)


def _is_notice(code: int) -> bool:
    """Farm-status and similar informational codes ib_insync also reports on errorEvent."""
    return 2100 <= code < 2200 or code in (165, 202, 399, 404, 434, 492, 10167)


def _describe_request(contract: Contract) -> str:
    parts = [contract.secType, contract.symbol, contract.lastTradeDateOrContractMonth, contract.exchange,
             contract.currency]
    return ' '.join(p for p in parts if p) or f'conId {contract.conId}'
