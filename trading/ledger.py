"""The fills ledger's rules: booking executions, whose share of each fill is whose, internal transfers.

Each ledger entry is one execution (keyed by execId) or one internal transfer (`transfer:<orderRef>`),
with `strategies`: strategy -> its signed part of the quantity. The rules:

- an order records each strategy's own signed trade (target minus its holding); where strategies trade
  against each other in one contract, the part that nets out is an internal transfer, booked at the
  reference price with quantity 0 (the account's position does not change);
- a fill is split among the strategies trading on the fill's side only, in proportion to their trades;
  its commission is split the same way;
- a fill of an order that is not ours (manual, other tools) has no strategies: it is a manual holding,
  kept apart from every strategy's;
- so, per contract, the strategies' parts add up to the account's position minus the manual holdings.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from trading.exchange_calendar import is_trading_day
from lib.ib_values import number
from lib.ibapi import IB, ExecutionFilter, Fill
from trading.idempotency import RecordedOrder, is_ours, recorded_order, recorded_orders, reference_of
from trading.market_data import REQUEST_TIMEOUT_SECONDS, execution_filter_time
from lib.problems import FILL_UNATTRIBUTED, problem
from lib.store import Store
from lib.store.common import QUANTITY_DIGITS, holding_view, sum_holdings

TRANSFER_PREFIX = 'transfer:'
RECONCILED_PREFIX = 'reconciled:'
LOOKBACK_TRADING_DAYS = 10
MARKER_LEASE_SECONDS = 60.0
BOOKING_CURSOR_PREFIX = 'executions-booked:'
# Fetched again behind the cursor: the filter's time has whole seconds (and whether TWS includes that
# second is not documented), and an execution may reach the gateway a little after its own time.
# Re-fetched fills are recognised by execId and not booked twice.
BOOKING_OVERLAP = timedelta(seconds=60)


@dataclass
class Booking:
    """What booking the gateway's executions did."""

    executions: int = 0
    recorded: list[dict] = field(default_factory=list)
    already: int = 0
    waiting: list[dict] = field(default_factory=list)    # ours, but the run that placed them recorded nothing yet

    def problems(self, recording: str | None = None) -> list[dict]:
        """A `fill-unattributed` data problem for each fill waiting: the strategies' holdings leave it out.

        `recording`: the reference of a run taking over, which records its earlier attempt's orders itself.
        """
        return [problem(FILL_UNATTRIBUTED, f'execution {w["execId"]} of {w["orderRef"]}: {w["reason"]}',
                        order_ref=w['orderRef'])
                for w in self.waiting if recording is None or reference_of(w['orderRef']) != recording]


async def book_executions(ib: IB, store: Store, account: str, now: datetime | None = None, *,
                          incremental: bool = True) -> Booking:
    """Record once each execution the gateway reports for the account (today's: IB keeps no more).

    `now` is the gateway's time, asked before this call. Booking is incremental: only the executions since
    the account's booking cursor are fetched (less BOOKING_OVERLAP), so its cost follows the activity since
    the last booking, not the day's. The cursor then moves on to `now`, or to the earliest fill left waiting
    for its order record (it must be fetched again). Without a cursor (the first booking), with one from
    an earlier day, or with `incremental=False`, all of the day's executions are fetched. Without `now`,
    everything is fetched and the cursor is left alone.
    """
    name = f'{BOOKING_CURSOR_PREFIX}{account}'
    cursor = await asyncio.to_thread(store.get_cursor, name) if now is not None and incremental else None
    since = booking_since(cursor, now)
    wanted = ExecutionFilter(acctCode=account, time=execution_filter_time(since) if since else '')
    fills = await asyncio.wait_for(ib.reqExecutionsAsync(wanted), REQUEST_TIMEOUT_SECONDS)
    # commission reports are attached to the Fill ib_insync saw first (at connect), not to this copy
    seen = {f.execution.execId: f for f in ib.fills()}
    fills = [seen.get(f.execution.execId, f) for f in fills if f.execution.acctNumber == account]
    orders: dict[str, RecordedOrder] = {}
    for reference in sorted({reference_of(f.execution.orderRef) for f in fills} - {None}):
        orders.update(await asyncio.to_thread(recorded_orders, store, reference))
    booking = Booking(executions=len(fills))
    held: list[datetime] = []
    for fill in fills:
        ref = fill.execution.orderRef
        order = recorded_order(orders, ref)
        if is_ours(ref) and order is None:
            booking.waiting.append({'execId': fill.execution.execId, 'orderRef': ref,
                                    'reason': 'the run that placed it has not recorded the order yet'})
            held.append(fill.execution.time)
            continue
        entry = ledger_entry(fill, order)
        if await asyncio.to_thread(store.record_fill, entry):
            booking.recorded.append(entry)
        else:
            booking.already += 1
    if now is not None and all(isinstance(t, datetime) and t.tzinfo for t in held):   # else keep the old cursor
        through = min([now, *held])
        await asyncio.to_thread(store.put_cursor, name, {'through': through.astimezone(timezone.utc).isoformat(),
                                                         'waiting': len(held)})
    return booking


def booking_since(cursor: dict | None, now: datetime | None) -> datetime | None:
    """The time from which to fetch executions: the cursor less the overlap; None (all of them) without a
    usable cursor, or when the cursor lies ahead of the gateway's clock (another gateway, a clock set back)."""
    if cursor is None or now is None:
        return None
    try:
        through = datetime.fromisoformat(cursor['through'])
    except (KeyError, TypeError, ValueError):
        return None
    if through.tzinfo is None or through > now:
        return None
    return through - BOOKING_OVERLAP


def ledger_entry(fill: Fill, order: RecordedOrder | None) -> dict:
    """The fills-ledger document of one execution; `order` is its recorded order (None if not ours)."""
    e, c, report = fill.execution, fill.contract, fill.commissionReport
    quantity = e.shares if e.side == 'BOT' else -e.shares
    commission = number(report.commission) if report.execId else None
    parts = split_fill(quantity, order)
    return {
        'execId': e.execId, 'time': (fill.time or e.time).isoformat(), 'account': e.acctNumber,
        'orderRef': e.orderRef or None, 'permId': e.permId, 'orderId': e.orderId, 'clientId': e.clientId,
        'conId': c.conId, 'symbol': c.symbol, 'secType': c.secType, 'localSymbol': c.localSymbol,
        'currency': c.currency, 'side': e.side, 'shares': e.shares, 'quantity': quantity, 'price': e.price,
        'commission': commission, 'commissionCurrency': report.currency or None,
        'realizedPNL': number(report.realizedPNL) if report.execId else None,
        'strategies': parts,
        'commissions': split_commission(commission, quantity, parts),
    }


def split_fill(quantity: float, order: RecordedOrder | None) -> dict[str, float]:
    """Each strategy's part of a fill: the strategies trading on the fill's side, in proportion to their trades.

    When their trades on that side add up to less than the order (a close-all of every position takes
    manual holdings too), the rest of each fill is manual: no strategy's.
    """
    trades = (order.strategies if order else None) or {}
    side = {name: trade for name, trade in trades.items() if trade * quantity > 0}
    total = abs(sum(side.values()))
    if not side or total == 0:
        return {}
    total = max(total, float((order.quantity if order else None) or 0.0))
    return {name: round(quantity * abs(trade) / total, QUANTITY_DIGITS) for name, trade in side.items()}


def split_commission(commission: float | None, quantity: float, parts: dict[str, float]) -> dict[str, float]:
    """The fill's commission shared like its quantity; a manual fill's stays unattributed ({})."""
    if commission is None or not quantity:
        return {}
    return {name: round(commission * part / quantity, QUANTITY_DIGITS) for name, part in parts.items()}


def internal_transfer(trades: dict[str, float]) -> dict[str, float]:
    """The part of the strategies' trades in one contract that nets out between them: buyers get what sellers give.

    {a: +100, b: -30} -> {a: +30, b: -30}; the rest (+70 for a) goes to the market.
    """
    buys = sum(t for t in trades.values() if t > 0)
    sells = -sum(t for t in trades.values() if t < 0)
    matched = min(buys, sells)
    if matched <= 0:
        return {}
    return {name: round(trade * matched / (buys if trade > 0 else sells), QUANTITY_DIGITS)
            for name, trade in trades.items() if trade}


def transfer_entry(order_ref: str, contract: dict, account: str, parts: dict[str, float], price: float | None,
                   time: str) -> dict:
    """The ledger document of an internal transfer: quantity 0 for the account, `parts` for the strategies."""
    return {
        'execId': f'{TRANSFER_PREFIX}{order_ref}', 'time': time, 'account': account, 'orderRef': order_ref,
        'permId': None, 'orderId': None, 'clientId': None, 'conId': contract['conId'], 'symbol': contract['symbol'],
        'secType': contract['secType'], 'localSymbol': contract['localSymbol'], 'currency': contract.get('currency'),
        'side': 'TRANSFER', 'shares': 0.0, 'quantity': 0.0, 'price': price, 'commission': 0.0,
        'commissionCurrency': None, 'realizedPNL': None, 'strategies': parts, 'commissions': {},
    }


@dataclass
class Holding:
    """One contract in the ledger: the account's expected position, each strategy's part, the manual rest."""

    con_id: int
    contract: dict
    position: float = 0.0
    strategies: dict[str, float] = field(default_factory=dict)

    @property
    def manual(self) -> float:
        """What no strategy holds: fills of orders that were not ours."""
        return round(self.position - sum(self.strategies.values()), QUANTITY_DIGITS)


def holdings(ledger: list[dict], account: str) -> dict[int, Holding]:
    """conId -> the ledger's holding, from the account's entries (summed in units of 10^-QUANTITY_DIGITS;
    contracts where nothing is held and strategies' zero parts are left out)."""
    return as_holdings([holding_view(row) for (owner, _), row in sorted(sum_holdings(ledger).items())
                        if owner == account])


def stored_holdings(store: Store, account: str) -> dict[int, Holding]:
    """conId -> the account's holding as the store keeps it (Store.holdings): no ledger read, whatever its length."""
    return as_holdings(store.holdings(account))


def as_holdings(rows: list[dict]) -> dict[int, Holding]:
    """conId -> Holding, from rows as Store.holdings returns them."""
    return {row['conId']: Holding(row['conId'], row['contract'], round(row['position'], QUANTITY_DIGITS),
                                  {name: round(q, QUANTITY_DIGITS) for name, q in row['strategies'].items()})
            for row in rows}


def record_reconciled_day(store: Store, account: str, day: date, run_id: str, now: datetime) -> None:
    """Remember that the ledger was completed for `day` (a finished claim keyed `reconciled:<account>:<day>`)."""
    key = _reconciled_key(account, day)
    if store.claim(key, run_id, MARKER_LEASE_SECONDS, now).held:
        store.finish(key, run_id, {'account': account, 'day': day.isoformat(), 'runId': run_id}, now)


def last_reconciled_day(store: Store, account: str, today: date) -> tuple[date | None, list[date]]:
    """The last day before `today` the ledger was completed, and the NYSE trading days after it that were missed.

    IB returns only the current day's executions, so a trading day without a completed reconciliation may
    have lost fills for good. Looks back LOOKBACK_TRADING_DAYS trading days.
    """
    missed: list[date] = []
    day = today
    while len(missed) < LOOKBACK_TRADING_DAYS:
        day -= timedelta(days=1)
        if not is_trading_day(day):
            continue
        record = store.get_claim(_reconciled_key(account, day))
        if record is not None and record.status == 'finished':
            return day, sorted(missed)
        missed.append(day)
    return None, sorted(missed)


def _reconciled_key(account: str, day: date) -> str:
    return f'{RECONCILED_PREFIX}{account}:{day.isoformat()}'
