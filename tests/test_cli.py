"""The local runner as a user types it: `python -m functions run ...` on a machine with no gateway."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema

from functions.contract import result_schema
from tests.emulators import free_port

REPO = Path(__file__).resolve().parent.parent
CONFIG_VARS = ('IB_GATEWAY_HOST', 'IB_GATEWAY_PORT', 'IB_ACCOUNT', 'RESULTS_TOPIC', 'GOOGLE_CLOUD_PROJECT',
               'PUBSUB_EMULATOR_HOST', 'TRADING_MODE', 'INTENT_DEADLINE_SECONDS')


def fresh_env(**extra: str) -> dict[str, str]:
    """This environment without any of the project's settings, as on a fresh machine."""
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
    return {**env, **extra}


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

