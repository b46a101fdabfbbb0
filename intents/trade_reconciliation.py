"""The `trade-reconciliation` intent: book executions into the fills ledger and compare holdings.

Every execution the gateway reports for the account (today's, as IB keeps them) goes into the ledger
once, keyed by execId, with its commission and the strategies it served: an order's orderRef
(`ibj:<hash10>:<leg>`) leads to the run that placed it, whose claim records each strategy's share of
the order (`...:<leg>.<n>` for a remainder a takeover re-sent; a takeover records every order it found, so
an earlier attempt's fills are attributed too). Our fills whose run has not recorded the order yet wait for
a later run rather than being booked without attribution. Expected holdings (the ledger's sum per contract
and strategy) are then compared with the gateway's positions; drift is reported, never raised: each
drifting contract and each fill awaiting attribution is a data problem (result.degraded).
"""
from __future__ import annotations

import asyncio
import math

from intents.base import Intent, IntentOutput
from lib.ibapi import ExecutionFilter, Fill
from lib.idempotency import is_ours, recorded_orders, reference_of
from lib.problems import problem

QUANTITY_DIGITS = 8


class TradeReconciliation(Intent):
    name = 'trade-reconciliation'
    readonly = True
    uses_store = True

    async def run(self) -> IntentOutput:
        ib, store, account = self.ib, self.context.store, self.session.account
        fills = await ib.reqExecutionsAsync(ExecutionFilter(acctCode=account))
        # commission reports are attached to the Fill ib_insync saw first (at connect), not to this copy
        seen = {f.execution.execId: f for f in ib.fills()}
        fills = [seen.get(f.execution.execId, f) for f in fills if f.execution.acctNumber == account]
        orders: dict[str, dict] = {}
        for reference in sorted({reference_of(f.execution.orderRef) for f in fills} - {None}):
            orders.update(await asyncio.to_thread(recorded_orders, store, reference))
        recorded, already, waiting = [], 0, []
        for fill in fills:
            ref = fill.execution.orderRef
            if is_ours(ref) and ref not in orders:
                waiting.append({'execId': fill.execution.execId, 'orderRef': ref,
                                'reason': 'the run that placed it has not recorded the order yet'})
                continue
            entry = ledger_entry(fill, orders.get(ref))
            if await asyncio.to_thread(store.record_fill, entry):
                recorded.append(entry)
            else:
                already += 1
        ledger = [f for f in await asyncio.to_thread(store.fills) if f.get('account') == account]
        positions = [p for p in await ib.reqPositionsAsync() if p.account == account]
        holdings = compare_holdings(ledger, {p.contract.conId: (p.contract, p.position) for p in positions})
        drift = [row for row in holdings if row['drift']]
        problems = [problem('position-drift', f'{row["contract"]["localSymbol"]}: the gateway holds {row["actual"]:g}, '
                                              f'the fills ledger expects {row["expected"]:g}', contract=row['contract'])
                    for row in drift]
        problems += [problem('fill-unattributed', f'{w["execId"]}: {w["reason"]}', order_ref=w['orderRef'])
                     for w in waiting]
        return IntentOutput(result={
            'account': account,
            'executions': len(fills),
            'recorded': recorded,
            'alreadyRecorded': already,
            'awaitingAttribution': waiting,
            'holdings': holdings,
            'drift': drift,
            'strategies': strategy_holdings(ledger),
            'problems': problems,
        })


def ledger_entry(fill: Fill, order: dict | None) -> dict:
    """The fills-ledger document of one execution; `order` is its recorded order (None if not ours)."""
    e, c, report = fill.execution, fill.contract, fill.commissionReport
    quantity = e.shares if e.side == 'BOT' else -e.shares
    return {
        'execId': e.execId, 'time': (fill.time or e.time).isoformat(), 'account': e.acctNumber,
        'orderRef': e.orderRef or None, 'permId': e.permId, 'orderId': e.orderId, 'clientId': e.clientId,
        'conId': c.conId, 'symbol': c.symbol, 'secType': c.secType, 'localSymbol': c.localSymbol,
        'currency': c.currency, 'side': e.side, 'shares': e.shares, 'quantity': quantity, 'price': e.price,
        'commission': _number(report.commission) if report.execId else None,
        'commissionCurrency': report.currency or None,
        'realizedPNL': _number(report.realizedPNL) if report.execId else None,
        'strategies': split_fill(quantity, order),
    }


def split_fill(quantity: float, order: dict | None) -> dict[str, float]:
    """Each strategy's part of a fill, in proportion to its share of the order's signed quantity."""
    shares = (order or {}).get('strategies') or {}
    total = sum(shares.values())
    if not shares or total == 0:
        return {}
    return {name: round(quantity * share / total, QUANTITY_DIGITS) for name, share in shares.items()}


def compare_holdings(ledger: list[dict], positions: dict[int, tuple]) -> list[dict]:
    """Per contract: the ledger's expected position (and each strategy's part) against the gateway's."""
    rows: dict[int, dict] = {}
    for entry in ledger:
        row = rows.setdefault(entry['conId'], _row(entry['conId'], entry['symbol'], entry['secType'],
                                                   entry['localSymbol']))
        row['expected'] += entry['quantity']
        for name, part in entry['strategies'].items():
            row['byStrategy'][name] = row['byStrategy'].get(name, 0.0) + part
    for con_id, (contract, position) in positions.items():
        rows.setdefault(con_id, _row(con_id, contract.symbol, contract.secType, contract.localSymbol))
        rows[con_id]['actual'] = position
    for row in rows.values():
        row['expected'] = round(row['expected'], QUANTITY_DIGITS)
        row['byStrategy'] = {name: round(q, QUANTITY_DIGITS) for name, q in sorted(row['byStrategy'].items())}
        row['unattributed'] = round(row['expected'] - sum(row['byStrategy'].values()), QUANTITY_DIGITS)
        row['drift'] = round(row['actual'] - row['expected'], QUANTITY_DIGITS)
    return sorted(rows.values(), key=lambda row: row['contract']['localSymbol'])


def strategy_holdings(ledger: list[dict]) -> dict[str, dict[str, float]]:
    """Each strategy's expected holdings per contract (localSymbol), from its attributed fills."""
    holdings: dict[str, dict[str, float]] = {}
    for entry in ledger:
        for name, part in entry['strategies'].items():
            book = holdings.setdefault(name, {})
            book[entry['localSymbol']] = round(book.get(entry['localSymbol'], 0.0) + part, QUANTITY_DIGITS)
    return {name: {k: q for k, q in sorted(book.items()) if q} for name, book in sorted(holdings.items())}


def _row(con_id: int, symbol: str, sec_type: str, local_symbol: str) -> dict:
    return {'contract': {'conId': con_id, 'symbol': symbol, 'secType': sec_type, 'localSymbol': local_symbol},
            'expected': 0.0, 'actual': 0.0, 'byStrategy': {}}


def _number(value: float) -> float | None:
    return None if value is None or math.isnan(value) or abs(value) >= 1e300 else value
