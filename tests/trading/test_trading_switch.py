"""Trading enabled: read before each order, any explicit false wins, and `python -m functions trading` flips it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from functions.__main__ import main
from tests.trading.support import BASE_CONFIG, SPY_MACD_VIXY_CONFIG

REPO = Path(__file__).resolve().parents[2]
TWO_CONTRACTS = BASE_CONFIG.replace('dummy = 0.5', 'dummy = 0.3\nspy-macd-vixy = 0.4') + SPY_MACD_VIXY_CONFIG


def trading_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`python -m functions trading ...` as a process, with the test's store settings (and `env`) in its environment."""
    return subprocess.run([sys.executable, '-m', 'functions', 'trading', *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, 'LOG_LEVEL': 'ERROR', **env})


def test_trading_disabled_when_the_first_order_arrives_stops_the_remaining_legs(make_rig):
    rig = make_rig(TWO_CONTRACTS)
    arrived = []

    def disable_on_first_order(order) -> None:
        arrived.append(order.instrument.symbol)
        if len(arrived) == 1:
            rig.store.put_settings({'tradingEnabled': False})

    rig.sim.on_place_order = disable_on_first_order
    result = rig.send('allocation')

    assert len(arrived) == 1 and len(rig.order_log()) == 1
    assert result.status == 'error' and result.error.type == 'TradingDisabled' and result.error.retryable is False
    first = arrived[0]
    [stopped] = result.result['notPlaced']
    assert stopped['contract']['symbol'] != first and stopped['code'] == 'order-trading-disabled'
    [problem] = [p for p in result.result['problems'] if p['code'] == 'order-trading-disabled']
    assert problem['contract']['symbol'] == stopped['contract']['symbol']
    assert problem['orderRef'] == stopped['orderRef']
    assert 'store setting tradingEnabled=false' in problem['message']
    assert [o['contract']['symbol'] for o in result.result['orders']] == [first]


def test_an_environment_false_is_not_undone_by_a_true_left_in_the_store(rig):
    rig.store.put_settings({'tradingEnabled': True})
    rig.settings = replace(rig.settings, trading_config=replace(rig.settings.trading_config,
                                                                environment={'TRADING_ENABLED': 'false'}))
    result = rig.send('allocation')
    assert result.status == 'rejected' and result.error.type == 'TradingDisabled'
    assert 'environment TRADING_ENABLED=false' in result.error.message
    assert rig.order_log() == []


def test_trading_off_from_the_command_line_rejects_the_next_allocation(rig, capsys, monkeypatch):
    for name, value in rig.environment().items():   # the command line reads the deployment's environment
        monkeypatch.setenv(name, value)
    off = trading_cli('off')
    assert off.returncode == 0, off.stderr
    assert 'trading disabled (paper mode)' in off.stdout and 'store tradingEnabled' in off.stdout

    result = rig.send('allocation')
    assert result.status == 'rejected' and result.error.type == 'TradingDisabled'
    assert rig.order_log() == []

    capsys.readouterr()
    assert main(['trading', 'status', '--json']) == 0
    status = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert status['effective'] is False and status['sources'] == {'env': None, 'file': None, 'store': False}
    assert status['disabledBy'] == ['store setting tradingEnabled=false']

    capsys.readouterr()
    assert main(['trading', 'on']) == 0
    assert 'trading enabled (paper mode)' in capsys.readouterr().out
    assert rig.send('allocation').status == 'ok' and len(rig.order_log()) == 1


def test_trading_on_names_what_still_disables_it_and_asks_for_yes_in_live_mode(rig, monkeypatch, capsys):
    for name, value in rig.environment().items():   # the command line reads the deployment's environment
        monkeypatch.setenv(name, value)
    rig.store.put_settings({'tradingEnabled': False})
    monkeypatch.setenv('TRADING_MODE', 'live')
    assert main(['trading', 'on']) == 2
    assert '--yes' in capsys.readouterr().err
    assert rig.store.get_settings()['tradingEnabled'] is False

    monkeypatch.setenv('TRADING_ENABLED', 'false')
    assert main(['trading', 'on', '--yes']) == 1
    out = capsys.readouterr().out
    assert 'wrote tradingEnabled=true' in out and 'still disabled by: environment TRADING_ENABLED=false' in out
    assert rig.store.get_settings()['tradingEnabled'] is True
