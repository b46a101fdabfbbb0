"""At-least-once delivery: concurrent, repeated, late and half-done deliveries place one set of orders.

Every assertion about orders looks at the simulated gateway's order log, not at our own results. The
claim tests run on both store backends (SQLite, and Firestore on its emulator).
"""
from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from functions.admission import admit
from functions.contract import decode_message
from functions.handler import run_isolated
from intents.allocation import Allocation
from trading.idempotency import derive_key, legacy_reference, order_ref, parse_order_ref, reference_of, run_reference
from tests.polling import wait_until
from tests.trading.support import BASE_CONFIG, SPY_MACD_VIXY_CONFIG

TWO_LEGS = BASE_CONFIG.replace('dummy = 0.5', 'dummy = 0.3\nspy-macd-vixy = 0.4') + SPY_MACD_VIXY_CONFIG
BACKENDS = ['sqlite', 'firestore']


def test_derived_keys_are_shared_inside_a_window_and_differ_across_windows_and_params():
    slot = datetime(2026, 11, 24, 15, 0, tzinfo=timezone.utc)
    params = {'strategies': ['dummy'], 'dryRun': False}
    first = derive_key('allocation', params, slot + timedelta(seconds=2), 300)
    assert first == derive_key('allocation', dict(reversed(params.items())), slot + timedelta(seconds=299), 300)
    assert first.startswith('auto:2026-11-24T15:00:00Z:')
    assert first != derive_key('allocation', params, slot + timedelta(seconds=300), 300)
    assert first != derive_key('allocation', {'strategies': ['spy-macd-vixy'], 'dryRun': False}, slot, 300)
    assert first != derive_key('close-all', params, slot, 300)
    reference = run_reference('DU111', 'allocation', first)
    assert reference != run_reference('DU222', 'allocation', first)     # one slot, two accounts: two references
    assert reference_of(f'{reference}:756733') == reference and reference_of('manual order') is None
    assert order_ref(reference, 756733) == f'{reference}:756733'
    assert parse_order_ref(order_ref(reference, 756733, 2)) == (reference, '756733', 2)
    assert reference_of(f'{reference}:756733.2') == reference and parse_order_ref('ibj:xyz:1') is None


@pytest.mark.parametrize('backend', BACKENDS)
def test_the_same_message_delivered_five_times_at_once_places_one_set_of_orders(make_rig, backend):
    rig = make_rig(TWO_LEGS, backend=backend)
    event = rig.event('allocation')
    start = threading.Barrier(5)

    def deliver(_):
        start.wait()
        result = rig.deliver(event)
        while result.status == 'error' and result.error.retryable:   # AccountBusy: Pub/Sub brings it back
            result = rig.deliver(event)
        return result

    with ThreadPoolExecutor(max_workers=5) as pool:
        results = list(pool.map(deliver, range(5)))
    assert sorted(r.status for r in results) == ['duplicate'] * 4 + ['ok']
    winner = next(r for r in results if r.status == 'ok')
    assert len(winner.result['orders']) == 2
    assert sorted((o.instrument.symbol, o.orderRef) for o in rig.order_log()) == sorted(
        (o['contract']['symbol'], o['orderRef']) for o in winner.result['orders'])
    for duplicate in (r for r in results if r.status == 'duplicate'):
        assert duplicate.result['duplicateOf']['runId'] == winner.run_id
        assert 'orders' not in duplicate.result


@pytest.mark.parametrize('backend', BACKENDS)
def test_the_same_message_delivered_five_times_in_a_row_places_one_set_of_orders(make_rig, backend):
    rig = make_rig(TWO_LEGS, backend=backend)
    event = rig.event('allocation')
    first, *later = [rig.deliver(event) for _ in range(5)]
    assert first.status == 'ok'
    assert [r.status for r in later] == ['duplicate'] * 4
    for duplicate in later:
        assert duplicate.result['duplicateOf'] | {'claimedAt': None} == {
            'runId': first.run_id, 'state': 'finished', 'attempt': 1, 'claimedAt': None}
        assert {o['orderRef'] for o in duplicate.result['original']['orders']} == {
            o['orderRef'] for o in first.result['orders']}
    assert len(rig.order_log()) == 2


def test_two_message_ids_for_one_schedule_window_place_one_set_of_orders(rig):
    now = datetime.now(timezone.utc)
    window = math.floor(now.timestamp() / 300) * 300
    if now.timestamp() - window < 3:      # keep both publish times inside one window and in the past
        window -= 300
    slot = datetime.fromtimestamp(window, timezone.utc)
    first = rig.send('allocation', message_id='scheduler-1', published=slot + timedelta(seconds=1))
    second = rig.send('allocation', message_id='scheduler-2', published=slot + timedelta(seconds=2))
    assert (first.status, second.status) == ('ok', 'duplicate')
    assert first.idempotency_key == second.idempotency_key and first.idempotency_key.startswith('auto:')
    assert second.result['duplicateOf']['runId'] == first.run_id
    assert len(rig.order_log()) == 1
    explicit = rig.send('allocation', key='rebalance-2026-11-24', message_id='manual-1')
    again = rig.send('allocation', key='rebalance-2026-11-24', message_id='manual-2')
    assert explicit.idempotency_key == 'rebalance-2026-11-24'
    assert (explicit.status, again.status) == ('skipped', 'duplicate')


@pytest.mark.parametrize('backend', BACKENDS)
def test_a_run_that_dies_after_placing_is_taken_over_when_its_lease_expires(make_rig, backend):
    rig = make_rig(TWO_LEGS, backend=backend, deadline=2, lease=2)
    rig.sim.faults.partial_fill = 0.5           # the orders stay half open, as if the run died mid-way
    event = rig.event('allocation')
    decoded = decode_message(event)
    params = Allocation.Params.model_validate(decoded.request.params)
    # the pieces handle() runs, without the last one: the process is killed before it finishes its claim
    admission = admit(Allocation, params, decoded, run_id='killed-run', dry_run=False, settings=rig.settings)
    died = run_isolated(Allocation, params, dry_run=False, settings=rig.settings, context=admission.context,
                        claim_terms=admission.claim_terms)
    assert died.status == 'ok' and len(rig.order_log()) == 2
    placed = {o.orderRef: o.remaining for o in rig.sim.broker.open_orders()}

    # while its leases run, a delivery is answered non-2xx (Pub/Sub brings it back), never acked away
    in_flight = rig.deliver(event)
    assert in_flight.status == 'error' and in_flight.error.retryable
    assert in_flight.error.type == 'AccountBusy' and 'killed-run' in in_flight.error.message

    time.sleep(2.2)                               # the lease ends
    taken_over = rig.deliver(event)
    assert taken_over.result['takeover'] is True and taken_over.result['attempt'] == 2
    # the earlier attempt's open orders count as pending; a leg the moved price still asks for has its
    # orderRef at the broker already, so it is reported, not sent
    pending = {c['contract']['conId']: c['pending'] for c in taken_over.result['contracts']}
    assert sorted(abs(p) for p in pending.values()) == sorted(placed.values())
    assert taken_over.result['orders'] == []
    assert {o['orderRef'] for o in taken_over.result['alreadyPlaced']} <= set(placed)
    assert len(rig.order_log()) == 2              # nothing placed a second time
    assert rig.deliver(event).status == 'duplicate'


def test_a_connection_dropped_right_after_placing_is_retried_and_places_nothing_again(make_rig):
    rig = make_rig(TWO_LEGS)
    rig.sim.faults.latency_ms = 40                # acknowledgements are on their way when the link drops
    event = rig.event('allocation')

    def drop_once_orders_arrive():
        if wait_until(lambda: len(rig.order_log()) == 2, timeout=15, interval=0.001):
            rig.sim.disconnect_all()

    watcher = threading.Thread(target=drop_once_orders_arrive)
    watcher.start()
    first = rig.deliver(event)
    watcher.join()
    rig.sim.faults.latency_ms = 0
    assert first.status == 'error' and first.error.retryable is True
    assert first.error.type == 'GatewayDisconnected'
    assert len(rig.order_log()) == 2
    # the error result still lists both orders, as the gateway last reported them to this run
    assert sorted((o['orderRef'], o['action'], o['quantity']) for o in first.result['orders']) == sorted(
        (o.orderRef, o.action, o.totalQuantity) for o in rig.order_log())
    assert all('status' in o and 'filled' in o for o in first.result['orders'])

    redelivered = rig.deliver(event)               # what Pub/Sub does after the retryable failure
    assert redelivered.result['takeover'] is True and redelivered.result['attempt'] == 2
    # nothing is left to place, and the takeover lists (and so records) what the first attempt placed
    assert redelivered.status == 'ok' and redelivered.result['orders'] == []
    assert sorted(o['orderRef'] for o in redelivered.result['alreadyPlaced']) == sorted(
        o.orderRef for o in rig.order_log())
    assert len(rig.order_log()) == 2
    assert rig.deliver(event).status == 'duplicate'


def test_a_gateway_outage_uses_up_no_claim(rig):
    rig.settings = replace(rig.settings, connect_attempts=1)
    rig.sim.faults.refuse_connections = True
    event = rig.event('allocation')
    down = rig.deliver(event)
    assert down.status == 'error' and down.error.type == 'GatewayUnavailable' and down.error.retryable is True
    rig.sim.faults.refuse_connections = False
    up = rig.deliver(event)                        # the redelivery, once the gateway is back
    assert up.status == 'ok'
    assert (up.result['attempt'], up.result['takeover']) == (1, False)
    assert rig.store.get_claim(up.result['orderRefPrefix']).run_id == up.run_id
    assert len(rig.order_log()) == 1


def test_orders_the_gateway_never_acknowledged_are_placed_by_the_redelivery_once(make_rig):
    rig = make_rig(deadline=2)
    rig.sim.faults.stall = {3}                     # placeOrder is read and never answered: nothing is placed
    event = rig.event('allocation')
    first = rig.deliver(event)
    assert first.status == 'error' and first.error.type == 'OrdersUnacknowledged' and first.error.retryable
    unacknowledged = first.result['orders'][0]
    assert (unacknowledged['acknowledged'], unacknowledged['status']) == (False, 'PendingSubmit')
    assert unacknowledged['orderRef'] in first.error.message
    assert rig.order_log() == []
    rig.sim.faults.stall = set()
    redelivered = rig.deliver(event)
    assert redelivered.status == 'ok' and redelivered.result['takeover'] is True
    assert [o.orderRef for o in rig.order_log()] == [unacknowledged['orderRef']]


def test_a_key_an_older_deployment_ran_is_not_run_again_after_the_upgrade(rig):
    # the claim a deployment made before orderRefs named their account: keyed by (intent, key) alone
    now = datetime.now(timezone.utc)
    older = legacy_reference('allocation', 'rebalance-before-upgrade')
    assert rig.store.claim(older, 'old-run', 60, now).held
    rig.store.finish(older, 'old-run', {'runId': 'old-run', 'status': 'ok', 'retry': False, 'orders': []}, now)
    again = rig.send('allocation', key='rebalance-before-upgrade')
    assert again.status == 'duplicate' and again.result['duplicateOf']['runId'] == 'old-run'
    assert rig.order_log() == []
    retried = legacy_reference('allocation', 'failed-before-upgrade')      # finished asking for a retry
    assert rig.store.claim(retried, 'old-run-2', 60, now).held
    rig.store.finish(retried, 'old-run-2', {'runId': 'old-run-2', 'status': 'error', 'retry': True}, now)
    assert rig.send('allocation', key='failed-before-upgrade').status == 'ok'
    assert len(rig.order_log()) == 1
