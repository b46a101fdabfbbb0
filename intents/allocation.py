"""The `allocation` intent: run the strategies, size their targets, and trade the difference.

NLV (base currency) x exposure.overall x the strategy's share x weight / (price x multiplier x rate)
gives each strategy's quantity per contract, rounded toward zero; they are summed per contract, and
trade = target - (position + our open orders' remaining), only for contracts in the strategies' universe.
A strategy with no opinion or an error keeps its last stored targets; without stored targets its
contracts are left alone. Our open orders from earlier runs on these contracts are cancelled first.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from pydantic import field_validator

from intents.base import IntentOutput, IntentParams, IntentRejected
from intents.trading import (
    OrderIntent, PolicyOverrides, account_positions, build_strategy, known_strategy_names, strategy_bars,
    strategy_universe,
)
from lib.idempotency import reference_of
from lib.market_data import ContractInfo, Quote, fetch_bars, quotes
from lib.ibapi import Position
from lib.orders import ExecutionSettings, Leg, check_legs
from lib.problems import NO_PRICE, STRATEGY_FAILED, problem
from lib.sizing import attribute, target_quantity
from lib.store.common import iso
from strategies.base import MarketData, check_targets


class AllocationParams(IntentParams):
    strategies: list[str] | None = None
    """Strategies to run; default: every strategy with an exposure.strategies share."""
    dry_run: bool = False
    """Plan and run whatIf for each order, place nothing (same as the request's dryRun)."""
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

    def describe(self) -> dict:
        return {'status': self.status, 'exposure': self.share, 'targets': self.weights, 'targetsSource': self.source,
                'previousTargets': self.previous or None, 'instruments': sorted(self.universe), 'error': self.error}


class Allocation(OrderIntent):
    name = 'allocation'
    Params = AllocationParams

    async def run(self) -> IntentOutput:
        names = self.params.strategies or sorted(self.trading.exposures)
        if not names:
            raise IntentRejected('no strategy to allocate: pass params.strategies or set exposure.strategies')
        start = await self.prepare()
        evaluations = await asyncio.gather(*(self._evaluate(name, start.today) for name in names))
        left_alone = {info.con_id for e in evaluations if e.weights is None for info in e.universe.values()}
        infos = {info.con_id: info for e in evaluations if e.weights is not None
                 for info in e.universe.values() if info.con_id not in left_alone}
        prices = await quotes(self.ib, list(infos.values()))
        self.report.problems += [problem(STRATEGY_FAILED, f'{e.name}: {e.error}; '
                                         + ('its stored targets are kept' if e.source == 'stored'
                                            else 'its contracts are left alone'))
                                 for e in evaluations if e.error]
        self.report.problems += [problem(NO_PRICE, f'{infos[c].name}: no price, so it is not traded',
                                         contract=infos[c].describe()) for c in infos if prices[c].price() is None]
        infos = {c: info for c, info in infos.items() if prices[c].price() is not None}
        plan = _Plan(infos, prices, *self._quantities(evaluations, infos, prices, start.snapshot))
        settings = self.execution_settings(start.snapshot, self.params.order_policy)
        legs, contracts, cancelled = await self._legs_replacing_stale_orders(plan, settings)
        report = await self.execute(legs, settings)
        if not self.dry_run:
            for e in evaluations:
                if e.source == 'new':
                    await self.in_store(self.context.store.put_targets, e.name, e.weights, self.context.run_id,
                                        start.now)
        return self.output(report, {
            'account': start.snapshot.describe(), 'gatewayTime': iso(start.now),
            'marketDate': start.today.isoformat(), 'exposureOverall': self.trading.exposure_overall,
            'strategies': {e.name: e.describe() for e in evaluations}, 'contracts': contracts,
            'cancelledStaleOrders': cancelled})

    async def session_contracts(self, now: datetime) -> list[ContractInfo]:
        return await self.strategies_contracts(self.params.strategies or sorted(self.trading.exposures), now)

    async def _evaluate(self, name: str, today) -> Evaluation:
        """The strategy's targets, or its stored ones when it has no opinion or fails."""
        stored = await self.in_store(self.context.store.get_targets, name)
        previous = dict(stored['targets']) if stored else {}
        share = self.trading.exposures.get(name, 0.0)
        universe: dict[str, ContractInfo] = {}
        error = weights = None
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
            error = f'{type(exc).__name__}: {exc}'
        status = 'error' if error else 'no-opinion' if weights is None else 'ok'
        if weights is not None:
            return Evaluation(name, status, share, universe, weights, 'new', previous)
        kept = {key: weight for key, weight in previous.items() if key in universe}
        return Evaluation(name, status, share, universe, kept if kept else None, 'stored' if kept else None,
                          previous, error)

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
                    snapshot) -> tuple[dict[int, dict[str, int]], dict[int, dict[str, int]]]:
        """Per contract: each strategy's target quantity, and the quantity its previous targets meant."""
        targets: dict[int, dict[str, int]] = {}
        previous: dict[int, dict[str, int]] = {}
        for e in evaluations:
            if e.weights is None:
                continue
            budget = self.trading.exposure_overall * e.share * snapshot.net_liquidation
            for key, info in e.universe.items():
                if info.con_id not in infos:
                    continue
                size = (prices[info.con_id].price(), info.multiplier, snapshot.rate(info.contract.currency))
                targets.setdefault(info.con_id, {})[e.name] = target_quantity(e.weights.get(key, 0.0), budget, *size)
                previous.setdefault(info.con_id, {})[e.name] = target_quantity(e.previous.get(key, 0.0), budget, *size)
        return targets, previous


@dataclass
class _Plan:
    """Targets per contract, turned into legs against the positions and our pending orders of the moment."""

    infos: dict[int, ContractInfo]
    prices: dict[int, Quote]
    targets: dict[int, dict[str, int]]       # conId -> strategy -> target quantity
    previous: dict[int, dict[str, int]]      # conId -> strategy -> what its previous targets meant

    def legs(self, positions: dict[int, Position], pending: dict[int, float]) -> tuple[list[Leg], list[dict]]:
        """trade = target - (position + our working orders' remaining), per contract; and the table of it."""
        legs, contracts = [], []
        for con_id, by_strategy in self.targets.items():
            info, quote = self.infos[con_id], self.prices[con_id]
            held = positions[con_id].position if con_id in positions else 0.0
            target = sum(by_strategy.values())
            trade = target - held - pending.get(con_id, 0.0)
            contracts.append({'contract': info.describe(), 'price': quote.price(), 'position': held,
                              'pending': pending.get(con_id, 0.0), 'target': target, 'trade': trade,
                              'byStrategy': by_strategy})
            legs.append(Leg(info, trade, quote, attribute(trade, by_strategy, self.previous[con_id])))
        return legs, contracts
