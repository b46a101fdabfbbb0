"""The claim record is typed (trading.idempotency.FinishedRun, RecordedOrder) and its stored JSON keeps its shape:
records written before the types existed are read the same, and what is written now is what they held."""
from __future__ import annotations

import sqlite3
import threading
from datetime import datetime, timezone

from trading.idempotency import FinishedRun, RecordedOrder, claim_key, recorded_orders, run_reference
from lib.store.sqlite import SqliteStore
from tests.trading.support import ACCOUNT

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=timezone.utc)
REFERENCE = 'ibj:0123456789'
# a first generation finished for retry, then a second, as deployments before the types wrote them
EARLIER_RECORDS = [
    {'runId': 'run-1', 'status': 'error', 'retry': True, 'idempotencyKey': 'k', 'error': {
        'type': 'OrdersUnacknowledged', 'message': 'late', 'retryable': True},
     'orders': [{'orderRef': f'{REFERENCE}:756733', 'action': 'BUY', 'quantity': 10.0, 'strategies': {'dummy': 10.0},
                 'permId': 77, 'status': 'Submitted', 'filled': 0.0, 'conId': 756733}]},
    {'runId': 'run-2', 'status': 'ok', 'retry': False, 'idempotencyKey': 'k', 'error': None,
     'orders': [{'orderRef': f'{REFERENCE}:756733', 'action': 'BUY', 'quantity': 10.0, 'strategies': {'other': 10.0},
                 'permId': 77, 'status': 'Filled', 'filled': 10.0, 'conId': 756733},
                {'orderRef': f'{REFERENCE}:4215235', 'action': 'SELL', 'quantity': 5.0, 'strategies': None,
                 'permId': None, 'status': None, 'filled': None}]},      # no conId: an older record
]


def test_records_written_before_the_types_are_read_as_recorded_orders(tmp_path):
    store = SqliteStore(tmp_path / 'state.sqlite3')
    try:
        for generation, record in enumerate(EARLIER_RECORDS, start=1):
            key = claim_key(REFERENCE, generation)
            assert store.claim(key, record['runId'], 60, NOW).held
            assert store.finish(key, record['runId'], record, NOW)
        orders = recorded_orders(store, REFERENCE)
    finally:
        store.close()
    first = orders[f'{REFERENCE}:756733']
    assert first == RecordedOrder(f'{REFERENCE}:756733', 'BUY', 10.0, {'dummy': 10.0}, 77, 'Submitted', 0.0, 756733)
    assert orders[f'{REFERENCE}:4215235'].con_id is None and orders[f'{REFERENCE}:4215235'].quantity == 5.0


def test_a_finished_run_is_stored_in_the_shape_earlier_versions_wrote():
    record = EARLIER_RECORDS[0]
    typed = FinishedRun(record['runId'], record['status'], record['retry'], record['idempotencyKey'], record['error'],
                        tuple(RecordedOrder.from_record(order) for order in record['orders']))
    assert typed.to_record() == record


def test_a_deadline_striking_while_the_store_answers_the_claim_still_settles_what_it_took(make_rig):
    """The claim runs off the loop; when the deadline strikes while the store is slow to answer, its answer is
    still awaited, so the claim it took is finished for retry and the account lease released (not left to
    expire), and the redelivery places the orders at once, once. About 6 s."""
    rig = make_rig(deadline=3)
    event = rig.event('allocation', key='slow-store')
    rig.store.get_settings()                      # the file is set up: admission reads it, writing nothing
    writer = sqlite3.connect(rig.settings.store.sqlite_path, isolation_level=None, check_same_thread=False)
    writer.execute('BEGIN IMMEDIATE')             # another writer: the claim's lease write waits for it
    release = threading.Timer(4.5, writer.rollback)   # past the deadline
    release.start()
    try:
        late = rig.deliver(event)
    finally:
        release.join()
        writer.close()
    assert late.status == 'error' and late.error.type == 'DeadlineExceeded' and late.error.retryable, late.error
    assert rig.order_log() == []
    record = rig.store.get_claim(claim_key(run_reference(ACCOUNT, 'allocation', 'slow-store'), 1))
    assert record.status == 'finished' and record.result['retry'] is True and record.run_id == late.run_id
    assert rig.store.take_lease(f'account:{ACCOUNT}', 'probe', 1, datetime.now(timezone.utc)).held
    rig.store.release_lease(f'account:{ACCOUNT}', 'probe')

    again = rig.deliver(event)
    assert again.status == 'ok' and again.result['attempt'] == 2, again.error
    assert len(rig.order_log()) == 1
