"""Every registered intent has example requests, and each is a valid request that works on a healthy gateway."""
from __future__ import annotations

import pytest

from functions.contract import IntentRequest
from intents.registry import get_intent, intent_names
from tests.pubsub_events import request_event
from tests.reliability.examples import EXAMPLES, examples_for
from tests.reliability.harness import (
    check_published, deliver, duplicate_orders, last_perm_id, order_log, printed_results, settings_for,
)

ALL_EXAMPLES = [pytest.param(example, id=f'{name}-{i}')
                for name in intent_names() for i, example in enumerate(examples_for(name))]


def test_every_registered_intent_has_an_example():
    missing = [name for name in intent_names() if not examples_for(name)]
    assert not missing, f'add examples for {missing} to tests/reliability/examples.py'


def test_no_example_names_an_unregistered_intent():
    assert set(EXAMPLES) <= set(intent_names())
    assert all(example.intent == name for name, examples in EXAMPLES.items() for example in examples)


@pytest.mark.parametrize('example', ALL_EXAMPLES)
def test_example_is_a_valid_request(example):
    request = IntentRequest.model_validate(example.request)
    get_intent(request.intent).Params.model_validate(request.params)


@pytest.mark.parametrize('example', ALL_EXAMPLES)
def test_example_runs_on_a_healthy_gateway(example, gateway, capsys):
    if example.prepare:
        example.prepare(gateway)
    first_new_order = last_perm_id(gateway)
    delivery = deliver(request_event(example.request), settings_for(gateway))
    doc = check_published(delivery, printed_results(capsys.readouterr().out))
    assert doc['status'] == example.status, doc['error']
    orders = order_log(gateway, after_perm_id=first_new_order)
    assert bool(orders) == example.places_orders, orders
    assert not duplicate_orders(orders)
