"""Risk limits on a plan, sizing targets into whole contracts, and splitting a netted trade among strategies."""
from __future__ import annotations

import pytest

from trading.risk import CheckedOrder, RiskLimitBreached, check_limits
from trading.idempotency import RecordedOrder
from trading.ledger import internal_transfer, split_fill
from trading.orders import reduce_only
from trading.sizing import strategy_trades, target_quantity
from trading.trading_config import RiskLimits

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


def test_each_strategy_trades_its_own_change_and_what_nets_out_is_an_internal_transfer():
    # dummy goes from +666 to 0 while the MACD goes from 0 to +1199: the account buys 533
    trades = strategy_trades(533, {'dummy': 0, 'macd': 1199}, {'dummy': 666})
    assert trades == {'dummy': -666, 'macd': 1199}
    assert internal_transfer(trades) == {'dummy': -666, 'macd': 666}
    # the market buy goes to the buyers only, never a negative share to the seller
    assert split_fill(533, RecordedOrder('ibj:0:1', quantity=533, strategies=trades)) == {'macd': 533}
    assert split_fill(-40, RecordedOrder('ibj:0:1', quantity=100, strategies={'a': -60, 'b': -40, 'c': 20})) == {'a': -24, 'b': -16}
    # a close of every position takes manual holdings too: that part of each fill is no strategy's
    assert split_fill(-740, RecordedOrder('ibj:0:1', quantity=740, strategies={'dummy': -100})) == {'dummy': -100}
    # what the ledger does not explain (an unknown position, pending orders) is shared by the targets
    assert strategy_trades(-100, {'solo': 0}, {}) == {'solo': -100}
    assert strategy_trades(60, {'a': 100, 'b': 50}, {'a': 80, 'b': 20}) == pytest.approx({'a': 20 + 10 * 100 / 150,
                                                                                          'b': 30 + 10 * 50 / 150})
    assert strategy_trades(4, {}, {}) == {} and internal_transfer({'a': 5, 'b': 3}) == {}


@pytest.mark.parametrize('wanted, position, pending, allowed', [
    (-320, 320, 0, -320),        # a close of the whole position
    (-320, 320, -160, -160),     # our working sell closes half already: only the rest
    (-320, 320, 50, -320),       # a working buy is no reason to sell more than is held
    (-500, 320, 0, -320),        # never past flat
    (-320, 0, 0, 0),             # nothing held: nothing to close
    (+10, 320, 0, 0),            # a buy on a long position grows it
    (-320, 320, -400, 0),        # our working sells close more than is held: nothing bought back
    (+40, -40, 0, +40),          # a short is closed by a buy
])
def test_a_reduce_only_trade_goes_toward_flat_and_never_past_it(wanted, position, pending, allowed):
    assert reduce_only(wanted, position, pending) == allowed
