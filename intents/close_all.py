"""The `close-all` intent: cancel our open orders, then close what the strategies hold, reducing risk only.

By default only what the given strategies (default: every configured one) hold is touched: each
strategy's share of each contract comes from the ledger (the day's executions are booked first), so
another strategy's share and manual positions stay. Our own tagged open orders on the contracts they
trade or hold are cancelled, each through a connection with the client id that placed it; manual
orders stay. `scope: "all"` cancels every open order of every client (reqGlobalCancel) and closes every
position except forex balances, manual ones included.

Every close is reduce-only, checked at placement against the gateway's position (never grows or flips
it), and is sent under the close policy (`closePolicy.*`: market orders by default), exempt from the
size and NLV limits, the allowlist and the price band, but for the close policy's own optional band.
The strategies' stored targets become flat, so a later allocation without an opinion keeps them flat.
"""
from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Literal

from pydantic import field_validator, model_validator

from intents.base import IntentOutput, IntentParams
from intents.trading import (
    OrderIntent, PolicyOverrides, account_positions, book_transfers, build_strategy, known_strategy_names,
    ledger_holdings, strategy_universe,
)
from lib.ibapi import Contract
from lib.ledger import Holding
from lib.market_data import ContractInfo, contract_info, quotes
from lib.orders import FINAL, Leg, execute, our_open_orders, problem
from lib.store.common import iso

GLOBAL_CANCEL_WAIT_SECONDS = 5.0


class CloseAllParams(IntentParams):
    strategies: list[str] | None = None
    """Strategies whose holdings to close; default: every configured strategy."""
    scope: Literal['strategies', 'all'] = 'strategies'
    """'all': also manual positions and every client's open orders."""
    dry_run: bool = False
    order_policy: PolicyOverrides | None = None
    """Overrides of the configured closePolicy for this run."""

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
        ledger, problems = await ledger_holdings(self)
        universes, unresolved = await self._universes(names, start.today)
        problems += unresolved
        held = {c: h for c, h in ledger.items() if any(h.strategies.get(name) for name in names)}
        in_scope = {info.con_id: info for universe in universes.values() for info in universe.values()}
        if every_scope:
            cancelled = await self._cancel_everything()
        else:
            cancelled = await self._cancel_ours(set(in_scope) | set(held))
        positions = await account_positions(self)
        if every_scope:
            closing = {c: -p.position for c, p in positions.items() if p.contract.secType != 'CASH'}
        else:
            closing = {c: -sum(h.strategies.get(name, 0.0) for name in names) for c, h in held.items()}
        infos = await self._infos(closing, in_scope, ledger, problems)
        prices = await quotes(self.ib, list(infos.values()))
        legs = [Leg(info, closing[c], prices[c], _closed_shares(ledger.get(c), names, every_scope), reduce_only=True)
                for c, info in infos.items()]
        report = await execute(self.ib, legs, self.execution_settings(start.snapshot, self.params.order_policy,
                                                                      closing=True))
        report.problems[:0] = problems
        if not self.dry_run:
            await book_transfers(self, legs, start.now)
            for name, universe in universes.items():
                await self.in_store(self.context.store.put_targets, name, {key: 0.0 for key in universe},
                                    self.context.run_id, start.now)
        return self.output(report, {'scope': self.params.scope, 'strategies': sorted(universes),
                                    'account': start.snapshot.describe(), 'gatewayTime': iso(start.now),
                                    'cancelled': cancelled})

    async def session_contracts(self, now: datetime) -> list[ContractInfo]:
        return await self.strategies_contracts(self.params.strategies or sorted(self.trading.strategies), now)

    async def _universes(self, names: list[str], today) -> tuple[dict[str, dict[str, ContractInfo]], list]:
        universes, problems = {}, []
        for name in names:
            try:
                universes[name] = await strategy_universe(self, build_strategy(name, self.trading), today)
            except Exception as exc:   # its ledger holdings are still closed; only its open orders may stay
                problems.append(problem('UniverseUnresolved', f'{name}: its contracts could not be resolved, so '
                                        f'its open orders on them are not cancelled: {type(exc).__name__}: {exc}'))
        return universes, problems

    async def _infos(self, closing: dict[int, float], known: dict[int, ContractInfo], ledger: dict[int, Holding],
                     problems: list) -> dict[int, ContractInfo]:
        """The contract of each non-zero close, from the universes or asked by conId."""
        infos = {}
        for con_id, quantity in closing.items():
            if not quantity and con_id not in known:
                continue
            try:
                infos[con_id] = known.get(con_id) or await contract_info(self.ib, Contract(conId=con_id))
            except Exception as exc:
                contract = ledger[con_id].contract if con_id in ledger else {'conId': con_id}
                problems.append(problem('NotClosed', f'conId {con_id}: the gateway does not describe it, so it '
                                        f'is not closed: {type(exc).__name__}: {exc}', contract=contract))
        return infos

    async def _cancel_ours(self, con_ids: set[int]) -> list[dict]:
        ours = [t for t in await our_open_orders(self.ib) if t.contract.conId in con_ids]
        if self.dry_run:
            return [{'orderRef': t.order.orderRef, 'permId': t.order.permId, 'wouldCancel': True} for t in ours]
        return await self.cancel(ours)

    async def _cancel_everything(self) -> list[dict]:
        """reqGlobalCancel, then wait until the gateway lists no open order (or a few seconds)."""
        before = await self.ib.reqAllOpenOrdersAsync()
        listed = [{'orderRef': t.order.orderRef, 'permId': t.order.permId, 'clientId': t.order.clientId}
                  for t in before if t.orderStatus.status not in FINAL]
        if self.dry_run:
            return [{**entry, 'wouldCancel': True} for entry in listed]
        self.ib.reqGlobalCancel()
        loop = asyncio.get_running_loop()
        until = min(loop.time() + GLOBAL_CANCEL_WAIT_SECONDS, self.deadline - 2.0)
        remaining = {entry['permId'] for entry in listed}
        while remaining and loop.time() < until:
            await asyncio.sleep(0.05)
            still_open = await self.ib.reqAllOpenOrdersAsync()
            remaining = {t.order.permId for t in still_open if t.orderStatus.status not in FINAL}
        return [{**entry, 'cancelled': entry['permId'] not in remaining} for entry in listed]


def _closed_shares(book: Holding | None, names: list[str], every_scope: bool) -> dict[str, float]:
    """Each closed strategy's trade: minus its holding (every strategy's with scope all); manual has none."""
    if book is None:
        return {}
    closed = book.strategies if every_scope else {name: book.strategies.get(name, 0.0) for name in names}
    return {name: -quantity for name, quantity in closed.items() if quantity}
