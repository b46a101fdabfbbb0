"""The `trade-reconciliation` intent: book executions into the fills ledger and compare holdings.

Every execution the gateway reports for the account (today's, as IB keeps them) goes into the ledger
once, keyed by execId, with its commission and the strategies it served (trading.ledger has the rules): an
order's orderRef (`ibj:<hash10>:<leg>`, `...:<leg>.<n>` for a remainder a takeover re-sent) leads to the
run that placed it, whose claim records each strategy's trade (a takeover records every order it found,
so an earlier attempt's fills are attributed too). Our fills whose run has not recorded the order yet wait
for a later run rather than being booked without attribution. Expected holdings (the ledger's sum per
contract and strategy) are then compared with the gateway's positions; drift is reported, never raised:
each drifting contract and each fill awaiting attribution is a data problem (result.degraded).
The running holdings the store keeps for allocation and close-all (Store.holdings) are checked against
the ledger's sum too: a contract where they differ is a `holdings-mismatch` problem.

Because IB returns only the current day's executions, each run records the (New York) day it completed,
and reports every NYSE trading day since the last completed one as a `missed-day` problem (a data
problem too): executions of such a day are not in the ledger and cannot be fetched any more.
"""
from __future__ import annotations

import asyncio

from datetime import datetime, timezone

from intents.base import Intent
from intents.outcome import Outcome
from intents.trading import market_date
from trading.ledger import (
    QUANTITY_DIGITS, Holding, book_executions, holdings as ledger_sum, last_reconciled_day, record_reconciled_day,
    stored_holdings,
)
from trading.market_data import gateway_time
from lib.problems import HOLDINGS_MISMATCH, MISSED_DAY, POSITION_DRIFT, problem
from lib.store import Store

LEDGER_READS = 3


class TradeReconciliation(Intent):
    name = 'trade-reconciliation'
    uses_store = True

    async def run(self) -> Outcome:
        ib, store, account = self.ib, self.context.store, self.session.account
        now = await gateway_time(ib)
        today = market_date(now)
        # all of the day's executions, not only those since the last booking: the daily check also
        # catches one that reached the gateway later than the booking overlap allows for
        booking = await book_executions(ib, store, account, now, incremental=False)
        ledger, kept = await asyncio.to_thread(ledger_and_holdings, store, account)
        last_day, missed = await asyncio.to_thread(last_reconciled_day, store, account, today)
        started = min((entry['time'][:10] for entry in ledger), default=today.isoformat())
        missed = [day for day in missed if day.isoformat() >= started]     # since the ledger has entries
        since = f'since {last_day.isoformat()}' if last_day else f'in the {len(missed)} trading days before today'
        gaps = [problem(MISSED_DAY, f'no trade-reconciliation completed on {day.isoformat()} ({since}): executions '
                                    'of that day are not in the ledger, and IB returns only the current day\'s; '
                                    'check them in the account statement')
                for day in missed]
        await asyncio.to_thread(record_reconciled_day, store, account, today, self.context.run_id,
                                datetime.now(timezone.utc))
        positions = [p for p in await ib.reqPositionsAsync() if p.account == account]
        holdings = compare_holdings(ledger, {p.contract.conId: (p.contract, p.position) for p in positions})
        drift = [row for row in holdings if row['drift']]
        problems = [problem(POSITION_DRIFT, f'{row["contract"]["localSymbol"]}: the gateway holds {row["actual"]:g}, '
                                            f'the fills ledger expects {row["expected"]:g}', contract=row['contract'])
                    for row in drift]
        mismatches = totals_mismatches(ledger_sum(ledger, account), kept)
        problems += booking.problems() + gaps + [
            problem(HOLDINGS_MISMATCH, f'{row["contract"].get("localSymbol")}: the running holdings keep '
                                       f'{row["kept"]}, the fills ledger sums to {row["ledger"]}; allocation and '
                                       'close-all size from the running holdings', contract=row['contract'])
            for row in mismatches]
        return Outcome.ok({
            'account': account,
            'executions': booking.executions,
            'recorded': booking.recorded,
            'alreadyRecorded': booking.already,
            'awaitingAttribution': booking.waiting,
            'holdings': holdings,
            'drift': drift,
            'holdingsMismatch': mismatches,
            'strategies': strategy_holdings(ledger),
            'marketDate': today.isoformat(),
            'lastReconciledDay': last_day.isoformat() if last_day else None,
            'problems': problems,
        })


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


def ledger_and_holdings(store: Store, account: str) -> tuple[list[dict], dict[int, Holding]]:
    """The account's ledger entries and the store's running holdings as of one moment.

    The holdings are read before and after the ledger; when a run booked a fill in between (they differ),
    both are read again (LEDGER_READS times at most), so that booking is not reported as a mismatch.
    """
    for _ in range(LEDGER_READS):
        before = stored_holdings(store, account)
        ledger = [f for f in store.fills() if f.get('account') == account]
        after = stored_holdings(store, account)
        if after == before:
            break
    return ledger, after


def totals_mismatches(expected: dict[int, Holding], kept: dict[int, Holding]) -> list[dict]:
    """Per contract where they differ: the ledger's sum against the store's running holding."""
    def described(holding: Holding | None) -> dict:
        return {'position': holding.position if holding else 0.0,
                'strategies': holding.strategies if holding else {}}

    rows = []
    for con_id in sorted(set(expected) | set(kept)):
        ledger, running = described(expected.get(con_id)), described(kept.get(con_id))
        if ledger != running:
            contract = (expected.get(con_id) or kept[con_id]).contract
            rows.append({'contract': contract, 'ledger': ledger, 'kept': running})
    return rows


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
