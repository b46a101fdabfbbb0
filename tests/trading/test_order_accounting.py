"""Order accounting, tried as an adversary would: partial fills, runs killed after placing, two accounts on
one gateway, a busy client id, a store that fails after placing, a gateway that rejects everything.

Every outcome is counted at the simulated gateway (positions, cash, open and completed orders), with
real IB clients and the real handler; the results are checked for what a user needs to read in them.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import replace

from functions.admission import admit
from functions.contract import decode_message
from functions.handler import run_isolated
from intents.outcome import Outcome
from intents.registry import get_intent
from lib.ibapi import IB, LimitOrder, Stock
from tests.polling import wait_until
from tests.trading.support import ACCOUNT, OPEN_TIME

TWO_ACCOUNTS = ['DU111', 'DU222']
STALE_REF = 'ibj:5ca1ab1e00:756733'          # ours (tagged), from a run of another key


def killed_after_running(rig, event) -> Outcome:
    """What handle() does for `event`, but the process dies before it finishes its claim."""
    decoded = decode_message(event)
    intent = get_intent(decoded.request.intent)
    params = intent.Params.model_validate(decoded.request.params)
    admission = admit(intent, params, decoded, run_id='killed-run', dry_run=False, settings=rig.settings)
    return run_isolated(intent, params, dry_run=False, settings=rig.settings, context=admission.context,
                        claim_terms=admission.claim_terms)


def in_flight(result) -> bool:
    """The answer while the killed run's leases are live: non-2xx, so Pub/Sub delivers it again."""
    return result.status == 'error' and result.error.type in ('AccountBusy', 'KeyInFlight')


def cash(rig, currency: str) -> float:
    return next(float(v) for k, v, c in rig.sim.broker.account_values(rig.account)
                if k == 'CashBalance' and c == currency)


def sells(rig, symbol: str) -> list:
    return [o for o in rig.order_log() if o.instrument.localSymbol == symbol and o.action == 'SELL']


def close_all_killed_half_filled(make_rig):
    """A rig whose close-all of 320 SPY sold 160 (the rest working) and died before finishing its claim.

    The position is not in the ledger (no strategy's), so it takes scope all to close it.
    """
    rig = make_rig(deadline=2, lease=2)
    rig.sim.broker.set_position(ACCOUNT, rig.instrument('SPY'), 320, 590.0)
    rig.sim.faults.partial_fill = 0.5
    event = rig.event('close-all', {'scope': 'all'})
    assert killed_after_running(rig, event).status == 'ok'
    assert (rig.position('SPY'), rig.working('SPY')) == (160, -160)
    return rig, event


def test_close_all_taken_over_after_a_kill_keeps_its_working_order_and_ends_flat(make_rig):
    rig, event = close_all_killed_half_filled(make_rig)
    first_sell = sells(rig, 'SPY')[0].orderRef

    wait_until(lambda: not in_flight(rig.deliver(event)), timeout=10, interval=0.2)   # the lease ends
    taken_over = rig.published[-1]
    assert taken_over.status == 'ok', taken_over.error
    assert taken_over.result['takeover'] is True and taken_over.result['orders'] == []
    assert taken_over.result['cancelled'] == []                      # its own working order is not undone
    [found] = taken_over.result['alreadyPlaced']
    assert (found['orderRef'], found['action'], found['quantity'], found['filled']) == (first_sell, 'SELL', 320, 160)
    # counted at the gateway: the position and what still works close it exactly
    assert rig.position('SPY') + rig.working('SPY') == 0 and len(sells(rig, 'SPY')) == 1
    rig.sim.faults.partial_fill = None
    assert wait_until(lambda: rig.position('SPY') == 0, timeout=10)


def test_close_all_taken_over_after_its_order_was_cancelled_sends_the_remainder_once(make_rig):
    rig, event = close_all_killed_half_filled(make_rig)
    [first] = rig.sim.broker.open_orders()
    rig.sim.broker.cancel(first.clientId, first.orderId)         # e.g. cancelled in TWS: 160 left unsold
    rig.sim.faults.partial_fill = None
    wait_until(lambda: not in_flight(rig.deliver(event)), timeout=10, interval=0.2)
    taken_over = rig.published[-1]
    assert taken_over.status == 'ok', taken_over.error
    [found] = taken_over.result['alreadyPlaced']
    assert (found['orderRef'], found['status'], found['filled'], found['remaining']) == (
        first.orderRef, 'Cancelled', 160, 160)
    [resent] = taken_over.result['orders']
    assert (resent['orderRef'], resent['action'], resent['quantity']) == (first.orderRef + '.2', 'SELL', 160)
    assert rig.position('SPY') == 0 and [o.totalQuantity for o in sells(rig, 'SPY')] == [320, 160]
    assert rig.deliver(event).status == 'duplicate'


def test_two_accounts_on_one_gateway_never_touch_each_others_orders(make_rig):
    du111 = make_rig(accounts=TWO_ACCOUNTS)
    du222 = du111.deployment('DU222')
    du111.sim.faults.partial_fill = 0.5
    first = du222.send('allocation', key='rebalance-du222')
    assert first.status == 'ok', first.error
    du222_working = du222.working('SPY')
    assert du222_working > 0 and du222.position('SPY') > 0

    second = du111.send('allocation', key='rebalance-du111')
    assert second.status == 'ok', second.error
    assert second.result['cancelledStaleOrders'] == [] and second.result['workingOrders'] == []
    [spy] = second.result['contracts']
    assert spy['pending'] == 0                                     # DU222's working order is not DU111's
    assert du222.working('SPY') == du222_working                   # and it is neither cancelled nor counted
    assert du111.position('SPY') + du111.working('SPY') == spy['target']


def test_close_all_of_every_scope_on_one_account_leaves_the_other_accounts_orders(make_rig):
    du111 = make_rig(accounts=TWO_ACCOUNTS)
    du222 = du111.deployment('DU222')
    du111.sim.broker.set_position('DU111', du111.instrument('SPY'), 50, 590.0)
    du111.sim.broker.set_position('DU222', du111.instrument('SPY'), 70, 590.0)
    manual = IB()
    manual.connect(du111.sim.host, du111.sim.port, clientId=78)
    price = round(du111.sim.quote(du111.instrument('SPY')).bid * 0.8, 2)
    for account in TWO_ACCOUNTS:
        manual.placeOrder(Stock('SPY', 'SMART', 'USD'), LimitOrder('BUY', 5, price, orderRef='by hand', tif='GTC',
                                                                   account=account))
    manual.sleep(0.2)
    manual.disconnect()
    closed = du111.send('close-all', {'scope': 'all'})
    assert closed.status == 'ok', closed.error
    assert [(c['orderRef'], c['cancelled']) for c in closed.result['cancelled']] == [('by hand', True)]
    assert [o.account for o in du111.sim.broker.open_orders()] == ['DU222']
    assert du111.position('SPY') == 0 and du222.position('SPY') == 70


def test_two_accounts_with_one_derived_key_each_reach_their_target(make_rig):
    du111 = make_rig(accounts=TWO_ACCOUNTS, deadline=3)
    du222 = du111.deployment('DU222')
    event = du111.event('allocation')                       # one schedule slot: both derive the same key
    first = du111.deliver(event)
    assert first.status == 'ok', first.error
    du111.sim.faults.stall = {3}                            # DU222's placeOrder is never answered
    failed = du222.deliver(event)
    assert failed.status == 'error' and failed.error.retryable
    assert du222.position('SPY') == 0
    du111.sim.faults.stall = set()
    redelivered = du222.deliver(event)                      # the takeover looks for DU222's orders only
    assert redelivered.status == 'ok', redelivered.error
    assert redelivered.idempotency_key == first.idempotency_key
    assert redelivered.result['orderRefPrefix'] != first.result['orderRefPrefix']
    [placed] = redelivered.result['orders']
    assert du222.position('SPY') == placed['quantity'] > 0
    assert abs(du222.position('SPY') - du111.position('SPY')) <= 1     # the same target, within a price tick
    du111_refs = {o['orderRef'] for o in first.result['orders']}
    assert not du111_refs & {o.orderRef for o in du222.order_log() if o.account == 'DU222'}


def test_two_cash_balancer_runs_never_convert_more_than_the_balance(rig):
    rig.sim.broker.set_cash(ACCOUNT, 'EUR', 100_000)
    rig.sim.faults.partial_fill = 0.5
    weekly = rig.send('cash-balancer', key='weekly')
    assert weekly.status == 'ok', weekly.error
    assert (cash(rig, 'EUR'), rig.working('EUR.USD')) == (50_000, -50_000)

    manual = rig.send('cash-balancer', key='manual')
    assert manual.status == 'skipped' and manual.result['orders'] == []
    assert [o['orderRef'] for o in manual.result['workingOrders']] == [weekly.result['orders'][0]['orderRef']]
    assert 'our working orders' in manual.result['reason']
    assert 'already convert' in manual.result['balances'][0]['action']
    rig.sim.faults.partial_fill = None
    assert wait_until(lambda: rig.working('EUR.USD') == 0, timeout=10)
    assert cash(rig, 'EUR') == 0 and len(sells(rig, 'EUR.USD')) == 1


def test_an_order_left_working_by_a_busy_client_id_makes_the_run_say_so(make_rig):
    rig = make_rig()
    rig.settings = replace(rig.settings, connect_timeout=8.0)     # a busy id must not cost a connect timeout
    busy = IB()
    busy.connect(rig.sim.host, rig.sim.port, clientId=77)        # stays connected: its id is busy
    try:
        price = round(rig.sim.quote(rig.instrument('SPY')).bid * 0.8, 2)
        busy.placeOrder(Stock('SPY', 'SMART', 'USD'), LimitOrder('BUY', 640, price, orderRef=STALE_REF, tif='GTC',
                                                                 account=ACCOUNT))
        assert wait_until(lambda: len(rig.sim.broker.open_orders()) == 1, timeout=5)
        started = time.monotonic()
        closed = rig.send('close-all')
        assert time.monotonic() - started < 6
        assert closed.status == 'error' and closed.error.type == 'OrdersNotCancelled' and closed.error.retryable
        [stuck] = closed.result['problems']
        assert (stuck['code'], stuck['orderRef']) == ('order-not-cancelled', STALE_REF)
        assert 'client id 77' in stuck['message']
        assert rig.position('SPY') == 0 and sells(rig, 'SPY') == []    # nothing sold against a mere limit

        allocation = rig.send('allocation')
        assert allocation.status == 'error' and allocation.error.type == 'OrdersNotCancelled'
        assert [p['orderRef'] for p in allocation.result['problems']] == [STALE_REF]
        assert [o['orderRef'] for o in allocation.result['workingOrders']] == [STALE_REF]
        assert rig.working('SPY') >= 640                               # counted: never bought twice
        target = allocation.result['contracts'][0]['target']
        assert rig.position('SPY') + rig.working('SPY') == target
    finally:
        busy.disconnect()
    retried = rig.deliver(rig.event('allocation', key=allocation.idempotency_key))    # the redelivery
    assert retried.status == 'ok', retried.error
    assert [c['orderRef'] for c in retried.result['cancelledStaleOrders'] if c['cancelled']] == [STALE_REF]
    assert rig.working('SPY') == 0 and rig.position('SPY') == retried.result['contracts'][0]['target']


def test_an_error_after_placing_lists_the_orders_placed(make_rig, tmp_path):
    rig = make_rig()
    rig.with_store(timeout_seconds=0.5)
    rig.sim.faults.latency_ms = 100               # the store is locked while the order's fill is on its way
    locked = threading.Event()
    release = threading.Event()

    def lock_the_store_once_an_order_is_placed():
        if wait_until(lambda: rig.order_log(), timeout=15, interval=0.001):
            db = sqlite3.connect(tmp_path / 'state-0.sqlite3', timeout=5, isolation_level=None)
            db.execute('BEGIN EXCLUSIVE')
            locked.set()
            release.wait(30)
            db.rollback()
            db.close()

    holder = threading.Thread(target=lock_the_store_once_an_order_is_placed)
    holder.start()
    try:
        failed = rig.send('allocation')
    finally:
        release.set()
        holder.join()
    assert locked.is_set()
    assert failed.status == 'error' and failed.error.type == 'StoreUnavailable' and failed.error.retryable
    [order] = failed.result['orders']
    [placed] = rig.order_log()
    assert (order['orderRef'], order['action'], order['quantity'], order['status'], order['filled']) == (
        placed.orderRef, 'BUY', placed.totalQuantity, 'Filled', placed.totalQuantity)
    assert failed.result['problems'] == [] and failed.result['degraded'] is False


def test_reconciliation_after_a_takeover_shows_no_drift(make_rig):
    rig = make_rig(deadline=2, lease=2)
    event = rig.event('allocation')
    assert killed_after_running(rig, event).status == 'ok'         # filled, then died before recording
    [placed] = rig.order_log()
    wait_until(lambda: not in_flight(rig.deliver(event)), timeout=10, interval=0.2)
    taken_over = rig.published[-1]
    assert taken_over.status == 'ok', taken_over.error
    assert [o['orderRef'] for o in taken_over.result['alreadyPlaced']] == [placed.orderRef]
    assert taken_over.result['orders'] == []        # a filled leg is done, even if the price moved its target
    assert taken_over.result['problems'] == []      # its earlier attempt's fill is its own to record, not a gap

    reconciled = rig.send('trade-reconciliation')
    assert reconciled.status == 'ok', reconciled.error
    assert reconciled.result['awaitingAttribution'] == [] and reconciled.result['drift'] == []
    assert reconciled.result['strategies'] == {'dummy': {'SPY': rig.position('SPY')}}


def rejected_allocation(rig, reason: str = 'Not enough margin'):
    """An allocation whose only order the gateway rejected: (its event, its result, the rejected order)."""
    rig.sim.faults.reject_orders = reason
    event = rig.event('allocation')
    rejected = rig.deliver(event)
    assert rejected.status == 'error' and rejected.error.type == 'OrdersRejected' and rejected.error.retryable
    [order] = rejected.result['orders']
    assert [(p['code'], p['orderRef']) for p in rejected.result['problems']] == [('order-rejected', order['orderRef'])]
    # counted at the gateway: it keeps the rejected order among completed ones (as TWS does), nothing filled
    [kept] = rig.order_log()
    assert (kept.orderRef, kept.status, kept.completedStatus, kept.filled) == (
        order['orderRef'], 'Cancelled', f'Order rejected - reason:{reason}', 0)
    assert rig.position('SPY') == 0
    return event, rejected, order


def rejected_orders(rig) -> list[str]:
    return [o.orderRef for o in rig.order_log() if o.status == 'Cancelled' and o.completedStatus.startswith(
        'Order rejected')]


def test_every_order_rejected_is_an_error_and_the_redelivery_sends_the_remainder(rig):
    event, _, order = rejected_allocation(rig)
    rig.sim.faults.reject_orders = False
    redelivered = rig.deliver(event)                               # the key was not finished for good
    assert redelivered.status == 'ok', redelivered.error
    [found] = redelivered.result['alreadyPlaced']                  # found, and not taken for a filled order
    assert (found['orderRef'], found['status'], found['filled']) == (order['orderRef'], 'Cancelled', 0)
    [sent] = redelivered.result['orders']                           # the leg's next orderRef, once
    assert (sent['orderRef'], sent['quantity']) == (order['orderRef'] + '.2', order['quantity'])
    assert rig.position('SPY') == order['quantity']
    assert sorted(o.orderRef for o in rig.order_log()) == [order['orderRef'], order['orderRef'] + '.2']
    assert rig.deliver(event).status == 'duplicate'

    reconciled = rig.send('trade-reconciliation')                   # the rejected order books nothing
    assert reconciled.status == 'ok', reconciled.error
    assert reconciled.result['awaitingAttribution'] == [] and reconciled.result['drift'] == []
    assert reconciled.result['strategies'] == {'dummy': {'SPY': order['quantity']}}


def test_a_leg_the_gateway_keeps_rejecting_is_sent_once_per_delivery_each_under_a_new_order_ref(rig):
    event, _, order = rejected_allocation(rig)
    again = rig.deliver(event)                                     # still rejected: said again, retryable
    assert again.status == 'error' and again.error.type == 'OrdersRejected' and again.error.retryable
    assert again.result['takeover'] is True
    assert [o['orderRef'] for o in again.result['alreadyPlaced']] == [order['orderRef']]
    assert [(p['code'], p['orderRef']) for p in again.result['problems']] == [
        ('order-rejected', order['orderRef'] + '.2')]
    assert rejected_orders(rig) == [order['orderRef'], order['orderRef'] + '.2'] and rig.position('SPY') == 0

    rig.sim.faults.reject_orders = False
    done = rig.deliver(event)
    assert done.status == 'ok', done.error
    [sent] = done.result['orders']                                  # two rejected orders: still one leg's worth
    assert (sent['orderRef'], sent['quantity']) == (order['orderRef'] + '.3', order['quantity'])
    assert rig.position('SPY') == order['quantity'] and len(rig.sim.broker.executions()) == 1


def test_a_takeover_that_finds_only_its_rejected_order_and_places_nothing_is_not_ok(rig):
    event, _, order = rejected_allocation(rig)
    rig.sim.faults.reject_orders = False
    rig.sim.clock.set(OPEN_TIME.replace(hour=22))                  # 17:00 in New York: the market has closed
    closed = rig.deliver(event)
    assert closed.status == 'skipped', closed.error                  # never "ok" on a rejected order alone
    [skipped] = closed.result['skipped']                           # the remainder waits for the open, said so
    assert skipped['orderRef'] == order['orderRef'] + '.2' and skipped['nextOpen'], skipped
    assert closed.result['reason'] == skipped['reason']
    assert [o['orderRef'] for o in closed.result['alreadyPlaced']] == [order['orderRef']]
    assert closed.result['orders'] == [] and rig.position('SPY') == 0