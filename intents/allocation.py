"""The `allocation` intent: run the strategies, size their targets, and trade the difference.

NLV (base currency) x exposure.overall x the strategy's share x weight / (price x multiplier x rate)
gives each strategy's quantity per contract, rounded toward zero; they are summed per contract, and
trade = target - (position - manual holdings + our open orders' remaining), only for contracts in the
strategies' universe. Manual holdings (fills of orders that were not ours, in the ledger) are left alone.
A strategy with no opinion or an error keeps its last stored targets; without stored targets its
contracts are left alone. Our open orders from earlier runs on these contracts are cancelled first.

The executions since the last booking are booked into the ledger first (trading.ledger), so each strategy's holding is known:
its own trade is its target minus that holding; what strategies' trades net out between them is booked
as an internal transfer. A strategy's holding in a contract no longer in its universe (expired, rolled,
removed from the config) is closed with a reduce-only order; one that cannot be closed is a problem that
makes the run not ok.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from pydantic import field_validator

from intents.base import IntentParams, IntentRejected
from intents.outcome import Outcome
from intents.trading import (
    OrderIntent, PolicyOverrides, account_positions, book_transfers, build_strategy, known_strategy_names,
    ledger_holdings, strategy_bars, strategy_universe, transfer_entries,
)
from lib.failures import Failure, failure_of
from trading.idempotency import reference_of
from trading.ledger import Holding
from trading.market_data import ContractInfo, Quote, contract_info, fetch_bars, quotes
from lib.ibapi import Contract, Position
from trading.orders import ExecutionSettings, Leg, check_legs
from lib.problems import NO_PRICE, NOT_CLOSED, STRATEGY_FAILED, problem
from trading.sizing import strategy_trades, target_quantity
from lib.times import iso
from strategies.base import MarketData, check_targets


class AllocationParams(IntentParams):
    strategies: list[str] | None = None
    """Strategies to run; default: every strategy with an exposure.strategies share."""
    order_policy: PolicyOverrides | None = None
    """Overrides of the configured orderPolicy for this run."""

    _known = field_validator('strategies')(known_strategy_names)


@dataclass
class Evaluation:
    """One strategy's part in the run."""

    name: str
    status: str                              # ok | no-opinion | error
    share: float
    universe: dict[str, ContractInfo]        # instrument key -> contract ({} when it could not be resolved)
    weights: dict[str, float] | None         # what it holds this run; None: its contracts are left alone
    source: str | None                       # new | stored
    previous: dict[str, float]               # its stored weights before this run
    error: str | None = None
    failure: Failure | None = None           # what its error means (retryable for a data outage)

    def describe(self) -> dict:
        return {'status': self.status, 'exposure': self.share, 'targets': self.weights, 'targetsSource': self.source,
                'previousTargets': self.previous or None, 'instruments': sorted(self.universe), 'error': self.error}


class Allocation(OrderIntent):
    name = 'allocation'
    Params = AllocationParams

    async def run(self) -> Outcome:
        names = self.params.strategies or sorted(self.trading.exposures)
        if not names:
            raise IntentRejected('no strategy to allocate: pass params.strategies or set exposure.strategies')
        start = await self.prepare()
        ledger, unattributed = await ledger_holdings(self, start.now)
        self.run_orders.problems += unattributed
        evaluations = await asyncio.gather(*(self._evaluate(name, start.today) for name in names))
        left_alone = {info.con_id for e in evaluations if e.weights is None for info in e.universe.values()}
        infos = {info.con_id: info for e in evaluations if e.weights is not None
                 for info in e.universe.values() if info.con_id not in left_alone}
        outside, outside_infos = await self._held_outside_universe(evaluations, ledger, left_alone)
        closing = set(outside_infos) - set(infos)
        infos.update(outside_infos)
        prices = await quotes(self.ib, list(infos.values()))
        self.run_orders.problems += [problem(STRATEGY_FAILED, f'{e.name}: {e.error}; '
                                             + ('its stored targets are kept' if e.source == 'stored'
                                                else 'its contracts are left alone'))
                                     for e in evaluations if e.error]
        self.not_evaluated = _nothing_evaluated(evaluations, infos, prices, left_alone)
        for c in [c for c in infos if prices[c].price() is None]:
            if c in closing:   # a holding outside every universe that cannot be closed makes the run not ok
                self.run_orders.problems.append(problem(
                    NOT_CLOSED, f'{infos[c].name}: no price, so the holding outside the universe is not closed',
                    contract=infos[c].describe()))
            else:
                self.run_orders.problems.append(problem(NO_PRICE, f'{infos[c].name}: no price, so it is not traded',
                                                        contract=infos[c].describe()))
            del infos[c]
        targets = self._quantities(evaluations, infos, prices, start.snapshot)
        for name, held in outside.items():
            for con_id in held:
                if con_id in infos:
                    targets.setdefault(con_id, {})[name] = 0
        plan = _Plan(infos, prices, targets, ledger, closing)
        settings = self.execution_settings(start.snapshot, self.params.order_policy)
        legs, contracts, cancelled = await self._legs_replacing_stale_orders(plan, settings)
        run_orders = await self.execute(legs, settings)
        if not self.dry_run:
            await book_transfers(self, legs, start.now)
            for e in evaluations:
                if e.source == 'new':
                    await self.in_store(self.context.store.put_targets, e.name, e.weights, self.context.run_id,
                                        start.now)
        elif self.context.planning:   # written when the plan is executed
            self.plan_effects = {'targets': {e.name: e.weights for e in evaluations if e.source == 'new'},
                                 'transfers': transfer_entries(self, legs, start.now)}
        return self.output(run_orders, {
            'account': start.snapshot.describe(), 'gatewayTime': iso(start.now),
            'marketDate': start.today.isoformat(), 'exposureOverall': self.trading.exposure_overall,
            'strategies': {e.name: e.describe() for e in evaluations}, 'contracts': contracts,
            'cancelledStaleOrders': cancelled})

    async def session_contracts(self, now: datetime) -> list[ContractInfo]:
        return await self.strategies_contracts(self.params.strategies or sorted(self.trading.exposures), now)

    async def _held_outside_universe(self, evaluations: list[Evaluation], ledger: dict[int, Holding],
                                     left_alone: set[int]) -> tuple[dict, dict[int, ContractInfo]]:
        """Each strategy's ledger holdings in contracts outside its (resolved) universe, and those contracts."""
        outside: dict[str, dict[int, float]] = {}
        for e in evaluations:
            if not e.universe:
                continue     # its universe is unknown this run: nothing can be said to be outside it
            mine = {info.con_id for info in e.universe.values()}
            held = {c: h.strategies[e.name] for c, h in ledger.items()
                    if h.strategies.get(e.name) and c not in mine and c not in left_alone}
            if held:
                outside[e.name] = held
        infos: dict[int, ContractInfo] = {}
        for con_id in sorted({c for held in outside.values() for c in held}):
            try:
                infos[con_id] = await contract_info(self.ib, Contract(conId=con_id))
            except Exception as exc:   # expired and gone at the gateway, say: it cannot be closed here
                contract = ledger[con_id].contract
                self.run_orders.problems.append(problem(
                    NOT_CLOSED, f'{contract["localSymbol"]} is held by '
                                f'{", ".join(n for n, h in outside.items() if con_id in h)} outside its universe '
                                f'and cannot be closed: {type(exc).__name__}: {exc}', contract=contract))
        return outside, infos

    async def _evaluate(self, name: str, today) -> Evaluation:
        """The strategy's targets, or its stored ones when it has no opinion or fails."""
        stored = await self.in_store(self.context.store.get_targets, name)
        previous = dict(stored['targets']) if stored else {}
        share = self.trading.exposures.get(name, 0.0)
        universe: dict[str, ContractInfo] = {}
        error = weights = failure = None
        try:
            if name not in self.trading.exposures:
                raise ValueError(f'no exposure.strategies.{name} share in the trading config')
            strategy = build_strategy(name, self.trading)
            universe = await strategy_universe(self, strategy, today)
            needs = strategy.data_needs(today)
            bars = await fetch_bars(self.ib, [(universe[n.key].contract, n.bar_size, n.duration, n.what_to_show)
                                              for n in needs])
            weights = check_targets(strategy, today, strategy.targets(
                MarketData(today, {need.key: strategy_bars(series) for need, series in zip(needs, bars)})))
        except Exception as exc:   # a strategy's failure is its own: it keeps its targets, the run goes on
            error, failure = f'{type(exc).__name__}: {exc}', failure_of(exc)
        status = 'error' if error else 'no-opinion' if weights is None else 'ok'
        if weights is not None:
            return Evaluation(name, status, share, universe, weights, 'new', previous)
        kept = {key: weight for key, weight in previous.items() if key in universe}
        return Evaluation(name, status, share, universe, kept if kept else None, 'stored' if kept else None,
                          previous, error, failure)

    async def _legs_replacing_stale_orders(self, plan: _Plan,
                                           settings: ExecutionSettings) -> tuple[list[Leg], list[dict], list[dict]]:
        """The legs to trade, once our open orders of earlier runs on these contracts are cancelled.

        The limits are checked on the plan first, so a refused run cancels nothing. Orders of this key
        (an earlier attempt, on takeover) stay and count as pending, as do orders that could not be
        cancelled. A dry run cancels nothing and lists what it would cancel.
        """
        ours = await self.working_orders(set(plan.infos))
        stale = [t for t in ours if reference_of(t.order.orderRef) != self.context.reference]
        keep = [t for t in ours if t not in stale]
        legs, contracts = plan.legs(await account_positions(self), self.count_working(keep))
        check_legs(legs, settings)
        if self.dry_run:
            return legs, contracts, [{'orderRef': t.order.orderRef, 'permId': t.order.permId, 'wouldCancel': True}
                                     for t in stale]
        if not stale:
            return legs, contracts, []
        cancelled = await self.cancel(stale)
        working = {c['permId'] for c in cancelled if c['working']}
        pending = keep + [t for t in stale if t.order.permId in working]
        return (*plan.legs(await account_positions(self), self.count_working(pending)), cancelled)

    def _quantities(self, evaluations: list[Evaluation], infos: dict[int, ContractInfo], prices: dict[int, Quote],
                    snapshot) -> dict[int, dict[str, int]]:
        """Per contract: each strategy's target quantity."""
        targets: dict[int, dict[str, int]] = {}
        for e in evaluations:
            if e.weights is None:
                continue
            budget = self.trading.exposure_overall * e.share * snapshot.net_liquidation
            for key, info in e.universe.items():
                if info.con_id not in infos:
                    continue
                size = (prices[info.con_id].price(), info.multiplier, snapshot.rate(info.contract.currency))
                targets.setdefault(info.con_id, {})[e.name] = target_quantity(e.weights.get(key, 0.0), budget, *size)
        return targets


def _nothing_evaluated(evaluations: list[Evaluation], infos: dict[int, ContractInfo], prices: dict[int, Quote],
                       left_alone: set[int]) -> Failure | None:
    """The error of a run that could evaluate nothing: every strategy failed, every contract belongs to a
    failed strategy (left alone), or no contract had a price.

    Retryable when every cause is (a historical or market data outage): a redelivery takes over and
    tries again; a strategy's bug or bad config is not.
    """
    failed = [e for e in evaluations if e.failure is not None]
    every_contract_left = bool(left_alone) and not any(info.con_id not in left_alone for e in evaluations
                                                       for info in e.universe.values())
    if failed and (len(failed) == len(evaluations) or every_contract_left):
        make = Failure.transient if all(e.failure.retryable for e in failed) else Failure.permanent
        failures = '; '.join(f'{e.name} failed: {e.error}' for e in failed)
        if len(failed) < len(evaluations):
            failures += "; the other strategies trade only the failed ones' contracts, which are left alone"
        return make('StrategiesFailed', failures)
    unpriced = [info.name for con_id, info in infos.items() if prices[con_id].price() is None]
    if infos and len(unpriced) == len(infos):
        return Failure.transient('NoPrices', f'no contract could be priced ({", ".join(unpriced)}): nothing traded')
    return None


@dataclass
class _Plan:
    """Targets per contract, turned into legs against the positions and our pending orders of the moment."""

    infos: dict[int, ContractInfo]
    prices: dict[int, Quote]
    targets: dict[int, dict[str, int]]       # conId -> strategy -> target quantity
    ledger: dict[int, Holding]               # conId -> what the ledger says each strategy (and manual) holds
    closing: set[int]                        # contracts only held outside every universe: reduce-only legs

    def legs(self, positions: dict[int, Position], pending: dict[int, float]) -> tuple[list[Leg], list[dict]]:
        """trade = target - (position - manual + our working orders' remaining), per contract; and the table of it.

        A contract only held outside every universe is closed by its holders' ledger shares instead; the
        reduce-only check at placement refuses it if the account does not hold that much.
        """
        legs, contracts = [], []
        for con_id, by_strategy in self.targets.items():
            info, quote = self.infos[con_id], self.prices[con_id]
            held = positions[con_id].position if con_id in positions else 0.0
            book = self.ledger.get(con_id)
            manual = book.manual if book else 0.0
            target = sum(by_strategy.values())
            trade = target - (held - manual) - pending.get(con_id, 0.0)
            if con_id in self.closing:   # only held outside universes: close those holdings, reduce-only
                trade = -sum(book.strategies.get(name, 0.0) for name in by_strategy)
            trades = strategy_trades(trade, by_strategy, book.strategies if book else {})
            contracts.append({'contract': info.describe(), 'price': quote.price(), 'position': held,
                              'manual': manual, 'pending': pending.get(con_id, 0.0), 'target': target,
                              'trade': trade, 'byStrategy': by_strategy, 'strategyTrades': trades})
            legs.append(Leg(info, trade, quote, trades, reduce_only=con_id in self.closing))
        return legs, contracts
