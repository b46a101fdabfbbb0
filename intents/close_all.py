"""The `close-all` intent: cancel our open orders, then close what the strategies hold, reducing risk only.

By default only what the given strategies (default: every configured one) hold is touched: each
strategy's share of each contract comes from the ledger (the executions since the last booking are
booked first), so another strategy's share and manual positions stay. Our own tagged working orders (this account's only)
on the contracts they trade or hold are cancelled, each through a connection with the client id that
placed it; manual orders stay. `scope: "all"` cancels every open order of the account and closes every
position except forex balances, manual ones included (reqGlobalCancel when the gateway manages this
account alone, else each order through its client id).

This run's own orders (an earlier attempt's, on a takeover) are never cancelled: they are counted, and so
is any order that could not be cancelled, which also makes the run an error. Every close is reduce-only
(trading.orders.reduce_only, checked again at placement against the gateway's position and our working
orders: toward flat, never past it), and is sent under the close policy (`closePolicy.*`: market orders
by default), exempt from the size and NLV limits, the allowlist and the price band, but for the close
policy's own optional band.
The strategies' stored targets become flat, so a later allocation without an opinion keeps them flat.
"""
from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Literal

from pydantic import field_validator, model_validator

from intents.base import IntentParams
from intents.outcome import Outcome
from intents.trading import (
    PLACING_RESERVE_SECONDS, OrderIntent, PolicyOverrides, account_positions, book_transfers, build_strategy,
    known_strategy_names, ledger_holdings, strategy_universe, transfer_entries,
)
from lib.ibapi import Contract, Trade
from trading.idempotency import reference_of
from trading.ledger import Holding
from trading.market_data import ContractInfo, contract_info, quotes
from trading.orders import FINAL, Leg, describe_trade, on_account, reduce_only
from lib.problems import CONTRACTS_UNRESOLVED, NOT_CLOSED, problem
from lib.times import iso

GLOBAL_CANCEL_WAIT_SECONDS = 5.0


class CloseAllParams(IntentParams):
    strategies: list[str] | None = None
    """Strategies whose holdings to close; default: every configured strategy."""
    scope: Literal['strategies', 'all'] = 'strategies'
    """'all': also manual positions and every client's open orders."""
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

    async def run(self) -> Outcome:
        start = await self.prepare()
        every_scope = self.params.scope == 'all'
        names = self.params.strategies or sorted(self.trading.strategies)
        ledger, unattributed = await ledger_holdings(self, start.now)
        self.run_orders.problems += unattributed
        universes = await self._universes(names, start.today)
        held = {c: h for c, h in ledger.items() if any(h.strategies.get(name) for name in names)}
        in_scope = {info.con_id: info for universe in universes.values() for info in universe.values()}
        if every_scope:
            cancelled = await self._cancel_everything()
        else:
            cancelled = await self._cancel_ours(set(in_scope) | set(held))
        positions = await account_positions(self)
        # this run's own orders and any we could not cancel still work: they count
        pending = self.count_working(await self.working_orders(None if every_scope else set(in_scope) | set(held)))
        if every_scope:
            closing = {c: reduce_only(-p.position, p.position, pending.get(c, 0.0))
                       for c, p in positions.items() if p.contract.secType != 'CASH'}
        else:   # checked against the position at placement: a close the account does not hold is refused
            closing = {c: -sum(h.strategies.get(name, 0.0) for name in names) for c, h in held.items()}
        infos = await self._infos(closing, in_scope, ledger)
        prices = await quotes(self.ib, list(infos.values()))
        legs = [Leg(info, closing[c], prices[c], _closed_shares(ledger.get(c), names, every_scope), reduce_only=True)
                for c, info in infos.items()]
        run_orders = await self.execute(legs, self.execution_settings(start.snapshot, self.params.order_policy,
                                                                      closing=True))
        if not self.dry_run:
            await book_transfers(self, legs, start.now)
            for name, universe in universes.items():
                await self.in_store(self.context.store.put_targets, name, {key: 0.0 for key in universe},
                                    self.context.run_id, start.now)
        elif self.context.planning:   # written when the plan is executed
            self.plan_effects = {'targets': {name: {key: 0.0 for key in universe}
                                             for name, universe in universes.items()},
                                 'transfers': transfer_entries(self, legs, start.now)}
        return self.output(run_orders, {'scope': self.params.scope, 'strategies': sorted(universes),
                                        'account': start.snapshot.describe(), 'gatewayTime': iso(start.now),
                                        'cancelled': cancelled})

    async def session_contracts(self, now: datetime) -> list[ContractInfo]:
        return await self.strategies_contracts(self.params.strategies or sorted(self.trading.strategies), now)

    async def _universes(self, names: list[str], today) -> dict[str, dict[str, ContractInfo]]:
        universes = {}
        for name in names:
            try:
                universes[name] = await strategy_universe(self, build_strategy(name, self.trading), today)
            except Exception as exc:   # its ledger holdings are still closed; only its open orders may stay
                self.run_orders.problems.append(problem(
                    CONTRACTS_UNRESOLVED, f'{name}: its contracts could not be resolved, so its open orders on '
                                          f'them are not cancelled: {type(exc).__name__}: {exc}'))
        return universes

    def _not_this_run(self, trades: list[Trade]) -> list[Trade]:
        return [t for t in trades if reference_of(t.order.orderRef) != self.context.reference]

    async def _infos(self, closing: dict[int, float], known: dict[int, ContractInfo],
                     ledger: dict[int, Holding]) -> dict[int, ContractInfo]:
        """The contract of each non-zero close, from the universes or asked by conId."""
        infos = {}
        for con_id, quantity in closing.items():
            if not quantity and con_id not in known:
                continue
            try:
                infos[con_id] = known.get(con_id) or await contract_info(self.ib, Contract(conId=con_id))
            except Exception as exc:
                contract = ledger[con_id].contract if con_id in ledger else {'conId': con_id}
                self.run_orders.problems.append(problem(
                    NOT_CLOSED, f'conId {con_id}: the gateway does not describe it, so it is not closed: '
                                f'{type(exc).__name__}: {exc}', contract=contract))
        return infos

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
        managed = self.ib.managedAccounts()
        before = [t for t in await self.ib.reqAllOpenOrdersAsync()
                  if t.orderStatus.status not in FINAL and on_account(t.order.account, account, managed)]
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



def _closed_shares(book: Holding | None, names: list[str], every_scope: bool) -> dict[str, float]:
    """Each closed strategy's trade: minus its holding (every strategy's with scope all); manual has none."""
    if book is None:
        return {}
    closed = book.strategies if every_scope else {name: book.strategies.get(name, 0.0) for name in names}
    return {name: -quantity for name, quantity in closed.items() if quantity}
