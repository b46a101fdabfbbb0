"""A real allocation's result, as the intents function publishes it, through notify_result: the orders placed, with
their fill price as the simulator filled them (guards the message against drift of the orders' shape)."""
from __future__ import annotations

import json

from functions.notify import notify
from lib.config import NotifySettings
from tests.test_notify import event, sink  # noqa: F401  (the recording sink fixture)


def test_an_allocation_that_placed_orders_is_sent_with_its_fill_price(rig, sink):  # noqa: F811
    result = rig.send('allocation', {'strategies': ['dummy']})
    assert result.status == 'ok', result.error
    doc = json.loads(result.to_json())
    [order] = doc['result']['orders']
    settings = NotifySettings.from_env({'NOTIFY_WEBHOOK_URL': sink.url('/hook')})   # default filter: the orders tag

    notify(event(doc), settings, store=rig.store)

    [body] = sink.bodies('/hook')
    [execution] = rig.sim.broker.executions()
    line = (f'  BUY {order["quantity"]:,.0f} SPY — Filled, filled {order["filled"]:,.0f} @ '
            f'{execution.price:,.2f}')
    assert body['text'].startswith('allocation: OK') and f'orders placed:\n{line}' in body['text'], body['text']
    assert 'NLV ' in body['text'] and 'account DU1234567 (paper)' in body['text']


def test_a_plan_waiting_for_approval_is_sent_with_its_orders_and_the_approve_command(rig, sink):  # noqa: F811
    result = rig.send('allocation', {'strategies': ['dummy']}, approval='required')
    assert result.status == 'ok', result.error
    doc = json.loads(result.to_json())
    plan = doc['result']['plan']
    settings = NotifySettings.from_env({'NOTIFY_WEBHOOK_URL': sink.url('/hook')})   # default filter: planned

    notify(event(doc), settings, store=rig.store)

    [body] = sink.bodies('/hook')
    [order] = plan['orders']
    assert f'plan {plan["planId"]}: 1 order(s), nothing placed; expires {plan["expiresAt"]}' in body['text']
    assert f'  BUY {order["quantity"]:,.0f} SPY' in body['text']
    assert f'approve: {plan["approve"]}' in body['text']
    assert rig.order_log() == []
