"""close-all: our tagged orders cancelled through their client ids, the strategies' positions flattened."""
from __future__ import annotations

from lib.ibapi import IB, LimitOrder, Stock
from tests.trading.support import ACCOUNT

TAGGED_REF = 'ibj:0123456789:756733'


def place_resting(rig, client_id: int, symbol: str, order_ref: str) -> None:
    """A buy limit far below the market, placed by another client that then goes away."""
    ib = IB()
    ib.connect(rig.sim.host, rig.sim.port, clientId=client_id)
    price = round(rig.sim.quote(rig.instrument(symbol)).bid * 0.9, 2)
    ib.placeOrder(Stock(symbol, 'SMART', 'USD'), LimitOrder('BUY', 5, price, orderRef=order_ref, tif='GTC',
                                                           account=ACCOUNT))
    ib.sleep(0.2)
    ib.disconnect()


def test_close_all_cancels_only_tagged_orders_and_leaves_manual_positions(rig):
    rig.sim.broker.set_position(ACCOUNT, rig.instrument('SPY'), 120, 590.0)     # the dummy strategy's contract
    rig.sim.broker.set_position(ACCOUNT, rig.instrument('AAPL'), 40, 200.0)     # a manual position
    place_resting(rig, 41, 'SPY', TAGGED_REF)
    place_resting(rig, 42, 'SPY', 'my own order')
    place_resting(rig, 43, 'AAPL', '')

    result = rig.send('close-all')
    assert result.status == 'ok', result.error
    assert [(c['clientId'], c['cancelled']) for c in result.result['cancelled']] == [(41, True)]
    assert sorted(o.clientId for o in rig.sim.broker.open_orders()) == [42, 43]
    assert rig.position('SPY') == 0 and rig.position('AAPL') == 40
    sold = [o for o in rig.sim.broker.completed_orders() if o.action == 'SELL']
    assert [(o.instrument.symbol, o.totalQuantity, o.orderRef.startswith('ibj:')) for o in sold] == [
        ('SPY', 120, True)]
    assert result.result['orders'][0]['strategies'] == {'dummy': -120.0}
    # the strategy is flat now: a later allocation without an opinion keeps it flat
    assert rig.store.get_targets('dummy')['targets'] == {'SPY': 0.0}


def test_scope_all_cancels_every_order_and_closes_every_position_but_cash(rig):
    rig.sim.broker.set_position(ACCOUNT, rig.instrument('SPY'), 120, 590.0)
    rig.sim.broker.set_position(ACCOUNT, rig.instrument('AAPL'), -40, 200.0)
    place_resting(rig, 42, 'SPY', 'my own order')
    result = rig.send('close-all', {'scope': 'all'})
    assert result.status == 'ok', result.error
    assert [(c['clientId'], c['cancelled']) for c in result.result['cancelled']] == [(42, True)]
    assert rig.sim.broker.open_orders() == []
    assert rig.position('SPY') == 0 and rig.position('AAPL') == 0
    manual = next(o for o in result.result['orders'] if o['contract']['symbol'] == 'AAPL')
    assert (manual['action'], manual['quantity'], manual['strategies']) == ('BUY', 40, {})


def test_close_all_dry_run_lists_what_it_would_do(rig):
    rig.sim.broker.set_position(ACCOUNT, rig.instrument('SPY'), 120, 590.0)
    place_resting(rig, 41, 'SPY', TAGGED_REF)
    result = rig.send('close-all', {'dryRun': True})
    assert result.status == 'ok' and result.dry_run
    assert result.result['cancelled'][0]['wouldCancel'] is True
    assert result.result['orders'][0]['whatIf'] is not None
    assert len(rig.sim.broker.open_orders()) == 1 and rig.position('SPY') == 120


def test_strategies_and_scope_all_together_are_refused(rig):
    result = rig.send('close-all', {'scope': 'all', 'strategies': ['dummy']})
    assert result.status == 'rejected' and result.error.type == 'InvalidParams'
    assert 'not both' in result.error.message
