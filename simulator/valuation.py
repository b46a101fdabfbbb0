"""Marking the paper accounts to market: exchange rates, margin, portfolio rows and account values.

No orders and no lock: the broker calls this while it holds its own, and it only reads the accounts.
Simplifications (see broker.py): Reg T margin for every account, stocks 25% long / 30% short, futures a
fixed amount per contract (10% of notional when unknown), forex 3%; BuyingPower is four times
AvailableFunds; NetLiquidation is cash plus market value (forex value is already in the cash balances).
"""
from __future__ import annotations

from dataclasses import dataclass

from .model import Account, Instrument, Position

FUTURE_INIT_MARGIN_USD = {'ES': 20000.0, 'NQ': 20000.0, 'MES': 2000.0, 'MNQ': 2000.0}
FUTURE_FALLBACK_MARGIN = 0.10      # of notional, for futures not in the table


@dataclass
class PortfolioItem:
    """One updatePortfolio row; money in the instrument's currency."""

    instrument: Instrument
    position: float
    marketPrice: float
    marketValue: float
    averageCost: float
    unrealizedPNL: float
    realizedPNL: float


@dataclass
class Totals:
    """An account's aggregates in base currency."""

    cash: float = 0.0
    market_value: float = 0.0      # stocks and futures; forex value is already in cash
    gross: float = 0.0
    init: float = 0.0
    maint: float = 0.0

    @property
    def net_liquidation(self) -> float:
        return self.cash + self.market_value

    @property
    def available(self) -> float:
        return self.net_liquidation - self.init

    @property
    def excess(self) -> float:
        return self.net_liquidation - self.maint


@dataclass
class _Ledger:
    """Per-currency ledger values, in that currency."""

    cash: float = 0.0
    stock_value: float = 0.0
    future_value: float = 0.0
    unrealized: float = 0.0
    realized: float = 0.0

    @property
    def net_liquidation(self) -> float:
        return self.cash + self.stock_value + self.future_value


def money(x: float) -> str:
    return f'{round(x, 2) + 0.0:.2f}'


def _rate_text(x: float) -> str:
    text = f'{x:.6f}'.rstrip('0')
    return text + '0' * max(0, 2 - len(text.split('.')[1]))


class Valuation:
    """Prices the accounts' positions and cash in `base_currency` at the clock's now."""

    def __init__(self, base_currency: str, clock, universe, prices) -> None:
        self.base_currency = base_currency
        self.clock, self.universe, self.prices = clock, universe, prices
        self._fx_pairs: dict[tuple[str, str], Instrument] | None = None

    def account_values(self, account: Account) -> list[tuple[str, str, str]]:
        """(key, value, currency) rows for updateAccountValue."""
        return self._scalar_rows(account, self.totals(account)) + self._ledger_rows(account, None)

    def summary(self, account: Account, tags: list[str]) -> list[tuple[str, str, str]]:
        """(tag, value, currency) rows for reqAccountSummary, including the $LEDGER forms."""
        scalars = {row[0]: row for row in self._scalar_rows(account, self.totals(account))}
        rows = []
        for tag in tags:
            if tag == '$LEDGER':
                rows += [r for r in self._ledger_rows(account, None) if r[2] == 'BASE']
            elif tag == '$LEDGER:ALL':
                rows += self._ledger_rows(account, None)
            elif tag.startswith('$LEDGER:'):
                rows += self._ledger_rows(account, tag.split(':', 1)[1])
            elif tag in scalars:
                rows.append(scalars[tag])
        return rows

    def convert(self, amount: float, frm: str, to: str) -> float:
        if frm == to:
            return amount
        direct = self._pair_rate(frm, to)
        if direct is not None:
            return amount * direct
        for via in {c for pair in self._fx() for c in pair}:
            first, second = self._pair_rate(frm, via), self._pair_rate(via, to)
            if first is not None and second is not None:
                return amount * first * second
        raise ValueError(f'no exchange rate from {frm} to {to} in the universe')

    def rate(self, currency: str) -> float:
        """Base currency per unit of `currency`."""
        return self.convert(1.0, currency, self.base_currency)

    def item(self, pos: Position) -> PortfolioItem:
        inst = pos.instrument
        mark = self.prices.price(inst, self.clock.now())
        mult = inst.price_multiplier
        return PortfolioItem(inst, pos.quantity, mark, pos.quantity * mark * mult, pos.avgCost,
                             (mark * mult - pos.avgCost) * pos.quantity, pos.realizedPNL)

    def totals(self, account: Account) -> Totals:
        totals = Totals(cash=sum(amount * self.rate(ccy) for ccy, amount in account.cash.items()))
        for pos in account.positions.values():
            if not pos.quantity:
                continue
            item = self.item(pos)
            rate = self.rate(pos.instrument.currency)
            init, maint = self._margin(pos, item.marketPrice)
            totals.init += init * rate
            totals.maint += maint * rate
            if pos.instrument.secType != 'CASH':
                totals.market_value += item.marketValue * rate
                totals.gross += abs(item.marketValue) * rate
        return totals

    def _fx(self) -> dict[tuple[str, str], Instrument]:
        if self._fx_pairs is None:
            self._fx_pairs = {(i.symbol, i.currency): i for i in self.universe.all() if i.secType == 'CASH'}
        return self._fx_pairs

    def _pair_rate(self, frm: str, to: str) -> float | None:
        """Units of `to` per unit of `frm` from one CASH pair, either way round."""
        pairs, now = self._fx(), self.clock.now()
        if (frm, to) in pairs:
            return self.prices.price(pairs[frm, to], now)
        if (to, frm) in pairs:
            return 1.0 / self.prices.price(pairs[to, frm], now)
        return None

    def _margin(self, pos: Position, mark: float) -> tuple[float, float]:
        """(init, maint) margin of a position in its currency."""
        inst, qty = pos.instrument, abs(pos.quantity)
        if inst.secType == 'FUT':
            per_contract = FUTURE_INIT_MARGIN_USD.get(inst.symbol)
            if per_contract is None:
                init = qty * mark * inst.price_multiplier * FUTURE_FALLBACK_MARGIN
            else:
                init = qty * self.convert(per_contract, 'USD', inst.currency)
            return init, 0.9 * init
        value = qty * mark * inst.price_multiplier
        rate = 0.03 if inst.secType == 'CASH' else 0.25 if pos.quantity > 0 else 0.30
        return value * rate, value * rate

    def _ledgers(self, account: Account) -> dict[str, _Ledger]:
        ledgers = {self.base_currency: _Ledger()}
        for ccy, amount in account.cash.items():
            ledgers.setdefault(ccy, _Ledger()).cash += amount
        for pos in account.positions.values():
            ledger = ledgers.setdefault(pos.instrument.currency, _Ledger())
            ledger.realized += pos.realizedPNL
            if pos.quantity:
                item = self.item(pos)
                ledger.unrealized += item.unrealizedPNL
                if pos.instrument.secType == 'STK':
                    ledger.stock_value += item.marketValue
                elif pos.instrument.secType == 'FUT':
                    ledger.future_value += item.marketValue
        return ledgers

    def _ledger_rows(self, account: Account, only: str | None) -> list[tuple[str, str, str]]:
        """Per-currency ledger rows plus the BASE rows (all of them, or one currency's when `only`)."""
        ledgers = self._ledgers(account)
        base = _Ledger(realized=account.realizedPNL)
        for ccy, ledger in ledgers.items():
            rate = self.rate(ccy)
            base.cash += ledger.cash * rate
            base.stock_value += ledger.stock_value * rate
            base.future_value += ledger.future_value * rate
            base.unrealized += ledger.unrealized * rate
        rows = []
        entries = [(ccy, ledger, self.rate(ccy)) for ccy, ledger in ledgers.items()] + [('BASE', base, 1.0)]
        for ccy, ledger, rate in entries:
            if only is not None and ccy != only:
                continue
            rows += [('CashBalance', money(ledger.cash), ccy),
                     ('TotalCashBalance', money(ledger.cash), ccy),
                     ('StockMarketValue', money(ledger.stock_value), ccy),
                     ('NetLiquidationByCurrency', money(ledger.net_liquidation), ccy),
                     ('UnrealizedPnL', money(ledger.unrealized), ccy),
                     ('RealizedPnL', money(ledger.realized), ccy),
                     ('ExchangeRate', _rate_text(rate), ccy)]
        return rows

    def _scalar_rows(self, account: Account, t: Totals) -> list[tuple[str, str, str]]:
        """Account-wide values; money in base currency, ratios and counts without a currency."""
        base = self.base_currency
        nlv = t.net_liquidation
        amounts = {
            'NetLiquidation': nlv, 'TotalCashValue': t.cash, 'SettledCash': t.cash, 'AccruedCash': 0.0,
            'BuyingPower': max(0.0, 4 * t.available), 'EquityWithLoanValue': nlv,
            'PreviousDayEquityWithLoanValue': nlv, 'GrossPositionValue': t.gross, 'RegTEquity': nlv,
            'RegTMargin': t.init, 'SMA': max(0.0, t.available), 'InitMarginReq': t.init,
            'MaintMarginReq': t.maint, 'AvailableFunds': t.available, 'ExcessLiquidity': t.excess,
            'FullInitMarginReq': t.init, 'FullMaintMarginReq': t.maint, 'FullAvailableFunds': t.available,
            'FullExcessLiquidity': t.excess, 'LookAheadInitMarginReq': t.init,
            'LookAheadMaintMarginReq': t.maint, 'LookAheadAvailableFunds': t.available,
            'LookAheadExcessLiquidity': t.excess,
        }
        rows = [('AccountCode', account.accountId, ''), ('AccountType', 'INDIVIDUAL', '')]
        rows += [(key, money(value), base) for key, value in amounts.items()]
        rows += [('Cushion', f'{t.excess / nlv if nlv else 0.0:.6f}', ''),
                 ('Leverage', f'{t.gross / nlv if nlv else 0.0:.2f}', ''),
                 ('LookAheadNextChange', '0', ''), ('HighestSeverity', '0', ''),
                 ('DayTradesRemaining', '-1', '')]
        rows += [(f'DayTradesRemainingT+{n}', '-1', '') for n in range(1, 5)]
        return rows
