"""The real function process under the Pub/Sub delivery model: what gets acked, what comes back.

The model (tests/reliability/pubsub_model.py) pushes over HTTP to functions-framework and acks only a
2xx answer; results go through the Pub/Sub emulator's results topic.
"""
from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest

from functions.contract import safe_text
from tests.reliability.delivery_rig import DeliveryRig, is_terminal, pubsub_message
from tests.reliability.examples import examples_for
from tests.reliability.harness import HEAVY
from tests.reliability.pubsub_model import DeliveryPolicy

POLICY = DeliveryPolicy(time_scale=0.02, ack_deadline=30.0)
CONCURRENT_TRIALS = 20 if HEAVY else 3


@pytest.fixture(scope='module')
def rig(module_pubsub, tmp_path_factory) -> DeliveryRig:
    rig = DeliveryRig.start(module_pubsub, tmp_path_factory.mktemp('delivery'), deadline=4.0, lease=4.0)
    try:
        yield rig
    finally:
        rig.stop()


def test_hostile_envelopes_are_acked_at_once_with_a_published_rejection(rig):
    rig.fresh_gateway()
    messages = [
        pubsub_message({'intent': 'summary'}, message_id='\ud800', attributes={'\udfff': '\ud83d'}),
        pubsub_message({'intent': 'allocation', 'params': {'dryRun': 'false'}}),
        pubsub_message({'intent': 'allocation', 'params': {'strategies': []}}),
        pubsub_message({'intent': 'allocation', 'maxAgeSeconds': float('inf')}),
        pubsub_message({'intent': 'allocation'}, published=datetime(2099, 1, 1, tzinfo=timezone.utc)),
    ]
    fates = rig.model(POLICY).deliver_all(messages)
    assert [(f.state, len(f.pushes)) for f in fates] == [('acked', 1)] * len(messages), fates
    results = rig.inbox.wait_terminal([safe_text(m['messageId'], 200) for m in messages])
    docs = [found[0] for found in results.values()]
    assert [d['status'] for d in docs] == ['ok', 'rejected', 'rejected', 'rejected', 'rejected'], docs
    assert docs[0]['messageId'] == '\\ud800'
    assert rig.orders() == []


def test_two_allocations_with_different_keys_on_one_account_reach_the_target_not_more(rig):
    """Posted together through the real process: the account lease serialises them (the second waits or is
    redelivered), so filled plus working quantity at the simulator is one allocation's, never two."""
    example = examples_for('allocation')[0]
    rig.fresh_gateway(example.prepare)
    model = rig.model(POLICY, random.Random(1))
    clean = model.deliver(pubsub_message({**example.request, 'idempotencyKey': 'clean'}))
    assert clean.state == 'acked'
    expected = rig.exposure()
    for trial in range(CONCURRENT_TRIALS):
        rig.fresh_gateway(example.prepare)
        messages = [pubsub_message({**example.request, 'idempotencyKey': f'{trial}-{side}'}) for side in 'ab']
        with ThreadPoolExecutor(2) as pool:
            fates = list(pool.map(model.deliver, messages))
        assert [f.state for f in fates] == ['acked', 'acked'], fates
        results = rig.inbox.wait_terminal([m['messageId'] for m in messages])
        assert all(any(is_terminal(d) for d in docs) for docs in results.values()), results
        assert rig.exposure() == expected, (trial, rig.exposure(), expected)
