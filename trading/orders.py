"""The order execution layer every order-placing intent uses.

    legs (contract, signed quantity, strategies served, reduce-only or not), netted by the intent against
    the position and our working orders on the account (pending_by_contract of our_open_orders)
      → takeover: every order of this run's reference on the account is looked up at the broker and
        listed; a leg that has orders already is completed, never redone (see _completing)
      → zero quantities dropped (never sent)
      → orders built from the OrderPolicy (reduce-only legs: the ClosePolicy), tagged `ibj:<hash10>:<conId>`
        (`.<n>` for a re-sent remainder)
      → risk limits on the whole plan, each order's notional at the market side that would fill it
        (a breach raises RiskLimitBreached: nothing is sent); reduce-only legs are exempt, but for the
        close policy's own price band when one is set
      → market hours at the gateway's clock (legs of closed markets are skipped, with the next open)
      → dry run: whatIf each (margin, commission), place nothing
      → else one by one: trading enabled read again from the store (disabled: this and the remaining
        legs are not placed, each listed in notPlaced and problems); a reduce-only leg is checked against
        the position at the gateway and our working orders (reduce_only: never grows or flips it); place;
        wait for the acknowledgement before the next leg
      → confirm: wait until each order has a permId and a status past PendingSubmit (or was rejected),
        or the deadline; every order's last known state is reported, and what went wrong is a problem
        (lib.problems) of the run.
"""
from __future__ import annotations

import asyncio
import copy
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Awaitable, Callable, NamedTuple

from lib.crash import crash_point
from lib.ib_values import number
from trading.idempotency import RecordedOrder, is_ours, order_ref, parse_order_ref, reference_of
from lib.ibapi import IB, ExecutionFilter, Order, Trade
from trading.market_data import (
    REQUEST_TIMEOUT_SECONDS, AccountSnapshot, ContractInfo, Quote, execution_filter_time, gateway_time,
)
from trading.market_hours import HoursUnreadable, market_state
from lib.problems import CLOSE_BAND, NOT_REDUCE_ONLY, REDUCED_TO_POSITION, TRADING_DISABLED, problem
from trading.risk import CheckedOrder, check_limits, price_band_breach
from lib.session import OtherClientUnavailable, other_client
from lib.times import iso
from trading.trading_config import ClosePolicy, OrderPolicy, RiskLimits

CONFIRM_MARGIN_SECONDS = 1.0      # left between the end of confirming and the run's deadline
SETTLE_SECONDS = 0.25             # after acknowledgement, for fills already on their way
UNACKNOWLEDGED = ('', 'PendingSubmit', 'ApiPending')
FINAL = ('Filled', 'Cancelled', 'ApiCancelled', 'Inactive')
ACK_WAIT_SECONDS = 5.0            # at most this long for one order's acknowledgement before the next leg
CANCEL_CONNECT_SECONDS = 3.0      # connecting as another client id to cancel its orders
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
    reduce_only: bool = False     # a close: may only shrink the position, sent under the ClosePolicy
    attempt: int = 1               # the n of its orderRef `...:<conId>.<n>` (a takeover's re-sent remainder)


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
class RunOrders:
    """The orders of one run: placed, planned, found at the broker, counted, skipped or not placed, and the
    problems they raised. Not a result of its own: `recorded()` is what the run's claim records (the typed
    RecordedOrders) and `to_result()` the orders' part of the intent's result.

    Filled in as the run goes, so a run that fails half-way can still list every order it placed
    or found (`to_result()` reads the live state of placed orders that were not confirmed yet).
    """

    orders: list[dict] = field(default_factory=list)            # placed now (confirmed), or planned in a dry run
    already_placed: list[dict] = field(default_factory=list)    # found at the broker under this run's reference
    working: list[dict] = field(default_factory=list)           # our working orders of other runs, counted
    skipped: list[dict] = field(default_factory=list)           # market closed
    not_placed: list[dict] = field(default_factory=list)        # stopped by a safety rail (see lib.problems)
    problems: list[dict] = field(default_factory=list)
    placing: list[tuple[_Planned, Trade]] = field(default_factory=list)   # sent, not confirmed yet
    released: dict[int, float] = field(default_factory=dict)   # conId -> signed quantity this run's cancels freed

    @property
    def status(self) -> str:
        """'ok' when something was placed or planned, or an order found at the broker works or filled; else
        'skipped'. A found order that was rejected or cancelled unfilled did nothing, so it does not count."""
        return 'ok' if self.orders or self.placing or any(map(took_effect, self.already_placed)) else 'skipped'

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
        if self.working:
            return ('no trades needed: our working orders cover it ('
                    + ', '.join(o['orderRef'] for o in self.working) + ')')
        return 'no trades needed'

    def to_result(self) -> dict:
        return {'orders': self._orders_now(), 'alreadyPlaced': self.already_placed, 'workingOrders': self.working,
                'skipped': self.skipped, 'notPlaced': self.not_placed, 'problems': self.problems}

    def recorded(self) -> tuple[RecordedOrder, ...]:
        """What the run's claim records: the orders placed now and, on a takeover, those found at the broker
        with the state it reported, so trade-reconciliation can attribute an earlier attempt's fills even
        when this run placed nothing."""
        return tuple(_recorded(order) for order in [*self._orders_now(), *self.already_placed])

    def _orders_now(self) -> list[dict]:
        return self.orders + [{**_describe_plan(p), **trade_state(t)} for p, t in self.placing]


def _recorded(order: dict) -> RecordedOrder:
    return RecordedOrder(order['orderRef'], order.get('action'), order.get('quantity'), order.get('strategies'),
                         order.get('permId'), order.get('status'), order.get('filled'),
                         (order.get('contract') or {}).get('conId'))


def took_effect(found: dict) -> bool:
    """Whether an order found at the broker (run_orders_at_broker) works or filled: not one the gateway
    rejected (TWS lists those among completed orders, Cancelled or Inactive) or that was cancelled unfilled."""
    return bool(found.get('filled')) or found.get('status') not in ('Cancelled', 'ApiCancelled', 'Inactive')


def check_legs(legs: list[Leg], settings: ExecutionSettings) -> None:
    """Raise RiskLimitBreached if the orders the legs become break a limit (zero quantities aside)."""
    _checked_plan(legs, settings)


async def execute(ib: IB, legs: list[Leg], settings: ExecutionSettings,
                  run_orders: RunOrders | None = None) -> RunOrders:
    """Run the legs through the pipeline above into `run_orders`; raises RiskLimitBreached before sending anything.

    The legs are netted by the caller against the position and our working orders (this run's own
    included). On a takeover every order of this run's reference found at the broker is listed (and so
    recorded), and a leg that already has orders is only completed (_completing): nothing while one of
    them works, else at most what its cancelled or rejected orders left (and this run's cancels of stale
    orders released), under the next orderRef suffix.
    """
    run_orders = run_orders if run_orders is not None else RunOrders()
    if settings.takeover:
        executions = await executions_since_claim(ib, settings.account, settings.claimed_at)
        found = await run_orders_at_broker(ib, settings.account, settings.reference, executions)
        run_orders.already_placed = [_found_entry(entry, legs) for entry in found]
        legs = _completing(legs, found, run_orders.released)
    planned = _checked_plan(legs, settings, run_orders)
    if not planned:
        return run_orders
    now = await gateway_time(ib)
    tradable = []
    for item in planned:
        closed = _closed_market(item.leg.info, now)
        if closed is None:
            tradable.append(item)
        else:
            run_orders.skipped.append({**_describe_plan(item), **closed})
    if settings.dry_run:
        run_orders.orders = list(await asyncio.gather(*(what_if(ib, p) for p in tradable)))
        return run_orders
    return await place(ib, tradable, settings, run_orders)


def planned_order(leg: Leg, order: Order, snapshot: AccountSnapshot) -> _Planned:
    """An order decided earlier (a stored plan's), for `place`: with its fill price and notional now."""
    expected = worst_fill_price(order, leg.quote)
    notional = (abs(leg.quantity) * expected * leg.info.multiplier * snapshot.rate(leg.info.contract.currency)
                if expected else math.inf)
    return _Planned(leg, order, expected, notional)


async def place(ib: IB, tradable: list[_Planned], settings: ExecutionSettings,
                run_orders: RunOrders) -> RunOrders:
    """Place the orders one by one (trading gate, reduce-only check), confirm them, and report each."""
    if settings.dry_run:
        raise ValueError('a dry run places nothing: ask what_if instead')
    await _place_one_by_one(ib, tradable, settings, run_orders)
    await confirm(ib, [trade for _, trade in run_orders.placing], settings.deadline - CONFIRM_MARGIN_SECONDS)
    for item, trade in run_orders.placing:
        state = {**_describe_plan(item), **trade_state(trade)}
        run_orders.orders.append(state)
        contract = item.leg.info.describe()
        if not state['acknowledged']:
            run_orders.problems.append(problem(
                'order-unacknowledged', f'{item.ref} ({item.leg.info.name}) not acknowledged by the gateway before '
                f'the deadline; last status {state["status"] or "none"}', contract=contract, order_ref=item.ref))
        elif _rejected(state):
            run_orders.problems.append(problem('order-rejected', f'{item.ref} ({item.leg.info.name}) rejected: '
                                                                 f'{state["messages"][-1]}',
                                               contract=contract, order_ref=item.ref))
    run_orders.placing = []
    return run_orders


def _rejected(state: dict) -> bool:
    return state.get('status') in ('Cancelled', 'ApiCancelled', 'Inactive') and bool(state.get('messages'))


async def _place_one_by_one(ib: IB, items: list[_Planned], settings: ExecutionSettings,
                            run_orders: RunOrders) -> None:
    """Place each leg into run_orders.placing after asking the trading gate and, for reduce-only legs, the
    position and our working orders; the next leg once this one is acknowledged."""
    loop = asyncio.get_running_loop()
    exposure = await _exposure_now(ib, settings.account) if any(p.leg.reduce_only for p in items) else ({}, {})
    for index, item in enumerate(items):
        refusal = await settings.trading_gate() if settings.trading_gate is not None else None
        if refusal is not None:
            for rest in items[index:]:
                _not_placed(run_orders, rest, TRADING_DISABLED, f'{rest.leg.info.name} not placed: {refusal}')
            return
        if item.leg.reduce_only and not _reduces(item, *exposure, run_orders):
            continue
        trade = ib.placeOrder(item.leg.info.contract, item.order)
        run_orders.placing.append((item, trade))
        crash_point('after-place-order', len(run_orders.placing))
        if index < len(items) - 1:
            until = min(settings.deadline - CONFIRM_MARGIN_SECONDS, loop.time() + ACK_WAIT_SECONDS)
            await _wait_until(ib, lambda: acknowledged(trade) or not ib.isConnected(), until)


def reduce_only(wanted: float, position: float, pending: float = 0.0) -> float:
    """The part of a signed trade that only brings the position toward flat and never past it (0: none).

    Our working orders (`pending`, signed) count when they close too, so nothing is sold twice, and are
    no reason to trade the other way when they do not. The close policy's one rule: close-all's legs and
    the closes of holdings outside a universe are sized by it and checked by it again at placement.
    """
    room = -(position + pending)
    room = max(min(room, 0.0), -position) if position > 0 else min(max(room, 0.0), -position)
    if wanted * room <= 0:
        return 0.0
    return math.copysign(min(abs(wanted), abs(room)), room)


def _reduces(item: _Planned, positions: dict[int, float], pending: dict[int, float],
             run_orders: RunOrders) -> bool:
    """Whether a reduce-only order may go: trimmed to what reduce_only allows, refused when that is nothing."""
    con_id, name, order = item.leg.info.con_id, item.leg.info.name, item.order
    held, working = positions.get(con_id, 0.0), pending.get(con_id, 0.0)
    signed = order.totalQuantity * (1 if order.action == 'BUY' else -1)
    allowed = reduce_only(signed, held, working)
    counted = f' with our working orders of {working:+g}' if working else ''
    if not allowed:
        _not_placed(run_orders, item, NOT_REDUCE_ONLY,
                    f'{name}: {order.action} {order.totalQuantity:g} would not reduce the position of '
                    f'{held:g}{counted}; not placed')
        return False
    if abs(allowed) < abs(signed):
        run_orders.problems.append(problem(
            REDUCED_TO_POSITION, f'{name}: {order.action} {order.totalQuantity:g} trimmed to {abs(allowed):g} '
                                 f'(the position of {held:g}{counted}), so it does not flip it',
            contract=item.leg.info.describe(), order_ref=item.ref))
        order.totalQuantity = abs(allowed)
    pending[con_id] = working + allowed
    return True


def _not_placed(run_orders: RunOrders, item: _Planned, code: str, message: str) -> None:
    run_orders.not_placed.append({**_describe_plan(item), 'code': code, 'reason': message})
    run_orders.problems.append(problem(code, message, contract=item.leg.info.describe(), order_ref=item.ref))


async def _exposure_now(ib: IB, account: str) -> tuple[dict[int, float], dict[int, float]]:
    """conId -> the account's position, and conId -> our working orders' signed remaining, at the gateway."""
    positions = await asyncio.wait_for(ib.reqPositionsAsync(), REQUEST_TIMEOUT_SECONDS)
    working = await our_open_orders(ib, account)
    return ({p.contract.conId: p.position for p in positions if p.account == account and p.position},
            pending_by_contract(working))


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


def on_account(account_field: str, account: str, managed: list[str]) -> bool:
    """Whether an order or execution whose account field reads `account_field` is on `account`, at a gateway
    managing the accounts `managed`.

    An empty field means the gateway's default account (placeOrder's account '' is "the default":
    research/tws-protocol.md §6.8, placeOrder field 23). A gateway that manages one account has only that
    one, so the order is on it; with several accounts the default could be any of them, so it is never
    taken for `account` (not found by a takeover, not counted as working, not cancelled as stale).
    """
    return account_field == account or (not account_field and list(managed) == [account])


async def our_open_orders(ib: IB, account: str) -> list[Trade]:
    """Working orders this system placed (orderRef ibj:...) for `account` (on_account), from every client id."""
    trades = await asyncio.wait_for(ib.reqAllOpenOrdersAsync(), REQUEST_TIMEOUT_SECONDS)
    managed = ib.managedAccounts()
    return [t for t in trades if is_ours(t.order.orderRef) and on_account(t.order.account, account, managed)
            and t.orderStatus.status not in FINAL]


def pending_by_contract(trades: list[Trade]) -> dict[int, float]:
    """conId -> the signed quantity (+ buy, - sell) the working `trades` still have to fill."""
    pending: dict[int, float] = {}
    for t in trades:
        sign = 1 if t.order.action == 'BUY' else -1
        pending[t.contract.conId] = pending.get(t.contract.conId, 0.0) + sign * t.orderStatus.remaining
    return pending


async def executions_since_claim(ib: IB, account: str, claimed_at: datetime | None) -> ExecutionFilter:
    """The account's executions since the key was first claimed, in the gateway's clock, less a margin.

    The claim time is our wall clock; the gateway filters by its own, so the time elapsed since the
    claim is taken back from the gateway's current time. The filter's time is yyyymmdd-hh:mm:ss in UTC.
    """
    if claimed_at is None:
        return ExecutionFilter(acctCode=account)
    since = await gateway_time(ib) - (datetime.now(timezone.utc) - claimed_at) - CLAIM_CLOCK_MARGIN
    return ExecutionFilter(acctCode=account, time=execution_filter_time(since))


async def run_orders_at_broker(ib: IB, account: str, reference: str,
                               executions: ExecutionFilter | None = None) -> list[dict]:
    """Every order of the run `reference` on `account` the broker knows of, whatever its state.

    Looks at all open orders (any client id), completed orders and the account's executions (those
    `executions` selects; default all of today's): an order that was placed, filled, cancelled or
    rejected after reaching the book is found in one of them.
    """
    open_trades, completed, fills = await asyncio.wait_for(asyncio.gather(
        ib.reqAllOpenOrdersAsync(), ib.reqCompletedOrdersAsync(False),
        ib.reqExecutionsAsync(executions or ExecutionFilter(acctCode=account))), REQUEST_TIMEOUT_SECONDS)
    found: dict[str, dict] = {}
    managed = ib.managedAccounts()
    for source, trades in (('completed', completed), ('open', open_trades)):
        for t in trades:
            o, status = t.order, t.orderStatus
            if reference_of(o.orderRef) != reference or not on_account(o.account, account, managed):
                continue
            # a completed order reports its fills as order.filledQuantity (unset: UNSET_DOUBLE), not in its status
            done = (number(o.filledQuantity) or 0.0) if source == 'completed' else 0.0
            filled = max(status.filled, done)
            remaining = status.remaining if source == 'open' else None   # completed: from fills, below
            found[o.orderRef] = {'orderRef': o.orderRef, 'conId': t.contract.conId, 'contract': _contract(t.contract),
                                 'action': o.action, 'quantity': o.totalQuantity, 'source': source,
                                 'permId': o.permId or None, 'clientId': o.clientId, 'status': status.status,
                                 'filled': filled, 'remaining': remaining}
    executed: dict[str, float] = {}
    for fill in fills:
        e = fill.execution
        if reference_of(e.orderRef) == reference and on_account(e.acctNumber, account, managed):
            executed[e.orderRef] = executed.get(e.orderRef, 0.0) + e.shares
            if e.orderRef not in found:   # seen only through its executions: its remainder is unknown
                found[e.orderRef] = {'orderRef': e.orderRef, 'conId': fill.contract.conId,
                                     'contract': _contract(fill.contract),
                                     'action': 'BUY' if e.side == 'BOT' else 'SELL', 'quantity': None,
                                     'source': 'executions', 'permId': e.permId, 'clientId': e.clientId,
                                     'status': None, 'filled': 0.0, 'remaining': None}
    for ref, shares in executed.items():
        found[ref]['filled'] = max(found[ref]['filled'] or 0.0, shares)
    for entry in found.values():
        if entry['source'] == 'completed':
            entry['remaining'] = max(0.0, entry['quantity'] - entry['filled'])
    return sorted(found.values(), key=lambda entry: entry['orderRef'])


def _completing(legs: list[Leg], found: list[dict], released: dict[int, float]) -> list[Leg]:
    """The legs a takeover still sends: a leg with earlier orders of this run is completed, never redone.

    The caller netted each leg against the position (an earlier order's fills) and our working orders
    (this run's own included). While an earlier order of the leg still works it is kept: nothing more
    is sent for that leg. Otherwise at most what is left to complete goes out, under the next orderRef
    suffix `<conId>.<n>`: the quantity cancelled or rejected orders of the leg left unfilled, plus what
    this run's cancels of stale orders released (orders the earlier attempt had counted). A filled leg
    whose target merely moved with the price is done.
    """
    attempts: dict[int, int] = {}
    working: set[int] = set()
    unfilled: dict[int, float] = {}
    for entry in found:
        parsed = parse_order_ref(entry['orderRef'])
        if parsed is None:
            continue
        con_id = entry['conId']
        attempts[con_id] = max(attempts.get(con_id, 0), parsed[2])
        if entry['source'] == 'open' and entry['status'] not in FINAL:
            working.add(con_id)
        elif entry['status'] in ('Cancelled', 'ApiCancelled', 'Inactive') and entry['remaining']:
            sign = 1 if entry['action'] == 'BUY' else -1
            unfilled[con_id] = unfilled.get(con_id, 0.0) + sign * entry['remaining']
    result = []
    for leg in legs:
        con_id = leg.info.con_id
        if con_id not in attempts:
            result.append(leg)
            continue
        if con_id in working or leg.quantity == 0:
            continue
        left = sum(q for q in (unfilled.get(con_id, 0.0), released.get(con_id, 0.0)) if (q > 0) == (leg.quantity > 0))
        quantity = math.copysign(min(abs(leg.quantity), abs(left)), leg.quantity)
        if quantity:
            share = quantity / leg.quantity
            result.append(replace(leg, quantity=quantity, attempt=attempts[con_id] + 1,
                                  strategies={name: part * share for name, part in leg.strategies.items()}))
    return result


def _found_entry(entry: dict, legs: list[Leg]) -> dict:
    """A found order as results and the claim record list it: with the strategies it served, when known.

    An earlier attempt's order served the same strategies as this run's leg in its contract; with
    one strategy it is all that one's, with several they share it as they share the leg.
    """
    leg = next((leg for leg in legs if leg.info.con_id == entry['conId']), None)
    shares = leg.strategies if leg is not None else {}
    signed = (entry['quantity'] or entry['filled'] or 0.0) * (1 if entry['action'] == 'BUY' else -1)
    total = sum(shares.values())
    if len(shares) == 1:
        strategies = {name: signed for name in shares}
    elif total:
        strategies = {name: signed * part / total for name, part in shares.items()}
    else:
        strategies = {}
    return {**entry, 'strategies': strategies}


def _contract(c) -> dict:
    return {'conId': c.conId, 'symbol': c.symbol, 'secType': c.secType, 'localSymbol': c.localSymbol}


async def cancel_orders(ib: IB, trades: list[Trade], *, own_client_id: int, host: str, port: int,
                        connect_timeout: float, until: float) -> list[dict]:
    """Cancel each order through a connection with the client id that placed it; report each outcome.

    IB lets only the placing client id cancel an order. Orders of our own session are cancelled on it;
    for each other client id `lib.session.other_client` connects in this loop, cancels, and disconnects. A
    client id that is connected elsewhere answers error 326 at once, and that is taken as the answer (within
    CANCEL_CONNECT_SECONDS at most, never a whole connect timeout): its orders are reported as not
    cancelled and still `working`, and `cancel_problems` turns them into problems of the run.
    """
    by_client: dict[int, list[Trade]] = {}
    for trade in trades:
        by_client.setdefault(trade.order.clientId, []).append(trade)
    outcomes: list[dict] = []
    loop = asyncio.get_running_loop()
    for client_id, group in by_client.items():
        if client_id == own_client_id:
            outcomes += await _cancel_on(ib, group, until)
            continue
        timeout = max(0.1, min(connect_timeout, CANCEL_CONNECT_SECONDS, until - loop.time()))
        try:
            async with other_client(host, port, client_id, timeout) as owner:
                known = {t.order.permId: t for t in owner.openTrades()}
                outcomes += await _cancel_on(owner, [known[t.order.permId] for t in group
                                                     if t.order.permId in known], until)
        except OtherClientUnavailable as exc:
            reason = f'could not connect as client id {client_id} to cancel: {exc}'
            outcomes += [{**describe_trade(t), 'cancelled': False, 'working': True, 'reason': reason}
                         for t in group]
            continue
        gone = 'no longer open (filled or cancelled meanwhile)'
        outcomes += [{**describe_trade(t), 'cancelled': False, 'working': False, 'reason': gone}
                     for t in group if t.order.permId not in known]
    return outcomes


def released_by(outcomes: list[dict]) -> dict[int, float]:
    """conId -> how much more a netted leg may now trade: the signed remainder of the orders cancelled."""
    released: dict[int, float] = {}
    for o in outcomes:
        if o.get('cancelled'):
            sign = 1 if o['action'] == 'BUY' else -1
            con_id = o['contract']['conId']
            released[con_id] = released.get(con_id, 0.0) + sign * (o['quantity'] - (o['filled'] or 0.0))
    return released


def cancel_problems(outcomes: list[dict]) -> list[dict]:
    """An `order-not-cancelled` problem for each order a cancel left working."""
    return [problem('order-not-cancelled', f'{o["orderRef"]} ({o["action"]} {o["quantity"]:g} '
                                           f'{o["contract"]["localSymbol"] or o["contract"]["symbol"]}) is still '
                                           f'working: {o.get("reason") or "the cancel was not confirmed in time"}',
                    contract=o['contract'], order_ref=o['orderRef'])
            for o in outcomes if o.get('working')]


async def _cancel_on(ib: IB, trades: list[Trade], until: float) -> list[dict]:
    for trade in trades:
        if trade.orderStatus.status not in FINAL:
            ib.cancelOrder(trade.order)
    await _wait_until(ib, lambda: all(t.orderStatus.status in FINAL for t in trades), until)
    return [{**describe_trade(t), 'cancelled': t.orderStatus.status in ('Cancelled', 'ApiCancelled'),
             'working': t.orderStatus.status not in FINAL} for t in trades]


def _checked_plan(legs: list[Leg], settings: ExecutionSettings,
                  run_orders: RunOrders | None = None) -> list[_Planned]:
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
        elif run_orders is not None:
            _not_placed(run_orders, item, CLOSE_BAND, f'closePolicy.priceBand: {breach}')
    return kept


def _plan(leg: Leg, settings: ExecutionSettings) -> _Planned:
    info = leg.info
    policy = settings.close_policy.order if leg.reduce_only and settings.close_policy else settings.policy
    order = build_order(info, leg.quantity, leg.quote, policy, account=settings.account,
                        ref=order_ref(settings.reference, info.con_id, leg.attempt))
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
            'reduceOnly': item.leg.reduce_only, 'lastClose': item.leg.quote.close,
            'algoParams': {p.tag: p.value for p in o.algoParams or []} or None}


def describe_trade(trade: Trade) -> dict:
    """An order at the broker as results list it (orderRef, action, quantity, status, filled, ...)."""
    o, c = trade.order, trade.contract
    return {'orderRef': o.orderRef, 'permId': o.permId or None, 'clientId': o.clientId, 'contract': _contract(c),
            'action': o.action, 'quantity': o.totalQuantity, 'status': trade.orderStatus.status,
            'filled': trade.orderStatus.filled, 'remaining': trade.orderStatus.remaining}


async def what_if(ib: IB, item: _Planned) -> dict:
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
        what_if = {name: number(getattr(state, name)) for name in (
            'initMarginChange', 'maintMarginChange', 'equityWithLoanChange', 'initMarginAfter', 'maintMarginAfter',
            'equityWithLoanAfter', 'commission', 'minCommission', 'maxCommission')}
        what_if['commissionCurrency'] = state.commissionCurrency or None
        what_if['warning'] = state.warningText or None
    return {**_describe_plan(item), 'whatIf': what_if, 'messages': refusals}
