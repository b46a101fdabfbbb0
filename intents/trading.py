"""What the order-placing intents share: policy overrides, strategies and their contracts, execution, output."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone
from typing import Any, Callable, Literal
from zoneinfo import ZoneInfo

from pydantic import Field

from intents.base import Intent, IntentParams, IntentRejected
from intents.outcome import Outcome
from lib.failures import Failure
from lib.ibapi import Position, Trade
from lib.ibapi import Contract
from trading.idempotency import RecordedOrder, order_ref, reference_of
from trading.ledger import Holding, book_executions, internal_transfer, stored_holdings, transfer_entry
from trading.plans import approve_command, expires_at, plan_id, working_entry
from trading.market_data import AccountSnapshot, ContractInfo, account_snapshot, contract_infos, gateway_time
from trading.orders import (
    ExecutionSettings, Leg, RunOrders, cancel_orders, cancel_problems, describe_trade, execute,
    our_open_orders, pending_by_contract, released_by,
)
from lib.problems import ERROR_TYPES, ORDER_CODES, order_problems
from lib.session import AccountState
from lib.times import iso
from trading.trading_config import LIMIT_OFFSET_CEILING_BPS, ClosePolicy, OrderPolicy, TradingConfig
from strategies.base import Bar, InstrumentSpec, Strategy
from strategies.registry import get_strategy, strategy_names

# Strategies decide for a calendar day; the instruments are US-listed, so it is New York's.
MARKET_TIMEZONE = ZoneInfo('America/New_York')
PLACING_RESERVE_SECONDS = 2.0     # of the deadline, kept for placing orders once cancels are done


class PolicyOverrides(IntentParams):
    """Per-message overrides of the configured orderPolicy; unset keys keep the configured value."""

    order_type: Literal['market', 'marketable-limit', 'adaptive'] | None = None
    tif: Literal['DAY', 'GTC', 'IOC'] | None = None
    limit_offset_bps: float | None = Field(None, ge=0, le=LIMIT_OFFSET_CEILING_BPS)
    """Also at most the configured limits.maxLimitOffsetBps (checked when the run starts)."""
    adaptive_priority: Literal['Patient', 'Normal', 'Urgent'] | None = None

    def apply(self, policy: OrderPolicy, max_offset_bps: float) -> OrderPolicy:
        """`policy` with the keys given here replaced; IntentRejected for an offset beyond the configured bound."""
        if self.limit_offset_bps is not None and self.limit_offset_bps > max_offset_bps:
            raise IntentRejected(f'params.orderPolicy.limitOffsetBps={self.limit_offset_bps:g} is more than '
                                 f'limits.maxLimitOffsetBps={max_offset_bps:g}; not executed')
        return replace(policy, **{name: value for name, value in self.model_dump().items() if value is not None})


def known_strategy_names(names: list[str] | None) -> list[str] | None:
    """Params validator: every name registered, none twice; the error lists the known ones."""
    if names is None:
        return None
    if not names:
        raise ValueError('an empty list names no strategy; leave it out to mean every configured strategy')
    unknown = [name for name in names if name not in strategy_names()]
    if unknown:
        raise ValueError(f'unknown strategy {unknown[0]!r}; known strategies: {", ".join(strategy_names())}')
    if len(set(names)) != len(names):
        raise ValueError('a strategy is named twice')
    return names


def market_date(moment: datetime) -> date:
    """The trading day `moment` belongs to, in New York."""
    return moment.astimezone(MARKET_TIMEZONE).date()


def build_strategy(name: str, trading: TradingConfig) -> Strategy:
    """The configured strategy; ValueError when its config table is missing or invalid."""
    if name not in trading.strategies:
        raise ValueError(f'no [strategies.{name}] table in the trading config')
    return get_strategy(name)(trading.strategies[name])


def spec_contract(spec: InstrumentSpec) -> Contract:
    """The client library's contract for a strategy's instrument."""
    return Contract(secType=spec.sec_type, symbol=spec.symbol, exchange=spec.exchange, currency=spec.currency,
                    lastTradeDateOrContractMonth=spec.last_trade_date)


def strategy_bars(bars: list) -> list[Bar]:
    """The client library's bars as the strategies' own Bar; intraday times in UTC."""
    def day(value: date | datetime) -> date | datetime:
        if isinstance(value, datetime):
            return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return value
    return [Bar(day(b.date), b.open, b.high, b.low, b.close, b.volume) for b in bars]


async def strategy_universe(intent: Intent, strategy: Strategy, today: date) -> dict[str, ContractInfo]:
    """The strategy's instruments on `today`, as the gateway describes them, by instrument key."""
    specs = strategy.instruments(today)
    infos = await contract_infos(intent.ib, [spec_contract(spec) for spec in specs])
    return {spec.key: info for spec, info in zip(specs, infos)}


async def account_positions(intent: Intent) -> dict[int, Position]:
    """The account's non-zero positions by conId, asked for now (not the session's cached copy)."""
    positions = await intent.ib.reqPositionsAsync()
    return {p.contract.conId: p for p in positions if p.account == intent.session.account and p.position}


async def ledger_holdings(intent: Intent, now: datetime) -> tuple[dict[int, Holding], list[dict]]:
    """Book the executions since the last booking (trading.ledger.book_executions; `now` is the gateway's time),
    then each contract's holdings by strategy (and manual): the ledger's sum, as the store keeps it (one
    small read, whatever the ledger's length).

    Fills of ours whose run recorded nothing yet cannot be attributed: each is a `fill-unattributed` problem,
    but for a takeover's own earlier attempt, whose orders this run finds and records.
    """
    store, account = intent.context.store, intent.session.account
    booking = await book_executions(intent.ib, store, account, now)
    held = await asyncio.to_thread(stored_holdings, store, account)
    return held, booking.problems(intent.context.reference if intent.context.takeover else None)


def transfer_entries(intent: OrderIntent, legs: list[Leg], now: datetime) -> list[dict]:
    """Per contract, what the strategies' trades net out between them (quantity 0 for the account)."""
    entries = []
    for leg in legs:
        parts = internal_transfer(leg.strategies)
        if parts:
            entries.append(transfer_entry(order_ref(intent.context.reference, leg.info.con_id), leg.info.describe(),
                                          intent.session.account, parts, leg.quote.price(), iso(now)))
    return entries


async def book_transfers(intent: OrderIntent, legs: list[Leg], now: datetime) -> list[dict]:
    """Book the run's internal transfers (transfer_entries) in the ledger, each once."""
    return await book_entries(intent, transfer_entries(intent, legs, now))


async def book_entries(intent: OrderIntent, entries: list[dict]) -> list[dict]:
    """Record ledger entries (internal transfers); those already there are left out of the answer."""
    return [entry for entry in entries if await intent.in_store(intent.context.store.record_fill, entry)]


@dataclass(frozen=True)
class Prepared:
    """What every order-placing run starts from."""

    now: datetime                 # the gateway's clock
    today: date
    snapshot: AccountSnapshot


class OrderIntent(Intent):
    """Base of the intents that place orders: admitted with trading enabled and a held claim.

    `self.run_orders` collects, as the run goes, every order it placed, found or counted and every problem,
    so that whatever ends the run (an error after placing included) its result lists them.
    """

    places_orders = True
    plannable = True
    # NLV and exchange rates (account_snapshot), and what the account holds and has working
    account_state = frozenset({AccountState.ACCOUNT_UPDATES, AccountState.POSITIONS, AccountState.OPEN_ORDERS})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run_orders = RunOrders()
        # set when nothing could be evaluated (every strategy failed, no contract priced): a run that then
        # places, plans and finds nothing ends with this error instead of a quiet `skipped`
        self.not_evaluated: Failure | None = None
        # a planning run's writes, made when its plan is executed: {'targets': {strategy: weights}, 'transfers': [...]}
        self.plan_effects: dict = {'targets': {}, 'transfers': []}

    @property
    def trading(self) -> TradingConfig:
        return self.context.trading

    async def start(self) -> Outcome:
        """Run; a planning run (approval required) that would place orders stores them as a plan instead."""
        outcome = await super().start()
        if self.context.planning and outcome.status == 'ok' and self.run_orders.orders:
            outcome.result['plan'] = await self.store_plan(outcome.result)
            # placed: none. The claim still records the planned orders (recorded_orders), so the fills of
            # their orderRefs, once executed, are attributed to the strategies they serve.
            outcome.result['orders'] = []
        return outcome

    async def store_plan(self, result: dict) -> dict:
        """Keep this run's planned (whatIf'd) orders as a plan, with the positions and our working orders on
        their contracts now, the band each order's price must stay within, and the command that approves it."""
        context, account = self.context, self.session.account
        orders = [{**order, 'priceBand': (self.trading.close_policy.price_band if order['reduceOnly']
                                          else self.trading.limits.price_band)} for order in self.run_orders.orders]
        stale = [entry['permId'] for key in ('cancelledStaleOrders', 'cancelled')
                 for entry in result.get(key) or [] if entry.get('wouldCancel')]
        positions = await account_positions(self)
        working = [t for t in await self.working_orders()
                   if t.contract.conId in {o['contract']['conId'] for o in orders} or t.order.permId in stale]
        now = datetime.now(timezone.utc)
        plan_ref = plan_id(account, context.run_id, orders)
        plan = {
            'planId': plan_ref, 'account': account, 'intent': self.name, 'runId': context.run_id,
            'planKey': context.idempotency_key, 'orderRefPrefix': context.reference, 'createdAt': iso(now),
            'expiresAt': iso(expires_at(now, context.settings.plan_ttl_seconds)), 'orders': orders,
            'limits': self.trading.limits.describe(), 'tradingEnabled': self.trading.trading_enabled,
            'positions': {str(o['contract']['conId']): positions[o['contract']['conId']].position
                          if o['contract']['conId'] in positions else 0.0 for o in orders},
            'workingOrders': {str(t.contract.conId): [] for t in working},
            'cancel': stale, 'discarded': None, 'effects': self.plan_effects,
        }
        for t in working:
            plan['workingOrders'][str(t.contract.conId)].append(
                working_entry(t.order.orderRef, t.order.permId, t.order.action, t.orderStatus.remaining))
        await self.in_store(context.store.put_plan, plan_ref, plan)
        settings = context.settings
        return {**{key: plan[key] for key in ('planId', 'expiresAt', 'orders', 'limits', 'cancel')},
                'approve': approve_command(plan_ref, settings.intents_topic, settings.project)}

    async def prepare(self) -> Prepared:
        """The gateway's time, the market day and the account's NLV and exchange rates."""
        now = await gateway_time(self.ib)
        return Prepared(now, market_date(now), account_snapshot(self.ib, self.session.account))

    def execution_settings(self, snapshot: AccountSnapshot, overrides: PolicyOverrides | None, *,
                           closing: bool = False) -> ExecutionSettings:
        """How this run's legs become orders; `closing`: the message's overrides apply to the close policy."""
        trading, bound = self.trading, self.trading.limits.max_limit_offset_bps
        policy, close = trading.order_policy, trading.close_policy
        if overrides and closing:
            close = ClosePolicy(overrides.apply(close.order, max(bound, close.order.limit_offset_bps)),
                                close.price_band)
        elif overrides:
            policy = overrides.apply(policy, bound)
        return ExecutionSettings(account=self.session.account, reference=self.context.reference, policy=policy,
                                 limits=trading.limits, snapshot=snapshot, dry_run=self.dry_run,
                                 takeover=self.context.takeover, deadline=self.deadline, close_policy=close,
                                 trading_gate=self.trading_gate if self.context.store is not None else None,
                                 claimed_at=self.context.claimed_at)

    async def trading_gate(self) -> str | None:
        """Read trading enabled again (the store's value may have changed since the run started)."""
        switch = await self.in_store(self.trading.switch.refreshed, self.context.store)
        return None if switch.enabled else switch.reason()

    async def execute(self, legs: list[Leg], settings: ExecutionSettings) -> RunOrders:
        """trading.orders.execute, into this run's orders (`self.run_orders`)."""
        return await execute(self.ib, legs, settings, self.run_orders)

    async def working_orders(self, con_ids: set[int] | None = None) -> list[Trade]:
        """Our working orders on this account (every run's, this one's included), on `con_ids` if given."""
        trades = await our_open_orders(self.ib, self.session.account)
        return [t for t in trades if con_ids is None or t.contract.conId in con_ids]

    def count_working(self, trades: list[Trade]) -> dict[int, float]:
        """conId -> pending signed quantity of `trades`; other runs' orders among them are listed as counted."""
        self.run_orders.working = [describe_trade(t) for t in trades
                                   if reference_of(t.order.orderRef) != self.context.reference]
        return pending_by_contract(trades)

    async def cancel(self, trades: list[Trade]) -> list[dict]:
        """Cancel orders of any client id (see trading.orders.cancel_orders); those left working are problems."""
        settings = self.context.settings
        # leave time to place orders after the cancels: 2 s, or half of what is left in a short run
        left = self.deadline - asyncio.get_running_loop().time()
        outcomes = await cancel_orders(self.ib, trades, own_client_id=self.session.client_id,
                                       host=self.session.host, port=self.session.port,
                                       connect_timeout=settings.connect_timeout,
                                       until=self.deadline - min(PLACING_RESERVE_SECONDS, left / 2))
        self.account_cancels(outcomes)
        return outcomes

    def account_cancels(self, outcomes: list[dict]) -> None:
        """Orders left working are problems; what the cancelled ones would have traded is released."""
        self.run_orders.problems += cancel_problems(outcomes)
        for con_id, quantity in released_by(outcomes).items():
            self.run_orders.released[con_id] = self.run_orders.released.get(con_id, 0.0) + quantity

    async def strategies_contracts(self, names: list[str], now: datetime) -> list[ContractInfo]:
        """The contracts of the named strategies' universes on the market day of `now` (a session window's
        contracts); a strategy that cannot say is left out, and with none left, the US equity market counts."""
        today = market_date(now)
        found: dict[int, ContractInfo] = {}
        for name in names:
            try:
                universe = await strategy_universe(self, build_strategy(name, self.trading), today)
            except Exception:   # its own run reports the failure; the window goes by the others
                continue
            found.update((info.con_id, info) for info in universe.values())
        return list(found.values()) or await super().session_contracts(now)

    async def in_store(self, call: Callable[..., Any], *args: Any) -> Any:
        """Run a (blocking) store call off the event loop."""
        return await asyncio.to_thread(call, *args)

    def header(self) -> dict:
        context = self.context
        return {'idempotencyKey': context.idempotency_key, 'orderRefPrefix': context.reference,
                'attempt': context.attempt, 'takeover': context.takeover,
                'tradingEnabled': self.trading.trading_enabled}

    def output(self, run_orders: RunOrders, result: dict) -> Outcome:
        """The intent's output: ok when something was placed, planned or found, else skipped with the reason.

        Skipped only when there was something to judge: when nothing could be evaluated (`not_evaluated`,
        e.g. every strategy failed) and nothing was placed, planned or found, the run is that error,
        retryable when its causes are (a data outage), with the strategy and data problems in the result.
        An order problem (lib.problems: not acknowledged, rejected, a stale order left working, a leg a
        safety rail stopped) makes it an error with every order's last known state. Retryable when every
        such problem is one a redelivery fixes (it takes over, looks the orders up at the broker, cancels
        again and sends only what is missing); not when a rail stopped a leg, since a redelivery must not
        place what trading disabled or the close policy refused.
        """
        full = {**self.header(), **result, **run_orders.to_result()}
        failures = order_problems(run_orders.problems)
        if failures:
            kinds = sorted({p['code'] for p in failures})
            reason = '; '.join(p['message'] for p in failures)
            make = Failure.transient if all(ORDER_CODES[code] for code in kinds) else Failure.permanent
            return Outcome.failed(make(ERROR_TYPES.get(kinds[0], 'OrderProblems'), reason), full)
        if self.not_evaluated is not None and run_orders.status == 'skipped':
            return Outcome.failed(self.not_evaluated, full)
        return Outcome.ok(full) if run_orders.status == 'ok' else Outcome.skipped(run_orders.reason, full)

    def interrupted_result(self) -> dict:
        """What a run that failed part-way reports: every order it placed, found or counted so far."""
        return {**self.header(), **self.run_orders.to_result()}

    def recorded_orders(self) -> tuple[RecordedOrder, ...]:
        """Every order placed or found so far (trading.orders.RunOrders.recorded), for the claim record."""
        return self.run_orders.recorded()

