"""trade-reconciliation: executions into the fills ledger with their strategies, once; drift reported."""
from __future__ import annotations

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
        assert fill['strategies'] == order['strategies']          # fully filled: each gets its whole share
        assert fill['commission'] > 0 and fill['commissionCurrency'] == 'USD'
    assert recorded[None]['strategies'] == {} and recorded[None]['symbol'] == 'QQQ'
    holdings = {row['contract']['symbol']: row for row in first.result['holdings']}
    assert holdings['SPY']['drift'] == 0 and holdings['VIXY']['drift'] == 0 and holdings['QQQ']['drift'] == 0
    assert holdings['SPY']['byStrategy'] == placed[next(r for r in placed if r.endswith(':756733'))]['strategies']
    assert holdings['QQQ']['unattributed'] == 7
    assert (holdings['AAPL']['expected'], holdings['AAPL']['actual'], holdings['AAPL']['drift']) == (0, 30, 30)
    assert [row['contract']['symbol'] for row in first.result['drift']] == ['AAPL']
    assert [(p['code'], p['contract']['symbol']) for p in first.result['problems']] == [('position-drift', 'AAPL')]
    assert first.result['degraded'] is True

    again = rig.send('trade-reconciliation')
    assert again.status == 'ok'
    assert again.result['recorded'] == [] and again.result['alreadyRecorded'] == 3
    assert len(rig.store.fills()) == 3
    assert again.result['holdings'] == first.result['holdings']


def test_our_fills_whose_run_recorded_nothing_wait_instead_of_being_booked_blind(rig):
    trade_elsewhere(rig, 52, 'SPY', 3, 'ibj:abcdefabcd:756733')   # tagged like ours, but no run recorded it
    result = rig.send('trade-reconciliation')
    assert result.status == 'ok'
    assert [w['orderRef'] for w in result.result['awaitingAttribution']] == ['ibj:abcdefabcd:756733']
    assert rig.store.fills() == []
    assert result.result['drift'][0]['drift'] == 3
    assert sorted(p['code'] for p in result.result['problems']) == ['fill-unattributed', 'position-drift']
