"""Plan → approve → execute: `approval: "required"` plans and places nothing; execute-plan places the plan.

Orders are counted at the simulated gateway (rig.order_log), never in our own results.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from deploy.local_stack import write_gcloud_config
from functions.admission import admit
from functions.contract import decode_message
from functions.handler import run_isolated
from intents.execute_plan import ExecutePlan
from tests.emulators import require_tool
from tests.polling import wait_until
from tests.pubsub_events import request_event
from tests.trading.support import BASE_CONFIG, SPY_MACD_VIXY_CONFIG


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
    assert execute(rig, result).status == 'ok'          # the approval itself is not planned again
    assert placed(rig) == planned(result)


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


# --- execute-plan -----------------------------------------------------------------------------------

TWO_LEGS = BASE_CONFIG.replace('dummy = 0.5', 'dummy = 0.3\nspy-macd-vixy = 0.4') + SPY_MACD_VIXY_CONFIG


def placed(rig) -> dict[str, tuple]:
    """orderRef -> (action, quantity) of every order the gateway accepted."""
    log = rig.order_log()
    refs = [o.orderRef for o in log]
    assert len(refs) == len(set(refs)), f'an orderRef was placed twice: {refs}'
    return {o.orderRef: (o.action, o.totalQuantity) for o in log}


def planned(plan_result) -> dict[str, tuple]:
    return {o['orderRef']: (o['action'], o['quantity']) for o in plan_result.result['plan']['orders']}


def execute(rig, plan_result, **params):
    return rig.send('execute-plan', {'planId': plan_result.result['plan']['planId'], **params})


@pytest.mark.parametrize('backend', ['sqlite', 'firestore'])
def test_execute_plan_places_exactly_the_planned_orders_after_the_price_moved_within_the_band_and_once(
        make_rig, backend):
    rig = make_rig(backend=backend)
    plan = plan_of(rig)
    spy = rig.instrument('SPY')
    rig.sim.set_price('SPY', rig.sim.quote(spy).last * 1.02)          # inside the 20 % band
    done = execute(rig, plan)
    assert done.status == 'ok', (done.error, done.result)
    assert placed(rig) == planned(plan)                                # planned refs and quantities, not resized
    again = execute(rig, plan)
    assert again.status == 'duplicate'
    assert len(rig.order_log()) == 1


def test_a_second_subset_places_only_itself_and_the_same_subset_twice_places_nothing(make_rig):
    rig = make_rig(TWO_LEGS)
    plan = plan_of(rig, params={})
    first_ref, second_ref = sorted(planned(plan))
    assert execute(rig, plan, orders=[first_ref]).status == 'ok'
    assert set(placed(rig)) == {first_ref}
    assert execute(rig, plan, orders=[first_ref]).status == 'duplicate'
    second = execute(rig, plan, orders=[second_ref])
    assert second.status == 'ok', (second.error, second.result)
    assert placed(rig) == planned(plan)
    everything = execute(rig, plan)                # every order: both are at the broker already
    assert everything.status == 'ok' and everything.result['orders'] == []
    assert {o['orderRef'] for o in everything.result['alreadyPlaced']} == {first_ref, second_ref}
    assert placed(rig) == planned(plan)


def test_two_executions_of_one_plan_at_once_place_each_order_once(make_rig):
    rig = make_rig(TWO_LEGS)
    plan = plan_of(rig, params={})
    first_ref, _ = sorted(planned(plan))
    start = threading.Barrier(4)

    def run(params):
        start.wait()
        result = execute(rig, plan, **params)
        while result.status == 'error' and result.error.retryable:   # AccountBusy, KeyInFlight: redelivered
            result = execute(rig, plan, **params)
        return result

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, [{}, {}, {'orders': [first_ref]}, {'orders': [first_ref]}]))
    assert sorted(r.status for r in results) == ['duplicate', 'duplicate', 'ok', 'ok']
    assert placed(rig) == planned(plan)


def test_an_expired_plan_is_rejected_and_places_nothing(rig):
    rig.settings = replace(rig.settings, plan_ttl_seconds=0.2)         # PLAN_TTL_SECONDS
    plan = plan_of(rig)
    wait_until(lambda: datetime.now(timezone.utc).isoformat() > plan.result['plan']['expiresAt'].rstrip('Z'))
    result = execute(rig, plan)
    assert result.status == 'rejected' and result.error.type == 'PlanRejected'
    assert 'expired' in result.error.message
    assert rig.order_log() == []


def test_a_discarded_plan_is_rejected_and_every_reason_is_listed(rig):
    plan = plan_of(rig)
    discarded = execute(rig, plan, discard=True)
    assert discarded.status == 'ok' and discarded.result['discarded']['runId'] == discarded.run_id
    rig.sim.broker.set_position(rig.account, rig.instrument('SPY'), 7, 500.0)
    result = execute(rig, plan, orders=[*planned(plan), 'ibj:0000000000:1'])
    assert result.status == 'rejected', result.error
    reasons = result.result['reasons']
    assert any('discarded' in r for r in reasons)
    assert any('ibj:0000000000:1' in r and 'not orders of this plan' in r for r in reasons)
    assert any('position is 7' in r for r in reasons)
    assert rig.order_log() == []


def test_a_plan_whose_position_changed_is_rejected(rig):
    plan = plan_of(rig)
    rig.sim.broker.set_position(rig.account, rig.instrument('SPY'), 3, 500.0)
    result = execute(rig, plan)
    assert result.status == 'rejected' and 'the position is 3, it was 0 at planning' in result.error.message
    assert rig.order_log() == []


def test_a_price_outside_the_band_is_rejected(rig):
    plan = plan_of(rig)
    spy = rig.instrument('SPY')
    rig.sim.set_price('SPY', rig.sim.quote(spy).close * 1.3)           # 30 % from the close: band is 20 %
    result = execute(rig, plan)
    assert result.status == 'rejected' and 'price outside the band' in result.error.message, result.error
    assert rig.order_log() == []


@pytest.mark.parametrize('plan_id', ['nope', '../plans/ü\u202e\x00' + 'x' * 80])
def test_an_unknown_plan_is_rejected(rig, plan_id):
    result = rig.send('execute-plan', {'planId': plan_id})
    assert result.status == 'rejected' and 'no plan' in result.error.message


def test_with_trading_disabled_a_plan_can_be_discarded_and_an_execution_lists_it_among_the_reasons(rig):
    rig.settings = replace(rig.settings, plan_ttl_seconds=0.2)
    plan = plan_of(rig)
    rig.store.put_settings({'tradingEnabled': False})
    wait_until(lambda: datetime.now(timezone.utc).isoformat() > plan.result['plan']['expiresAt'].rstrip('Z'))
    refused = execute(rig, plan)
    assert refused.status == 'rejected', refused.error
    assert any('expired' in r for r in refused.result['reasons'])
    assert any('trading' in r.lower() and 'disabled' in r.lower() for r in refused.result['reasons'])
    assert execute(rig, plan, discard=True).status == 'ok'
    assert rig.store.get_plan(plan.result['plan']['planId'])['discarded']
    assert rig.order_log() == []


def test_a_dry_run_with_approval_stores_no_plan_and_other_order_intents_stay_refused_with_trading_disabled(rig):
    dry = rig.send('allocation', {'strategies': ['dummy']}, approval='required', dry_run=True)
    assert dry.status == 'ok' and 'plan' not in dry.result and dry.result['orders']
    rig.store.put_settings({'tradingEnabled': False})
    assert rig.send('allocation', {'strategies': ['dummy']}).error.type == 'TradingDisabled'
    assert rig.order_log() == []


def test_an_execution_cut_off_after_its_first_order_is_redelivered_and_places_only_the_rest(make_rig):
    rig = make_rig(TWO_LEGS)
    plan = plan_of(rig, params={})
    rig.sim.faults.latency_ms = 40                 # the first order's acknowledgement is on its way when the link drops
    event = rig.event('execute-plan', {'planId': plan.result['plan']['planId']})

    def drop_once_the_first_order_arrives():
        if wait_until(lambda: len(rig.order_log()) == 1, timeout=15, interval=0.001):
            rig.sim.disconnect_all()

    watcher = threading.Thread(target=drop_once_the_first_order_arrives)
    watcher.start()
    first = rig.deliver(event)
    watcher.join()
    rig.sim.faults.latency_ms = 0
    assert first.status == 'error' and first.error.retryable, first.error
    assert len(rig.order_log()) == 1
    redelivered = rig.deliver(event)               # Pub/Sub brings the message back
    assert redelivered.status == 'ok', (redelivered.error, redelivered.result)
    assert placed(rig) == planned(plan)            # the rest, once; the first not again
    assert [o['orderRef'] for o in redelivered.result['alreadyPlaced']] == [o.orderRef for o in rig.order_log()[:1]]
    assert rig.deliver(event).status == 'duplicate'


def test_an_execution_killed_before_it_finished_its_claim_is_taken_over_and_places_nothing_again(make_rig):
    rig = make_rig(TWO_LEGS, deadline=2, lease=2)
    plan = plan_of(rig, params={})
    event = rig.event('execute-plan', {'planId': plan.result['plan']['planId']})
    decoded = decode_message(event)
    params = ExecutePlan.Params.model_validate(decoded.request.params)
    # the pieces handle() runs, without settle: the process is killed before it finishes its claim
    admitted = admit(ExecutePlan, params, decoded, run_id='killed-run', dry_run=False, settings=rig.settings)
    died = run_isolated(ExecutePlan, params, dry_run=False, settings=rig.settings, context=admitted.context,
                        claim_terms=admitted.claim_terms)
    assert died.status == 'ok' and placed(rig) == planned(plan)
    assert wait_until(lambda: rig.deliver(event).status != 'error', timeout=10, interval=0.2)   # the leases end
    assert placed(rig) == planned(plan)
    assert rig.deliver(event).status == 'duplicate'


def test_an_executed_plan_s_fills_belong_to_its_strategies_so_the_next_allocation_has_nothing_to_do(make_rig):
    rig = make_rig(TWO_LEGS)
    plan = plan_of(rig, params={})
    assert plan.result['orders'] == []                         # a plan places nothing, and says so
    done = execute(rig, plan)
    assert done.status == 'ok' and done.result['orderRefPrefix'] == plan.result['orderRefPrefix']
    reconciled = rig.send('trade-reconciliation')
    assert reconciled.status == 'ok' and reconciled.result['problems'] == [], reconciled.result['problems']
    # each strategy holds its target: the part the two netted between them (no order) was booked as a transfer
    holdings = {h['conId']: h['strategies'] for h in rig.store.holdings(rig.account)}
    for contract in plan.result['contracts']:
        wanted = {name: target for name, target in contract['byStrategy'].items() if target}
        assert holdings.get(contract['contract']['conId'], {}) == pytest.approx(wanted), contract
    follow_up = rig.send('allocation', key='after-the-plan')
    assert follow_up.status == 'skipped' and follow_up.result['reason'] == 'no trades needed', follow_up.result
    assert placed(rig) == planned(plan)


def test_the_printed_approve_command_run_by_a_shell_through_real_gcloud_places_the_plan(rig, pubsub, tmp_path):
    require_tool('gcloud', 'the approve command is a gcloud command')
    topic = pubsub.topic('intents')
    subscription = pubsub.pull_subscription(topic)
    rig.settings = replace(rig.settings, intents_topic=topic, project=pubsub.project)
    plan = plan_of(rig)
    write_gcloud_config(tmp_path / 'gcloud', 'not-the-project', pubsub.emulator.host)   # --project must say which
    env = {**os.environ, 'CLOUDSDK_CONFIG': str(tmp_path / 'gcloud')}
    env.pop('PUBSUB_EMULATOR_HOST', None)          # gcloud finds the emulator through its own config
    approved = subprocess.run(['bash', '-c', plan.result['plan']['approve']], env=env, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert approved.returncode == 0, approved.stderr
    [message] = pubsub.pull(subscription, 1)
    assert rig.order_log() == []
    executed = rig.deliver(request_event(message.json(), message_id=message.message_id))
    assert executed.status == 'ok', (executed.error, executed.result)
    assert placed(rig) == planned(plan)


def test_a_close_all_plan_changes_nothing_and_executes_under_the_close_policy_after_a_big_move(rig):
    assert rig.send('allocation', {'strategies': ['dummy']}).status == 'ok'
    held, targets = rig.position('SPY'), rig.store.get_targets('dummy')
    plan = plan_of(rig, 'close-all', {})
    [order] = plan.result['plan']['orders']
    assert order['reduceOnly'] and order['priceBand'] is None and (order['action'], order['quantity']) == ('SELL', held)
    assert rig.position('SPY') == held and rig.store.get_targets('dummy') == targets   # planned, not done
    rig.sim.set_price('SPY', rig.sim.quote(rig.instrument('SPY')).close * 1.25)      # no band for closes here
    done = execute(rig, plan)
    assert done.status == 'ok', (done.error, done.result)
    assert rig.position('SPY') == 0
    assert rig.store.get_targets('dummy')['targets'] == {'SPY': 0.0}    # as a real close-all leaves them


def test_a_cash_balancer_plan_converts_when_executed(rig):
    rig.sim.broker.set_cash(rig.account, 'EUR', 100_000)
    plan = plan_of(rig, 'cash-balancer', {})
    [order] = plan.result['plan']['orders']
    assert (order['contract']['localSymbol'], order['action'], order['quantity']) == ('EUR.USD', 'SELL', 100_000)
    assert rig.order_log() == []
    assert execute(rig, plan).status == 'ok'
    assert placed(rig) == planned(plan)


def test_a_planned_order_the_gateway_rejected_goes_again_on_redelivery_under_the_next_suffix(rig):
    plan = plan_of(rig)
    [planned_ref] = planned(plan)
    rig.sim.faults.reject_orders = 'margin'
    event = rig.event('execute-plan', {'planId': plan.result['plan']['planId']})
    refused = rig.deliver(event)
    assert refused.status == 'error' and refused.error.type == 'OrdersRejected' and refused.error.retryable
    rig.sim.faults.reject_orders = False
    again = rig.deliver(event)                      # Pub/Sub redelivers the retryable error
    assert again.status == 'ok', (again.error, again.result)
    assert [o['orderRef'] for o in again.result['orders']] == [f'{planned_ref}.2']
    statuses = {o.orderRef: o.status for o in rig.order_log()}
    assert len(rig.order_log()) == 2 and statuses[f'{planned_ref}.2'] == 'Filled' and statuses[planned_ref] != 'Filled'
    assert rig.deliver(event).status == 'duplicate'
