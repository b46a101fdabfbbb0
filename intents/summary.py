"""The `summary` intent: account values, positions with PnL, open orders and today's executions."""
from __future__ import annotations

import asyncio

from intents.base import Intent, IntentParams, IntentRejected
from intents.outcome import Outcome
from lib.ib_values import number
from lib.ibapi import AccountValue, Contract, ExecutionFilter, Fill, PortfolioItem, Position, Trade
from trading.orders import on_account
from lib.session import AccountState


class SummaryParams(IntentParams):
    account: str | None = None
    """Another managed account to summarise instead of the session's."""


class Summary(Intent):
    """Everything about one account in one read-only pass, requested concurrently."""

    name = 'summary'
    account_state = frozenset({AccountState.ACCOUNT_UPDATES})   # values and portfolio; the rest it asks for
    Params = SummaryParams

    async def run(self) -> Outcome:
        ib = self.ib
        account = self.params.account or self.session.account
        if account not in self.session.managed_accounts:
            raise IntentRejected(f'account {account} is not managed by this gateway')
        requests = [
            ib.accountSummaryAsync(account),
            ib.reqPositionsAsync(),
            ib.reqAllOpenOrdersAsync(),
            ib.reqExecutionsAsync(ExecutionFilter(acctCode=account)),
        ]
        if account != self.session.account:
            # the connect only subscribed the session's account to values and portfolio
            requests.append(ib.reqAccountUpdatesAsync(account))
        summary, positions, trades, fills, *_ = await asyncio.gather(*requests)
        # The client library attaches commission reports to the Fill it saw first, not to the copy a
        # repeated reqExecutions returns (the connect downloads none, but the session may have seen some).
        known_fills = {f.execution.execId: f for f in ib.fills()}
        fills = [known_fills.get(f.execution.execId, f) for f in fills]
        managed = ib.managedAccounts()
        return Outcome.ok({
            'account': account,
            'accountValues': account_values(ib.accountValues(account)),
            'summary': account_values(summary),
            'positions': [position(p) for p in positions if p.account == account],
            'portfolio': [portfolio_item(p) for p in ib.portfolio(account)],
            'openOrders': [open_order(t) for t in trades if on_account(t.order.account, account, managed)],
            'executions': [execution(f) for f in fills if f.execution.acctNumber == account],
        })


def account_values(values: list[AccountValue]) -> dict[str, dict[str, float | str]]:
    """{tag: {currency: value}}; numbers become floats, the currency is '' where IB gives none."""
    table: dict[str, dict[str, float | str]] = {}
    for value in values:
        table.setdefault(value.tag, {})[value.currency] = _number_or_text(value.value)
    return table


def contract(c: Contract) -> dict:
    data = {'conId': c.conId, 'symbol': c.symbol, 'secType': c.secType, 'exchange': c.exchange or c.primaryExchange,
            'currency': c.currency, 'localSymbol': c.localSymbol}
    if c.lastTradeDateOrContractMonth:
        data['lastTradeDateOrContractMonth'] = c.lastTradeDateOrContractMonth
    if c.multiplier:
        data['multiplier'] = c.multiplier
    return data


def position(p: Position) -> dict:
    return {'account': p.account, 'contract': contract(p.contract), 'position': p.position,
            'avgCost': number(p.avgCost)}


def portfolio_item(p: PortfolioItem) -> dict:
    return {'contract': contract(p.contract), 'position': p.position, 'marketPrice': number(p.marketPrice),
            'marketValue': number(p.marketValue), 'averageCost': number(p.averageCost),
            'unrealizedPNL': number(p.unrealizedPNL), 'realizedPNL': number(p.realizedPNL)}


def open_order(t: Trade) -> dict:
    o, s = t.order, t.orderStatus
    return {'orderId': o.orderId, 'permId': o.permId, 'clientId': o.clientId, 'account': o.account,
            'contract': contract(t.contract), 'action': o.action, 'totalQuantity': o.totalQuantity,
            'orderType': o.orderType, 'lmtPrice': number(o.lmtPrice), 'auxPrice': number(o.auxPrice),
            'tif': o.tif, 'orderRef': o.orderRef, 'status': s.status, 'filled': s.filled,
            'remaining': s.remaining, 'avgFillPrice': number(s.avgFillPrice)}


def execution(f: Fill) -> dict:
    e, c = f.execution, f.commissionReport
    return {'execId': e.execId, 'time': f.time.isoformat() if f.time else None, 'account': e.acctNumber,
            'contract': contract(f.contract), 'side': e.side, 'shares': e.shares, 'price': e.price,
            'orderId': e.orderId, 'permId': e.permId, 'clientId': e.clientId, 'orderRef': e.orderRef,
            'commission': number(c.commission) if c.execId else None,
            'commissionCurrency': c.currency or None, 'realizedPNL': number(c.realizedPNL) if c.execId else None}


def _number_or_text(raw: str) -> float | str:
    try:
        return number(float(raw)) if raw != '' else raw
    except ValueError:
        return raw
