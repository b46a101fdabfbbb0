"""Ack or redeliver, decided right: live claims come back, store faults and transient 162s are retried,
permanent 162s and bad input are refused; two order-placing runs never trade one account at once.

Each test goes through the real handler against the simulator and a real store; a retryable result is
one the function answers non-2xx for (the handler raises TransientFailure), so Pub/Sub redelivers it.
"""
from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

from functions.handler import TransientFailure, handle
from trading.idempotency import claim_key, run_reference
from tests.pubsub_events import request_event
from tests.trading.support import ACCOUNT

CONCURRENT_TRIALS = 20


def test_a_delivery_meeting_a_live_claim_is_redelivered_then_takes_over_once_the_lease_ends(make_rig):
    rig = make_rig(deadline=2, lease=2)
    reference = run_reference(ACCOUNT, 'allocation', 'live-key')
    now = datetime.now(timezone.utc)
    assert rig.store.claim(claim_key(reference, 1), 'holder-run', 2, now).held    # another instance runs it

    event = rig.event('allocation', key='live-key')
    with pytest.raises(TransientFailure) as raised:       # non-2xx: Pub/Sub will bring it back
        handle(event, rig.settings, publish=rig._publish)
    in_flight = raised.value.result
    assert in_flight.status == 'error' and in_flight.error.type == 'KeyInFlight' and in_flight.error.retryable
    assert in_flight.result['inFlight']['runId'] == 'holder-run'
    assert rig.order_log() == []
    assert rig.store.take_lease(f'account:{ACCOUNT}', 'probe', 1, datetime.now(timezone.utc)).held, \
        'a run that claimed nothing must give the account lease back'
    rig.store.release_lease(f'account:{ACCOUNT}', 'probe')

    time.sleep(max(0.0, (now + timedelta(seconds=2.05) - datetime.now(timezone.utc)).total_seconds()))
    taken_over = rig.deliver(event)          # the holder died: its lease ended, the redelivery takes over
    assert taken_over.status == 'ok' and taken_over.result['takeover'] is True
    assert len(rig.order_log()) == 1
    assert rig.deliver(event).status == 'duplicate'        # finished: acked


def test_two_allocations_with_different_keys_never_exceed_the_target(make_rig):
    """Two order-placing runs posted together on one account: the account lease lets one trade at a time,
    and the second reads positions after the first's orders; the position ends at the target, counted at
    the simulator (filled plus working), in every trial."""
    for trial in range(CONCURRENT_TRIALS):
        rig = make_rig(deadline=8)
        events = [rig.event('allocation', key=f'trial-{trial}-{side}') for side in 'ab']
        barrier = threading.Barrier(2)

        def deliver_until_acked(event, rig=rig, barrier=barrier):
            barrier.wait()
            results = [rig.deliver(event)]
            while results[-1].status == 'error' and results[-1].error.retryable:
                results.append(rig.deliver(event))                # Pub/Sub brings it back
            return results

        with ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(deliver_until_acked, events))
        finals = [results[-1] for results in runs]
        assert {r.status for r in finals} <= {'ok', 'skipped'}, [r.error for r in finals]
        targets = [c['target'] for r in finals for c in r.result['contracts']]
        working = sum((1 if o.action == 'BUY' else -1) * o.remaining for o in rig.sim.broker.open_orders())
        held = rig.position('SPY') + working
        assert held > 0 and held == max(targets), (trial, held, targets)
        rig.sim.stop()


def test_a_store_outage_during_an_allocation_places_nothing_and_the_redelivery_runs(make_rig):
    """SQLite locked for 3 s with STORE_TIMEOUT_SECONDS=2: retryable, nothing placed; redelivered, it trades."""
    rig = make_rig()
    rig.with_store(timeout_seconds=2.0)                  # the handler's store: a new one, with this timeout
    rig.store.get_settings()           # the store file exists, with its schema
    locker = sqlite3.connect(rig.store.path, timeout=1, isolation_level=None, check_same_thread=False)
    locker.execute('BEGIN EXCLUSIVE')
    unlock = threading.Timer(3.0, lambda: locker.execute('COMMIT'))
    unlock.start()
    event = rig.event('allocation')
    first = rig.deliver(event)
    assert first.status == 'error' and first.error.type == 'StoreUnavailable' and first.error.retryable
    assert rig.order_log() == [], 'an order went out while the store was unreadable'
    unlock.join()
    locker.close()
    redelivered = rig.deliver(event)
    assert redelivered.status == 'ok' and len(rig.order_log()) == 1


@pytest.mark.parametrize(('params', 'fault', 'status', 'retryable'), [
    ({'barSize': '0 secs'}, False, 'rejected', False),          # "invalid bar size": permanent
    ({'barSize': '1 day', 'duration': '500 Y'}, False, 'ok', None),   # "no data before ...": no bars
    ({}, True, 'error', True),                                   # "HMDS server connection was broken"
])
def test_error_162_is_split_by_its_text(rig, params, fault, status, retryable):
    rig.sim.faults.hist_outage = fault
    result = rig.send('collect-market-data', {'instruments': [{'symbol': 'SPY'}], **params})
    assert result.status == status, result.error
    if retryable is not None:
        assert result.error.retryable is retryable


@pytest.mark.parametrize(('fault', 'status', 'retryable'), [
    ('permissions', 'rejected', False), ('bar-size', 'rejected', False), ('duration', 'rejected', False),
    ('no-data', 'ok', None), ('outage', 'error', True), ('pacing', 'error', True),
])
def test_every_162_text_the_simulator_sends_is_decided_by_the_table(rig, fault, status, retryable):
    """simulator.faults.HIST_ERRORS, IB's wording of each 162, against trading.market_data.HMDS_162_TEXTS."""
    rig.sim.faults.hist_error = fault
    result = rig.send('collect-market-data', {'instruments': [{'symbol': 'SPY'}]})
    assert result.status == status, result.error
    if retryable is not None:
        assert result.error.retryable is retryable


@pytest.mark.parametrize(('request_doc', 'published', 'fragment'), [
    ({'intent': 'allocation', 'params': {'strategies': []}}, None, 'empty list'),
    ({'intent': 'close-all', 'params': {'strategies': []}}, None, 'empty list'),
    ({'intent': 'allocation', 'params': {'dryRun': True}}, None, 'params.dryRun: unknown key'),
    ({'intent': 'collect-market-data', 'params': {'useRth': 'false'}}, None, 'must be true or false'),
    ({'intent': 'collect-market-data', 'params': {'useRth': 0}}, None, 'must be true or false'),
    ({'intent': 'allocation', 'maxAgeSeconds': float('inf')}, None, 'maxAgeSeconds'),
    ({'intent': 'allocation'}, timedelta(days=1), 'in the future'),
    ({'intent': 'allocation', 'idempotencyKey': '\ud800'}, None, 'idempotencyKey'),
])
def test_bad_input_is_rejected_and_acked_without_touching_the_gateway(rig, request_doc, published, fragment):
    data = base64.b64encode(json.dumps(request_doc).encode()).decode()   # json.dumps writes Infinity, \ud800
    event = request_event({}, published=datetime.now(timezone.utc) + published if published else None)
    event.data['message']['data'] = data
    result = rig.deliver(event)
    assert result.status == 'rejected' and not result.error.retryable, result
    assert fragment in result.error.message
    assert rig.order_log() == [] and rig.sim.counters() == []


def test_lone_surrogates_in_every_envelope_field_still_end_in_a_published_result(rig):
    event = request_event({'intent': 'health'}, message_id='\ud800id')
    event.data['message']['attributes'] = {'\udfffkey': 'value\ud800', 'intent': '\ud83d'}
    event.data['subscription'] = 'projects/p/subscriptions/\udc00'
    result = handle(event, rig.settings, publish=rig._publish)
    assert result.status == 'ok' and rig.published == [result]
    result.to_json().encode('utf-8')          # serialisable: the publish can carry it
    assert result.message_id == '\\ud800id'


def test_health_reports_claims_stuck_past_their_lease_and_pubsubs_longest_backoff(rig, caplog):
    now = datetime.now(timezone.utc)
    rig.store.claim('ibj:0123456789', 'dead-run', 60, now - timedelta(seconds=60 + 901))     # stuck
    rig.store.claim('ibj:9876543210', 'slow-run', 60, now - timedelta(seconds=60 + 300))     # may come back
    result = rig.send('health')
    assert result.status == 'ok' and result.result['healthy'] is False
    assert [c['key'] for c in result.result['stuckClaims']] == ['ibj:0123456789']
    assert any(p['code'] == 'stuck-claim' and 'ibj:0123456789' in p['message'] for p in result.result['problems'])
    alerted = [r for r in caplog.records if getattr(r, 'fields', {}).get('stuckClaim') == 'ibj:0123456789']
    assert alerted and alerted[0].levelname == 'ERROR'      # deploy/alerts/stuck-claim.json matches this field
