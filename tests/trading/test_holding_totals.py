"""Allocation sizes from the running holdings the store keeps, not from the whole fills ledger.

Counted where it lands: the SQL statements the store's SQLite connection runs (sqlite3's trace callback),
and the orders at the simulated gateway. The intent code is the same on Firestore; that its Store.holdings
does not come from the ledger is shown in tests/store/test_store_contract.py (the ledger emptied behind it).
"""
from __future__ import annotations

import math
import re
import sqlite3
from datetime import timedelta

from lib.store.common import fill_entry
from lib.store.sqlite import SqliteStore
from strategies.dummy import daily_signal
from tests.trading.support import ACCOUNT, OPEN_TIME

HISTORY = 1000
HELD = 10                # what the history leaves the dummy strategy holding in SPY
READS_FILLS = re.compile(r'\bFROM\s+fills\b', re.IGNORECASE)


def history_entry(n: int, spy: dict) -> dict:
    """An execution of an earlier day as trading.ledger.ledger_entry books one: +1/-1 SPY for `dummy`, ending at HELD."""
    quantity = 1.0 if n < HELD or n % 2 else -1.0
    return {'execId': f'0000e1f2.{n:08d}.01.01', 'time': (OPEN_TIME - timedelta(days=60, seconds=-n)).isoformat(),
            'account': ACCOUNT, 'orderRef': f'ibj:00000000aa:{n}', 'permId': n, 'orderId': n, 'clientId': 7, **spy,
            'side': 'BOT' if quantity > 0 else 'SLD', 'shares': 1.0, 'quantity': quantity, 'price': 500.0,
            'commission': 0.5, 'commissionCurrency': 'USD', 'realizedPNL': 0.0, 'strategies': {'dummy': quantity},
            'commissions': {'dummy': 0.5}}


def spy_contract(rig) -> dict:
    spy = rig.instrument('SPY')
    return {'conId': spy.conId, 'symbol': 'SPY', 'secType': 'STK', 'localSymbol': spy.localSymbol, 'currency': 'USD'}


def test_an_allocation_on_a_long_history_reads_no_fills(rig):
    spy = spy_contract(rig)
    for n in range(HISTORY + HELD - HISTORY % 2):
        assert rig.store.record_fill(history_entry(n, spy))
    rig.sim.broker.set_position(ACCOUNT, rig.instrument('SPY'), HELD, 500.0)
    nlv = rig.net_liquidation()
    statements: list[str] = []
    rig.store._connect().set_trace_callback(statements.append)
    try:
        result = rig.send('allocation', {'strategies': ['dummy']})
    finally:
        rig.store._connect().set_trace_callback(None)

    assert result.status == 'ok', result.error
    assert [s for s in statements if READS_FILLS.search(s)] == []
    assert any(re.search(r'\bFROM holdings\b', s) for s in statements)
    # it sized from the history's holding: the dummy strategy's target, minus the HELD it already had
    [order] = result.result['orders']
    target = math.trunc(daily_signal('dummy', OPEN_TIME.date()) * 0.5 * nlv / rig.sim.quote(rig.instrument('SPY')).ask)
    assert abs(order['quantity'] - (target - HELD)) <= 1
    assert abs(rig.position('SPY') - target) <= 1


def test_reconciliation_reports_running_holdings_that_are_not_the_ledgers_sum(rig):
    allocation = rig.send('allocation', {'strategies': ['dummy']})
    assert allocation.status == 'ok', allocation.error
    agreed = rig.send('trade-reconciliation', key='agreed')
    assert agreed.status == 'ok', agreed.error
    assert agreed.result['holdingsMismatch'] == [] and agreed.result['drift'] == []

    # an older instance (a rolling deploy) adds a fill to the ledger without the running holdings
    entry = fill_entry(history_entry(0, spy_contract(rig)))
    with sqlite3.connect(rig.store.path) as db:
        db.execute('INSERT INTO fills (exec_id, time_us, strategies, fill) VALUES (?, 0, ?, ?)',
                   (entry.exec_id, '["dummy"]', entry.text))
    db.close()
    found = rig.send('trade-reconciliation', key='found')

    assert found.status == 'ok', found.error
    assert [p['code'] for p in found.result['problems'] if p['code'] == 'holdings-mismatch'] == ['holdings-mismatch']
    [row] = found.result['holdingsMismatch']
    assert row['ledger']['position'] == row['kept']['position'] + 1 == rig.position('SPY') + 1
    assert row['ledger']['strategies']['dummy'] == row['kept']['strategies']['dummy'] + 1


def test_a_fill_booked_while_reconciliation_reads_the_ledger_is_no_mismatch(rig):
    spy = spy_contract(rig)
    rig.store.record_fill(history_entry(0, spy))
    rig.sim.broker.set_position(ACCOUNT, rig.instrument('SPY'), 2, 500.0)
    other = SqliteStore(rig.store.path)            # another run, on the same file
    ledger_read = rig.store.fills

    def fills_while_another_run_books(**kwargs):
        entries = ledger_read(**kwargs)
        other.record_fill(history_entry(1, spy))        # booked right after the first read (then already there)
        return entries

    rig.store.fills = fills_while_another_run_books
    try:
        first = rig.send('trade-reconciliation')
    finally:
        del rig.store.fills
        other.close()

    assert first.status == 'ok', first.error
    assert first.result['holdingsMismatch'] == []
    assert 'holdings-mismatch' not in [p['code'] for p in first.result['problems']]
