"""The order execution layer (trading.orders) against the simulated gateway, with real IB clients."""
from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from lib.ibapi import IB, Contract, LimitOrder, MarketOrder, Stock
from trading.market_data import ContractInfo, Quote, account_snapshot, contract_info, quotes
from trading.orders import (
    CANCEL_CONNECT_SECONDS, ExecutionSettings, Leg, build_order, cancel_orders, cancel_problems, execute,
    our_open_orders, round_to_tick, run_orders_at_broker,
)
from trading.risk import RiskLimitBreached
from trading.trading_config import OrderPolicy, RiskLimits
from tests.trading.support import ACCOUNT

REFERENCE = 'ibj:00c0ffee00'
POLICY = OrderPolicy(order_type='market', tif='DAY', limit_offset_bps=10.0, adaptive_priority='Urgent')
LIMITS = RiskLimits(max_order_notional=1e7, max_order_nlv_share=1.0, max_run_nlv_share=2.0, max_orders_per_run=10,
                    allowlist=('*',), price_band=0.2)


@pytest.fixture
def connect(rig):
    clients: list[IB] = []

    def make(client_id: int) -> IB:
        ib = IB()
        ib.connect(rig.sim.host, rig.sim.port, clientId=client_id, timeout=5)
        clients.append(ib)
        return ib

    yield make
    for ib in clients:
        ib.disconnect()


def settings_for(ib: IB, *, takeover: bool = False, dry_run: bool = False, seconds: float = 10.0,
                 limits: RiskLimits = LIMITS) -> ExecutionSettings:
    return ExecutionSettings(account=ACCOUNT, reference=REFERENCE, policy=POLICY, limits=limits,
                             snapshot=account_snapshot(ib, ACCOUNT), dry_run=dry_run, takeover=takeover,
                             deadline=ib.run(_loop_time()) + seconds)


async def _loop_time() -> float:
    return asyncio.get_running_loop().time()


def leg(ib: IB, symbol: str, quantity: float) -> Leg:
    info = ib.run(contract_info(ib, Stock(symbol, 'SMART', 'USD')))
    return Leg(info, quantity, ib.run(quotes(ib, [info]))[info.con_id], {'test': quantity})


def test_orders_follow_the_policy_market_marketable_limit_and_adaptive():
    spy = ContractInfo(Contract(conId=1, symbol='SPY', secType='STK', currency='USD'), 0.01, '', 'US/Eastern')
    eur = ContractInfo(Contract(conId=2, symbol='EUR', secType='CASH', currency='USD'), 0.00005, '', 'US/Eastern')
    quote = Quote(bid=599.99, ask=600.01, last=600.0, close=598.0)
    market = build_order(spy, -5, quote, POLICY, account=ACCOUNT, ref='r')
    assert (market.action, market.totalQuantity, market.orderType, market.tif, market.orderRef) == (
        'SELL', 5, 'MKT', 'DAY', 'r')
    limit = build_order(spy, 5, quote, OrderPolicy('marketable-limit', 'DAY', 10.0, 'Normal'), account=ACCOUNT, ref='r')
    assert (limit.orderType, limit.lmtPrice) == ('LMT', 600.62)           # the ask + 10 bp, up to the cent grid
    at_the_touch = build_order(spy, 5, quote, OrderPolicy('marketable-limit', 'DAY', 0, 'Normal'), account=ACCOUNT,
                               ref='r')
    assert at_the_touch.lmtPrice == 600.01                                 # offset 0 still crosses the spread
    sell = build_order(spy, -5, Quote(None, None, 600.003, None), OrderPolicy('marketable-limit', 'DAY', 10.0,
                                                                              'Normal'), account=ACCOUNT, ref='r')
    assert sell.lmtPrice == 599.4                                          # rounded down, through the market
    adaptive = build_order(spy, 5, quote, OrderPolicy('adaptive', 'DAY', 0, 'Patient'), account=ACCOUNT, ref='r')
    assert adaptive.algoStrategy == 'Adaptive'
    assert [(p.tag, p.value) for p in adaptive.algoParams] == [('adaptivePriority', 'Patient')]
    fx = build_order(eur, 30000, Quote(1.16, 1.1601, 1.16, 1.15), OrderPolicy('adaptive', 'DAY', 0, 'Normal'),
                     account=ACCOUNT, ref='r')
    assert (fx.orderType, fx.algoStrategy) == ('MKT', '')                  # no Adaptive on IDEALPRO
    assert round_to_tick(1.160012, 0.00005, up=True) == 1.16005
    assert round_to_tick(1.160012, 0.00005, up=False) == 1.16


def test_placed_orders_are_confirmed_with_perm_id_and_final_state(rig, connect):
    ib = connect(11)
    report = ib.run(execute(ib, [leg(ib, 'SPY', 10), leg(ib, 'QQQ', -4), leg(ib, 'AAPL', 0)], settings_for(ib)))
    assert report.status == 'ok' and report.problems == []
    states = {o['contract']['symbol']: o for o in report.orders}
    assert set(states) == {'SPY', 'QQQ'}                                   # the zero quantity is never sent
    for symbol, order in states.items():
        assert order['acknowledged'] and order['permId'] and order['status'] == 'Filled'
        assert order['orderRef'] == f'{REFERENCE}:{order["contract"]["conId"]}'
    assert sorted((o.instrument.symbol, o.action, o.totalQuantity) for o in rig.sim.broker.completed_orders()) == [
        ('QQQ', 'SELL', 4), ('SPY', 'BUY', 10)]


def test_a_rejected_order_is_reported_with_the_gateways_reason(rig, connect):
    ib = connect(12)
    rig.sim.faults.reject_orders = 'No trading permissions'
    report = ib.run(execute(ib, [leg(ib, 'SPY', 10)], settings_for(ib)))
    order = report.orders[0]
    # ib_insync marks it Cancelled at the 201; the gateway's Inactive that follows may already be in
    assert order['acknowledged'] is True and order['status'] in ('Cancelled', 'Inactive')
    assert any('201' in m and 'No trading permissions' in m for m in order['messages'])
    assert report.problems[0]['code'] == 'order-rejected' and report.problems[0]['orderRef'] == order['orderRef']
    assert 'No trading permissions' in report.problems[0]['message']


def test_an_order_the_gateway_never_acknowledges_is_reported_not_hidden(rig, connect):
    ib = connect(13)
    rig.sim.faults.stall = {3}                  # placeOrder is read and never answered
    report = ib.run(execute(ib, [leg(ib, 'SPY', 10)], settings_for(ib, seconds=1.5)))
    order = report.orders[0]
    assert order['acknowledged'] is False and order['status'] == 'PendingSubmit' and order['permId'] is None
    assert report.problems[0]['code'] == 'order-unacknowledged'
    assert 'not acknowledged by the gateway before the deadline' in report.problems[0]['message']


def test_a_dry_run_asks_whatif_and_places_nothing(rig, connect):
    ib = connect(14)
    report = ib.run(execute(ib, [leg(ib, 'SPY', 100)], settings_for(ib, dry_run=True)))
    what_if = report.orders[0]['whatIf']
    assert what_if['initMarginChange'] == pytest.approx(0.25 * 100 * rig.sim.quote(rig.instrument('SPY')).ask, rel=0.01)
    assert what_if['commission'] > 0
    assert rig.order_log() == []


def test_limits_are_checked_before_anything_is_sent(rig, connect):
    ib = connect(15)
    tight = RiskLimits(1e7, 1.0, 2.0, 10, ('SPY',), 0.2)
    with pytest.raises(RiskLimitBreached) as caught:
        ib.run(execute(ib, [leg(ib, 'SPY', 10), leg(ib, 'QQQ', 10)], settings_for(ib, limits=tight)))
    assert caught.value.limits == ['allowlist'] and 'QQQ is not in limits.allowlist' in str(caught.value)
    assert rig.order_log() == []


def test_a_takeover_completes_the_earlier_attempt_and_never_redoes_it(rig, connect):
    earlier = connect(21)                        # an earlier attempt of the same run, from another client id
    spy, qqq, aapl, vixy = (leg(earlier, s, q) for s, q in (('SPY', 10), ('QQQ', 5), ('AAPL', 4), ('VIXY', 3)))
    resting = LimitOrder('BUY', 10, round(spy.quote.bid * 0.9, 2), orderRef=f'{REFERENCE}:{spy.info.con_id}',
                         account=ACCOUNT)
    earlier.placeOrder(spy.info.contract, resting)
    earlier.placeOrder(qqq.info.contract, MarketOrder('BUY', 5, orderRef=f'{REFERENCE}:{qqq.info.con_id}',
                                                      account=ACCOUNT))
    cancelled = LimitOrder('BUY', 4, round(aapl.quote.bid * 0.9, 2), orderRef=f'{REFERENCE}:{aapl.info.con_id}',
                           account=ACCOUNT)
    earlier.placeOrder(aapl.info.contract, cancelled)
    earlier.sleep(0.2)
    earlier.cancelOrder(cancelled)
    earlier.sleep(0.2)
    earlier.disconnect()
    ib = connect(22)
    # the legs as an intent nets them against position and working orders: SPY's working order is
    # counted (the moved price asks for 2 more), QQQ filled, AAPL's order was cancelled, VIXY is new
    legs = [replace(spy, quantity=2), replace(qqq, quantity=0), aapl, vixy]
    report = ib.run(execute(ib, legs, settings_for(ib, takeover=True)))
    found = {o['contract']['symbol']: o for o in report.already_placed}
    assert (found['SPY']['source'], found['SPY']['clientId'], found['SPY']['status']) == ('open', 21, 'Submitted')
    assert (found['QQQ']['status'], found['QQQ']['filled'], found['QQQ']['strategies']) == ('Filled', 5, {'test': 5})
    assert (found['AAPL']['status'], found['AAPL']['remaining']) == ('Cancelled', 4)
    sent = {o['contract']['symbol']: o['orderRef'] for o in report.orders}
    assert sent == {'AAPL': f'{REFERENCE}:{aapl.info.con_id}.2', 'VIXY': f'{REFERENCE}:{vixy.info.con_id}'}
    assert sorted(o.instrument.symbol for o in rig.order_log()) == ['AAPL', 'AAPL', 'QQQ', 'SPY', 'VIXY']
    assert [o.orderRef for o in rig.sim.broker.open_orders()] == [resting.orderRef]    # never undone


def test_orders_of_another_account_are_neither_found_nor_ours(make_rig):
    rig = make_rig(accounts=['DU111', 'DU222'])
    ib = IB()
    ib.connect(rig.sim.host, rig.sim.port, clientId=23, timeout=5)
    try:
        spy = ib.run(contract_info(ib, Stock('SPY', 'SMART', 'USD')))
        price = round(rig.sim.quote(rig.instrument('SPY')).bid * 0.9, 2)
        for account in ('DU111', 'DU222'):
            ib.placeOrder(spy.contract, LimitOrder('BUY', 1, price, orderRef=f'{REFERENCE}:{spy.con_id}',
                                                   account=account))
        ib.sleep(0.2)
        assert [t.order.account for t in ib.run(our_open_orders(ib, 'DU222'))] == ['DU222']
        assert [o['orderRef'] for o in ib.run(run_orders_at_broker(ib, 'DU111', REFERENCE))] == [
            f'{REFERENCE}:{spy.con_id}']
        assert ib.run(run_orders_at_broker(ib, 'DU333', REFERENCE)) == []
    finally:
        ib.disconnect()


def resting_order_with_a_blank_account(rig, ib: IB) -> str:
    """A tagged order resting at the gateway whose account field the gateway sends empty (placeOrder's
    account '' means the default account; a single-account gateway may report the order that way)."""
    spy = ib.run(contract_info(ib, Stock('SPY', 'SMART', 'USD')))
    ref = f'{REFERENCE}:{spy.con_id}'
    ib.placeOrder(spy.contract, LimitOrder('BUY', 1, round(rig.sim.quote(rig.instrument('SPY')).bid * 0.9, 2),
                                           orderRef=ref, account=rig.sim.accounts[0]))
    ib.sleep(0.2)
    [resting] = rig.sim.broker.open_orders()
    resting.account = ''
    return ref


def test_an_order_with_a_blank_account_is_ours_on_a_gateway_of_one_account(rig, connect):
    ref = resting_order_with_a_blank_account(rig, connect(24))
    ib = connect(26)                     # sees the order only as the gateway reports it
    [working] = ib.run(our_open_orders(ib, ACCOUNT))
    assert (working.order.orderRef, working.order.account) == (ref, '')
    assert [o['orderRef'] for o in ib.run(run_orders_at_broker(ib, ACCOUNT, REFERENCE))] == [ref]


def test_an_order_with_a_blank_account_is_nobodys_on_a_gateway_of_several_accounts(make_rig):
    rig = make_rig(accounts=['DU111', 'DU222'])
    owner, ib = IB(), IB()
    owner.connect(rig.sim.host, rig.sim.port, clientId=25, timeout=5)
    ib.connect(rig.sim.host, rig.sim.port, clientId=27, timeout=5)
    try:
        resting_order_with_a_blank_account(rig, owner)
        assert [t.order.account for t in ib.reqAllOpenOrders()] == ['']
        for account in ('DU111', 'DU222'):                 # the default account could be either: neither claims it
            assert ib.run(our_open_orders(ib, account)) == []
            assert ib.run(run_orders_at_broker(ib, account, REFERENCE)) == []
    finally:
        owner.disconnect()
        ib.disconnect()


def test_orders_are_cancelled_through_the_client_id_that_placed_them(rig, connect):
    owner = connect(31)
    spy = leg(owner, 'SPY', 10)
    for ref in ('a', 'b'):
        owner.placeOrder(spy.info.contract, LimitOrder('BUY', 1, round(spy.quote.bid * 0.9, 2),
                                                       orderRef=f'{REFERENCE}:{ref}', account=ACCOUNT))
    owner.sleep(0.2)
    ib = connect(32)
    trades = [t for t in ib.reqAllOpenOrders()]
    started = time.monotonic()
    busy = ib.run(cancel_orders(ib, trades, own_client_id=32, host=rig.sim.host, port=rig.sim.port,
                                connect_timeout=20.0, until=ib.run(_loop_time()) + 20))
    assert time.monotonic() - started < CANCEL_CONNECT_SECONDS   # error 326 is the answer, nothing waited out
    assert [(c['cancelled'], c['working']) for c in busy] == [(False, True), (False, True)]
    assert 'could not connect as client id 31' in busy[0]['reason'] and '326' in busy[0]['reason']
    assert [p['orderRef'] for p in cancel_problems(busy)] == [f'{REFERENCE}:a', f'{REFERENCE}:b']
    owner.disconnect()
    done = ib.run(cancel_orders(ib, trades, own_client_id=32, host=rig.sim.host, port=rig.sim.port,
                                connect_timeout=1.0, until=ib.run(_loop_time()) + 3))
    assert [(c['cancelled'], c['status'], c['working']) for c in done] == [(True, 'Cancelled', False)] * 2
    assert cancel_problems(done) == []
    assert rig.sim.broker.open_orders() == []
