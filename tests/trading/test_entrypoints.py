"""The trading intents through the README's local runner and through Pub/Sub into functions-framework."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from lib.store.sqlite import SqliteStore
from tests.emulators import REPO, FunctionServer
from tests.trading.support import ACCOUNT, BASE_CONFIG


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'functions', 'run', *args, '--json'], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def result_of(pubsub, subscription: str, message_id: str, timeout: float = 30.0) -> dict:
    """The result document answering `message_id`, pulled from the results subscription."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in pubsub.pull_once(subscription):
            if message.json()['messageId'] == message_id:
                return message.json()
    raise AssertionError(f'no result for message {message_id} within {timeout:g} s')


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    config = tmp_path / 'trading.toml'
    config.write_text(BASE_CONFIG)
    env = {k: v for k, v in os.environ.items()
           if k == 'IB_CLIENT_LIBRARY' or not k.startswith(('IB_', 'STORE_', 'SQLITE_', 'TRADING_'))}
    return {**env, 'SQLITE_PATH': str(tmp_path / 'state.sqlite3'), 'TRADING_CONFIG_PATH': str(config), **extra}


def test_the_local_runner_trades_against_a_gateway_and_answers_duplicate_the_second_time(rig, tmp_path):
    env = clean_env(tmp_path, IB_GATEWAY_HOST=rig.sim.host, IB_GATEWAY_PORT=str(rig.sim.port))
    first = run_cli('allocation', '--params', '{"strategies": ["dummy"]}', '--idempotency-key', 'cli-1', env=env)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc['status'] == 'ok' and doc['idempotencyKey'] == 'cli-1'
    assert [o.orderRef for o in rig.order_log()] == [doc['result']['orders'][0]['orderRef']]
    assert rig.position('SPY') == doc['result']['orders'][0]['filled'] > 0
    again = run_cli('allocation', '--params', '{"strategies": ["dummy"]}', '--idempotency-key', 'cli-1', env=env)
    assert again.returncode == 0 and json.loads(again.stdout)['status'] == 'duplicate'
    assert len(rig.order_log()) == 1


def test_the_local_runner_with_its_bundled_simulator_plans_a_dry_run(tmp_path):
    env = clean_env(tmp_path)
    result = run_cli('allocation', '--dry-run', '--sim-time', '2026-11-24T15:00:00Z', env=env)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc['status'] == 'ok' and doc['dryRun'] is True
    assert doc['result']['orders'][0]['whatIf']['initMarginChange'] > 0


def test_allocation_and_reconciliation_through_pubsub(rig, pubsub, tmp_path):
    intents, results = pubsub.topic('intents'), pubsub.topic('results')
    inbox = pubsub.pull_subscription(results)
    env = clean_env(tmp_path, IB_GATEWAY_HOST=rig.sim.host, IB_GATEWAY_PORT=str(rig.sim.port),
                    RESULTS_TOPIC=results, GOOGLE_CLOUD_PROJECT=pubsub.project,
                    PUBSUB_EMULATOR_HOST=pubsub.emulator.host, INTENT_DEADLINE_SECONDS='20')
    server = FunctionServer.start(env, tmp_path)
    try:
        pubsub.push_subscription(intents, server.push_endpoint(pubsub.project, intents))
        key = f'pubsub-{uuid.uuid4().hex[:8]}'
        request = {'intent': 'allocation', 'params': {'strategies': ['dummy']}, 'idempotencyKey': key}
        first_id = pubsub.publish(intents, request)
        first = result_of(pubsub, inbox, first_id)
        assert first['status'] == 'ok', first['error']
        second_id = pubsub.publish(intents, request)
        second = result_of(pubsub, inbox, second_id)
        assert second['status'] == 'duplicate' and second['result']['duplicateOf']['runId'] == first['runId']
        assert len(rig.order_log()) == 1 and rig.position('SPY') > 0

        reconcile_id = pubsub.publish(intents, {'intent': 'trade-reconciliation'})
        reconciled = result_of(pubsub, inbox, reconcile_id)
        assert reconciled['status'] == 'ok', reconciled['error']
        assert [f['strategies'] for f in reconciled['result']['recorded']] == [{'dummy': rig.position('SPY')}]
    finally:
        server.stop()
    ledger = SqliteStore(tmp_path / 'state.sqlite3')
    try:
        assert [f['account'] for f in ledger.fills()] == [ACCOUNT]
    finally:
        ledger.close()
