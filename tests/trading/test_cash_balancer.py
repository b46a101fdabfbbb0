"""cash-balancer: foreign cash above the threshold is converted to the base currency on IDEALPRO."""
from __future__ import annotations

from tests.trading.support import ACCOUNT, HOLIDAY


def cash(rig, currency: str) -> float:
    return next(float(v) for k, v, c in rig.sim.broker.account_values(ACCOUNT) if k == 'CashBalance' and c == currency)


def usd_jpy(rig):
    return next(i for i in rig.sim.universe.all() if i.localSymbol == 'USD.JPY')


def test_balances_above_the_threshold_are_converted_and_small_ones_kept(rig):
    rig.sim.broker.set_cash(ACCOUNT, 'EUR', 100_000)
    rig.sim.broker.set_cash(ACCOUNT, 'JPY', 10_000_000)       # converted through USD.JPY, the other way round
    rig.sim.broker.set_cash(ACCOUNT, 'GBP', 5_000)            # above the threshold, below IDEALPRO's minimum
    usd_before = cash(rig, 'USD')
    result = rig.send('cash-balancer')
    assert result.status == 'ok', result.error
    orders = {o['contract']['localSymbol']: o for o in result.result['orders']}
    assert (orders['EUR.USD']['action'], orders['EUR.USD']['quantity']) == ('SELL', 100_000)
    assert orders['USD.JPY']['action'] == 'BUY'
    assert all(o['status'] == 'Filled' for o in orders.values())
    assert cash(rig, 'EUR') == 0
    # what is left (the spread and the commission, paid in JPY) is worth less than the threshold
    assert abs(cash(rig, 'JPY')) / rig.sim.quote(usd_jpy(rig)).last < 1000
    assert cash(rig, 'GBP') == 5_000
    assert cash(rig, 'USD') > usd_before + 100_000
    kept = next(b for b in result.result['balances'] if b['currency'] == 'GBP')
    assert 'below the IDEALPRO minimum of 25,000 GBP' in kept['action']


def test_the_threshold_param_overrides_the_config_and_small_balances_stay(rig):
    rig.sim.broker.set_cash(ACCOUNT, 'EUR', 100_000)
    result = rig.send('cash-balancer', {'threshold': 500_000})
    assert result.status == 'skipped' and result.result['reason'] == 'no trades needed'
    assert 'within the threshold of 500,000.00 USD' in result.result['balances'][0]['action']
    assert cash(rig, 'EUR') == 100_000 and rig.order_log() == []


def test_a_closed_fx_market_skips_the_conversion(make_rig):
    rig = make_rig(time=HOLIDAY)
    rig.sim.broker.set_cash(ACCOUNT, 'EUR', 100_000)
    result = rig.send('cash-balancer')
    assert result.status == 'skipped' and 'EUR.USD: market closed' in result.result['reason']
    assert rig.order_log() == []
