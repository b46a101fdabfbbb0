"""Every simulator fault × every registered intent, through the real handler.

Each cell delivers one message while the fault is on; when the handler raised (a non-2xx answer), the
message is delivered again with the gateway healthy until it is acked, as Pub/Sub does; a message the
handler acked is never delivered again. Every delivery must end with exactly one
published, schema-valid result within its deadline. The gateway's own order log must then hold the
orders of one clean delivery exactly once: no duplicate, and no order lost to the fault (a rejected
order excepted). Once the runs are over the process must hold no more threads, sockets, event loops
or IB objects than before.

RELIABILITY_HEAVY=1 adds every example, concurrent deliveries under each fault, and a sweep of the
message count at which the gateway drops the connection.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from intents.registry import get_intent, intent_names
from simulator import Simulator
from tests.pubsub_events import request_event
from tests.reliability.examples import Example, examples_for
from tests.reliability.gateway_faults import FAULTS, fault, startup_messages
from tests.reliability.harness import (
    DEADLINE_SLACK_SECONDS, HEAVY, MARKET_OPEN, Delivery, check_published, clean_run_legs, deliver,
    duplicate_orders, holdings, last_perm_id, legs, only_new_objects, order_log, printed_results,
    settings_for, using_store, wait_for_release, was_rejected,
)

CONCURRENT_DELIVERIES = 4
MAX_REDELIVERIES = 5
STALL_DEADLINE_SECONDS = 0.5   # a stalled run waits out its whole deadline: keep that short
FINAL_STATUSES = ('ok', 'skipped', 'duplicate')
# The errors each connection fault may end in, whatever the intent. A drop while a request is in
# flight reaches the intent first as the client library's ConnectionError('Socket disconnect').
DROPPED = ('GatewayDisconnected', 'ConnectionError')
EXPECTED_ERRORS = {
    'refuse': ('GatewayUnavailable',),
    'drop-in-connect': ('GatewayUnavailable',),
    'drop-in-intent': DROPPED,
    'disconnect-all': DROPPED,
    'stall': ('DeadlineExceeded',),
}


def cells() -> list:
    params = []
    for name in intent_names():
        examples = examples_for(name) if HEAVY else examples_for(name)[:1]
        for index, example in enumerate(examples):
            for fault_name in ('none', *FAULTS):
                params.append(pytest.param(example, fault_name, id=f'{name}-{index}-{fault_name}'))
    return params


def check_outcome(example: Example, fault_name: str, delivery: Delivery, places_orders: bool) -> None:
    """The status and error a delivery under `fault_name` must end with."""
    doc = delivery.doc
    if fault_name in EXPECTED_ERRORS:
        assert doc['status'] == 'error', doc
        assert doc['error']['type'] in EXPECTED_ERRORS[fault_name], doc['error']
        if fault_name != 'stall' or not places_orders:
            assert doc['error']['retryable'] is True, doc['error']
    elif fault_name == 'stall-orders' and example.places_orders:
        assert doc['status'] == 'error' and doc['error']['type'] == 'OrdersUnacknowledged', doc
        assert doc['error']['retryable'] is True
    elif fault_name == 'reject-orders' and example.places_orders:
        # never ok: the key stays open, so the healthy redelivery sends what was rejected
        assert doc['status'] == 'error' and doc['error']['type'] == 'OrdersRejected', doc
        assert doc['error']['retryable'] is True
        assert_every_order_reported_rejected(doc)
    else:
        assert doc['status'] == example.under_fault.get(fault_name, example.status), doc


def assert_every_order_reported_rejected(doc: dict) -> None:
    """Each order the gateway refused is in the result with its error, and listed as a problem."""
    orders = doc['result']['orders']
    assert orders, doc['result']
    for order in orders:
        assert order['status'] in ('Cancelled', 'Inactive') and order['filled'] == 0, order
        assert any(message.startswith('201:') for message in order['messages']), order
        assert any(problem['orderRef'] == order['orderRef'] and problem['code'] == 'order-rejected'
                   for problem in doc['result']['problems'])


def expects_orders(example: Example, fault_name: str) -> bool:
    """Whether the request's orders must be at the gateway once the healthy redelivery is done."""
    if not example.places_orders:
        return False
    # an order example's `error` under a fault is a retryable one: the healthy redelivery places the orders
    return fault_name == 'reject-orders' or example.under_fault.get(fault_name, example.status) in ('ok', 'error')


def run_cell(example: Example, fault_name: str, gateway: Simulator, capsys, store_dir: Path, *,
             concurrent: int = 1, drop_after: int | None = None) -> None:
    intent_cls = get_intent(example.intent)
    startup = startup_messages(gateway, intent_cls)
    expected = clean_run_legs(example, store_dir / 'clean-run.sqlite3')
    capsys.readouterr()
    if example.prepare:
        example.prepare(gateway)
    first_new_order = last_perm_id(gateway)
    settings = settings_for(gateway)
    faulted = settings_for(gateway, deadline_seconds=STALL_DEADLINE_SECONDS) if fault_name == 'stall' else settings
    event = request_event(example.request)
    before = holdings(gateway.port, deep=False)

    with only_new_objects():
        with fault(fault_name, gateway, startup, drop_after=drop_after):
            with ThreadPoolExecutor(concurrent) as pool:
                attempts = list(pool.map(lambda _: deliver(event, faulted), range(concurrent)))
        # pushed `concurrent` times at once, the message is acked when any push was (the delivery model's rule)
        redeliveries: list[Delivery] = []
        pending = all(attempt.raised for attempt in attempts)
        while pending:
            assert len(redeliveries) < MAX_REDELIVERIES, redeliveries[-1].doc
            redeliveries.append(deliver(event, settings))
            pending = redeliveries[-1].raised
        leaks = wait_for_release(before, gateway.port)

    printed = printed_results(capsys.readouterr().out)
    for attempt in attempts:
        check_published(attempt, printed)
        assert attempt.seconds <= faulted.deadline_seconds + DEADLINE_SLACK_SECONDS, attempt.doc
        if concurrent == 1 and drop_after is None:
            check_outcome(example, fault_name, attempt, intent_cls.places_orders)
    for redelivery in redeliveries:
        check_published(redelivery, printed)
    if redeliveries:
        assert redeliveries[-1].doc['status'] in FINAL_STATUSES, redeliveries[-1].doc
    assert len(printed) == concurrent + len(redeliveries)
    orders = order_log(gateway, after_perm_id=first_new_order)
    assert not duplicate_orders(orders), duplicate_orders(orders)
    if expects_orders(example, fault_name):
        placed = legs([o for o in orders if not was_rejected(o)])
        assert placed == expected, f'placed {placed}; one clean delivery places {expected}'
    else:
        assert not orders, orders
    assert not leaks


@pytest.mark.parametrize(('example', 'fault_name'), cells())
def test_fault(example, fault_name, gateway, capsys, tmp_path):
    run_cell(example, fault_name, gateway, capsys, tmp_path)


@pytest.mark.skipif(not HEAVY, reason='heavy variant: RELIABILITY_HEAVY=1')
@pytest.mark.parametrize(('example', 'fault_name'), cells())
def test_fault_with_concurrent_deliveries(example, fault_name, gateway, capsys, tmp_path):
    run_cell(example, fault_name, gateway, capsys, tmp_path, concurrent=CONCURRENT_DELIVERIES)


@pytest.mark.skipif(not HEAVY, reason='heavy variant: RELIABILITY_HEAVY=1')
@pytest.mark.parametrize('name', intent_names())
def test_drop_after_every_message_count(name, capsys, tmp_path):
    example = examples_for(name)[0]
    with Simulator(time=MARKET_OPEN, seed=7) as probe:
        startup = startup_messages(probe, get_intent(name))
    for count in range(1, startup + 6):
        with using_store(tmp_path / f'drop-after-{count}.sqlite3'), Simulator(time=MARKET_OPEN, seed=7) as gateway:
            run_cell(example, 'drop-in-intent', gateway, capsys, tmp_path, drop_after=count)
