"""The paper broker on its own: fills, commissions, PnL, margin, account values and persistence.

Uses the real SimClock, Universe and PriceModel. The clock runs in real time, so a test sets it to a whole
second right before reading values that must agree with each other (prices change once a second).
"""
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from simulator.broker import Broker, OrderError
from simulator.clock import SimClock
from simulator.model import Order
from simulator.prices import PriceModel
from simulator.universe import Universe

T0 = datetime(2026, 11, 25, 15, 0, tzinfo=timezone.utc)   # Wednesday 10:00 New York: every market is open
EVENING = datetime(2026, 11, 25, 23, 0, tzinfo=timezone.utc)   # 18:00 New York: extended hours only
ACCOUNT = 'DU1234567'
REPO = Path(__file__).resolve().parents[2]


class Recorder:
    """A BrokerListener that remembers what it was told."""

    def __init__(self):
        self.events = []

    def order_changed(self, order):
        self.events.append(('order', order.orderId, order.status, order.filled))

    def executed(self, execution):
        self.events.append(('exec', execution.orderId, execution.shares))

    def account_changed(self, account, conIds):
        self.events.append(('account', account, tuple(conIds)))


@pytest.fixture
def env():
    clock = SimClock(T0)
    universe = Universe(T0.date())
    stock = {s: universe.resolve(symbol=s, secType='STK')[0] for s in ('SPY', 'QQQ', 'VIXY')}
    return SimpleNamespace(
        clock=clock, universe=universe, prices=PriceModel(7, universe), **stock,
        EURUSD=universe.resolve(localSymbol='EUR.USD')[0], USDJPY=universe.resolve(localSymbol='USD.JPY')[0],
        MNQ=universe.resolve(symbol='MNQ', secType='FUT')[0])


def make_broker(env, cash=1_000_000.0, accounts=(ACCOUNT,)):
    return Broker(list(accounts), 'USD', cash, env.clock, env.universe, env.prices, listener=Recorder())


@pytest.fixture
def broker(env):
    return make_broker(env)


def order(inst, action, qty, order_type='MKT', *, order_id, client_id=1, **kw):
    return Order(orderId=order_id, clientId=client_id, permId=0, account=ACCOUNT, instrument=inst, action=action,
                 totalQuantity=qty, orderType=order_type, **kw)


def values(broker):
    return {(key, ccy): value for key, value, ccy in broker.account_values(ACCOUNT)}


def money(broker, key, ccy='USD'):
    return float(values(broker)[key, ccy])


def test_market_buy_fills_at_the_ask_and_moves_position_cash_and_commission(env, broker):
    broker.place(order(env.SPY, 'BUY', 100, order_id=1))

    [ex] = broker.executions()
    assert (ex.side, ex.shares, ex.account) == ('BOT', 100, ACCOUNT)
    assert ex.price == env.prices.quote(env.SPY, ex.time).ask
    assert (ex.commission, ex.commissionCurrency, ex.realizedPNL) == (1.0, 'USD', 0.0)   # 100 × $0.005 → $1 minimum
    [(account, pos)] = broker.positions()
    assert account == ACCOUNT and pos.quantity == 100
    assert pos.avgCost == pytest.approx(ex.price + 0.01)           # IB folds the opening commission into the cost
    assert money(broker, 'CashBalance') == pytest.approx(1_000_000 - 100 * ex.price - 1.0, abs=0.005)
    assert broker.listener.events == [('order', 1, 'Submitted', 0), ('exec', 1, 100), ('order', 1, 'Filled', 100),
                                      ('account', ACCOUNT, (env.SPY.conId,))]
    [done] = broker.completed_orders()
    assert (done.status, done.completedStatus, done.avgFillPrice, done.remaining) == ('Filled', 'Filled', ex.price, 0)
    assert re.fullmatch(r'[0-9a-f]{8}\.[0-9a-f]{8}\.01\.01', ex.execId) and ex.permId == done.permId != 0


@pytest.mark.parametrize('symbol, qty, expected', [
    ('SPY', 100, lambda value: 1.00),                 # $0.005 × 100 = $0.50, raised to the $1 minimum
    ('SPY', 1000, lambda value: 5.00),                # $0.005 per share
    ('VIXY', 1, lambda value: 0.01 * value),          # capped at 1% of the trade value
    ('MNQ', 3, lambda value: 2.55),                   # $0.85 per contract
    ('EURUSD', 10_000, lambda value: 2.00),           # 0.2 bps would be $0.23: the $2 minimum applies
    ('EURUSD', 20_000_000, lambda value: 0.00002 * value),
])
def test_commission_schedule(env, broker, symbol, qty, expected):
    inst = getattr(env, symbol)
    broker.place(order(inst, 'BUY', qty, order_id=1))
    [ex] = broker.executions()
    value = qty * ex.price * inst.price_multiplier
    assert ex.commission == pytest.approx(expected(value))
    assert ex.commissionCurrency == 'USD'


def test_net_liquidation_is_cash_plus_market_value_after_stock_forex_and_futures_trades(env, broker):
    trades = [(env.SPY, 'BUY', 100), (env.EURUSD, 'BUY', 10_000), (env.MNQ, 'BUY', 2),
              (env.QQQ, 'SELL', 50), (env.USDJPY, 'SELL', 5_000), (env.SPY, 'SELL', 40)]
    for order_id, (inst, action, qty) in enumerate(trades, start=1):
        broker.place(order(inst, action, qty, order_id=order_id))
    fills = {ex.instrument.localSymbol: ex for ex in broker.executions()}
    assert len(fills) == 5 and len(broker.executions()) == 6

    now = T0 + timedelta(minutes=10)
    env.clock.set(now)
    rows = values(broker)
    portfolio = broker.portfolio(ACCOUNT)
    rates = {'USD': 1.0, 'EUR': env.prices.price(env.EURUSD, now), 'JPY': 1 / env.prices.price(env.USDJPY, now)}
    cash = {ccy: float(rows['CashBalance', ccy]) for ccy in rates}
    assert cash['EUR'] == 10_000                                   # forex moves both currencies
    assert cash['JPY'] == pytest.approx(5_000 * fills['USD.JPY'].price - fills['USD.JPY'].commission, abs=0.005)
    for ccy, rate in rates.items():
        assert float(rows['ExchangeRate', ccy]) == pytest.approx(rate, rel=1e-4)
    market_value = sum(item.marketValue * rates[item.instrument.currency]
                       for item in portfolio if item.instrument.secType != 'CASH')
    cash_in_base = sum(cash[ccy] * rates[ccy] for ccy in rates)
    assert float(rows['NetLiquidation', 'USD']) == pytest.approx(cash_in_base + market_value, abs=0.05)
    assert float(rows['TotalCashValue', 'USD']) == pytest.approx(cash_in_base, abs=0.05)
    assert float(rows['CashBalance', 'BASE']) == pytest.approx(cash_in_base, abs=0.05)
    assert float(rows['NetLiquidationByCurrency', 'BASE']) == float(rows['NetLiquidation', 'USD'])
    assert {item.instrument.localSymbol: item.position for item in portfolio} == {
        'SPY': 60, 'EUR.USD': 10_000, env.MNQ.localSymbol: 2, 'QQQ': -50, 'USD.JPY': -5_000}


def test_margin_values_follow_the_reg_t_rules(env, broker):
    broker.place(order(env.SPY, 'BUY', 100, order_id=1))
    broker.place(order(env.QQQ, 'SELL', 10, order_id=2))
    broker.place(order(env.MNQ, 'BUY', 1, order_id=3))
    env.clock.set(T0 + timedelta(seconds=5))
    spy, qqq = (env.prices.price(i, env.clock.now()) for i in (env.SPY, env.QQQ))
    init, maint = money(broker, 'InitMarginReq'), money(broker, 'MaintMarginReq')
    assert init == pytest.approx(0.25 * 100 * spy + 0.30 * 10 * qqq + 2000, abs=0.01)
    assert maint == pytest.approx(0.25 * 100 * spy + 0.30 * 10 * qqq + 1800, abs=0.01)
    nlv = money(broker, 'NetLiquidation')
    assert money(broker, 'AvailableFunds') == pytest.approx(nlv - init, abs=0.01)
    assert money(broker, 'ExcessLiquidity') == pytest.approx(nlv - maint, abs=0.01)
    assert money(broker, 'BuyingPower') == pytest.approx(4 * (nlv - init), abs=0.05)
    assert values(broker)['AccountType', ''] == 'INDIVIDUAL'


def test_round_trip_realizes_the_price_difference_net_of_commissions(env, broker):
    broker.place(order(env.SPY, 'BUY', 100, order_id=1))
    later = T0 + timedelta(hours=1)
    env.clock.set(later)
    env.prices.set_price(env.SPY.conId, env.prices.price(env.SPY, later) * 1.05, later)
    broker.place(order(env.SPY, 'SELL', 100, order_id=2))

    buy, sell = broker.executions()
    realized = (sell.price - buy.price) * 100 - buy.commission - sell.commission
    assert realized > 0
    assert (buy.realizedPNL, sell.realizedPNL) == (0.0, pytest.approx(realized))
    assert broker.positions() == [] and broker.portfolio(ACCOUNT) == []
    assert broker.portfolio_item(ACCOUNT, env.SPY.conId).position == 0
    assert broker.portfolio_item(ACCOUNT, env.SPY.conId).realizedPNL == pytest.approx(realized)
    assert money(broker, 'RealizedPnL') == money(broker, 'RealizedPnL', 'BASE') == pytest.approx(realized, abs=0.005)
    assert money(broker, 'NetLiquidation') == pytest.approx(1_000_000 + realized, abs=0.005)


def test_selling_through_a_long_position_opens_a_short_at_the_sale_price(env, broker):
    broker.place(order(env.SPY, 'BUY', 100, order_id=1))
    broker.place(order(env.SPY, 'SELL', 150, order_id=2))
    buy, sell = broker.executions()
    [(_, pos)] = broker.positions()
    assert pos.quantity == -50
    assert sell.commission == 1.0
    # a third of the commission opens the short, two thirds close the long
    assert pos.avgCost == pytest.approx(sell.price - sell.commission / 3 / 50)
    assert sell.realizedPNL == pytest.approx((sell.price - buy.price) * 100 - buy.commission - sell.commission * 2 / 3)


def test_limit_order_rests_until_the_price_crosses(env, broker):
    limit = round(env.prices.price(env.SPY, T0) * 0.98, 2)
    broker.place(order(env.SPY, 'BUY', 10, 'LMT', lmtPrice=limit, order_id=1, tif='GTC'))
    broker.tick()
    [live] = broker.open_orders()
    assert (live.status, live.filled) == ('Submitted', 0) and broker.executions() == []

    later = T0 + timedelta(minutes=1)
    env.clock.set(later)
    env.prices.set_price(env.SPY.conId, limit - 0.50, later)
    broker.tick()
    [ex] = broker.executions()
    assert ex.price == env.prices.quote(env.SPY, ex.time).ask <= limit
    assert broker.open_orders() == [] and live.status == 'Filled'


def test_stop_order_triggers_when_last_crosses_and_fills_at_market(env, broker):
    stop = round(env.prices.price(env.SPY, T0) - 5, 2)
    broker.place(order(env.SPY, 'SELL', 10, 'STP', auxPrice=stop, order_id=1))
    [live] = broker.open_orders()
    assert live.status == 'PreSubmitted' and not live.stopTriggered

    later = T0 + timedelta(minutes=1)
    env.clock.set(later)
    env.prices.set_price(env.SPY.conId, stop - 1, later)
    broker.tick()
    [ex] = broker.executions()
    assert live.stopTriggered and live.status == 'Filled'
    assert ex.side == 'SLD' and ex.price == env.prices.quote(env.SPY, ex.time).bid


def test_only_the_placing_client_can_cancel_and_only_once(env, broker):
    limit = round(env.prices.price(env.SPY, T0) * 0.9, 2)
    broker.place(order(env.SPY, 'BUY', 10, 'LMT', lmtPrice=limit, order_id=1, client_id=1))
    with pytest.raises(OrderError) as other:
        broker.cancel(2, 1)
    assert other.value.code == 10147
    assert [o.orderId for o in broker.open_orders()] == [1]

    cancelled = broker.cancel(1, 1)
    assert cancelled.status == 'Cancelled' and broker.open_orders() == []
    with pytest.raises(OrderError) as again:
        broker.cancel(1, 1)
    assert again.value.code == 161

    broker.place(order(env.SPY, 'BUY', 1, order_id=2))
    with pytest.raises(OrderError) as filled:
        broker.cancel(1, 2)
    assert filled.value.code == 161
    assert [o.status for o in broker.completed_orders()] == ['Cancelled', 'Filled']


def test_reusing_a_finished_order_id_is_a_duplicate(env, broker):
    broker.place(order(env.SPY, 'BUY', 1, order_id=5))
    with pytest.raises(OrderError) as dup:
        broker.place(order(env.SPY, 'BUY', 1, order_id=5))
    assert dup.value.code == 103
    assert len(broker.executions()) == 1
    broker.place(order(env.SPY, 'BUY', 1, order_id=5, client_id=2))   # ids are per client
    assert len(broker.executions()) == 2


def test_modifying_a_live_order_keeps_its_perm_id(env, broker):
    price = env.prices.price(env.SPY, T0)
    broker.place(order(env.SPY, 'BUY', 10, 'LMT', lmtPrice=round(price * 0.9, 2), order_id=1))
    [live] = broker.open_orders()
    perm_id = live.permId
    with pytest.raises(OrderError) as mismatch:
        broker.place(order(env.SPY, 'SELL', 10, 'LMT', lmtPrice=round(price * 0.9, 2), order_id=1))
    assert mismatch.value.code == 105
    broker.place(order(env.SPY, 'BUY', 20, 'LMT', lmtPrice=round(price * 1.1, 2), order_id=1))
    [ex] = broker.executions()
    assert ex.permId == perm_id and ex.shares == 20
    assert [(o.permId, o.status) for o in broker.completed_orders()] == [(perm_id, 'Filled')]


def test_global_cancel_cancels_every_clients_live_orders(env, broker):
    limit = round(env.prices.price(env.SPY, T0) * 0.9, 2)
    broker.place(order(env.SPY, 'BUY', 1, 'LMT', lmtPrice=limit, order_id=1, client_id=1))
    broker.place(order(env.SPY, 'BUY', 1, 'LMT', lmtPrice=limit, order_id=1, client_id=2))
    assert len(broker.open_orders(1)) == 1 and len(broker.open_orders()) == 2
    cancelled = broker.global_cancel()
    assert sorted(o.clientId for o in cancelled) == [1, 2]
    assert broker.open_orders() == [] and all(o.status == 'Cancelled' for o in cancelled)


def test_what_if_reports_margin_and_changes_nothing(env, broker):
    broker.place(order(env.SPY, 'BUY', 100, order_id=1))
    before, events = broker.to_dict(), list(broker.listener.events)
    env.clock.set(T0 + timedelta(seconds=30))
    ask = env.prices.quote(env.SPY, env.clock.now()).ask
    what = broker.what_if(order(env.SPY, 'BUY', 1000, order_id=2))
    assert what.initMarginChange == pytest.approx(0.25 * 1000 * ask, rel=1e-3)
    assert what.initMarginAfter == pytest.approx(what.initMarginBefore + what.initMarginChange)
    assert (what.commission, what.commissionCurrency) == (5.0, 'USD')
    assert what.equityWithLoanChange < 0
    assert broker.to_dict() == before and broker.listener.events == events
    assert broker.next_order_id(1) == 2


def test_order_beyond_buying_power_is_rejected(env):
    broker = make_broker(env, cash=10_000)
    price = env.prices.price(env.SPY, T0)
    with pytest.raises(OrderError) as rejected:
        broker.place(order(env.SPY, 'BUY', math.ceil(4.5 * 10_000 / price), order_id=1))
    assert rejected.value.code == 201 and 'YOUR ORDER IS NOT ACCEPTED' in rejected.value.message
    assert broker.open_orders() == [] and broker.executions() == []
    [kept] = broker.completed_orders()                 # TWS keeps a rejected order, with its reason
    assert (kept.orderId, kept.status, kept.completedStatus, kept.filled) == (1, 'Cancelled', rejected.value.message, 0)
    assert kept.permId > 0 and rejected.value.rejected.status == 'Inactive'
    broker.place(order(env.SPY, 'BUY', math.floor(3.5 * 10_000 / price), order_id=2))
    assert len(broker.executions()) == 1


@pytest.mark.parametrize('changes', [
    dict(totalQuantity=0), dict(orderType='LMT'), dict(orderType='STP'), dict(orderType='TRAIL'),
    dict(tif='GTD'), dict(account='DU9999999'), dict(action='SHORT')])
def test_invalid_orders_are_rejected(env, broker, changes):
    bad = order(env.SPY, 'BUY', 10, order_id=1)
    for name, value in changes.items():
        setattr(bad, name, value)
    with pytest.raises(OrderError) as rejected:
        broker.place(bad)
    assert rejected.value.code == 201
    assert broker.open_orders() == [] and broker.completed_orders() == [] and broker.executions() == []


def test_reject_fault_refuses_new_orders(env, broker):
    broker.faults.reject_orders = 'Simulated outage'
    with pytest.raises(OrderError) as rejected:
        broker.place(order(env.SPY, 'BUY', 10, order_id=1))
    assert rejected.value.code == 201 and rejected.value.message == 'Order rejected - reason:Simulated outage'
    assert broker.executions() == [] and money(broker, 'CashBalance') == 1_000_000
    broker.faults.reject_orders = False
    broker.place(order(env.SPY, 'BUY', 10, order_id=2))
    assert len(broker.executions()) == 1


def test_partial_fill_fault_leaves_the_rest_working(env, broker):
    broker.faults.partial_fill = 0.4
    broker.place(order(env.SPY, 'BUY', 100, order_id=1))
    [live] = broker.open_orders()
    assert (live.status, live.filled, live.remaining) == ('Submitted', 40, 60)
    broker.tick()
    assert live.filled == 40

    broker.faults.partial_fill = None
    broker.tick()
    assert live.status == 'Filled' and broker.open_orders() == []
    assert [(ex.shares, ex.cumQty) for ex in broker.executions()] == [(40, 40), (60, 100)]
    assert broker.positions()[0][1].quantity == 100


def test_ioc_cancels_what_cannot_fill_at_once(env, broker):
    limit = round(env.prices.price(env.SPY, T0) * 0.9, 2)
    broker.place(order(env.SPY, 'BUY', 10, 'LMT', lmtPrice=limit, tif='IOC', order_id=1))
    assert broker.open_orders() == [] and broker.executions() == []
    assert [o.status for o in broker.completed_orders()] == ['Cancelled']


def test_day_order_expires_at_the_end_of_the_liquid_session(env, broker):
    limit = round(env.prices.price(env.SPY, T0) * 0.9, 2)
    broker.place(order(env.SPY, 'BUY', 10, 'LMT', lmtPrice=limit, order_id=1))
    broker.place(order(env.SPY, 'BUY', 10, 'LMT', lmtPrice=limit, order_id=2, tif='GTC'))
    close = datetime(2026, 11, 25, 21, 0, tzinfo=timezone.utc)     # 16:00 New York
    env.clock.set(close - timedelta(seconds=1))
    broker.tick()
    assert len(broker.open_orders()) == 2
    env.clock.set(close)
    broker.tick()
    [gtc] = broker.open_orders()
    assert gtc.orderId == 2 and gtc.status == 'PreSubmitted'       # rests until the next session
    [day] = broker.completed_orders()
    assert (day.orderId, day.status) == (1, 'Cancelled')
    assert close <= day.completedAt < close + timedelta(seconds=1)


def test_market_order_outside_regular_hours_waits_for_the_open(env, broker):
    env.clock.set(EVENING)
    broker.place(order(env.SPY, 'BUY', 10, order_id=1))
    [held] = broker.open_orders()
    assert held.status == 'PreSubmitted'
    env.clock.set(datetime(2026, 11, 26, 15, 0, tzinfo=timezone.utc))   # Thanksgiving: closed
    broker.tick()
    assert broker.executions() == []
    opening = env.universe.next_liquid_open(env.SPY, env.clock.now())
    assert opening == datetime(2026, 11, 27, 14, 30, tzinfo=timezone.utc)
    env.clock.set(opening)
    broker.tick()
    [ex] = broker.executions()
    assert held.status == 'Filled' and ex.time >= opening


def test_outside_rth_order_fills_in_extended_hours(env, broker):
    env.clock.set(EVENING)
    broker.place(order(env.SPY, 'BUY', 10, order_id=1, outsideRth=True))
    assert len(broker.executions()) == 1


def test_execution_filters(env, broker):
    broker.place(order(env.SPY, 'BUY', 10, order_id=1, client_id=1))
    env.clock.set(T0 + timedelta(minutes=5))
    broker.place(order(env.QQQ, 'SELL', 5, order_id=1, client_id=2, orderRef='leg-b'))
    assert [e.clientId for e in broker.executions(client_id=2)] == [2]
    assert [e.instrument.symbol for e in broker.executions(symbol='SPY')] == ['SPY']
    assert [e.side for e in broker.executions(side='SELL')] == ['SLD']
    assert [e.orderRef for e in broker.executions(since=T0 + timedelta(minutes=1))] == ['leg-b']
    assert len(broker.executions(account=ACCOUNT, secType='STK', exchange='ARCA')) == 1


def test_execution_time_filter_holds_when_the_clock_went_back_and_per_account(env):
    """The executions are indexed by account and time; fills dated before an earlier one (a test set the clock
    back) and a second account's fills must still be found exactly as a scan over every fill finds them."""
    broker = make_broker(env, accounts=(ACCOUNT, 'DU7654321'))
    for minute, order_id, account in ((10, 1, ACCOUNT), (1, 2, ACCOUNT), (2, 3, 'DU7654321'), (3, 4, ACCOUNT)):
        env.clock.set(T0 + timedelta(minutes=minute))
        placed = order(env.SPY, 'BUY', 1, order_id=order_id)
        placed.account = account
        broker.place(placed)
    assert [e.orderId for e in broker.executions(since=T0 + timedelta(minutes=5))] == [1]
    assert [e.orderId for e in broker.executions(since=T0 + timedelta(minutes=2))] == [1, 3, 4]
    assert [e.orderId for e in broker.executions(account=ACCOUNT, since=T0 + timedelta(minutes=2))] == [1, 4]
    assert [e.orderId for e in broker.executions(account='DU7654321')] == [3]
    assert broker.executions(account='DU0000000') == []
    naive = (T0 + timedelta(minutes=4)).replace(tzinfo=None)     # naive means UTC, as before
    assert [e.orderId for e in broker.executions(account=ACCOUNT, since=naive)] == [1]


def test_execution_time_filter_on_fills_in_time_order(env, broker):
    for minute, order_id in ((1, 1), (2, 2), (2, 3), (4, 4)):
        env.clock.set(T0 + timedelta(minutes=minute))
        broker.place(order(env.SPY, 'BUY', 1, order_id=order_id))
    assert [e.orderId for e in broker.executions(account=ACCOUNT, since=T0 + timedelta(minutes=2))] == [2, 3, 4]
    assert [e.orderId for e in broker.executions(since=T0 + timedelta(minutes=2, seconds=1))] == [4]
    assert [e.orderId for e in broker.executions(since=T0 + timedelta(minutes=5))] == []


def test_open_orders_stay_in_placement_order_among_many_finished_ones(env, broker):
    """Working orders are kept apart from finished ones; what reqOpenOrders, the tick and a reload see must
    not change: placement order, filled and cancelled ones gone, a modified order in its first place."""
    limit = round(env.prices.price(env.SPY, T0) * 0.9, 2)
    broker.place(order(env.SPY, 'BUY', 1, 'LMT', lmtPrice=limit, order_id=1))
    for order_id in range(2, 40):
        broker.place(order(env.QQQ, 'BUY', 1, order_id=order_id))
    broker.place(order(env.SPY, 'BUY', 1, 'LMT', lmtPrice=limit, order_id=40, client_id=2))
    broker.place(order(env.SPY, 'BUY', 1, 'LMT', lmtPrice=limit, order_id=41))
    broker.place(order(env.SPY, 'BUY', 2, 'LMT', lmtPrice=limit, order_id=1))       # modify keeps its place
    broker.cancel(1, 41)
    assert [(o.clientId, o.orderId, o.totalQuantity) for o in broker.open_orders()] == [(1, 1, 2), (2, 40, 1)]
    assert [o.orderId for o in broker.open_orders(client_id=2)] == [40]
    reloaded = Broker.from_dict(broker.to_dict(), env.clock, env.universe, env.prices)
    assert [o.orderId for o in reloaded.open_orders()] == [1, 40]
    later = T0 + timedelta(minutes=1)
    env.clock.set(later)
    env.prices.set_price(env.SPY.conId, limit - 1, later)
    reloaded.tick()
    assert reloaded.open_orders() == [] and len(reloaded.executions()) == 38 + 2
    assert [o.status for o in reloaded.completed_orders()][-2:] == ['Filled', 'Filled']


def test_account_summary_tags_and_ledger(env, broker):
    broker.place(order(env.EURUSD, 'BUY', 20_000, order_id=1))
    rows = broker.summary(ACCOUNT, ['AccountType', 'NetLiquidation', '$LEDGER:ALL'])
    assert rows[0] == ('AccountType', 'INDIVIDUAL', '')
    assert rows[1][0] == 'NetLiquidation' and rows[1][2] == 'USD'
    ledger = {(tag, ccy): value for tag, value, ccy in rows[2:]}
    assert ledger['CashBalance', 'EUR'] == '20000.00'
    assert ledger['ExchangeRate', 'USD'] == ledger['ExchangeRate', 'BASE'] == '1.00'
    assert {ccy for _, ccy in ledger} == {'USD', 'EUR', 'BASE'}
    assert {ccy for _, _, ccy in broker.summary(ACCOUNT, ['$LEDGER:EUR'])} == {'EUR'}
    assert {ccy for _, _, ccy in broker.summary(ACCOUNT, ['$LEDGER'])} == {'BASE'}


def test_concurrent_orders_keep_the_books_consistent(env, broker):
    def buy(client_id):
        for order_id in range(1, 21):
            broker.place(order(env.SPY, 'BUY', 1, order_id=order_id, client_id=client_id))

    threads = [threading.Thread(target=buy, args=(c,)) for c in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    executions = broker.executions()
    assert len(executions) == 120 and len({e.execId for e in executions}) == 120
    assert len({e.permId for e in executions}) == 120
    assert broker.positions()[0][1].quantity == 120
    spent = sum(e.price + e.commission for e in executions)
    assert money(broker, 'CashBalance') == pytest.approx(1_000_000 - spent, abs=0.01)


def test_save_and_load_round_trip(env, broker, tmp_path):
    broker.place(order(env.SPY, 'BUY', 10, order_id=1))
    broker.place(order(env.EURUSD, 'BUY', 10_000, order_id=2))
    limit = round(env.prices.price(env.SPY, T0) * 0.98, 2)
    broker.place(order(env.SPY, 'BUY', 5, 'LMT', lmtPrice=limit, tif='GTC', order_id=3, orderRef='resting'))
    broker.place(order(env.QQQ, 'BUY', 5, 'LMT', lmtPrice=1.0, order_id=10, client_id=5))
    broker.cancel(5, 10)
    path = tmp_path / 'broker.json'
    broker.save(path)
    assert os.listdir(tmp_path) == ['broker.json']

    loaded = Broker.load(path, env.clock, env.universe, env.prices)
    assert loaded.to_dict() == broker.to_dict()
    env.clock.set(T0 + timedelta(seconds=20))
    assert loaded.account_values(ACCOUNT) == broker.account_values(ACCOUNT)
    assert (loaded.next_order_id(1), loaded.next_order_id(5), loaded.next_order_id(9)) == (4, 11, 1)
    assert [o.status for o in loaded.completed_orders()] == ['Filled', 'Filled', 'Cancelled']

    [resting] = loaded.open_orders()
    later = T0 + timedelta(minutes=2)
    env.clock.set(later)
    env.prices.set_price(env.SPY.conId, limit - 1, later)
    loaded.tick()
    loaded.place(order(env.SPY, 'BUY', 1, order_id=4))
    old_ids = {e.execId for e in broker.executions()}
    new = loaded.executions()[len(old_ids):]
    assert [e.orderRef for e in new] == ['resting', '']
    assert not old_ids & {e.execId for e in new}
    newest = loaded.completed_orders()[-1]
    assert newest.orderId == 4
    assert newest.permId > max(o.permId for o in broker.completed_orders() + broker.open_orders())


def started_writes(target):
    """Temporary files next to `target` that already hold data (they vanish when renamed)."""
    found = []
    for path in target.parent.iterdir():
        try:
            if path != target and path.stat().st_size > 0:
                found.append(path)
        except FileNotFoundError:
            pass
    return found


def test_killing_a_save_midway_never_corrupts_the_state_file(env, broker, tmp_path):
    broker.place(order(env.SPY, 'BUY', 10, order_id=1))
    data = broker.to_dict()
    data['executions'] *= 4000                              # a few megabytes: each write takes a while
    seed = tmp_path / 'seed.json'
    seed.write_text(json.dumps(data))
    target = tmp_path / 'state' / 'broker.json'
    target.parent.mkdir()
    writer = ('import json, sys\n'
              'from simulator.broker import Broker\n'
              'broker = Broker.from_dict(json.load(open(sys.argv[1])), None, None, None)\n'
              'while True:\n'
              '    broker.save(sys.argv[2])\n')
    interrupted = 0
    for _ in range(3):           # a kill can, rarely, land just after a write completed: then try again
        proc = subprocess.Popen([sys.executable, '-c', writer, str(seed), str(target)], cwd=REPO)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not (target.exists() and started_writes(target)):
                pass
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert time.monotonic() < deadline, 'the writer never started a second save'
        loaded = Broker.load(target, env.clock, env.universe, env.prices)
        assert len(loaded.executions()) == 4000
        leftovers = started_writes(target)
        interrupted += bool(leftovers)
        for path in leftovers:
            path.unlink()
        if interrupted:
            break
    assert interrupted           # a write was cut off halfway, and the state file still loaded whole
