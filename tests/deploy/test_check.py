"""`python -m deploy check` catches what would fail at 15:45 in the cloud, naming the job or the key."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from deploy.checks import next_firings
from deploy.schedules import load_jobs
from tests.deploy.conftest import REPO, write_config

TRADING = (REPO / 'config' / 'trading.toml').read_text()
SCHEDULES = (REPO / 'deploy' / 'schedules.yaml').read_text()


def check(tmp_path: Path, *, trading: str = TRADING, schedules: str = SCHEDULES) -> subprocess.CompletedProcess:
    config = write_config(tmp_path / 'config.env')
    (tmp_path / 'trading.toml').write_text(trading)
    (tmp_path / 'schedules.yaml').write_text(schedules)
    return subprocess.run([sys.executable, '-m', 'deploy', 'check', '--config', str(config),
                           '--trading-config', str(tmp_path / 'trading.toml'),
                           '--schedules', str(tmp_path / 'schedules.yaml')],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_the_shipped_files_pass_and_the_next_week_is_listed(tmp_path: Path):
    run = check(tmp_path)
    assert run.returncode == 0, run.stderr
    assert 'ok: trading.toml and 7 scheduled requests are valid' in run.stdout
    assert 'next 7 days (New York, UTC):' in run.stdout and 'allocation-2' in run.stdout


@pytest.mark.parametrize(('trading', 'message'), [
    (TRADING + '\nthis is not toml', 'trading.toml'),
    (TRADING.replace('spy-macd-vixy = 0.4', 'spy-macd-vixy = 0.9').replace('dummy = 0.0', 'dummy = 0.4'),
     'the shares add up to 1.3, more than 1'),
    (TRADING.replace('dummy = 0.0', 'dummy = 0.0\nmomentum = 0.1'),
     "strategy 'momentum' is not registered; known strategies: dummy, spy-macd-vixy"),
    (TRADING.replace('fast = 12', 'fast = 12\nfastest = 3'), "[strategies.spy-macd-vixy]: spy-macd-vixy: unknown config"),
    (TRADING.replace('"VIXY", ', ''), "limits.allowlist does not admit VIXY, which strategy 'spy-macd-vixy' trades"),
])
def test_a_trading_config_that_would_be_refused_fails_the_check(tmp_path: Path, trading, message):
    run = check(tmp_path, trading=trading)
    assert run.returncode == 2, run.stdout
    assert message in run.stderr


@pytest.mark.parametrize(('old', 'new', 'message'), [
    ('request: {intent: allocation, maxAgeSeconds: 300}', 'request: {intent: alocation, maxAgeSeconds: 300}',
     "job 'allocation-1': unknown intent 'alocation'; known intents:"),
    ('request: {intent: summary, maxAgeSeconds: 3600}',
     'request: {intent: summary, maxAgeSeconds: 3600, params: {acount: DU1}}',
     "job 'summary': params.acount: unknown key; accepted keys: account"),
    ('request: {intent: allocation, maxAgeSeconds: 300}',
     'request: {intent: allocation, maxAgeSeconds: 300, params: {strategies: [momentum]}}',
     "job 'allocation-1': params.strategies: Value error, unknown strategy 'momentum'"),
    ('barSize: 1 day', 'barSize: 1 fortnight', "job 'collect-market-data': params.barSize"),
])
def test_a_schedule_whose_request_would_be_refused_fails_the_check_naming_the_job(tmp_path: Path, old, new, message):
    assert old in SCHEDULES
    run = check(tmp_path, schedules=SCHEDULES.replace(old, new))
    assert run.returncode == 2, run.stdout
    assert message in run.stderr


def test_runs_the_calendar_skips_are_marked_with_the_reason():
    jobs = load_jobs(REPO / 'deploy' / 'schedules.yaml', today=datetime(2026, 11, 23).date())
    firings = next_firings(jobs, datetime.fromisoformat('2026-11-26T00:00:00-05:00'), days=2)
    thanksgiving = {f.job: f.skipped for f in firings if f.at.day == 26 and f.job.startswith(('allocation', 'cash'))}
    assert thanksgiving == {'allocation-1': 'Thanksgiving Day', 'allocation-2': 'Thanksgiving Day'}
    half_day = {f.job: f.skipped for f in firings if f.at.day == 27 and f.job.startswith('allocation')}
    assert half_day['allocation-1'] is None
    assert half_day['allocation-2'] == 'after the 13:00 EST close of NYSE'
    assert all(f.skipped is None for f in firings if f.job == 'health')
