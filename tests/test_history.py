"""Run history as a user meets it: every run of the local runner is kept, `history` lists, `show` prints one."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import REPO, fresh_env


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'functions', *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return fresh_env(SQLITE_PATH=str(tmp_path / 'state.sqlite3'), SIMULATOR_STATE=str(tmp_path / 'sim.json'),
                     COLUMNS='120')


def test_every_run_is_kept_and_history_lists_them_newest_first(env):
    runs = [json.loads(cli('run', *args, '--json', env=env).stdout) for args in (
        ('allocation', '--sim-time', '2026-11-24T15:00:00Z'), ('summary',), ('health', '--params', '{"x": 1}'))]
    assert [doc['status'] for doc in runs] == ['ok', 'ok', 'rejected']

    listed = cli('history', env=env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split()[3] for line in lines] == ['health', 'summary', 'allocation']
    assert [doc['runId'] in line for doc, line in zip(reversed(runs), lines)] == [True] * 3
    assert 'REJECTED' in lines[0] and 'params.x: unknown key' in lines[0]
    assert '2 order(s) placed' in lines[2]

    only = cli('history', '--intent', 'allocation', '--json', env=env)
    assert [json.loads(line) for line in only.stdout.splitlines()] == [runs[0]]
    assert len(cli('history', '--last', '1', env=env).stdout.splitlines()) == 1


def test_show_prints_one_run_as_run_printed_it(env):
    doc = json.loads(cli('run', 'summary', '--json', env=env).stdout)
    shown = cli('show', doc['runId'], env=env)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith('summary: OK in ') and doc['runId'] in shown.stdout
    assert json.loads(cli('show', doc['runId'], '--json', env=env).stdout) == doc
    missing = cli('show', 'no-such-run', env=env)
    assert missing.returncode == 2 and "no run 'no-such-run' in the history" in missing.stderr


def test_a_history_that_cannot_be_written_never_fails_the_run(env, tmp_path: Path):
    broken = {**env, 'SQLITE_PATH': str(tmp_path)}          # a folder: SQLite cannot open it
    run = cli('run', 'health', '--json', env=broken)
    assert run.returncode in (0, 3), run.stderr          # 3: health itself reports the unreadable store
    assert json.loads(run.stdout)['status'] == 'ok'
    assert 'not kept in the history' in run.stderr
    assert cli('history', env=broken).returncode == 2


def test_retention_zero_keeps_nothing_and_a_bad_value_is_named(env):
    cli('run', 'health', env={**env, 'RUN_HISTORY_DAYS': '0'})
    assert 'no runs in the history' in cli('history', env=env).stdout
    bad = cli('run', 'health', '--json', env={**env, 'RUN_HISTORY_DAYS': 'forever'})
    assert json.loads(bad.stdout)['status'] == 'ok'
    assert "RUN_HISTORY_DAYS='forever' is invalid" in bad.stderr
