"""The order execution layer every order-placing intent uses.

    legs (contract, signed quantity, strategies served)
      → zero quantities dropped (never sent)
      → risk limits on the whole plan (a breach raises RiskLimitBreached: nothing is sent)
      → market hours at the gateway's clock (legs of closed markets are skipped, with the next open)
      → takeover: orders already at the broker under this run's orderRefs are not sent again
      → orders built from the OrderPolicy, each tagged `ibj:<hash10>:<conId>`
      → dry run: whatIf each (margin, commission), place nothing
      → else place, then flush and confirm: wait until each order has a permId and a status past
        PendingSubmit (or was rejected), or the deadline; every order's last known state is reported.
"""
from __future__ import annotations

import asyncio
import copy
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Callable, NamedTuple

from lib.idempotency import is_ours, order_ref
from lib.ibapi import IB, ExecutionFilter, Order, Trade
from lib.market_data import REQUEST_TIMEOUT_SECONDS, AccountSnapshot, ContractInfo, Quote, gateway_time
from lib.market_hours import HoursUnreadable, market_state
from lib.risk import CheckedOrder, check_limits
from lib.session import connect_client, disconnect
from lib.store.common import iso
from lib.trading_config import OrderPolicy, RiskLimits

CONFIRM_MARGIN_SECONDS = 1.0      # left between the end of confirming and the run's deadline
SETTLE_SECONDS = 0.25             # after acknowledgement, for fills already on their way
UNACKNOWLEDGED = ('', 'PendingSubmit', 'ApiPending')
FINAL = ('Filled', 'Cancelled', 'ApiCancelled', 'Inactive')
UNSET_DOUBLE = 1.7976931348623157e308
# how far the instances' and the gateway's clocks may disagree when looking for fills since a claim
CLAIM_CLOCK_MARGIN = timedelta(minutes=5)


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
    claimed_at: datetime | None = None   # the key's first claim (wall clock): a takeover's fills are younger


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
    problems: list[str] = field(default_factory=list)

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
                'problems': self.problems}


def check_legs(legs: list[Leg], settings: ExecutionSettings) -> None:
    """Raise RiskLimitBreached if the orders the legs become break a limit (zero quantities aside)."""
    _checked_plan(legs, settings)


async def execute(ib: IB, legs: list[Leg], settings: ExecutionSettings) -> ExecutionReport:
    """Run the legs through the pipeline above; raises RiskLimitBreached before sending anything."""
    planned = _checked_plan(legs, settings)
    report = ExecutionReport()
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
        found = await orders_at_broker(ib, {p.ref for p in tradable}.__contains__,
                                       executions=executions_since_claim(settings.account, settings.claimed_at, now))
        report.already_placed = [{**_describe_plan(p), 'atBroker': found[p.ref]} for p in tradable if p.ref in found]
        tradable = [p for p in tradable if p.ref not in found]
    if settings.dry_run:
        report.orders = list(await asyncio.gather(*(_what_if(ib, p) for p in tradable)))
        return report
    trades = [(p, ib.placeOrder(p.leg.info.contract, p.order)) for p in tradable]
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


def build_order(info: ContractInfo, quantity: float, quote: Quote, policy: OrderPolicy, *, account: str,
                ref: str) -> Order:
    """The order for a signed quantity under the policy: market, marketable limit or Adaptive; DAY etc.

    A marketable limit is the last price (else the midpoint) moved limitOffsetBps through the market and
    rounded away from it to the contract's tick. IDEALPRO has no Adaptive algo: forex goes as market.
    """
    buy = quantity > 0
    order = Order(action='BUY' if buy else 'SELL', totalQuantity=abs(quantity), orderType='MKT', tif=policy.tif,
                  orderRef=ref, account=account)
    if policy.order_type == 'marketable-limit':
        reference_price = quote.last or quote.price()
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


def executions_since_claim(account: str, claimed_at: datetime | None, gateway_now: datetime) -> ExecutionFilter:
    """The account's executions since the key was first claimed, in the gateway's clock, less a margin.

    The claim time is our wall clock; the gateway filters by its own, so the time elapsed since the
    claim is taken back from the gateway's `gateway_now`. The filter's time is yyyymmdd-hh:mm:ss in UTC.
    """
    if claimed_at is None:
        return ExecutionFilter(acctCode=account)
    since = gateway_now - (datetime.now(timezone.utc) - claimed_at) - CLAIM_CLOCK_MARGIN
    return ExecutionFilter(acctCode=account, time=since.astimezone(timezone.utc).strftime('%Y%m%d-%H:%M:%S'))


async def orders_at_broker(ib: IB, wanted: Callable[[str], bool],
                           executions: ExecutionFilter | None = None) -> dict[str, dict]:
    """orderRef -> what the broker knows of it, for every orderRef `wanted(ref)` accepts.

    Looks at all open orders (any client id), completed orders and the executions `executions`
    selects (default: all of today's): an order that was placed, filled, cancelled or rejected after
    reaching the book is found in one of them.
    """
    open_trades, completed, fills = await asyncio.wait_for(asyncio.gather(
        ib.reqAllOpenOrdersAsync(), ib.reqCompletedOrdersAsync(False),
        ib.reqExecutionsAsync(executions or ExecutionFilter())), REQUEST_TIMEOUT_SECONDS)
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
            await asyncio.wait_for(connect_client(owner, host, port, client_id, timeout), timeout)
            await asyncio.wait_for(owner.reqOpenOrdersAsync(), timeout)   # that client id's orders, to cancel
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


def _checked_plan(legs: list[Leg], settings: ExecutionSettings) -> list[_Planned]:
    planned = [_plan(leg, settings) for leg in legs if leg.quantity != 0]
    snapshot = settings.snapshot
    check_limits([_checked(p) for p in planned], settings.limits, snapshot.net_liquidation, snapshot.base_currency)
    return planned


def _plan(leg: Leg, settings: ExecutionSettings) -> _Planned:
    info = leg.info
    order = build_order(info, leg.quantity, leg.quote, settings.policy, account=settings.account,
                        ref=order_ref(settings.reference, info.con_id))
    expected = order.lmtPrice if order.orderType == 'LMT' else leg.quote.expected_fill(leg.quantity > 0)
    notional = (abs(leg.quantity) * expected * info.multiplier * settings.snapshot.rate(info.contract.currency)
                if expected else math.inf)
    return _Planned(leg, order, expected, notional)


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
            'expectedPrice': item.expected_price, 'notional': round(item.notional, 2)}


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
