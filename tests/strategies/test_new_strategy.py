"""Adding a strategy as the README says: `python -m strategies new NAME`, a share in the config, and it runs.

Done in a copy of the repository, so the new module and its test never land in this tree.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    tracked = subprocess.run(['git', 'ls-files', '-z'], cwd=REPO, capture_output=True, check=True).stdout
    target = tmp_path / 'repo'
    for name in filter(None, tracked.decode().split('\0')):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def run(copy: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=copy, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_a_new_strategy_is_one_command_and_one_config_line_away_from_trading(copy: Path, tmp_path: Path):
    created = run(copy, '-m', 'strategies', 'new', 'momentum-spy')
    assert created.returncode == 0, created.stderr
    assert 'momentum-spy = 0.1' in created.stdout and 'allowlist' in created.stdout
    listed = run(copy, '-m', 'strategies', 'list')
    assert 'momentum-spy' in listed.stdout.split()

    generated = run(copy, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'tests/strategies/test_momentum_spy.py',
                    'tests/strategies/test_registry.py', 'tests/strategies/test_purity.py')
    assert generated.returncode == 0, generated.stdout[-2000:]

    config = (copy / 'config' / 'trading.toml').read_text().replace(
        '[exposure.strategies]', '[exposure.strategies]\nmomentum-spy = 0.1', 1)
    (copy / 'config' / 'trading.toml').write_text(config)   # no [strategies.momentum-spy] table: it is optional
    env = {'SIMULATOR_STATE': str(tmp_path / 'sim.json'), 'SQLITE_PATH': str(tmp_path / 'state.sqlite3')}
    for name in ('IB_GATEWAY_HOST', 'RESULTS_TOPIC', 'TRADING_CONFIG_PATH'):
        env[name] = ''
    allocation = run(copy, '-m', 'functions', 'run', 'allocation', '--json', '--params',
                     '{"strategies": ["momentum-spy"]}', '--sim-time', '2026-11-24T15:00:00Z', env=env)
    assert allocation.returncode == 0, allocation.stderr
    doc = json.loads(allocation.stdout)
    assert doc['status'] == 'ok', json.dumps(doc['result'], indent=1)[:3000]
    assert doc['result']['strategies']['momentum-spy']['status'] == 'ok'
    assert [order['contract']['symbol'] for order in doc['result']['orders']] == ['SPY']


def test_new_refuses_a_bad_or_taken_name(copy: Path):
    for name, message in (('Momentum', 'lowercase'), ('dummy', 'exists already'), ('two words', 'lowercase')):
        refused = run(copy, '-m', 'strategies', 'new', name)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    assert not list((copy / 'strategies').glob('momentum*'))
