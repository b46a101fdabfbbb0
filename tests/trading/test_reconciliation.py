"""trade-reconciliation: executions into the fills ledger with their strategies, once; drift reported."""
from __future__ import annotations

import pytest

from lib.ibapi import IB, MarketOrder, Stock
from tests.trading.support import ACCOUNT, BASE_CONFIG, SPY_MACD_VIXY_CONFIG

TWO_STRATEGIES = BASE_CONFIG.replace('dummy = 0.5', 'dummy = 0.3\nspy-macd-vixy = 0.4') + SPY_MACD_VIXY_CONFIG


def trade_elsewhere(rig, client_id: int, symbol: str, quantity: int, order_ref: str) -> None:
    ib = IB()
    ib.connect(rig.sim.host, rig.sim.port, clientId=client_id)
    ib.placeOrder(Stock(symbol, 'SMART', 'USD'), MarketOrder('BUY', quantity, orderRef=order_ref, account=ACCOUNT))
    ib.sleep(0.2)
    ib.disconnect()


def test_fills_are_attributed_through_order_ref_once_and_drift_is_reported(make_rig):
    rig = make_rig(TWO_STRATEGIES)
    allocation = rig.send('allocation')
    assert allocation.status == 'ok', allocation.error
    placed = {o['orderRef']: o for o in allocation.result['orders']}
    rig.sim.broker.set_position(ACCOUNT, rig.instrument('AAPL'), 30, 200.0)     # held, but never traded by us
    trade_elsewhere(rig, 51, 'QQQ', 7, '')                                       # a manual trade

    first = rig.send('trade-reconciliation')
    assert first.status == 'ok', first.error
    recorded = {f['orderRef']: f for f in first.result['recorded']}
    assert set(recorded) == set(placed) | {None}
    for ref, order in placed.items():
        fill = recorded[ref]
        sign = 1 if order['action'] == 'BUY' else -1
        assert fill['quantity'] == sign * order['quantity']
        # the fill goes to the strategies trading on its side; what netted out was an internal transfer
        assert sum(fill['strategies'].values()) == fill['quantity']
        assert all(part * fill['quantity'] > 0 for part in fill['strategies'].values())
        assert sum(fill['commissions'].values()) == pytest.approx(fill['commission'])
        assert fill['commission'] > 0 and fill['commissionCurrency'] == 'USD'
    assert recorded[None]['strategies'] == {} and recorded[None]['symbol'] == 'QQQ'
    holdings = {row['contract']['symbol']: row for row in first.result['holdings']}
    assert holdings['SPY']['drift'] == 0 and holdings['VIXY']['drift'] == 0 and holdings['QQQ']['drift'] == 0
    spy_targets = next(c['byStrategy'] for c in allocation.result['contracts'] if c['contract']['symbol'] == 'SPY')
    assert holdings['SPY']['byStrategy'] == spy_targets
    assert holdings['QQQ']['unattributed'] == 7
    assert (holdings['AAPL']['expected'], holdings['AAPL']['actual'], holdings['AAPL']['drift']) == (0, 30, 30)
    assert [row['contract']['symbol'] for row in first.result['drift']] == ['AAPL']
    assert [(p['code'], p['contract']['symbol']) for p in first.result['problems']] == [('position-drift', 'AAPL')]
    assert first.result['degraded'] is True

    again = rig.send('trade-reconciliation')
    assert again.status == 'ok'
    assert again.result['recorded'] == [] and again.result['alreadyRecorded'] == 3
    assert len([f for f in rig.store.fills() if f['side'] != 'TRANSFER']) == 3
    assert again.result['holdings'] == first.result['holdings']


def test_our_fills_whose_run_recorded_nothing_wait_instead_of_being_booked_blind(rig):
    trade_elsewhere(rig, 52, 'SPY', 3, 'ibj:abcdefabcd:756733')   # tagged like ours, but no run recorded it
    result = rig.send('trade-reconciliation')
    assert result.status == 'ok'
    assert [w['orderRef'] for w in result.result['awaitingAttribution']] == ['ibj:abcdefabcd:756733']
    assert rig.store.fills() == []
    assert result.result['drift'][0]['drift'] == 3
    assert sorted(p['code'] for p in result.result['problems']) == ['fill-unattributed', 'position-drift']


def test_a_trading_day_without_a_completed_reconciliation_is_reported_as_missed(make_rig):
    from datetime import datetime, timezone

    rig = make_rig(time=datetime(2026, 11, 24, 15, 0, tzinfo=timezone.utc))         # a Tuesday
    assert rig.send('allocation', key='tuesday').status == 'ok'
    tuesday = rig.send('trade-reconciliation', key='tuesday-reconciliation')
    assert tuesday.result['problems'] == [] and tuesday.result['lastReconciledDay'] is None   # the ledger starts
    # Wednesday to Friday pass without a reconciliation (Thursday is Thanksgiving: the market is closed)
    rig.sim.clock.set(datetime(2026, 11, 30, 15, 0, tzinfo=timezone.utc))
    monday_after = rig.send('trade-reconciliation', key='next-monday')
    assert monday_after.status == 'ok'
    assert monday_after.result['lastReconciledDay'] == '2026-11-24'
    problems = monday_after.result['problems']
    assert [p['code'] for p in problems] == ['missed-day'] * 2 and monday_after.result['degraded'] is True
    assert [p['message'][len('no trade-reconciliation completed on '):][:10] for p in problems] == [
        '2026-11-25', '2026-11-27']
    assert "IB returns only the current day's" in problems[0]['message']
    again = rig.send('trade-reconciliation', key='next-monday-again')
    assert again.result['lastReconciledDay'] == '2026-11-24'       # today's own record does not hide the gap
