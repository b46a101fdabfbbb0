"""The allocation intent end to end through the handler, against the simulated gateway and a real store."""
from __future__ import annotations

import math
import re

from functions.render import headline
from lib.ibapi import IB, LimitOrder, Stock

from strategies.base import Bar, MarketData
from strategies.dummy import daily_signal
from strategies.registry import strategy_names
from strategies.spy_macd_vixy import SpyMacdVixy
from tests.trading.support import ACCOUNT, BASE_CONFIG, OPEN_TIME, SPY_MACD_VIXY_CONFIG


def shares_for(weight: float, budget: float, price: float) -> float:
    return math.trunc(weight * budget / price)


def test_allocation_moves_positions_to_the_targets_and_a_second_run_places_nothing(rig):
    nlv = rig.net_liquidation()
    first = rig.send('allocation', {'strategies': ['dummy']})
    assert first.status == 'ok', first.error
    price = rig.sim.quote(rig.instrument('SPY')).ask
    weight = daily_signal('dummy', OPEN_TIME.date())
    assert weight == 1
    expected = shares_for(weight, 0.5 * nlv, price)
    assert abs(rig.position('SPY') - expected) <= 1          # the price moves a little while the test runs
    assert [(o.instrument.symbol, o.action, o.status) for o in rig.order_log()] == [('SPY', 'BUY', 'Filled')]
    placed = first.result['orders'][0]
    assert placed['orderRef'].startswith(first.result['orderRefPrefix'] + ':')
    assert placed['strategies'] == {'dummy': placed['quantity']}
    assert placed['acknowledged'] and placed['status'] == 'Filled' and placed['permId']
    assert rig.store.get_targets('dummy')['targets'] == {'SPY': 1.0}

    again = rig.send('allocation', {'strategies': ['dummy']}, key='second-run')
    assert again.status == 'skipped' and again.result['reason'] == 'no trades needed'
    assert len(rig.order_log()) == 1


def test_two_strategies_on_one_contract_are_summed_and_the_trade_split_between_them(make_rig):
    rig = make_rig(BASE_CONFIG.replace('dummy = 0.5', 'dummy = 0.3\nspy-macd-vixy = 0.4') + SPY_MACD_VIXY_CONFIG)
    nlv = rig.net_liquidation()
    spy, vixy = rig.instrument('SPY'), rig.instrument('VIXY')
    history = [Bar(b.date, b.open, b.high, b.low, b.close, b.volume)
               for b in rig.sim.prices.bars(spy, rig.sim.clock.now(), '200 D', '1 day', 'TRADES', True)]
    macd_targets = SpyMacdVixy({}).targets(MarketData(OPEN_TIME.date(), {'SPY': history}))
    assert macd_targets is not None, 'the seeded prices give the MACD an opinion on this day'
    result = rig.send('allocation')
    assert result.status == 'ok', result.error
    spy_price, vixy_price = rig.sim.quote(spy).last, rig.sim.quote(vixy).last
    expected_spy = shares_for(1.0, 0.3 * nlv, spy_price) + shares_for(macd_targets['SPY'], 0.4 * nlv, spy_price)
    expected_vixy = shares_for(macd_targets['VIXY'], 0.4 * nlv, vixy_price)
    assert abs(rig.position('SPY') - expected_spy) <= 2
    assert abs(rig.position('VIXY') - expected_vixy) <= 1
    spy_order = next(o for o in result.result['orders'] if o['contract']['symbol'] == 'SPY')
    assert set(spy_order['strategies']) == {'dummy', 'spy-macd-vixy'}
    assert sum(spy_order['strategies'].values()) == spy_order['quantity'] * (1 if spy_order['action'] == 'BUY' else -1)
    assert result.result['strategies']['spy-macd-vixy']['targets'] == macd_targets


def test_a_strategy_without_an_opinion_keeps_its_stored_targets_and_one_that_fails_is_never_liquidated(make_rig):
    config = BASE_CONFIG.replace('dummy = 0.5', 'dummy = 0.5\nspy-macd-vixy = 0.2') + SPY_MACD_VIXY_CONFIG
    # a lookback too short for MACD(12, 26, 9): the strategy has no opinion
    rig = make_rig(config.replace('lookback = "200 D"', 'lookback = "20 D"'))
    rig.store.put_targets('spy-macd-vixy', {'VIXY': 1.0, 'SPY': 0.0}, 'earlier-run', OPEN_TIME)
    nlv = rig.net_liquidation()
    result = rig.send('allocation', {'strategies': ['spy-macd-vixy']})
    assert result.status == 'ok', result.error
    report = result.result['strategies']['spy-macd-vixy']
    assert (report['status'], report['targetsSource'], report['targets']) == ('no-opinion', 'stored',
                                                                              {'VIXY': 1.0, 'SPY': 0.0})
    vixy_price = rig.sim.quote(rig.instrument('VIXY')).ask
    assert abs(rig.position('VIXY') - shares_for(1.0, 0.2 * nlv, vixy_price)) <= 1
    assert rig.store.get_targets('spy-macd-vixy')['runId'] == 'earlier-run'    # not overwritten

    # the historical-data service goes down: the strategy errs, its VIXY position stays as it is
    held = rig.position('VIXY')
    rig.sim.faults.hist_outage = True
    broken = rig.send('allocation', {'strategies': ['spy-macd-vixy']}, key='during-outage')
    report = broken.result['strategies']['spy-macd-vixy']
    assert report['status'] == 'error' and 'HistoricalDataUnavailable' in report['error']
    assert report['targetsSource'] == 'stored'
    assert rig.position('VIXY') == held

    # without stored targets a failing strategy's contracts are not touched at all; a run that could evaluate
    # no strategy is not a quiet `skipped` but an error, retryable since an outage passes
    rig.store.put_targets('spy-macd-vixy', {}, 'reset', OPEN_TIME)
    untouched = rig.send('allocation', {'strategies': ['spy-macd-vixy']}, key='no-stored-targets')
    assert untouched.status == 'error' and untouched.result['contracts'] == []
    assert (untouched.error.type, untouched.error.retryable) == ('StrategiesFailed', True)
    assert rig.position('VIXY') == held


def test_a_historical_data_outage_names_the_failed_strategy_in_problems_and_in_the_headline(make_rig):
    config = BASE_CONFIG.replace('dummy = 0.5', 'dummy = 0.5\nspy-macd-vixy = 0.2') + SPY_MACD_VIXY_CONFIG
    rig = make_rig(config)
    rig.sim.faults.hist_outage = True
    # the only strategy fails: nothing could be evaluated, so the run is an error, not `skipped`
    alone = rig.send('allocation', {'strategies': ['spy-macd-vixy']}, key='alone')
    assert alone.status == 'error' and alone.error.type == 'StrategiesFailed' and alone.error.retryable
    assert 'spy-macd-vixy' in alone.error.message and 'HistoricalDataUnavailable' in alone.error.message
    assert [p['code'] for p in alone.result['problems']] == ['strategy-failed']
    assert alone.result['problems'][0]['message'].startswith('spy-macd-vixy: HistoricalDataUnavailable')
    assert alone.result['degraded'] is True and rig.order_log() == []
    title = headline(alone.to_wire(), 120).splitlines()[0]
    assert title.startswith('allocation: ERROR in ') and 'StrategiesFailed' in title and 'spy-macd-vixy' in title
    assert len(title) <= 120

    # beside a strategy on the same contract (dummy trades SPY), the failed one's contracts are left alone, so
    # nothing could be evaluated either
    shared = rig.send('allocation', {'strategies': ['dummy', 'spy-macd-vixy']}, key='shared')
    assert shared.status == 'error' and shared.error.type == 'StrategiesFailed' and rig.order_log() == []
    assert 'spy-macd-vixy' in headline(shared.to_wire(), 120).splitlines()[0]

    # beside a strategy that trades elsewhere, the run trades what it can and says in its first line what failed
    rig = make_rig(config.replace('symbol = "SPY"', 'symbol = "QQQ"'))
    rig.sim.faults.hist_outage = True
    both = rig.send('allocation', {'strategies': ['dummy', 'spy-macd-vixy']}, key='both')
    assert both.status == 'ok', both.error
    assert [p['code'] for p in both.result['problems']] == ['strategy-failed'] and both.result['degraded'] is True
    title = headline(both.to_wire(), 120).splitlines()[0]
    assert re.match(r'allocation: OK in [\d.,]+ ms — 1 order\(s\) placed, 1 filled; problem: spy-macd-vixy: '
                    r'HistoricalDataUnavailable', title), title
    assert len(title) <= 120


def test_manual_positions_outside_the_universe_are_left_alone(rig):
    rig.sim.broker.set_position(ACCOUNT, rig.instrument('AAPL'), 30, 200.0)
    result = rig.send('allocation', {'strategies': ['dummy']})
    assert result.status == 'ok'
    assert [c['contract']['symbol'] for c in result.result['contracts']] == ['SPY']
    assert rig.position('AAPL') == 30


def test_stale_open_orders_of_an_earlier_run_are_cancelled_through_their_client_id(rig):
    spy = rig.instrument('SPY')
    ib = IB()
    ib.connect(rig.sim.host, rig.sim.port, clientId=77)
    stale = LimitOrder('BUY', 10, round(rig.sim.quote(spy).bid * 0.9, 2), orderRef='ibj:0000000000:756733',
                       tif='GTC', account=ACCOUNT)
    ib.placeOrder(Stock('SPY', 'SMART', 'USD'), stale)
    ib.sleep(0.2)
    ib.disconnect()
    assert [o.clientId for o in rig.sim.broker.open_orders()] == [77]

    result = rig.send('allocation', {'strategies': ['dummy']})
    assert result.status == 'ok', result.error
    assert [(c['clientId'], c['cancelled']) for c in result.result['cancelledStaleOrders']] == [(77, True)]
    assert rig.sim.broker.open_orders() == []
    cancelled = [o for o in rig.sim.broker.completed_orders() if o.clientId == 77]
    assert [o.status for o in cancelled] == ['Cancelled']
    # the cancelled order no longer counts: the whole target was bought
    assert result.result['contracts'][0]['pending'] == 0


def test_dry_run_places_nothing_and_reports_whatif_margin_and_commission(rig):
    result = rig.send('allocation', {'strategies': ['dummy']}, dry_run=True)
    assert result.status == 'ok' and result.dry_run is True
    assert rig.order_log() == [] and rig.sim.broker.executions() == []
    planned = result.result['orders'][0]
    assert planned['action'] == 'BUY' and planned['quantity'] > 0
    assert planned['whatIf']['initMarginChange'] > 0 and planned['whatIf']['commission'] > 0
    assert planned['whatIf']['commissionCurrency'] == 'USD'
    assert rig.store.get_targets('dummy') is None
    # a dry run holds no claim: the real run that follows is not a duplicate
    real = rig.send('allocation', {'strategies': ['dummy']})
    assert real.status == 'ok' and len(rig.order_log()) == 1


def test_a_dry_run_param_is_refused_and_places_nothing(rig):
    """dryRun is the request's (one flag); inside params it is an unknown key, refused before connecting."""
    result = rig.send('allocation', {'strategies': ['dummy'], 'dryRun': True})
    assert result.status == 'rejected' and result.error.type == 'InvalidParams'
    assert 'params.dryRun: unknown key' in result.error.message
    assert rig.order_log() == [] and rig.sim.counters() == []


def test_order_policy_override_sends_a_marketable_limit_on_the_tick_grid(rig):
    result = rig.send('allocation', {'strategies': ['dummy'],
                                     'orderPolicy': {'orderType': 'marketable-limit', 'limitOffsetBps': 10}})
    assert result.status == 'ok', result.error
    order = rig.order_log()[0]
    assert order.orderType == 'LMT' and order.tif == 'DAY'
    assert order.lmtPrice > rig.sim.quote(rig.instrument('SPY')).last
    assert round(order.lmtPrice / 0.01, 6).is_integer()
    assert order.status == 'Filled'


def test_unknown_strategies_and_extra_params_are_rejected_with_the_known_names(rig):
    unknown = rig.send('allocation', {'strategies': ['nope']})
    assert unknown.status == 'rejected' and unknown.error.type == 'InvalidParams'
    assert f'known strategies: {", ".join(strategy_names())}' in unknown.error.message
    extra = rig.send('allocation', {'strategy': 'dummy'})
    assert extra.status == 'rejected' and 'params.strategy' in extra.error.message
    assert rig.order_log() == []


def test_no_price_for_any_contract_is_a_retryable_error_and_some_prices_are_not():
    from intents.allocation import Evaluation, _nothing_evaluated
    from lib.ibapi import Contract
    from trading.market_data import ContractInfo, Quote

    spy, qqq = (ContractInfo(Contract(conId=con_id, symbol=symbol, localSymbol=symbol), 0.01, '', 'US/Eastern')
                for con_id, symbol in ((1, 'SPY'), (2, 'QQQ')))
    evaluated = [Evaluation('dummy', 'ok', 0.5, {'SPY': spy, 'QQQ': qqq}, {'SPY': 0.5, 'QQQ': 0.5}, 'new', {})]
    nothing = Quote(None, None, None, None)
    failure = _nothing_evaluated(evaluated, {1: spy, 2: qqq}, {1: nothing, 2: nothing}, set())
    assert (failure.type, failure.retryable) == ('NoPrices', True) and 'SPY, QQQ' in failure.message
    assert _nothing_evaluated(evaluated, {1: spy, 2: qqq}, {1: nothing, 2: Quote(1.0, 1.1, 1.05, 1.0)}, set()) is None
