"""The order execution layer every order-placing intent uses.

    legs (contract, signed quantity, strategies served, reduce-only or not)
      → zero quantities dropped (never sent)
      → orders built from the OrderPolicy (reduce-only legs: the ClosePolicy), tagged `ibj:<hash10>:<conId>`
      → risk limits on the whole plan, each order's notional at the market side that would fill it
        (a breach raises RiskLimitBreached: nothing is sent); reduce-only legs are exempt, but for the
        close policy's own price band when one is set
      → market hours at the gateway's clock (legs of closed markets are skipped, with the next open)
      → takeover: orders already at the broker under this run's orderRefs are not sent again
      → dry run: whatIf each (margin, commission), place nothing
      → else one by one: trading enabled read again from the store (disabled: this and the remaining
        legs are not placed, each listed in problems); a reduce-only leg is checked against the
        position at the gateway (never increases or flips it); place; wait for the acknowledgement
        before the next leg
      → confirm: wait until each order has a permId and a status past PendingSubmit (or was rejected),
        or the deadline; every order's last known state is reported.
"""
from __future__ import annotations

import asyncio
import copy
import math
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Awaitable, Callable, NamedTuple

from lib.idempotency import is_ours, order_ref
from lib.ibapi import IB, ExecutionFilter, Order, Trade
from lib.market_data import REQUEST_TIMEOUT_SECONDS, AccountSnapshot, ContractInfo, Quote, gateway_time
from lib.market_hours import HoursUnreadable, market_state
from lib.risk import CheckedOrder, check_limits, price_band_breach
from lib.session import disconnect
from lib.store.common import iso
from lib.trading_config import ClosePolicy, OrderPolicy, RiskLimits

CONFIRM_MARGIN_SECONDS = 1.0      # left between the end of confirming and the run's deadline
SETTLE_SECONDS = 0.25             # after acknowledgement, for fills already on their way
UNACKNOWLEDGED = ('', 'PendingSubmit', 'ApiPending')
FINAL = ('Filled', 'Cancelled', 'ApiCancelled', 'Inactive')
UNSET_DOUBLE = 1.7976931348623157e308
ACK_WAIT_SECONDS = 5.0            # at most this long for one order's acknowledgement before the next leg


class AlgoParam(NamedTuple):
    """An algo parameter; ib_insync and ib_async read `.tag` and `.value` (their TagValue)."""

    tag: str
    value: str


@dataclass
class Leg:
    """One order to send: a contract, a signed quantity (+ buy, - sell) and the strategies it serves."""

    info: ContractInfo
    quantity: float
    quote: Quote
    strategies: dict[str, float] = field(default_factory=dict)   # strategy -> its signed share of quantity
    reduce_only: bool = False     # a close: may only shrink the position, sent under the ClosePolicy


@dataclass(frozen=True)
class ExecutionSettings:
    """Everything about the run that decides how its legs become orders."""

    account: str
    reference: str                 # ibj:<hash10>; orderRef = reference:<conId>
    policy: OrderPolicy
    limits: RiskLimits
    snapshot: AccountSnapshot
    dry_run: bool
    takeover: bool                 # an earlier attempt under this key may have placed orders
    deadline: float                # loop.time() by which the run must be over
    close_policy: ClosePolicy | None = None      # for reduce-only legs; None: the policy above, no band
    trading_gate: Callable[[], Awaitable[str | None]] | None = None
    """Asked before each order: None when trading is still enabled, else why not (the leg is not placed)."""


@dataclass
class _Planned:
    leg: Leg
    order: Order
    expected_price: float | None
    notional: float

    @property
    def ref(self) -> str:
        return self.order.orderRef


@dataclass
class ExecutionReport:
    """What happened to each leg; `to_result()` is its part of the intent's result."""

    orders: list[dict] = field(default_factory=list)            # placed now, or planned in a dry run
    already_placed: list[dict] = field(default_factory=list)    # found at the broker under our orderRefs
    skipped: list[dict] = field(default_factory=list)           # market closed
    not_placed: list[dict] = field(default_factory=list)        # stopped: trading disabled, not reduce-only
    problems: list = field(default_factory=list)

    @property
    def failure(self) -> str | None:
        """The code of the first problem that makes the run not ok (legs it asked for were not placed)."""
        return next((leg['code'] for leg in self.not_placed), None)

    @property
    def status(self) -> str:
        """'ok' when something was placed, planned or found; else 'skipped'."""
        return 'ok' if self.orders or self.already_placed else 'skipped'

    @property
    def unacknowledged(self) -> list[str]:
        """orderRefs of placed orders the gateway did not acknowledge before the deadline."""
        return [o['orderRef'] for o in self.orders if o.get('acknowledged') is False]

    @property
    def reason(self) -> str | None:
        """Why nothing was done, for a skipped run."""
        if self.status == 'ok':
            return None
        if self.skipped:
            return '; '.join(s['reason'] for s in self.skipped)
        return 'no trades needed'

    def to_result(self) -> dict:
        return {'orders': self.orders, 'alreadyPlaced': self.already_placed, 'skipped': self.skipped,
                'notPlaced': self.not_placed, 'problems': self.problems}


def problem(code: str, message: str, *, contract: dict | None = None, order_ref: str | None = None) -> dict:
    """One entry of a result's `problems`: {code, message, contract?, orderRef?}."""
    entry: dict = {'code': code, 'message': message}
    if contract is not None:
        entry['contract'] = contract
    if order_ref is not None:
        entry['orderRef'] = order_ref
    return entry


def check_legs(legs: list[Leg], settings: ExecutionSettings) -> None:
    """Raise RiskLimitBreached if the orders the legs become break a limit (zero quantities aside)."""
    _checked_plan(legs, settings)


async def execute(ib: IB, legs: list[Leg], settings: ExecutionSettings) -> ExecutionReport:
    """Run the legs through the pipeline above; raises RiskLimitBreached before sending anything."""
    report = ExecutionReport()
    planned = _checked_plan(legs, settings, report)
    if not planned:
        return report
    now = await gateway_time(ib)
    tradable = []
    for item in planned:
        closed = _closed_market(item.leg.info, now)
        if closed is None:
            tradable.append(item)
        else:
            report.skipped.append({**_describe_plan(item), **closed})
    if settings.takeover and tradable:
        found = await orders_at_broker(ib, {p.ref for p in tradable}.__contains__)
        report.already_placed = [{**_describe_plan(p), 'atBroker': found[p.ref]} for p in tradable if p.ref in found]
        tradable = [p for p in tradable if p.ref not in found]
    if settings.dry_run:
        report.orders = list(await asyncio.gather(*(_what_if(ib, p) for p in tradable)))
        return report
    trades = await _place_one_by_one(ib, tradable, settings, report)
    await confirm(ib, [trade for _, trade in trades], settings.deadline - CONFIRM_MARGIN_SECONDS)
    for item, trade in trades:
        state = {**_describe_plan(item), **trade_state(trade)}
        report.orders.append(state)
        if not state['acknowledged']:
            report.problems.append(f'{item.ref} ({item.leg.info.name}) not acknowledged by the gateway before the '
                                   f'deadline; last status {state["status"] or "none"}')
        elif state['status'] in ('Cancelled', 'ApiCancelled', 'Inactive') and state['messages']:
            report.problems.append(f'{item.ref} ({item.leg.info.name}) rejected: {state["messages"][-1]}')
    return report


async def _place_one_by_one(ib: IB, items: list[_Planned], settings: ExecutionSettings,
                            report: ExecutionReport) -> list[tuple[_Planned, Trade]]:
    """Place each leg after asking the trading gate and, for reduce-only legs, the position; next leg once acked."""
    loop = asyncio.get_running_loop()
    positions = await _positions_now(ib, settings.account) if any(p.leg.reduce_only for p in items) else {}
    trades: list[tuple[_Planned, Trade]] = []
    for index, item in enumerate(items):
        refusal = await settings.trading_gate() if settings.trading_gate is not None else None
        if refusal is not None:
            for rest in items[index:]:
                _not_placed(report, rest, 'TradingDisabled', f'{rest.leg.info.name} not placed: {refusal}')
            break
        if item.leg.reduce_only and not _reduces(item, positions, report):
            continue
        trade = ib.placeOrder(item.leg.info.contract, item.order)
        trades.append((item, trade))
        if index < len(items) - 1:
            until = min(settings.deadline - CONFIRM_MARGIN_SECONDS, loop.time() + ACK_WAIT_SECONDS)
            await _wait_until(ib, lambda: acknowledged(trade) or not ib.isConnected(), until)
    return trades


def _reduces(item: _Planned, positions: dict[int, float], report: ExecutionReport) -> bool:
    """Whether a reduce-only order may go: trimmed to the position, refused if it would grow or flip it."""
    con_id, name = item.leg.info.con_id, item.leg.info.name
    held = positions.get(con_id, 0.0)
    signed = item.order.totalQuantity * (1 if item.order.action == 'BUY' else -1)
    if held == 0 or (held > 0) == (signed > 0):
        _not_placed(report, item, 'NotReduceOnly', f'{name}: {item.order.action} {item.order.totalQuantity:g} '
                                                   f'would not reduce the position of {held:g}; not placed')
        return False
    if abs(signed) > abs(held):
        report.problems.append(problem(
            'ReducedToPosition', f'{name}: {item.order.action} {item.order.totalQuantity:g} trimmed to the position '
                                 f'of {abs(held):g}, so it does not flip it', contract=item.leg.info.describe(),
            order_ref=item.ref))
        item.order.totalQuantity = abs(held)
    positions[con_id] = held + math.copysign(item.order.totalQuantity, signed)
    return True


def _not_placed(report: ExecutionReport, item: _Planned, code: str, message: str) -> None:
    report.not_placed.append({**_describe_plan(item), 'code': code, 'reason': message})
    report.problems.append(problem(code, message, contract=item.leg.info.describe(), order_ref=item.ref))


async def _positions_now(ib: IB, account: str) -> dict[int, float]:
    positions = await asyncio.wait_for(ib.reqPositionsAsync(), REQUEST_TIMEOUT_SECONDS)
    return {p.contract.conId: p.position for p in positions if p.account == account and p.position}


def build_order(info: ContractInfo, quantity: float, quote: Quote, policy: OrderPolicy, *, account: str,
                ref: str) -> Order:
    """The order for a signed quantity under the policy: market, marketable limit or Adaptive; DAY etc.

    A marketable limit is the market side it would fill against (the ask for a buy, the bid for a sell; else
    the live last or midpoint) moved limitOffsetBps through the market and rounded away from it to the
    contract's tick, so even an offset of 0 is marketable. IDEALPRO has no Adaptive algo: forex goes as market.
    """
    buy = quantity > 0
    order = Order(action='BUY' if buy else 'SELL', totalQuantity=abs(quantity), orderType='MKT', tif=policy.tif,
                  orderRef=ref, account=account)
    if policy.order_type == 'marketable-limit':
        reference_price = quote.expected_fill(buy)
        if reference_price is None:
            raise ValueError(f'no price for {info.name} to set a marketable limit from')
        offset = policy.limit_offset_bps / 10_000
        raw = reference_price * (1 + offset if buy else 1 - offset)
        order.orderType, order.lmtPrice = 'LMT', round_to_tick(raw, info.min_tick, up=buy)
    elif policy.order_type == 'adaptive' and info.contract.secType != 'CASH':
        order.algoStrategy = 'Adaptive'
        order.algoParams = [AlgoParam('adaptivePriority', policy.adaptive_priority)]
    return order


def round_to_tick(price: float, tick: float, *, up: bool) -> float:
    """`price` on the tick grid, rounded up (buys stay marketable) or down (sells)."""
    ticks = (Decimal(repr(price)) / Decimal(repr(tick))).to_integral_value(ROUND_CEILING if up else ROUND_FLOOR)
    return float(ticks * Decimal(repr(tick)))


async def confirm(ib: IB, trades: list[Trade], until: float) -> None:
    """Wait until every trade is acknowledged (or final), or until loop.time() reaches `until`.

    Then give updates already on their way (a market order's fill follows its acknowledgement at once)
    up to SETTLE_SECONDS to arrive, so the report shows the fill rather than "Submitted".
    """
    await _wait_until(ib, lambda: all(acknowledged(t) for t in trades), until)
    settle_until = min(until, asyncio.get_running_loop().time() + SETTLE_SECONDS)
    await _wait_until(ib, lambda: all(t.orderStatus.status in FINAL for t in trades), settle_until)


async def _wait_until(ib: IB, done: Callable[[], bool], until: float) -> None:
    """Re-check `done` on every order event until it holds or loop.time() reaches `until`."""
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()

    def on_change(*_) -> None:
        changed.set()

    ib.orderStatusEvent += on_change
    ib.openOrderEvent += on_change
    ib.disconnectedEvent += on_change
    try:
        while not done():
            remaining = until - loop.time()
            if remaining <= 0:
                return
            changed.clear()
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except asyncio.TimeoutError:
                return
    finally:
        ib.orderStatusEvent -= on_change
        ib.openOrderEvent -= on_change
        ib.disconnectedEvent -= on_change


def acknowledged(trade: Trade) -> bool:
    """The gateway answered for this order: it has a permId and a status past PendingSubmit, or it is final."""
    status = trade.orderStatus.status
    return status in FINAL or (bool(trade.order.permId) and status not in UNACKNOWLEDGED)


def trade_state(trade: Trade) -> dict:
    """An order's last known state for results."""
    o, s = trade.order, trade.orderStatus
    return {'orderId': o.orderId, 'clientId': o.clientId, 'permId': o.permId or None, 'status': s.status,
            'filled': s.filled, 'remaining': s.remaining, 'avgFillPrice': s.avgFillPrice or None,
            'acknowledged': acknowledged(trade),
            'messages': [f'{e.errorCode}: {e.message}' for e in trade.log if e.errorCode]}


async def our_open_orders(ib: IB) -> list[Trade]:
    """Open orders this system placed (orderRef ibj:...), from every client id."""
    trades = await asyncio.wait_for(ib.reqAllOpenOrdersAsync(), REQUEST_TIMEOUT_SECONDS)
    return [t for t in trades if is_ours(t.order.orderRef) and t.orderStatus.status not in FINAL]


async def orders_at_broker(ib: IB, wanted: Callable[[str], bool]) -> dict[str, dict]:
    """orderRef -> what the broker knows of it, for every orderRef `wanted(ref)` accepts.

    Looks at all open orders (any client id), completed orders and today's executions: an order that
    was placed, filled, cancelled or rejected after reaching the book is found in one of them.
    """
    open_trades, completed, fills = await asyncio.wait_for(asyncio.gather(
        ib.reqAllOpenOrdersAsync(), ib.reqCompletedOrdersAsync(False), ib.reqExecutionsAsync(ExecutionFilter())),
        REQUEST_TIMEOUT_SECONDS)
    found: dict[str, dict] = {}
    for source, trades in (('completed', completed), ('open', open_trades)):
        for t in trades:
            if wanted(t.order.orderRef):
                found[t.order.orderRef] = {'source': source, 'permId': t.order.permId or None,
                                           'clientId': t.order.clientId, 'status': t.orderStatus.status,
                                           'filled': t.orderStatus.filled, 'remaining': t.orderStatus.remaining}
    for fill in fills:
        ref = fill.execution.orderRef
        if wanted(ref):
            entry = found.setdefault(ref, {'source': 'executions', 'permId': fill.execution.permId,
                                           'clientId': fill.execution.clientId, 'status': None})
            entry['executedShares'] = entry.get('executedShares', 0.0) + fill.execution.shares
    return found


async def cancel_orders(ib: IB, trades: list[Trade], *, own_client_id: int, host: str, port: int,
                        connect_timeout: float, until: float) -> list[dict]:
    """Cancel each order through a connection with the client id that placed it; report each outcome.

    IB lets only the placing client id cancel an order. Orders of our own session are cancelled on it;
    for each other client id a second IB() is connected in this loop, cancels, and disconnects. A client
    id that is connected elsewhere (error 326) cannot be used: its orders are reported as not cancelled.
    """
    by_client: dict[int, list[Trade]] = {}
    for trade in trades:
        by_client.setdefault(trade.order.clientId, []).append(trade)
    outcomes: list[dict] = []
    for client_id, group in by_client.items():
        if client_id == own_client_id:
            outcomes += await _cancel_on(ib, group, until)
            continue
        owner = IB()
        loop = asyncio.get_running_loop()
        try:
            timeout = max(0.1, min(connect_timeout, until - loop.time()))
            await asyncio.wait_for(owner.connectAsync(host, port, client_id, timeout), timeout)
        except Exception as exc:
            disconnect(owner)
            reason = f'could not connect as client id {client_id} to cancel: {type(exc).__name__}: {exc}'
            outcomes += [{**_describe_trade(t), 'cancelled': False, 'reason': reason} for t in group]
            continue
        try:
            known = {t.order.permId: t for t in owner.openTrades()}
            outcomes += await _cancel_on(owner, [known[t.order.permId] for t in group if t.order.permId in known],
                                         until)
        finally:
            disconnect(owner)
        gone = 'no longer open (filled or cancelled meanwhile)'
        outcomes += [{**_describe_trade(t), 'cancelled': False, 'reason': gone}
                     for t in group if t.order.permId not in known]
    return outcomes


async def _cancel_on(ib: IB, trades: list[Trade], until: float) -> list[dict]:
    for trade in trades:
        if trade.orderStatus.status not in FINAL:
            ib.cancelOrder(trade.order)
    await _wait_until(ib, lambda: all(t.orderStatus.status in FINAL for t in trades), until)
    return [{**_describe_trade(t), 'cancelled': t.orderStatus.status in ('Cancelled', 'ApiCancelled'),
             'status': t.orderStatus.status} for t in trades]


def _checked_plan(legs: list[Leg], settings: ExecutionSettings,
                  report: ExecutionReport | None = None) -> list[_Planned]:
    """The legs as orders, once the limits pass; reduce-only legs outside the close band are dropped (reported)."""
    planned = [_plan(leg, settings) for leg in legs if leg.quantity != 0]
    snapshot = settings.snapshot
    limited = [p for p in planned if not p.leg.reduce_only]
    check_limits([_checked(p) for p in limited], settings.limits, snapshot.net_liquidation, snapshot.base_currency)
    band = settings.close_policy.price_band if settings.close_policy else None
    kept = []
    for item in planned:
        breach = price_band_breach(_checked(item), band) if item.leg.reduce_only and band is not None else None
        if breach is None:
            kept.append(item)
        elif report is not None:
            _not_placed(report, item, 'ClosePriceBand', f'closePolicy.priceBand: {breach}')
    return kept


def _plan(leg: Leg, settings: ExecutionSettings) -> _Planned:
    info = leg.info
    policy = settings.close_policy.order if leg.reduce_only and settings.close_policy else settings.policy
    order = build_order(info, leg.quantity, leg.quote, policy, account=settings.account,
                        ref=order_ref(settings.reference, info.con_id))
    expected = worst_fill_price(order, leg.quote)
    notional = (abs(leg.quantity) * expected * info.multiplier * settings.snapshot.rate(info.contract.currency)
                if expected else math.inf)
    return _Planned(leg, order, expected, notional)


def worst_fill_price(order: Order, quote: Quote) -> float | None:
    """The price the order would fill at now: the market side (ask for a buy, bid for a sell, else the live
    last or midpoint), or its limit when that is better; never a limit further away. None without a live price.

    A sell's limit below the bid does not lower its notional: it fills at the bid.
    """
    buy = order.action == 'BUY'
    market = quote.expected_fill(buy)
    if market is None or order.orderType != 'LMT':
        return market
    return min(market, order.lmtPrice) if buy else max(market, order.lmtPrice)


def _checked(item: _Planned) -> CheckedOrder:
    c = item.leg.info.contract
    symbols = (c.symbol, f'{c.symbol}.{c.currency}') if c.secType == 'CASH' else (c.symbol,)
    return CheckedOrder(item.leg.info.name, symbols, item.expected_price, item.leg.quote.close, item.notional)


def _closed_market(info: ContractInfo, now) -> dict | None:
    """None when the contract's liquid hours include `now`, else why it is skipped."""
    try:
        state = market_state(info.liquid_hours, info.time_zone, now)
    except HoursUnreadable as exc:
        return {'reason': f'{info.name}: trading hours unreadable ({exc}); not sent', 'nextOpen': None}
    if state.open:
        return None
    return {'reason': state.describe(info.name),
            'nextOpen': iso(state.next_open) if state.next_open else None}


def _describe_plan(item: _Planned) -> dict:
    o = item.order
    return {'orderRef': o.orderRef, 'contract': item.leg.info.describe(), 'action': o.action,
            'quantity': o.totalQuantity, 'orderType': o.orderType,
            'lmtPrice': o.lmtPrice if o.orderType == 'LMT' else None, 'tif': o.tif,
            'algo': o.algoStrategy or None, 'strategies': dict(item.leg.strategies),
            'expectedPrice': item.expected_price,
            'notional': round(item.notional, 2) if math.isfinite(item.notional) else None,
            'reduceOnly': item.leg.reduce_only}


def _describe_trade(trade: Trade) -> dict:
    o, c = trade.order, trade.contract
    return {'orderRef': o.orderRef, 'permId': o.permId or None, 'clientId': o.clientId,
            'contract': {'conId': c.conId, 'symbol': c.symbol, 'secType': c.secType, 'localSymbol': c.localSymbol},
            'action': o.action, 'quantity': o.totalQuantity, 'remaining': trade.orderStatus.remaining}


async def _what_if(ib: IB, item: _Planned) -> dict:
    """The planned order with the gateway's whatIf answer (margin and commission); nothing is placed."""
    contract = copy.copy(item.leg.info.contract)   # errors come back tagged with this object
    refusals: list[str] = []

    def on_error(req_id: int, code: int, message: str, about) -> None:
        if about is contract:
            refusals.append(f'{code}: {message}')

    ib.errorEvent += on_error
    try:
        state = await asyncio.wait_for(ib.whatIfOrderAsync(contract, item.order), REQUEST_TIMEOUT_SECONDS)
    except asyncio.TimeoutError:
        state, refusals = None, [f'no whatIf answer within {REQUEST_TIMEOUT_SECONDS:g} s']
    finally:
        ib.errorEvent -= on_error
    what_if = None
    if state is not None:
        what_if = {name: _number(getattr(state, name)) for name in (
            'initMarginChange', 'maintMarginChange', 'equityWithLoanChange', 'initMarginAfter', 'maintMarginAfter',
            'equityWithLoanAfter', 'commission', 'minCommission', 'maxCommission')}
        what_if['commissionCurrency'] = state.commissionCurrency or None
        what_if['warning'] = state.warningText or None
    return {**_describe_plan(item), 'whatIf': what_if, 'messages': refusals}


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) or abs(number) >= UNSET_DOUBLE else number
