"""Plan → approve → execute: `approval: "required"` plans and places nothing; execute-plan places the plan.

Orders are counted at the simulated gateway (rig.order_log), never in our own results.
"""
from __future__ import annotations

import shlex

import pytest

from tests.trading.support import BASE_CONFIG


def plan_of(rig, intent='allocation', params=None, **options):
    result = rig.send(intent, params if params is not None else {'strategies': ['dummy']}, approval='required',
                      **options)
    assert result.status == 'ok', (result.error, result.result)
    return result


def test_a_planning_run_places_nothing_and_publishes_its_plan_with_the_approve_command(rig):
    result = plan_of(rig)
    assert rig.order_log() == []                                   # nothing reached the gateway
    plan = result.result['plan']
    [order] = plan['orders']
    assert order['action'] == 'BUY' and order['quantity'] > 0 and order['contract']['symbol'] == 'SPY'
    assert order['orderRef'].startswith(result.result['orderRefPrefix'] + ':')
    assert order['orderType'] == 'MKT' and order['expectedPrice'] > 0
    assert order['whatIf']['initMarginChange'] > 0 and order['whatIf']['commission'] > 0
    assert plan['limits']['priceBand'] == 0.2 and plan['expiresAt'] > result.started_at.isoformat()[:19]
    words = shlex.split(plan['approve'])
    assert words[:5] == ['gcloud', 'pubsub', 'topics', 'publish', 'intents']
    assert words[5] == '--message={"intent":"execute-plan","params":{"planId":"%s"}}' % plan['planId']
    stored = rig.store.get_plan(plan['planId'])
    assert stored['orders'] == plan['orders'] and stored['account'] == rig.account
    assert result.idempotency_key.startswith('plan:')


def test_a_plan_does_not_answer_the_real_run_duplicate(rig):
    plan_of(rig, key='slot-1')
    real = rig.send('allocation', {'strategies': ['dummy']}, key='slot-1')
    assert real.status == 'ok', real.error
    assert [o.action for o in rig.order_log()] == ['BUY']


def test_approval_required_in_the_trading_config_wins_over_the_request(make_rig):
    rig = make_rig('approval = "required"\n' + BASE_CONFIG)
    result = rig.send('allocation', {'strategies': ['dummy']}, approval='none')
    assert result.status == 'ok' and result.result['plan']['orders']
    assert rig.order_log() == []


@pytest.mark.parametrize('intent, approval', [('summary', 'required'), ('health', 'none'),
                                              ('allocation', 'maybe'), ('allocation', 'REQUIRED')])
def test_approval_elsewhere_or_of_another_value_is_an_invalid_request(rig, intent, approval):
    result = rig.send(intent, {}, approval=approval)
    assert result.status == 'rejected' and result.error.type == 'InvalidRequest', result.error
    assert 'approval' in result.error.message
    assert rig.order_log() == []


def test_a_plan_with_a_derived_key_does_not_answer_the_real_run_of_the_same_slot_duplicate(rig):
    plan = plan_of(rig)
    real = rig.send('allocation', {'strategies': ['dummy']})
    assert real.status == 'ok', real.error
    assert real.idempotency_key != plan.idempotency_key.removeprefix('plan:')
    assert len(rig.order_log()) == 1
