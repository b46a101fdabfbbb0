"""The lean connect: an intent's requests to the gateway do not grow with the account's activity.

Counted where they land: the simulated gateway's per-connection counters of the request ids it received.
"""
from __future__ import annotations

from datetime import timedelta

import pytest

from bench.activity import fill_activity
from functions.handler import run_isolated
from intents.base import NoParams
from intents.health import Health
from lib.config import Settings
from lib.ibapi import IB, LimitOrder, Stock
from simulator import Simulator
from tests.trading.conftest import make_rig  # noqa: F401  (the trading rig fixture)
from tests.trading.support import ACCOUNT, OPEN_TIME

# TWS request ids that download account state (simulator/messages.py, the TWS API's outgoing ids)
ACCOUNT_DOWNLOADS = {61: 'reqPositions', 6: 'reqAccountUpdates', 76: 'reqAccountUpdatesMulti', 5: 'reqOpenOrders',
                     16: 'reqAllOpenOrders', 99: 'reqCompletedOrders', 7: 'reqExecutions'}
REQ_CURRENT_TIME = 49
BUSY_EXECUTIONS = 200


def requests_of(sim: Simulator, client_id: int) -> dict:
    """The counters of the (closed) connection that used `client_id`."""
    return next(c for c in reversed(sim.counters()) if c['clientId'] == client_id)


@pytest.fixture(scope='module')
def busy_gateway():
    with Simulator(accounts=[ACCOUNT], time=OPEN_TIME) as sim:
        fill_activity(sim, BUSY_EXECUTIONS)
        yield sim


def test_health_on_a_busy_account_downloads_nothing_and_takes_three_round_trips(busy_gateway):
    outcome = run_isolated(Health, NoParams(), dry_run=False,
                           settings=Settings(gateway_host=busy_gateway.host, gateway_port=busy_gateway.port))
    assert outcome.status == 'ok', outcome.failure
    # (not 'healthy': the simulator's clock is set to a market day, far off the wall clock)
    assert outcome.result['apiReady'] and outcome.result['managedAccounts'] == [ACCOUNT]
    counters = requests_of(busy_gateway, outcome.gateway.client_id)
    sent = {ACCOUNT_DOWNLOADS[msg_id]: n for msg_id, n in counters['in'].items() if msg_id in ACCOUNT_DOWNLOADS}
    assert sent == {}
    assert counters['in'].get(REQ_CURRENT_TIME) == 1
    assert counters['roundTrips'] <= 3          # handshake, startApi, current time


def test_an_allocation_on_a_busy_account_sees_its_own_open_orders_and_positions(make_rig):  # noqa: F811
    rig = make_rig()
    fill_activity(rig.sim, BUSY_EXECUTIONS)
    spy = rig.instrument('SPY')
    rig.sim.broker.set_position(ACCOUNT, spy, 100, 500.0)
    # an earlier run's order of ours, still working, placed by a client id that has since gone
    earlier = IB()
    earlier.connect(rig.sim.host, rig.sim.port, clientId=77)
    earlier.placeOrder(Stock('SPY', 'SMART', 'USD'), LimitOrder(
        'BUY', 10, round(rig.sim.quote(spy).bid * 0.9, 2), orderRef=f'ibj:0000000000:{spy.conId}', tif='GTC',
        account=ACCOUNT))
    assert wait_for_open_order(rig.sim, 77)
    earlier.disconnect()
    held_elsewhere = {p.instrument.symbol: p.quantity for _, p in rig.sim.broker.positions(ACCOUNT)
                      if p.instrument.symbol != 'SPY'}
    assert len(held_elsewhere) >= 5

    result = rig.send('allocation', {'strategies': ['dummy']})
    assert result.status == 'ok', result.error
    [row] = result.result['contracts']
    assert row['position'] == 100        # what the broker holds, whatever the activity traded before
    assert row['pending'] == 0           # the earlier order was ours and stale: cancelled, not counted
    assert [(c['clientId'], c['cancelled']) for c in result.result['cancelledStaleOrders']] == [(77, True)]
    [order] = result.result['orders']
    # the activity's SPY fills are not ours: manual holdings, apart from the strategy's (the ledger's rule)
    assert order['quantity'] == row['target'] - (row['position'] - row['manual']) and order['status'] == 'Filled'
    assert rig.position('SPY') == row['target'] + row['manual']   # the strategy's target beside the manual shares
    assert {p.instrument.symbol: p.quantity for _, p in rig.sim.broker.positions(ACCOUNT)
            if p.instrument.symbol != 'SPY'} == held_elsewhere    # the activity's positions are left alone
    assert rig.sim.broker.open_orders() == []
    counters = requests_of(rig.sim, result.gateway.client_id)
    # no completed orders (not a takeover); the day's executions once, for the ledger's booking only
    assert counters['in'].get(99, 0) == 0 and counters['in'].get(7, 0) == 1


def test_a_takeover_on_a_busy_account_looks_only_at_the_executions_since_its_claim(make_rig):  # noqa: F811
    rig = make_rig(deadline=2)
    rig.sim.clock.set(OPEN_TIME - timedelta(minutes=20))   # the account's activity, earlier in the session
    fill_activity(rig.sim, BUSY_EXECUTIONS)
    rig.sim.clock.set(OPEN_TIME)
    rig.sim.faults.stall = {3}                    # placeOrder never answered: the first attempt ends retryable
    event = rig.event('allocation')
    first = rig.deliver(event)
    assert first.status == 'error' and first.error.retryable
    rig.sim.faults.stall = set()
    redelivered = rig.deliver(event)
    assert redelivered.status == 'ok' and redelivered.result['takeover'] is True
    assert len([o for o in rig.order_log() if o.orderRef.startswith('ibj:')]) == 1
    counters = requests_of(rig.sim, redelivered.gateway.client_id)
    # it did look: executions since its claim and completed orders; plus the day's executions once for the
    # ledger's booking (allocation books them before sizing: trading/ledger.py), which a takeover does not add to
    assert counters['in'].get(7) == 2 and counters['in'].get(99) == 1


def wait_for_open_order(sim: Simulator, client_id: int) -> bool:
    from tests.polling import wait_until
    return wait_until(lambda: any(o.clientId == client_id for o in sim.broker.open_orders()))
