"""Notification deliveries in the store, both backends (the fixtures of test_store_contract): one record per
(result, sink), so a redelivered result is sent again only to the sinks that did not take it."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from lib.store import Store
from tests.store.test_store_contract import run_concurrently

T0 = datetime(2026, 3, 2, 14, 30, 0, 123456, tzinfo=timezone.utc)
RESULT = 'run/ü-1'       # ids may hold any character


def test_a_first_start_holds_the_send_and_counts_one_attempt(store: Store):
    start = store.start_delivery(RESULT, 'slack', 'inv-1', 30, T0)

    assert start.held
    assert (start.delivery.state, start.delivery.attempts, start.delivery.holder) == ('sending', 1, 'inv-1')
    assert start.delivery.lease_until == T0 + timedelta(seconds=30)
    assert store.deliveries(RESULT) == [start.delivery]
    assert store.deliveries('other') == []


def test_a_sent_or_rejected_delivery_is_never_held_again(store: Store):
    for sink, state in (('slack', 'sent'), ('webhook', 'rejected')):
        store.start_delivery(RESULT, sink, 'inv-1', 30, T0)
        assert store.end_delivery(RESULT, sink, 'inv-1', state, f'HTTP {200 if state == "sent" else 400}', T0)

    for sink, state in (('slack', 'sent'), ('webhook', 'rejected')):
        again = store.start_delivery(RESULT, sink, 'inv-2', 30, T0 + timedelta(days=1))
        assert not again.held and again.delivery.state == state and again.delivery.attempts == 1
    assert [(d.sink, d.state, d.holder, d.lease_until) for d in store.deliveries(RESULT)] == [
        ('slack', 'sent', None, None), ('webhook', 'rejected', None, None)]


def test_a_failed_delivery_is_held_again_and_counts_each_attempt(store: Store):
    for attempt in range(1, 4):
        start = store.start_delivery(RESULT, 'telegram', f'inv-{attempt}', 30, T0 + timedelta(minutes=attempt))
        assert start.held and start.delivery.attempts == attempt
        assert store.end_delivery(RESULT, 'telegram', f'inv-{attempt}', 'failed', 'HTTP 503',
                                  T0 + timedelta(minutes=attempt))
    [record] = store.deliveries(RESULT)
    assert (record.state, record.attempts, record.detail) == ('failed', 3, 'HTTP 503')


def test_a_valid_lease_keeps_others_out_until_it_expires(store: Store):
    store.start_delivery(RESULT, 'slack', 'inv-1', 30, T0)

    busy = store.start_delivery(RESULT, 'slack', 'inv-2', 30, T0 + timedelta(seconds=29))
    repeated = store.start_delivery(RESULT, 'slack', 'inv-1', 30, T0 + timedelta(seconds=1))
    taken = store.start_delivery(RESULT, 'slack', 'inv-3', 30, T0 + timedelta(seconds=31))

    assert not busy.held and busy.delivery.holder == 'inv-1'
    assert repeated.held and repeated.delivery.attempts == 1          # its own repeat counts once
    assert taken.held and taken.delivery.attempts == 2                # the first sender died: taken over
    # the first sender's late answer no longer counts
    assert not store.end_delivery(RESULT, 'slack', 'inv-1', 'sent', 'HTTP 200', T0 + timedelta(seconds=40))
    assert store.deliveries(RESULT)[0].holder == 'inv-3'


def test_an_unknown_end_state_is_refused(store: Store):
    store.start_delivery(RESULT, 'slack', 'inv-1', 30, T0)
    with pytest.raises(ValueError):
        store.end_delivery(RESULT, 'slack', 'inv-1', 'sending', '', T0)


def test_concurrent_starts_of_one_delivery_have_exactly_one_holder(new_store):
    stores = [new_store() for _ in range(8)]
    starts = run_concurrently(8, lambda i: stores[i].start_delivery(RESULT, 'webhook', f'inv-{i}', 30, T0))
    assert sum(start.held for start in starts) == 1
    [record] = stores[0].deliveries(RESULT)
    assert record.attempts == 1
