"""The `close-all` intent: cancel our open orders, then flatten the positions of the strategies' contracts.

By default only what the given strategies (default: every configured one) trade is touched: our own
tagged working orders on their contracts (this account's only) are cancelled, each through a connection
with the client id that placed it, and their positions closed; manual positions and orders stay.
`scope: "all"` cancels every open order of the account and closes every position except forex balances
(reqGlobalCancel when the gateway manages this account alone, else each order through its client id).
This run's own orders (an earlier attempt's, on a takeover) are never cancelled: they are counted, and
so is any order that could not be cancelled, which also makes the run an error: each contract's trade is
-(position + our working orders' remaining), toward flat and never past it (closing_trade).
The strategies' stored targets become flat, so a later allocation without an opinion keeps them flat.
"""
from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Literal

from pydantic import field_validator, model_validator

from intents.base import IntentOutput, IntentParams
from intents.trading import (
    PLACING_RESERVE_SECONDS, OrderIntent, PolicyOverrides, account_positions, build_strategy, known_strategy_names,
    strategy_universe,
)
from lib.ibapi import Contract, Trade
from lib.market_data import ContractInfo, contract_info, quotes
from lib.idempotency import reference_of
from lib.orders import FINAL, Leg, describe_trade
from lib.problems import CONTRACTS_UNRESOLVED, problem
from lib.sizing import attribute, target_quantity
from lib.store.common import iso

GLOBAL_CANCEL_WAIT_SECONDS = 5.0


class CloseAllParams(IntentParams):
    strategies: list[str] | None = None
    """Strategies whose contracts to close; default: every configured strategy."""
    scope: Literal['strategies', 'all'] = 'strategies'
    """'all': also manual positions and every client's open orders."""
    dry_run: bool = False
    order_policy: PolicyOverrides | None = None

    _known = field_validator('strategies')(known_strategy_names)

    @model_validator(mode='after')
    def _one_scope(self) -> CloseAllParams:
        if self.scope == 'all' and self.strategies is not None:
            raise ValueError('give either strategies or scope "all", not both')
        return self


class CloseAll(OrderIntent):
    name = 'close-all'
    Params = CloseAllParams

    async def run(self) -> IntentOutput:
        start = await self.prepare()
        every_scope = self.params.scope == 'all'
        names = self.params.strategies or sorted(self.trading.strategies)
        universes = await self._universes(names, start.today)
        in_scope = {info.con_id: info for universe in universes.values() for info in universe.values()}
        if every_scope:
            cancelled = await self._cancel_everything()
        else:
            cancelled = await self._cancel_ours(set(in_scope))
        positions = await account_positions(self)
        # this run's own orders and any we could not cancel still work: they count
        pending = self.count_working(await self.working_orders(None if every_scope else set(in_scope)))
        if every_scope:
            held = [c for c, p in positions.items() if p.contract.secType != 'CASH']
            for con_id in held:
                if con_id not in in_scope:
                    in_scope[con_id] = await contract_info(self.ib, Contract(conId=con_id))
        closing = {c: info for c, info in in_scope.items() if c in positions}
        prices = await quotes(self.ib, list(closing.values()))
        legs = []
        for con_id, info in closing.items():
            trade = closing_trade(positions[con_id].position, pending.get(con_id, 0.0))
            serving = {name: 0 for name, universe in universes.items()
                       if any(i.con_id == con_id for i in universe.values())}
            previous = await self._previous_quantities(serving, info, prices[con_id], start.snapshot, universes)
            legs.append(Leg(info, trade, prices[con_id], attribute(trade, serving, previous)))
        report = await self.execute(legs, self.execution_settings(start.snapshot, self.params.order_policy))
        if not self.dry_run:
            for name, universe in universes.items():
                await self.in_store(self.context.store.put_targets, name, {key: 0.0 for key in universe},
                                    self.context.run_id, start.now)
        return self.output(report, {'scope': self.params.scope, 'strategies': sorted(universes),
                                    'account': start.snapshot.describe(), 'gatewayTime': iso(start.now),
                                    'cancelled': cancelled})

    async def session_contracts(self, now: datetime) -> list[ContractInfo]:
        return await self.strategies_contracts(self.params.strategies or sorted(self.trading.strategies), now)

    async def _universes(self, names: list[str], today) -> dict[str, dict[str, ContractInfo]]:
        universes = {}
        for name in names:
            try:
                universes[name] = await strategy_universe(self, build_strategy(name, self.trading), today)
            except Exception as exc:   # report it; the other strategies are still closed
                self.report.problems.append(problem(
                    CONTRACTS_UNRESOLVED, f'{name}: its contracts could not be resolved, so they are not closed: '
                                          f'{type(exc).__name__}: {exc}'))
        return universes

    def _not_this_run(self, trades: list[Trade]) -> list[Trade]:
        return [t for t in trades if reference_of(t.order.orderRef) != self.context.reference]

    async def _cancel_ours(self, con_ids: set[int]) -> list[dict]:
        ours = self._not_this_run(await self.working_orders(con_ids))
        if self.dry_run:
            return [{'orderRef': t.order.orderRef, 'permId': t.order.permId, 'wouldCancel': True} for t in ours]
        return await self.cancel(ours)

    async def _cancel_everything(self) -> list[dict]:
        """Every open order of the account but this run's own, cancelled; the ones left working are problems.

        reqGlobalCancel reaches every client's orders (manual ones too) but also every account's and this
        run's own: it is used only when the gateway manages this account alone and this run has no order
        working; otherwise each order is cancelled through its client id.
        """
        account = self.session.account
        before = [t for t in await self.ib.reqAllOpenOrdersAsync()
                  if t.orderStatus.status not in FINAL and t.order.account == account]
        others = self._not_this_run(before)
        if self.dry_run:
            return [{'orderRef': t.order.orderRef, 'permId': t.order.permId, 'clientId': t.order.clientId,
                     'wouldCancel': True} for t in others]
        if not others:
            return []
        if len(others) != len(before) or self.session.managed_accounts != [account]:
            return await self.cancel(others)
        self.ib.reqGlobalCancel()
        loop = asyncio.get_running_loop()
        until = min(loop.time() + GLOBAL_CANCEL_WAIT_SECONDS,
                    self.deadline - min(PLACING_RESERVE_SECONDS, (self.deadline - loop.time()) / 2))
        remaining = {t.order.permId for t in before}
        while remaining and loop.time() < until:
            await asyncio.sleep(0.05)
            still_open = await self.ib.reqAllOpenOrdersAsync()
            remaining = {t.order.permId for t in still_open if t.orderStatus.status not in FINAL}
        outcomes = [{**describe_trade(t), 'cancelled': t.order.permId not in remaining,
                     'working': t.order.permId in remaining} for t in before]
        self.account_cancels(outcomes)
        return outcomes

    async def _previous_quantities(self, serving: dict[str, int], info: ContractInfo, quote, snapshot,
                                   universes: dict[str, dict[str, ContractInfo]]) -> dict[str, int]:
        """What each serving strategy's stored targets meant in this contract, for splitting the trade."""
        if len(serving) < 2 or quote.price() is None:
            return {}
        previous = {}
        for name in serving:
            stored = await self.in_store(self.context.store.get_targets, name) or {'targets': {}}
            key = next(k for k, i in universes[name].items() if i.con_id == info.con_id)
            budget = self.trading.exposure_overall * self.trading.exposures.get(name, 0.0) * snapshot.net_liquidation
            previous[name] = target_quantity(stored['targets'].get(key, 0.0), budget, quote.price(), info.multiplier,
                                             snapshot.rate(info.contract.currency))
        return previous


def closing_trade(position: float, pending: float) -> float:
    """-(position + our working orders), but only toward flat and never past it.

    A working order of ours that could not be cancelled counts when it closes too (so nothing is sold
    twice) and is no reason to open a position the other way when it does not.
    """
    trade = -(position + pending)
    if position > 0:
        return max(min(trade, 0.0), -position)
    return min(max(trade, 0.0), -position)
