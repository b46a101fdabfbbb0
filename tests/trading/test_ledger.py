"""The ledger per strategy, day after day: each strategy's holding is its target, transfers net out, manual apart.

Two strategies share SPY; on the second day their trades go opposite ways (dummy sells, the MACD buys),
so part of them nets out inside the account and only the rest goes to the market.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from lib.ibapi import IB, MarketOrder, Stock
from tests.trading.support import ACCOUNT, BASE_CONFIG, SPY_MACD_VIXY_CONFIG

TWO_STRATEGIES = BASE_CONFIG.replace('dummy = 0.5', 'dummy = 0.3\nspy-macd-vixy = 0.4') + SPY_MACD_VIXY_CONFIG
DAYS = [datetime(2026, 11, 24, 15, 0, tzinfo=timezone.utc),    # dummy +1, MACD SPY -1 / VIXY +1
        datetime(2026, 11, 25, 15, 0, tzinfo=timezone.utc),    # dummy 0 (sells), MACD SPY +1 (buys): they net
        datetime(2026, 11, 27, 15, 0, tzinfo=timezone.utc)]    # dummy -1, MACD unchanged
MANUAL_SPY = 11


def buy_by_hand(rig, quantity: int) -> None:
    ib = IB()
    ib.connect(rig.sim.host, rig.sim.port, clientId=71)
    ib.placeOrder(Stock('SPY', 'SMART', 'USD'), MarketOrder('BUY', quantity, account=ACCOUNT))
    ib.sleep(0.2)
    ib.disconnect()


def test_the_ledger_matches_each_strategys_targets_and_the_account_every_day(make_rig):
    rig = make_rig(TWO_STRATEGIES, time=DAYS[0])
    for day, moment in enumerate(DAYS):
        rig.sim.clock.set(moment)
        allocation = rig.send('allocation', key=f'day-{day}')
        assert allocation.status == 'ok', allocation.error
        if day == 1:
            buy_by_hand(rig, MANUAL_SPY)
            spy_row = next(c for c in allocation.result['contracts'] if c['contract']['symbol'] == 'SPY')
            trades = spy_row['strategyTrades']
            assert trades['dummy'] < 0 < trades['spy-macd-vixy'], 'the two strategies trade SPY opposite ways'
            [spy_order] = [o for o in allocation.result['orders'] if o['contract']['symbol'] == 'SPY']
            assert spy_order['quantity'] == abs(sum(trades.values()))       # only the net goes to the market
        reconciliation = rig.send('trade-reconciliation', key=f'reconcile-{day}')
        assert reconciliation.status == 'ok', reconciliation.error
        result = reconciliation.result
        assert result['awaitingAttribution'] == [] and result['drift'] == []
        for row in result['holdings']:
            manual = MANUAL_SPY if row['contract']['symbol'] == 'SPY' and day >= 1 else 0
            assert row['unattributed'] == pytest.approx(manual, abs=1e-6)
            assert sum(row['byStrategy'].values()) == pytest.approx(row['actual'] - manual, abs=1e-6)
        # each strategy holds exactly its target quantities, however the trades were netted
        for contract in allocation.result['contracts']:
            symbol = contract['contract']['localSymbol']
            for name, target in contract['byStrategy'].items():
                assert result['strategies'].get(name, {}).get(symbol, 0) == pytest.approx(target, abs=1e-6), \
                    (day, name, symbol)

    fills = rig.store.fills()
    transfers = [f for f in fills if f['side'] == 'TRANSFER']
    assert len(transfers) == 2      # the first and second days: the two strategies traded SPY opposite ways
    assert all(sum(t['strategies'].values()) == pytest.approx(0) and t['quantity'] == 0 for t in transfers)
    for fill in fills:
        if fill['side'] != 'TRANSFER' and fill['strategies']:
            assert sum(fill['commissions'].values()) == pytest.approx(fill['commission'])
            assert all(part * fill['quantity'] > 0 for part in fill['strategies'].values())   # never a negative share
    manual = [f for f in fills if f['orderRef'] is None]
    assert [(f['quantity'], f['strategies'], f['commissions']) for f in manual] == [(MANUAL_SPY, {}, {})]

    # close-all leaves every closed strategy at 0 and the manual shares where they were
    closed = rig.send('close-all', key='close')
    assert closed.status == 'ok', closed.error
    assert rig.position('SPY') == MANUAL_SPY and rig.position('VIXY') == 0
    final = rig.send('trade-reconciliation', key='reconcile-final').result
    assert final['strategies'] == {'dummy': {}, 'spy-macd-vixy': {}} and final['drift'] == []
