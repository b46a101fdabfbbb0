"""Risk limits on a plan, sizing targets into whole contracts, and splitting a netted trade among strategies."""
from __future__ import annotations

import pytest

from lib.risk import CheckedOrder, RiskLimitBreached, check_limits
from lib.sizing import attribute, target_quantity
from lib.trading_config import RiskLimits

LIMITS = RiskLimits(max_order_notional=50_000, max_order_nlv_share=0.1, max_run_nlv_share=0.08, max_orders_per_run=2,
                    allowlist=('SPY', 'EUR'), price_band=0.05)
NLV = 1_000_000


def order(name='SPY', notional=10_000.0, price=600.0, close=600.0, symbols=None) -> CheckedOrder:
    return CheckedOrder(name, symbols or (name,), price, close, notional)


def breached(*orders) -> list[str]:
    with pytest.raises(RiskLimitBreached) as caught:
        check_limits(list(orders), LIMITS, NLV, 'USD')
    return caught.value.limits


def test_a_plan_within_every_limit_passes():
    check_limits([order(), order('EUR.USD', symbols=('EUR', 'EUR.USD'), price=1.16, close=1.15)], LIMITS, NLV, 'USD')
    check_limits([], LIMITS, NLV, 'USD')


@pytest.mark.parametrize(('orders', 'limit'), [
    ([order(notional=60_000)], 'maxOrderNotional'),
    ([order(), order(), order()], 'maxOrdersPerRun'),
    ([order('QQQ')], 'allowlist'),
    ([order(price=640.0)], 'priceBand'),
    ([order(close=None)], 'priceBand'),
    ([order(notional=45_000), order(notional=45_000, name='EUR', symbols=('EUR',))], 'maxRunNlvShare'),
])
def test_each_limit_is_named_when_broken(orders, limit):
    assert breached(*orders) == [limit]


def test_the_nlv_share_of_one_order_and_every_breach_at_once():
    with pytest.raises(RiskLimitBreached) as caught:
        check_limits([order(notional=20_000)], LIMITS, 100_000, 'USD')
    assert caught.value.limits == ['maxOrderNlvShare', 'maxRunNlvShare']
    assert 'SPY 20,000.00 USD is 20.00% of net liquidation 100,000.00 USD > 10.00%' in str(caught.value)
    assert breached(order('QQQ', notional=60_000, price=700.0)) == ['allowlist', 'maxOrderNotional', 'priceBand']


def test_no_net_liquidation_fails_closed():
    with pytest.raises(RiskLimitBreached) as caught:
        check_limits([order()], LIMITS, 0.0, 'USD')
    assert 'maxOrderNlvShare' in caught.value.limits


def test_target_quantities_round_toward_zero():
    assert target_quantity(1.0, 100_000, 600.0, 1.0, 1.0) == 166
    assert target_quantity(-1.0, 100_000, 600.0, 1.0, 1.0) == -166
    assert target_quantity(0.3, 10_000, 100.0, 1.0, 1.0) == 30           # 29.999999999999996 in floats
    assert target_quantity(1.0, 100_000, 21_500.0, 2.0, 1.0) == 2         # futures: price x multiplier
    assert target_quantity(1.0, 100_000, 100.0, 1.0, 1.25) == 800         # contract currency worth 1.25 base
    with pytest.raises(ValueError):
        target_quantity(1.0, 100_000, 0.0, 1.0, 1.0)


def test_a_netted_trade_is_split_by_each_strategys_own_change():
    assert attribute(-162, {'dummy': 485, 'macd': -647}, {}) == {'dummy': 485, 'macd': -647}
    # only one strategy changed: the trade is all its own
    assert attribute(50, {'a': 100, 'b': 50}, {'a': 100, 'b': 0}) == {'a': 0, 'b': 50}
    # what the changes do not explain is shared in proportion to them, and the parts add up
    split = attribute(60, {'a': 100, 'b': 50}, {'a': 80, 'b': 20})
    assert split == pytest.approx({'a': 24, 'b': 36}) and sum(split.values()) == pytest.approx(60)
    assert attribute(7, {'solo': 3}, {'solo': 0}) == {'solo': 7}
    assert attribute(4, {}, {}) == {}
