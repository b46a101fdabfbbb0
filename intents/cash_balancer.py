"""The `cash-balancer` intent: convert non-base cash above a threshold into the base currency.

Each currency whose balance is worth more than the threshold (in base currency; default the config's
cashBalancerThreshold) is converted with one IDEALPRO order on the pair the gateway knows (EUR.USD, or
USD.JPY the other way round). IDEALPRO takes orders of at least FX_MINIMUM_QUANTITY units of the pair's
first currency; smaller conversions are reported as skipped rather than sent as odd lots. Our working
orders on the pair (this account's, of any run) count as converting already: only the rest is sent.
"""
from __future__ import annotations

import math
from datetime import datetime

from pydantic import Field

from intents.base import IntentParams
from intents.outcome import Outcome
from intents.trading import OrderIntent
from lib.ibapi import Contract
from trading.market_data import ContractInfo, UnknownContract, account_snapshot, contract_info, quotes
from trading.orders import Leg
from lib.problems import problem

FX_VENUE = 'IDEALPRO'
FX_MINIMUM_QUANTITY = 25_000


class CashBalancerParams(IntentParams):
    threshold: float | None = Field(None, ge=0)
    """Convert balances worth more than this (base currency); default: the config's cashBalancerThreshold."""


class CashBalancer(OrderIntent):
    name = 'cash-balancer'
    Params = CashBalancerParams

    async def run(self) -> Outcome:
        start = await self.prepare()
        snapshot = start.snapshot
        threshold = self.params.threshold
        if threshold is None:
            threshold = self.trading.cash_balancer_threshold
        balances, conversions = [], []
        for currency, balance in sorted(snapshot.cash.items()):
            if currency == snapshot.base_currency or balance == 0:
                continue
            value = balance * snapshot.rate(currency)
            entry = {'currency': currency, 'balance': balance, 'valueInBase': round(value, 2)}
            balances.append(entry)
            if abs(value) <= threshold:
                entry['action'] = f'kept: within the threshold of {threshold:,.2f} {snapshot.base_currency}'
                continue
            try:
                conversions.append((entry, await self._pair(currency, snapshot.base_currency)))
            except UnknownContract as exc:
                entry['action'] = f'kept: no {FX_VENUE} pair to convert it with ({exc})'
                self.run_orders.problems.append(problem('no-pair', f'{currency}: {entry["action"]}'))
        prices = await quotes(self.ib, [info for _, info in conversions])
        pending = self.count_working(await self.working_orders({info.con_id for _, info in conversions}))
        legs = []
        for entry, info in conversions:
            quantity = _pair_quantity(entry['currency'], entry['balance'], entry['valueInBase'], info)
            if pending.get(info.con_id):
                entry['working'] = pending[info.con_id]
                quantity -= pending[info.con_id]
                if quantity == 0 or (quantity > 0) != (quantity + pending[info.con_id] > 0):
                    entry['action'] = f'kept: our working orders on {info.name} already convert it'
                    continue
            if abs(quantity) < FX_MINIMUM_QUANTITY:
                entry['action'] = (f'kept: converting it needs {abs(quantity):,.0f} {info.contract.symbol}, below the '
                                   f'{FX_VENUE} minimum of {FX_MINIMUM_QUANTITY:,} {info.contract.symbol}')
                continue
            entry['action'] = f'convert with {info.name}'
            legs.append(Leg(info, quantity, prices[info.con_id]))
        run_orders = await self.execute(legs, self.execution_settings(snapshot, None))
        return self.output(run_orders, {'account': snapshot.describe(), 'threshold': threshold,
                                        'baseCurrency': snapshot.base_currency, 'balances': balances})

    async def session_contracts(self, now: datetime) -> list[ContractInfo]:
        """The pairs of the non-base currencies held."""
        snapshot = account_snapshot(self.ib, self.session.account)
        pairs = []
        for currency, balance in sorted(snapshot.cash.items()):
            if currency != snapshot.base_currency and balance:
                try:
                    pairs.append(await self._pair(currency, snapshot.base_currency))
                except UnknownContract:
                    continue
        return pairs or await super().session_contracts(now)

    async def _pair(self, currency: str, base: str) -> ContractInfo:
        """The IDEALPRO pair of `currency` and the base currency, in whichever order the gateway lists it."""
        try:
            return await contract_info(self.ib, Contract(secType='CASH', symbol=currency, currency=base,
                                                         exchange=FX_VENUE))
        except UnknownContract:
            return await contract_info(self.ib, Contract(secType='CASH', symbol=base, currency=currency,
                                                         exchange=FX_VENUE))


def _pair_quantity(currency: str, balance: float, value_in_base: float, pair: ContractInfo) -> float:
    """Signed order quantity (in the pair's first currency) that brings `balance` of `currency` to zero.

    For CCY.BASE the balance itself is sold (or bought back when negative); for BASE.CCY the base
    currency is bought with it, as much as the balance is worth. Rounded toward zero to whole units.
    """
    if pair.contract.symbol == currency:
        return float(-math.trunc(balance))
    return float(math.trunc(value_in_base))
