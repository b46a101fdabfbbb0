"""The paper broker: accounts, orders, matching, fills and commissions. No sockets.

The protocol server calls this and turns the objects it gets back into TWS messages. What accounts
are worth (rates, margin, portfolio rows, account values) is valuation.py's; the broker asks it under
its lock. Simplifications: every account is a Reg T margin account (margin rates in valuation.py); a
new order is refused when its fill would leave init margin above equity with loan value; futures move
cash by their notional like stocks do, so NetLiquidation is always cash plus market value; forex
positions are shown but their value is already in the cash balances.
"""
from __future__ import annotations

import copy
import math
from bisect import bisect_left
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from .clock import as_utc
from .model import Account, Execution, Instrument, Order, Position
from .state import decode_account, decode_execution, decode_order, encode, read_json, write_json_atomic
from .valuation import PortfolioItem, Valuation, money

ORDER_TYPES = ('MKT', 'LMT', 'STP', 'STP LMT')
STOP_TYPES = ('STP', 'STP LMT')
LIMIT_TYPES = ('LMT', 'STP LMT')
TIFS = ('DAY', 'GTC', 'IOC')
EPS = 1e-9
STATE_VERSION = 1


class OrderError(Exception):
    """A refusal the server reports as TWS error `code` with `message`.

    `rejected`: the order as the placing client sees it after the error (status Inactive), when the
    gateway kept the rejected order (see Broker._reject); None when it never became an order.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f'{code}: {message}')
        self.code = code
        self.message = message
        self.rejected: Order | None = None


@dataclass
class WhatIf:
    initMarginBefore: float
    maintMarginBefore: float
    equityWithLoanBefore: float
    initMarginChange: float
    maintMarginChange: float
    equityWithLoanChange: float
    initMarginAfter: float
    maintMarginAfter: float
    equityWithLoanAfter: float
    commission: float
    minCommission: float
    maxCommission: float
    commissionCurrency: str


@dataclass
class BrokerFaults:
    """Switches for tests (the server may put its own object with these fields here).

    reject_orders: True or a reason text; every new order gets error 201.
    partial_fill: fraction of an order filled at once; while it is set, the rest stays working.
    """

    reject_orders: bool | str = False
    partial_fill: float | None = None


class BrokerListener(Protocol):
    """Implemented by the server; every call happens while the broker holds its lock."""

    def order_changed(self, order: Order) -> None: ...

    def executed(self, execution: Execution) -> None: ...

    def account_changed(self, account: str, conIds: list[int]) -> None: ...


def _is_price(x: float | None) -> bool:
    return x is not None and math.isfinite(x) and 0 < x < 1e300


def _update_position(pos: Position, dq: float, unit_cost: float, commission: float) -> float:
    """Apply a fill of signed quantity `dq` at `unit_cost` (price × multiplier); returns realized PnL.

    Opening fills fold their commission into avgCost, as IB does; closing fills realize
    (price − avgCost) net of their share of the commission.
    """
    q0, avg0 = pos.quantity, pos.avgCost
    closing = min(abs(dq), abs(q0)) if q0 and (q0 > 0) != (dq > 0) else 0.0
    close_commission = commission * closing / abs(dq)
    realized = 0.0
    if closing:
        sign = 1.0 if q0 > 0 else -1.0
        realized = closing * (unit_cost - avg0) * sign - close_commission
        q0 -= sign * closing
    rest = dq + (closing if dq < 0 else -closing)
    if abs(rest) > EPS:
        basis = q0 * avg0 + rest * unit_cost + commission - close_commission
        pos.quantity = q0 + rest
        pos.avgCost = basis / pos.quantity
    else:
        pos.quantity = 0.0 if abs(q0) < EPS else q0
        pos.avgCost = avg0 if pos.quantity else 0.0
    pos.realizedPNL += realized
    return realized


def _apply_fill(account: Account, inst: Instrument, dq: float, price: float, commission: float) -> float:
    """Move position and cash for a fill; returns the realized PnL in the instrument's currency."""
    pos = account.positions.setdefault(inst.conId, Position(inst))
    realized = _update_position(pos, dq, price * inst.price_multiplier, commission)
    cash = account.cash
    if inst.secType == 'CASH':
        cash[inst.symbol] = cash.get(inst.symbol, 0.0) + dq
        cash[inst.currency] = cash.get(inst.currency, 0.0) - dq * price - commission
    else:
        cash[inst.currency] = cash.get(inst.currency, 0.0) - dq * price * inst.price_multiplier - commission
    return realized


class ExecutionLog:
    """Every fill in the order it happened, indexed by account and time, so a filtered request reads only what
    it can match: a busy account's thousands of fills cost the request that wants the last minute's nothing.

    The time index holds while the fills' times never go back (the clock only moves back when a test sets it
    so); after that a time filter scans, as before, so the answer is the same either way.
    """

    def __init__(self, executions: list[Execution] = ()) -> None:
        self.all: list[Execution] = []
        self._by_account: dict[str, list[Execution]] = {}
        self._in_time_order = True
        for execution in executions:
            self.append(execution)

    def append(self, execution: Execution) -> None:
        if self.all and execution.time < self.all[-1].time:
            self._in_time_order = False
        self.all.append(execution)
        self._by_account.setdefault(execution.account, []).append(execution)

    def candidates(self, account: str, since: datetime | None) -> list[Execution]:
        """The fills of `account` ('' = every account) at or after `since`, and maybe some more; in fill order."""
        kept = self._by_account.get(account, []) if account else self.all
        if since is None or not self._in_time_order:
            return kept
        return kept[bisect_left(kept, since, key=lambda e: e.time):]


class Broker:
    """Paper accounts and their orders. Every public method holds `self.lock`.

    Orders still working are kept apart from the rest (`_working`), and fills in an ExecutionLog, so what a
    connect asks for (open orders, recent executions) and the periodic tick cost the same on an account
    with thousands of finished orders as on an empty one.
    """

    def __init__(self, accounts: list[str], base_currency: str, cash: float, clock, universe, prices,
                 listener: BrokerListener | None = None) -> None:
        if not accounts:
            raise ValueError('at least one account is needed')
        self.clock, self.universe, self.prices = clock, universe, prices
        self.listener = listener
        self.lock = threading.RLock()
        self.faults = BrokerFaults()
        self.base_currency = base_currency
        self._accounts = {a: Account(a, base_currency, {base_currency: float(cash)}) for a in accounts}
        self._orders: dict[tuple[int, int], Order] = {}
        self._working: dict[tuple[int, int], Order] = {}    # orders not done yet, in placement order
        self._executions = ExecutionLog()
        self._max_order_ids: dict[int, int] = {}
        self._next_perm_id = 1_000_001
        self._exec_count = 0
        self._exec_prefix = secrets.randbits(32)   # new per process, so execIds never repeat across restarts
        self.valuation = Valuation(base_currency, clock, universe, prices)

    @property
    def accounts(self) -> list[str]:
        return list(self._accounts)

    # ids

    def next_order_id(self, client_id: int) -> int:
        """An order id above every id `client_id` has used."""
        with self.lock:
            return self._max_order_ids.get(client_id, 0) + 1

    # orders

    def place(self, order: Order) -> None:
        """Accept a new order, or modify the live order with the same clientId and orderId."""
        with self.lock:
            now = self.clock.now()
            existing = self._orders.get((order.clientId, order.orderId))
            if existing is not None and existing.is_done:
                raise OrderError(103, 'Duplicate order id')
            self._max_order_ids[order.clientId] = max(order.orderId, self._max_order_ids.get(order.clientId, 0))
            order.account = self._account_id(order.account)
            self._validate(order)
            target = self._accept(order, now) if existing is None else self._modify(existing, order)
            if target.tif != 'DAY':
                target.expiresAt = None
            elif target.expiresAt is None:
                target.expiresAt = self._day_end(target.instrument, now)
            target.status = self._resting_status(target, now)
            self._notify_order(target)
            self._work(target, now)
            if target.tif == 'IOC' and not target.is_done:
                self._finish(target, 'Cancelled', 'Cancelled', now)

    def what_if(self, order: Order) -> WhatIf:
        """Margin and commission effect of filling `order` now; changes nothing."""
        with self.lock:
            account_id = self._account_id(order.account)
            self._validate(order)
            inst = order.instrument
            price = self._estimated_price(order, self.prices.quote(inst, self.clock.now()))
            commission = self._commission(inst, order.totalQuantity, price)
            account = self._accounts[account_id]
            before = self.valuation.totals(account)
            after = self.valuation.totals(self._with_fill(account, order, order.totalQuantity, price, commission))
            return WhatIf(
                before.init, before.maint, before.net_liquidation,
                after.init - before.init, after.maint - before.maint,
                after.net_liquidation - before.net_liquidation,
                after.init, after.maint, after.net_liquidation,
                commission, commission, commission, inst.currency)

    def cancel(self, client_id: int, order_id: int) -> Order:
        """Cancel a live order of `client_id` (only the placing client may)."""
        with self.lock:
            order = self._orders.get((client_id, order_id))
            if order is None:
                raise OrderError(10147, f'OrderId {order_id} that needs to be cancelled is not found.')
            if order.is_done:
                raise OrderError(161, 'Cancel attempted when order is not in a cancellable state')
            self._finish(order, 'Cancelled', 'Cancelled by Trader', self.clock.now())
            return order

    def global_cancel(self) -> list[Order]:
        """Cancel every live order of every client."""
        with self.lock:
            now = self.clock.now()
            live = self._live()
            for order in live:
                self._finish(order, 'Cancelled', 'Cancelled by Trader', now)
            return live

    def tick(self) -> None:
        """Expire DAY orders past their session, then fill whatever can fill at the current prices."""
        with self.lock:
            now = self.clock.now()
            for order in self._live():
                if order.expiresAt is not None and now >= order.expiresAt:
                    self._finish(order, 'Cancelled', 'Cancelled', now)
                else:
                    self._work(order, now)

    def open_orders(self, client_id: int | None = None) -> list[Order]:
        """Live orders in placement order, of one client or of all."""
        with self.lock:
            return [o for o in self._live() if client_id is None or o.clientId == client_id]

    def completed_orders(self) -> list[Order]:
        """Filled and cancelled orders, oldest completion first."""
        with self.lock:
            done = [o for o in self._orders.values() if o.is_done]
            return sorted(done, key=lambda o: o.completedAt or o.createdAt)

    def executions(self, *, client_id: int = 0, account: str = '', since: datetime | None = None,
                   symbol: str = '', secType: str = '', exchange: str = '', side: str = '') -> list[Execution]:
        """Fills matching an IB ExecutionFilter; 0 and '' mean any."""
        sides = {'BUY': 'BOT', 'SELL': 'SLD'}
        since = as_utc(since) if since is not None else None
        with self.lock:
            return [e for e in self._executions.candidates(account, since)
                    if (not client_id or e.clientId == client_id)
                    and (not account or e.account == account)
                    and (since is None or e.time >= since)
                    and (not symbol or e.instrument.symbol == symbol)
                    and (not secType or e.instrument.secType == secType)
                    and (not exchange or exchange in (e.instrument.exchange, e.instrument.primaryExchange))
                    and (not side or e.side == sides.get(side.upper(), side.upper()))]

    # account data

    def account_values(self, account: str) -> list[tuple[str, str, str]]:
        """(key, value, currency) rows for updateAccountValue."""
        with self.lock:
            return self.valuation.account_values(self._accounts[account])

    def summary(self, account: str, tags: list[str]) -> list[tuple[str, str, str]]:
        """(tag, value, currency) rows for reqAccountSummary, including the $LEDGER forms."""
        with self.lock:
            return self.valuation.summary(self._accounts[account], tags)

    def portfolio(self, account: str) -> list[PortfolioItem]:
        """Non-zero positions of `account`, marked to the current price."""
        with self.lock:
            positions = self._accounts[account].positions
            return [self.valuation.item(p) for p in positions.values() if p.quantity]

    def portfolio_item(self, account: str, conId: int) -> PortfolioItem | None:
        """One position's row, also when it is flat (the server pushes 0 to remove the row)."""
        with self.lock:
            pos = self._accounts[account].positions.get(conId)
            return self.valuation.item(pos) if pos else None

    def positions(self, account: str | None = None) -> list[tuple[str, Position]]:
        """(account, position) snapshots of the non-zero positions, of one account or of all."""
        with self.lock:
            return [(a.accountId, copy.copy(p)) for a in self._accounts.values() if account in (None, a.accountId)
                    for p in a.positions.values() if p.quantity]

    # test and admin API

    def set_cash(self, account: str, currency: str, amount: float) -> None:
        with self.lock:
            self._accounts[account].cash[currency] = float(amount)
            self._notify_account(account, [])

    def set_position(self, account: str, inst: Instrument, quantity: float, avg_cost: float) -> None:
        """Set a position directly (avg_cost per unit incl. multiplier); cash is left alone."""
        with self.lock:
            pos = self._accounts[account].positions.setdefault(inst.conId, Position(inst))
            pos.quantity, pos.avgCost = float(quantity), float(avg_cost) if quantity else 0.0
            self._notify_account(account, [inst.conId])

    def to_dict(self) -> dict:
        """The complete state as JSON-able data (faults are runtime switches and are not kept)."""
        with self.lock:
            return {
                'version': STATE_VERSION,
                'baseCurrency': self.base_currency,
                'accounts': [encode(a) for a in self._accounts.values()],
                'orders': [encode(o) for o in self._orders.values()],
                'executions': [encode(e) for e in self._executions.all],
                'maxOrderIds': {str(c): i for c, i in self._max_order_ids.items()},
                'nextPermId': self._next_perm_id,
                'execCount': self._exec_count,
            }

    @classmethod
    def from_dict(cls, data: dict, clock, universe, prices) -> Broker:
        if data.get('version') != STATE_VERSION:
            raise ValueError(f"unsupported broker state version {data.get('version')!r}")
        accounts = [decode_account(a) for a in data['accounts']]
        broker = cls([a.accountId for a in accounts], data['baseCurrency'], 0.0, clock, universe, prices)
        broker._accounts = {a.accountId: a for a in accounts}
        orders = [decode_order(o) for o in data['orders']]
        broker._orders = {(o.clientId, o.orderId): o for o in orders}
        broker._working = {key: o for key, o in broker._orders.items() if not o.is_done}
        broker._executions = ExecutionLog([decode_execution(e) for e in data['executions']])
        broker._max_order_ids = {int(c): i for c, i in data['maxOrderIds'].items()}
        broker._next_perm_id = data['nextPermId']
        broker._exec_count = data['execCount']
        return broker

    def save(self, path) -> None:
        """Write the state to `path` atomically (temp file in the same directory, fsync, rename)."""
        with self.lock:
            write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path, clock, universe, prices) -> Broker:
        return cls.from_dict(read_json(path), clock, universe, prices)

    # order internals

    def _live(self) -> list[Order]:
        return [o for o in self._working.values() if not o.is_done]

    def _accept(self, order: Order, now: datetime) -> Order:
        try:
            self._check_faults()
            self._check_buying_power(order, order.totalQuantity)
        except OrderError as rejection:
            self._reject(order, rejection, now)
            raise
        order.permId, order.createdAt = self._next_perm_id, now
        order.filled = order.avgFillPrice = order.lastFillPrice = 0.0
        order.stopTriggered = False
        self._next_perm_id += 1
        self._orders[order.clientId, order.orderId] = order
        self._working[order.clientId, order.orderId] = order
        return order

    def _reject(self, order: Order, rejection: OrderError, now: datetime) -> None:
        """Keep a well-formed new order the gateway refused, as TWS does: it gets a permId, the placing
        client is sent error 201 and then openOrder/orderStatus `Inactive` (rejection.rejected), and
        reqCompletedOrders lists it as `Cancelled` with the reject text as its completedStatus (ib_insync
        issues #554 and #559 show both from a real TWS). Malformed orders are refused without a trace.
        """
        order.permId, order.createdAt = self._next_perm_id, now
        order.filled = order.avgFillPrice = order.lastFillPrice = 0.0
        self._next_perm_id += 1
        self._orders[order.clientId, order.orderId] = order
        rejection.rejected = copy.copy(order)
        rejection.rejected.status = 'Inactive'
        order.status, order.completedStatus, order.completedAt = 'Cancelled', rejection.message, now

    def _modify(self, existing: Order, order: Order) -> Order:
        if (existing.instrument.conId, existing.action, existing.account) != (
                order.instrument.conId, order.action, order.account):
            raise OrderError(105, 'Order being modified does not match original order')
        if order.totalQuantity <= existing.filled + EPS:
            raise OrderError(201, 'Order rejected - reason:quantity must exceed the quantity already filled')
        self._check_buying_power(order, order.totalQuantity - existing.filled)
        for name in ('totalQuantity', 'orderType', 'lmtPrice', 'auxPrice', 'tif', 'outsideRth', 'orderRef',
                     'algoStrategy', 'algoParams'):
            setattr(existing, name, getattr(order, name))
        return existing

    def _account_id(self, account: str) -> str:
        if not account:
            return next(iter(self._accounts))
        if account not in self._accounts:
            raise OrderError(201, f'Order rejected - reason:Account {account} is not a valid account')
        return account

    @staticmethod
    def _validate(order: Order) -> None:
        problem = ''
        if order.action not in ('BUY', 'SELL'):
            problem = f'Invalid action {order.action!r}'
        elif not (order.totalQuantity > 0 and math.isfinite(order.totalQuantity)):
            problem = 'The order quantity must be positive'
        elif order.orderType not in ORDER_TYPES:
            problem = f'Unsupported order type {order.orderType!r}'
        elif order.tif not in TIFS:
            problem = f'Unsupported time in force {order.tif!r}'
        elif order.orderType in LIMIT_TYPES and not _is_price(order.lmtPrice):
            problem = 'A limit order needs a positive limit price'
        elif order.orderType in STOP_TYPES and not _is_price(order.auxPrice):
            problem = 'A stop order needs a positive stop price'
        if problem:
            raise OrderError(201, f'Order rejected - reason:{problem}')

    def _check_faults(self) -> None:
        reject = self.faults.reject_orders
        if reject:
            reason = reject if isinstance(reject, str) else 'Simulated rejection'
            raise OrderError(201, f'Order rejected - reason:{reason}')

    def _check_buying_power(self, order: Order, quantity: float) -> None:
        """Refuse an order whose complete fill would raise init margin above equity with loan value."""
        inst = order.instrument
        price = self._estimated_price(order, self.prices.quote(inst, self.clock.now()))
        account = self._accounts[order.account]
        before = self.valuation.totals(account)
        after = self.valuation.totals(self._with_fill(account, order, quantity, price, self._commission(inst, quantity, price)))
        if after.init > after.net_liquidation and after.init > before.init + EPS:
            base = self.base_currency
            raise OrderError(201, 'Order rejected - reason:YOUR ORDER IS NOT ACCEPTED. IN ORDER TO OBTAIN THE '
                             'DESIRED POSITION YOUR EQUITY WITH LOAN VALUE '
                             f'[{money(after.net_liquidation)} {base}] MUST EXCEED THE INITIAL MARGIN '
                             f'[{money(after.init)} {base}]')

    @staticmethod
    def _with_fill(account: Account, order: Order, quantity: float, price: float, commission: float) -> Account:
        hypothetical = copy.deepcopy(account)
        dq = quantity if order.action == 'BUY' else -quantity
        _apply_fill(hypothetical, order.instrument, dq, price, commission)
        return hypothetical

    def _day_end(self, inst: Instrument, now: datetime) -> datetime:
        """End of the liquid session a DAY order placed now belongs to (the next one when outside)."""
        start = now if self.universe.is_liquid(inst, now) else self.universe.next_liquid_open(inst, now)
        return self.universe.liquid_session_end(inst, start)

    def _in_session(self, order: Order, now: datetime) -> bool:
        inst = order.instrument
        return self.universe.is_liquid(inst, now) or (order.outsideRth and self.universe.is_trading(inst, now))

    def _resting_status(self, order: Order, now: datetime) -> str:
        waiting_for_stop = order.orderType in STOP_TYPES and not order.stopTriggered
        return 'PreSubmitted' if waiting_for_stop or not self._in_session(order, now) else 'Submitted'

    def _work(self, order: Order, now: datetime) -> None:
        """Trigger, fill or update the status of one live order at the current quote."""
        if not self._in_session(order, now):
            self._set_status(order, 'PreSubmitted')
            return
        quote = self.prices.quote(order.instrument, now)
        if order.orderType in STOP_TYPES and not order.stopTriggered:
            last = quote.last if _is_price(quote.last) else self.prices.price(order.instrument, now)
            crossed = last >= order.auxPrice if order.action == 'BUY' else last <= order.auxPrice
            if not crossed:
                self._set_status(order, 'PreSubmitted')
                return
            order.stopTriggered = True
        price = self._marketable_price(order, quote)
        quantity = self._fill_quantity(order) if price is not None else 0.0
        if quantity > 0:
            self._fill(order, quantity, price, now)
        else:
            self._set_status(order, 'Submitted')

    @staticmethod
    def _marketable_price(order: Order, quote) -> float | None:
        """The fill price if the order can fill against `quote` now, else None."""
        buy = order.action == 'BUY'
        touch = quote.ask if buy else quote.bid
        if not _is_price(touch):
            return None
        if order.orderType not in LIMIT_TYPES:
            return touch
        return touch if (touch <= order.lmtPrice if buy else touch >= order.lmtPrice) else None

    def _estimated_price(self, order: Order, quote) -> float:
        """Where the order would fill now, or its limit when that is better; for margin checks."""
        buy = order.action == 'BUY'
        touch = quote.ask if buy else quote.bid
        if not _is_price(touch):
            touch = self.prices.price(order.instrument, self.clock.now())
        if order.orderType in LIMIT_TYPES:
            return min(touch, order.lmtPrice) if buy else max(touch, order.lmtPrice)
        return touch

    def _fill_quantity(self, order: Order) -> float:
        fraction = self.faults.partial_fill
        if not fraction:
            return order.remaining
        if order.filled:
            return 0.0      # the fault keeps the rest working until it is switched off
        part = math.floor(order.totalQuantity * fraction)
        return float(part) if 0 < part < order.remaining else order.remaining

    def _fill(self, order: Order, quantity: float, price: float, now: datetime) -> None:
        inst = order.instrument
        account = self._accounts[order.account]
        commission = self._commission(inst, quantity, price)
        dq = quantity if order.action == 'BUY' else -quantity
        realized = _apply_fill(account, inst, dq, price, commission)
        account.realizedPNL += realized * self.valuation.rate(inst.currency)
        order.avgFillPrice = (order.avgFillPrice * order.filled + price * quantity) / (order.filled + quantity)
        order.filled += quantity
        order.lastFillPrice = price
        self._exec_count += 1
        execution = Execution(
            execId=f'{self._exec_prefix:08x}.{self._exec_count:08x}.01.01', orderId=order.orderId,
            clientId=order.clientId, permId=order.permId, account=order.account, instrument=inst,
            side='BOT' if dq > 0 else 'SLD', shares=quantity, price=price, time=now, cumQty=order.filled,
            avgPrice=order.avgFillPrice, orderRef=order.orderRef, commission=commission,
            commissionCurrency=inst.currency, realizedPNL=realized)
        self._executions.append(execution)
        if self.listener:
            self.listener.executed(execution)
        if order.remaining <= EPS:
            order.filled = order.totalQuantity
            self._finish(order, 'Filled', 'Filled', now)
        else:
            order.status = 'Submitted'
            self._notify_order(order)
        self._notify_account(order.account, [inst.conId])

    def _commission(self, inst: Instrument, quantity: float, price: float) -> float:
        """IB-like fixed rates, in the instrument's currency."""
        usd = self.valuation.convert(1.0, 'USD', inst.currency)
        value = quantity * price * inst.price_multiplier
        if inst.secType == 'FUT':
            return 0.85 * quantity * usd
        if inst.secType == 'CASH':
            return max(0.00002 * value, 2.0 * usd)
        return min(max(0.005 * quantity * usd, 1.0 * usd), 0.01 * value)

    def _set_status(self, order: Order, status: str) -> None:
        if order.status != status:
            order.status = status
            self._notify_order(order)

    def _finish(self, order: Order, status: str, completed_status: str, now: datetime) -> None:
        order.status, order.completedStatus, order.completedAt = status, completed_status, now
        self._working.pop((order.clientId, order.orderId), None)
        self._notify_order(order)

    def _notify_order(self, order: Order) -> None:
        if self.listener:
            self.listener.order_changed(order)

    def _notify_account(self, account: str, con_ids: list[int]) -> None:
        if self.listener:
            self.listener.account_changed(account, con_ids)
