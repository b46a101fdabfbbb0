"""The local runner as a user types it: `python -m functions run ...` on a machine with no gateway."""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema

from functions.contract import result_schema
from tests.emulators import free_port

REPO = Path(__file__).resolve().parent.parent
CONFIG_VARS = ('IB_GATEWAY_HOST', 'IB_GATEWAY_PORT', 'IB_ACCOUNT', 'RESULTS_TOPIC', 'GOOGLE_CLOUD_PROJECT',
               'PUBSUB_EMULATOR_HOST', 'TRADING_MODE', 'INTENT_DEADLINE_SECONDS')


def fresh_env(**extra: str) -> dict[str, str]:
    """This environment without any of the project's settings, as on a fresh machine (a new local state)."""
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
    state = Path(tempfile.mkdtemp(prefix='cli-state-'))
    return {**env, 'SIMULATOR_STATE': str(state / 'simulator.json'), 'SQLITE_PATH': str(state / 'state.sqlite3'),
            **extra}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'functions', *args], cwd=REPO, env=env or fresh_env(),
                          capture_output=True, text=True, timeout=60)


def test_json_prints_exactly_one_valid_result_document():
    run = cli('run', 'summary', '--json')
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    jsonschema.Draft202012Validator(result_schema(), format_checker=jsonschema.FormatChecker()).validate(doc)
    assert doc['status'] == 'ok' and doc['intent'] == 'summary'
    assert doc['account'] == 'DU1234567'
    assert doc['gateway']['host'] == '127.0.0.1'
    assert 'bundled simulator' in run.stderr


def test_human_output_has_readable_sections():
    run = cli('run', 'health')
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert out.startswith('health: OK in ')
    assert not out.lstrip().startswith('{')
    for pattern in (r'account\s+DU1234567', r'trading mode\s+paper', r'dry run\s+no', r'clientId \d+',
                    r'managedAccounts \(1\)', r'healthy\s+yes'):
        assert re.search(pattern, out), f'{pattern!r} missing from:\n{out}'
    sections = [line for line in out.splitlines() if line and set(line) == {'='}]
    assert len(sections) >= 2


def test_sim_time_sets_the_simulated_gateway_clock():
    run = cli('run', 'health', '--json', '--sim-time', '2024-03-15T14:30:00Z')
    assert run.returncode == 3, run.stderr          # ok, but degraded: the clock is off
    result = json.loads(run.stdout)['result']
    assert result['gatewayTime'].startswith('2024-03-15T14:30')
    assert result['healthy'] is False and result['degraded'] is True
    assert [p['code'] for p in result['problems']] == ['clock-skew']


def test_window_makes_a_run_follow_the_session_of_the_simulated_day():
    # 12:45 in New York on the day after Thanksgiving (close 13:00), then on a normal Monday (close 16:00)
    half_day = cli('run', 'summary', '--json', '--window', '{"beforeClose": 900}', '--sim-time', '2026-11-27T17:45:00Z')
    assert half_day.returncode == 0, half_day.stderr
    assert json.loads(half_day.stdout)['status'] == 'ok'
    normal = cli('run', 'summary', '--window', '{"beforeClose": 900}', '--sim-time', '2026-11-30T17:45:00Z')
    assert normal.returncode == 0, normal.stderr
    assert normal.stdout.startswith('summary: SKIPPED') and 'not within 900 s of the 16:00 EST close' in normal.stdout
    bad = cli('run', 'summary', '--window', '[900]')
    assert bad.returncode == 2 and '--window must be a JSON object' in bad.stderr


def test_bad_params_exit_2_with_a_message():
    run = cli('run', 'summary', '--params', '{not json')
    assert run.returncode == 2
    assert run.stdout == ''
    assert '--params is not valid JSON' in run.stderr and 'Traceback' not in run.stderr
    run = cli('run', 'summary', '--params', '[1, 2]')
    assert run.returncode == 2 and '--params must be a JSON object' in run.stderr


def test_rejected_run_exits_1_and_still_prints_the_result():
    run = cli('run', 'summary', '--json', '--params', '{"noSuchParam": 1}')
    assert run.returncode == 1, run.stderr
    doc = json.loads(run.stdout)
    assert doc['status'] == 'rejected' and doc['error']['type'] == 'InvalidParams'


def test_unreachable_gateway_exits_1_with_a_retryable_error():
    env = fresh_env(IB_GATEWAY_HOST='127.0.0.1', IB_GATEWAY_PORT=str(free_port()), IB_CONNECT_ATTEMPTS='1')
    run = cli('run', 'health', '--json', env=env)
    assert run.returncode == 1
    doc = json.loads(run.stdout)
    assert doc['status'] == 'error' and doc['error']['retryable'] is True


def test_bad_configuration_exits_2():
    run = cli('run', 'health', env=fresh_env(IB_GATEWAY_PORT='eighty'))
    assert run.returncode == 2
    assert 'IB_GATEWAY_PORT' in run.stderr and 'Traceback' not in run.stderr



def test_the_bundled_simulator_keeps_its_account_between_runs_until_fresh():
    env = fresh_env(COLUMNS='120')
    trade = cli('run', 'allocation', '--json', '--sim-time', '2026-11-24T15:00:00Z', env=env)
    assert trade.returncode == 0, trade.stderr
    placed = {o['contract']['localSymbol']: o['filled'] * (1 if o['action'] == 'BUY' else -1)
              for o in json.loads(trade.stdout)['result']['orders']}
    assert placed and 'a paper IB Gateway, not IB' in trade.stderr
    later = cli('run', 'summary', '--json', env=env)
    positions = {p['contract']['localSymbol']: p['position'] for p in json.loads(later.stdout)['result']['positions']}
    assert positions == placed
    fresh = cli('run', 'summary', '--json', '--fresh', env=env)
    assert json.loads(fresh.stdout)['result']['positions'] == [] and 'removed the simulator state' in fresh.stderr


def test_human_output_fits_120_columns_with_a_headline_first_and_whole_share_counts():
    env = fresh_env(COLUMNS='120')
    outputs = {}
    for name, args in (('allocation', ('--sim-time', '2026-11-24T15:00:00Z')), ('summary', ()),
                       ('close-all', ('--sim-time', '2026-11-24T16:00:00Z'))):
        run = cli('run', name, *args, env=env)
        assert run.returncode == 0, run.stderr
        wide = [line for line in run.stdout.splitlines() if len(line) > 120]
        assert wide == [], f'{name}: {len(wide)} lines wider than 120 columns, e.g. {wide[0]!r}'
        outputs[name] = run.stdout
    allocation = outputs['allocation']
    assert re.match(r'allocation: OK in [\d.,]+ ms — 2 order\(s\) placed, 2 filled\n  NLV 1,000,000 USD', allocation)
    orders = allocation.split('\norders (2)\n')[1].split('\n\n')[0]
    assert re.search(r'SELL\s+647\s', orders) and '647.00' not in orders        # a share count, not a price
    assert 'more column(s)' in orders and '--wide shows them' in orders
    summary = outputs['summary']
    assert summary.index('positions (2)') < summary.index('accountValues')
    assert 'accountValues' in summary and '(hidden; --wide shows them)' in summary
    assert re.search(r'started\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d E[SD]T \(\d\d:\d\d:\d\d UTC\)', summary)
    assert re.search(r'close-all: OK in .* — \d order\(s\) placed', outputs['close-all'])
    # the day of the fills: a gateway reports only the current day's executions
    wide = cli('run', 'summary', '--wide', '--sim-time', '2026-11-24T16:30:00Z', env=env)
    assert any(len(line) > 120 for line in wide.stdout.splitlines()) and 'NetLiquidation' in wide.stdout


def test_render_prints_results_read_from_stdin_as_run_does():
    env = fresh_env(COLUMNS='120')
    docs = [json.loads(cli('run', name, '--json', env=env).stdout) for name in ('health', 'summary')]
    lines = subprocess.run([sys.executable, '-m', 'functions', 'render'], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=60, input='\n'.join(json.dumps(d) for d in docs) + '\n')
    assert lines.returncode == 0, lines.stderr
    assert lines.stdout.startswith('health: OK') and '\nsummary: OK' in lines.stdout
    # what `gcloud pubsub subscriptions pull --format=json` prints: received messages with base64 data
    pulled = [{'ackId': f'ack-{i}', 'message': {'data': base64.b64encode(json.dumps(d).encode()).decode(),
                                                'attributes': {'intent': d['intent']}, 'messageId': str(i)}}
              for i, d in enumerate(docs)]
    gcloud = subprocess.run([sys.executable, '-m', 'functions', 'render'], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=60, input=json.dumps(pulled, indent=2))
    assert gcloud.returncode == 0 and gcloud.stdout == lines.stdout
    bad = subprocess.run([sys.executable, '-m', 'functions', 'render'], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60, input='{"not": "a result"}\n')
    assert bad.returncode == 2 and 'is not a result document (schema intent-result/v1)' in bad.stderr


def test_help_lists_every_intent_with_its_params():
    from intents.registry import get_intent, intent_names

    run = cli('run', '--help')
    assert run.returncode == 0
    for name in intent_names():
        assert re.search(rf'^  {re.escape(name)}\s', run.stdout, re.M), name
        for field_name, field in get_intent(name).Params.model_fields.items():
            assert f'      {field.alias or field_name}' in run.stdout, (name, field_name)


def test_messages_a_user_can_act_on():
    port = cli('run', 'health', env=fresh_env(IB_GATEWAY_PORT='abc', IB_GATEWAY_HOST='127.0.0.1'))
    assert port.returncode == 2 and 'invalid literal' not in port.stderr
    assert "IB_GATEWAY_PORT='abc' is invalid: expected a TCP port" in port.stderr and '4002' in port.stderr
    unknown = cli('run', 'allocation', '--json', '--params', '{"strategy": ["dummy"]}')
    error = json.loads(unknown.stdout)['error']
    assert error['type'] == 'InvalidParams' and 'Extra inputs' not in error['message']
    assert 'params.strategy: unknown key; accepted keys: orderPolicy, strategies' in error['message']
    unreachable = cli('run', 'health', env=fresh_env(IB_GATEWAY_HOST='127.0.0.1', IB_GATEWAY_PORT=str(free_port()),
                                                     IB_CONNECT_TIMEOUT='1', IB_CONNECT_ATTEMPTS='1'))
    assert unreachable.returncode == 1
    assert 'Pub/Sub' not in unreachable.stdout and 'delivered again' not in unreachable.stdout
    assert 'run it again' in unreachable.stdout
    assert '4002 (paper)' in unreachable.stderr and '7497' in unreachable.stderr


def test_a_plan_printed_by_run_approval_is_executed_by_run_execute_plan_on_the_kept_gateway():
    env = fresh_env(COLUMNS='120')
    at = ('--sim-time', '2026-11-24T15:00:00Z')
    planning = cli('run', 'allocation', '--approval', *at, env=env)
    assert planning.returncode == 0, planning.stderr
    assert 'order(s) planned, none placed until approved' in planning.stdout.splitlines()[0]
    plan_id = re.search(r'^  planId +([0-9a-f]+)$', planning.stdout, re.M).group(1)
    approve, here = planning.stdout.rstrip().splitlines()[-2:]
    assert approve.strip().startswith('gcloud pubsub topics publish intents ') and plan_id in approve
    assert here.strip() == f'or here: ./run execute-plan --params \'{{"planId": "{plan_id}"}}\''
    executed = cli('run', 'execute-plan', '--params', json.dumps({'planId': plan_id}), '--json', *at, env=env)
    assert executed.returncode == 0, executed.stdout + executed.stderr
    # a second process found the first one's plan (the store) and the account as planned (the kept simulator)
    orders = json.loads(executed.stdout)['result']['orders']
    assert orders and all(o['status'] == 'Filled' for o in orders)
    assert {o['orderRef'] for o in orders} == set(re.findall(r'^  (ibj:[0-9a-f]{10}:\d+) ', planning.stdout, re.M))
