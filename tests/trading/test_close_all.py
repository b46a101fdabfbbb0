"""close-all: reduce risk only. Each strategy's share from the ledger, reduce-only orders, exempt from the limits."""
from __future__ import annotations

from datetime import datetime, timezone

from lib.ibapi import IB, LimitOrder, MarketOrder, Stock
from tests.trading.support import ACCOUNT, BASE_CONFIG, SPY_MACD_VIXY_CONFIG

TAGGED_REF = 'ibj:0123456789:756733'
TWO_STRATEGIES = BASE_CONFIG.replace('dummy = 0.5', 'dummy = 0.3\nspy-macd-vixy = 0.4') + SPY_MACD_VIXY_CONFIG
BOTH_LONG_SPY = datetime(2026, 11, 13, 15, 0, tzinfo=timezone.utc)   # dummy +1 and the MACD +1 on SPY that day


def place_resting(rig, client_id: int, symbol: str, order_ref: str) -> None:
    """A buy limit far below the market, placed by another client that then goes away."""
    ib = IB()
    ib.connect(rig.sim.host, rig.sim.port, clientId=client_id)
    price = round(rig.sim.quote(rig.instrument(symbol)).bid * 0.9, 2)
    ib.placeOrder(Stock(symbol, 'SMART', 'USD'), LimitOrder('BUY', 5, price, orderRef=order_ref, tif='GTC',
                                                           account=ACCOUNT))
    ib.sleep(0.2)
    ib.disconnect()


def buy_by_hand(rig, client_id: int, symbol: str, quantity: int) -> None:
    """A manual market order (no orderRef of ours), as someone at TWS would place it."""
    ib = IB()
    ib.connect(rig.sim.host, rig.sim.port, clientId=client_id)
    ib.placeOrder(Stock(symbol, 'SMART', 'USD'), MarketOrder('BUY', quantity, account=ACCOUNT))
    ib.sleep(0.2)
    ib.disconnect()


def ledger_by_strategy(rig) -> dict[str, dict[str, float]]:
    result = rig.send('trade-reconciliation')
    assert result.status == 'ok', result.error
    assert result.result['awaitingAttribution'] == []
    return result.result['strategies']


def test_close_all_sells_the_strategys_share_and_leaves_manual_positions_and_orders(rig):
    assert rig.send('allocation').status == 'ok'
    bought = rig.position('SPY')
    buy_by_hand(rig, 44, 'SPY', 7)                                                # a manual trade in the same contract
    rig.sim.broker.set_position(ACCOUNT, rig.instrument('AAPL'), 40, 200.0)     # a manual position
    place_resting(rig, 41, 'SPY', TAGGED_REF)
    place_resting(rig, 42, 'SPY', 'my own order')
    place_resting(rig, 43, 'AAPL', '')

    result = rig.send('close-all')
    assert result.status == 'ok', result.error
    assert [(c['clientId'], c['cancelled']) for c in result.result['cancelled']] == [(41, True)]
    assert sorted(o.clientId for o in rig.sim.broker.open_orders()) == [42, 43]
    assert rig.position('SPY') == 7 and rig.position('AAPL') == 40
    sold = [o for o in rig.sim.broker.completed_orders() if o.action == 'SELL']
    assert [(o.instrument.symbol, o.totalQuantity, o.orderType) for o in sold] == [('SPY', bought, 'MKT')]
    assert result.result['orders'][0]['strategies'] == {'dummy': -bought}
    assert result.result['orders'][0]['reduceOnly'] is True
    # the strategy is flat now, in its targets and in the ledger
    assert rig.store.get_targets('dummy')['targets'] == {'SPY': 0.0}
    assert ledger_by_strategy(rig) == {'dummy': {}}


def test_close_all_of_one_strategy_leaves_the_others_position_and_ledger_untouched(make_rig):
    rig = make_rig(TWO_STRATEGIES, time=BOTH_LONG_SPY)
    allocation = rig.send('allocation')
    assert allocation.status == 'ok', allocation.error
    before = ledger_by_strategy(rig)
    assert before['dummy']['SPY'] > 0 and before['spy-macd-vixy']['SPY'] > 0
    spy, vixy = rig.position('SPY'), rig.position('VIXY')

    result = rig.send('close-all', {'strategies': ['dummy']})
    assert result.status == 'ok', result.error
    [order] = result.result['orders']
    assert (order['contract']['symbol'], order['action'], order['quantity']) == ('SPY', 'SELL', before['dummy']['SPY'])
    assert rig.position('SPY') == spy - before['dummy']['SPY'] and rig.position('VIXY') == vixy
    after = ledger_by_strategy(rig)
    assert after['spy-macd-vixy'] == before['spy-macd-vixy'] and after['dummy'] == {}
    # a strategy that holds nothing is not closed at the other's expense
    nothing = rig.send('close-all', {'strategies': ['dummy']}, key='dummy-again')
    assert nothing.status == 'skipped' and rig.position('SPY') == spy - before['dummy']['SPY']


def test_close_all_after_a_20_percent_move_still_flattens(make_rig):
    rig = make_rig(TWO_STRATEGIES)
    assert rig.send('allocation').status == 'ok'
    for symbol in ('SPY', 'VIXY'):
        rig.sim.set_price(symbol, rig.sim.quote(rig.instrument(symbol)).close * 1.25)
    # an allocation is refused on the price band now ...
    refused = rig.send('allocation', {'strategies': ['dummy']}, key='after-the-move', )
    assert refused.status in ('rejected', 'skipped')
    # ... but close-all is exempt from it
    result = rig.send('close-all')
    assert result.status == 'ok', result.error
    assert rig.position('SPY') == 0 and rig.position('VIXY') == 0
    assert ledger_by_strategy(rig) == {'dummy': {}, 'spy-macd-vixy': {}}


def test_close_all_of_every_position_flattens_one_of_two_and_a_half_times_net_liquidation(rig):
    spy = rig.instrument('SPY')
    price = rig.sim.quote(spy).bid
    quantity = 4000
    rig.sim.broker.set_position(ACCOUNT, spy, quantity, price)
    rig.sim.broker.set_cash(ACCOUNT, 'USD', 1_000_000 - quantity * price * 1.4)    # NLV: 40 % of the position
    assert quantity * price > 2.4 * rig.net_liquidation()
    rig.store.put_settings({'limits': {'maxOrderNotional': 50_000.0, 'maxOrderNlvShare': 0.1,
                                       'maxRunNlvShare': 0.2, 'priceBand': 0.0001, 'allowlist': ['QQQ']}})
    result = rig.send('close-all', {'scope': 'all'})
    assert result.status == 'ok', result.error
    assert rig.position('SPY') == 0
    [order] = result.result['orders']
    assert (order['action'], order['quantity'], order['strategies']) == ('SELL', quantity, {})


def test_a_close_never_opens_or_flips_a_position(rig):
    assert rig.send('allocation').status == 'ok'
    bought = rig.position('SPY')
    rig.sim.broker.set_position(ACCOUNT, rig.instrument('SPY'), 0, 0.0)     # sold elsewhere, unknown to the ledger
    result = rig.send('close-all')
    assert result.status == 'error' and result.error.type == 'NotReduceOnly'
    assert f'SELL {bought:g} would not reduce the position of 0' in result.error.message
    assert rig.position('SPY') == 0 and [o.action for o in rig.order_log()] == ['BUY']
    # part of it still held: only that part is sold
    rig.sim.broker.set_position(ACCOUNT, rig.instrument('SPY'), 10, 600.0)
    trimmed = rig.send('close-all', key='trimmed')
    assert trimmed.status == 'ok', trimmed.error
    assert rig.position('SPY') == 0
    assert [p['code'] for p in trimmed.result['problems']] == ['reduced-to-position'] and trimmed.result['degraded']


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
    assert rig.send('allocation').status == 'ok'
    bought = rig.position('SPY')
    place_resting(rig, 41, 'SPY', TAGGED_REF)
    result = rig.send('close-all', dry_run=True)
    assert result.status == 'ok' and result.dry_run
    assert result.result['cancelled'][0]['wouldCancel'] is True
    assert result.result['orders'][0]['whatIf'] is not None
    assert len(rig.sim.broker.open_orders()) == 1 and rig.position('SPY') == bought


def test_strategies_and_scope_all_together_are_refused(rig):
    result = rig.send('close-all', {'scope': 'all', 'strategies': ['dummy']})
    assert result.status == 'rejected' and result.error.type == 'InvalidParams'
    assert 'not both' in result.error.message


def test_the_close_policys_own_band_refuses_a_close_naming_it(make_rig):
    rig = make_rig()
    assert rig.send('allocation').status == 'ok'
    bought = rig.position('SPY')
    rig.sim.set_price('SPY', rig.sim.quote(rig.instrument('SPY')).close * 1.25)
    rig.store.put_settings({'closePolicy': {'priceBand': 0.1, 'orderType': 'marketable-limit'}})
    result = rig.send('close-all')
    assert result.status == 'error' and result.error.type == 'ClosePriceBand'
    assert 'closePolicy.priceBand: SPY price' in result.error.message
    assert rig.position('SPY') == bought
    rig.store.put_settings({'closePolicy': {'priceBand': 0.3, 'orderType': 'marketable-limit'}})
    wider = rig.send('close-all', key='wider-band')
    assert wider.status == 'ok', wider.error
    assert rig.position('SPY') == 0 and wider.result['orders'][0]['orderType'] == 'LMT'


def test_a_close_counts_our_order_it_could_not_cancel_and_sells_only_the_rest(rig):
    assert rig.send('allocation').status == 'ok'
    bought = rig.position('SPY')
    busy = IB()
    busy.connect(rig.sim.host, rig.sim.port, clientId=77)        # stays connected: its order cannot be cancelled
    try:
        above = round(rig.sim.quote(rig.instrument('SPY')).ask * 1.2, 2)
        busy.placeOrder(Stock('SPY', 'SMART', 'USD'), LimitOrder('SELL', 100, above, orderRef=TAGGED_REF, tif='GTC',
                                                                 account=ACCOUNT))
        busy.sleep(0.2)
        result = rig.send('close-all')
    finally:
        busy.disconnect()
    assert result.status == 'error' and result.error.type == 'OrdersNotCancelled'
    assert sorted(p['code'] for p in result.result['problems']) == ['order-not-cancelled', 'reduced-to-position']
    [order] = result.result['orders']
    assert (order['action'], order['quantity'], order['reduceOnly']) == ('SELL', bought - 100, True)
    # counted at the gateway: what is held and what still works close it exactly, nothing sold twice
    assert rig.position('SPY') == 100 and rig.working('SPY') == -100
