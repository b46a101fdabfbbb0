"""What stops an order-placing run: trading disabled, risk limits, stale messages, closed markets, an unreadable store.

Each refusal names its reason in the result, and the simulated gateway's order log stays empty.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from lib.ibapi import IB, LimitOrder, Stock
from tests.trading.support import ACCOUNT, BASE_CONFIG, HOLIDAY, SPY_MACD_VIXY_CONFIG


def test_trading_disabled_in_the_store_rejects_before_connecting(rig):
    rig.store.put_settings({'tradingEnabled': False})
    result = rig.send('allocation')
    assert result.status == 'rejected' and result.error.type == 'TradingDisabled'
    assert "trading disabled: store setting tradingEnabled=false" in result.error.message and result.error.retryable is False
    assert result.gateway is None and rig.order_log() == []
    # a dry run still plans, and says trading is disabled
    planned = rig.send('allocation', dry_run=True)
    assert planned.status == 'ok' and planned.result['tradingEnabled'] is False
    assert rig.order_log() == []
    # switched on again, the same kind of message trades: the rejection held no claim
    rig.store.put_settings({'tradingEnabled': True})
    assert rig.send('allocation').status == 'ok' and len(rig.order_log()) == 1


def test_live_mode_has_trading_disabled_until_it_is_set(rig):
    live = replace(rig.settings, trading_mode='live', allow_live=True)
    rig.settings = live
    result = rig.send('allocation')
    assert result.status == 'rejected' and result.error.type == 'TradingDisabled'
    assert rig.order_log() == []


@pytest.mark.parametrize(('limits', 'named'), [
    ({'maxOrderNotional': 1000.0}, 'maxOrderNotional'),
    ({'maxOrderNlvShare': 0.1}, 'maxOrderNlvShare'),
    ({'maxRunNlvShare': 0.2}, 'maxRunNlvShare'),
    ({'allowlist': ['QQQ']}, 'allowlist'),
    ({'priceBand': 0.00001}, 'priceBand'),
])
def test_a_limit_breach_rejects_the_run_naming_the_limit(rig, limits, named):
    rig.store.put_settings({'limits': limits})
    result = rig.send('allocation')
    assert result.status == 'rejected' and result.error.type == 'RiskLimitBreached'
    assert f'{named}: ' in result.error.message
    assert rig.order_log() == []


def test_more_orders_than_max_orders_per_run_rejects(make_rig):
    rig = make_rig(BASE_CONFIG.replace('dummy = 0.5', 'dummy = 0.3\nspy-macd-vixy = 0.4') + SPY_MACD_VIXY_CONFIG)
    rig.store.put_settings({'limits': {'maxOrdersPerRun': 1}})
    result = rig.send('allocation')
    assert result.status == 'rejected' and 'maxOrdersPerRun: 2 orders > 1' in result.error.message
    assert rig.order_log() == []


def test_stale_messages_are_rejected_by_default_by_their_own_max_age_and_by_the_cap(rig):
    an_hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
    default = rig.send('allocation', published=an_hour_ago)
    assert default.status == 'rejected' and default.error.type == 'StaleMessage'
    assert 'ORDER_MAX_AGE_SECONDS 1800' in default.error.message
    explicit = rig.send('allocation', published=datetime.now(timezone.utc) - timedelta(seconds=90), max_age=60)
    assert explicit.status == 'rejected' and explicit.error.type == 'StaleMessage'
    assert rig.order_log() == []
    # maxAgeSeconds can only tighten ORDER_MAX_AGE_SECONDS for an order intent, never loosen it
    loosened = rig.send('allocation', published=an_hour_ago, max_age=7200)
    assert loosened.status == 'rejected' and 'ORDER_MAX_AGE_SECONDS 1800' in loosened.error.message
    assert rig.order_log() == []
    allowed = rig.send('allocation', published=datetime.now(timezone.utc) - timedelta(minutes=20), max_age=1500)
    assert allowed.status == 'ok'


def test_a_closed_market_skips_the_run_with_the_next_open(make_rig):
    rig = make_rig(time=HOLIDAY)
    # held from earlier; the strategy is flat on Christmas Day, so allocation wants to sell it
    rig.sim.broker.set_position(ACCOUNT, rig.instrument('SPY'), 100, 600.0)
    result = rig.send('allocation')
    assert result.status == 'skipped'
    reason = result.result['reason']
    assert 'SPY: market closed at 2026-12-25T15:00' in reason and 'next open 2026-12-28T14:30:00Z' in reason
    assert result.result['skipped'][0]['nextOpen'] == '2026-12-28T14:30:00Z'
    assert rig.order_log() == [] and rig.position('SPY') == 100


def test_nothing_to_trade_is_skipped_and_zero_quantities_are_never_sent(make_rig):
    # 2026-11-25: the dummy strategy is flat, and nothing is held
    rig = make_rig(time=datetime(2026, 11, 25, 15, 0, tzinfo=timezone.utc))
    result = rig.send('allocation')
    assert result.status == 'skipped' and result.result['reason'] == 'no trades needed'
    assert result.result['contracts'][0]['trade'] == 0 and result.result['orders'] == []
    assert rig.order_log() == []


def test_an_unreadable_store_places_nothing_now_and_is_redelivered_but_read_only_runs_go_on(rig, tmp_path):
    broken = tmp_path / 'not-a-database.sqlite3'
    broken.write_bytes(b'this is not a SQLite database' * 100)
    rig.with_store(sqlite_path=str(broken))
    result = rig.send('allocation')
    assert result.status == 'error' and result.error.type == 'StoreUnavailable' and result.error.retryable
    assert 'fail closed' in result.error.message
    assert rig.order_log() == []
    assert rig.send('summary').status == 'ok'


def test_a_refused_run_does_not_even_cancel_an_earlier_runs_order(rig):
    ib = IB()
    ib.connect(rig.sim.host, rig.sim.port, clientId=61)
    price = round(rig.sim.quote(rig.instrument('SPY')).bid * 0.9, 2)
    ib.placeOrder(Stock('SPY', 'SMART', 'USD'), LimitOrder('BUY', 10, price, orderRef='ibj:0000000000:756733',
                                                           tif='GTC', account=ACCOUNT))
    ib.sleep(0.2)
    ib.disconnect()
    rig.store.put_settings({'limits': {'maxOrderNotional': 1000.0}})
    result = rig.send('allocation')
    assert result.status == 'rejected' and 'maxOrderNotional' in result.error.message
    assert [(o.clientId, o.status) for o in rig.sim.broker.open_orders()] == [(61, 'Submitted')]
