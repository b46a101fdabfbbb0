"""Which real runs each alert policy (and the healthy-health metric) would catch.

Runs go through the real handler against the simulated gateway; the JSON lines it writes to stdout become
the LogEntries Cloud Logging would store (tests/deploy/logging_filter.py), and every policy's filter is
evaluated on them. A policy fires for a run when any of the run's lines matches.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from deploy.alerts import POLICY_FILES, health_filter, render_policy
from deploy.config import config_from_values
from lib import log
from tests.deploy.logging_filter import UnsupportedFilter, cloud_run_entry, matches
from tests.trading.conftest import make_rig  # noqa: F401  (the trading rig: simulator, store, handler)
from tests.trading.support import BASE_CONFIG, SPY_MACD_VIXY_CONFIG

CFG = config_from_values({'PROJECT': 'demo-proj-123'}, environ={})
WITH_MACD = BASE_CONFIG.replace('dummy = 0.5', 'dummy = 0.3\nspy-macd-vixy = 0.2') + SPY_MACD_VIXY_CONFIG


def log_filters() -> dict[str, str]:
    """Every filter the deploy creates: each log-matching policy's, and the healthy-health metric's."""
    filters = {'health metric': health_filter(CFG)}
    for file_name in POLICY_FILES:
        for condition in render_policy(CFG, file_name)['conditions']:
            if 'conditionMatchedLog' in condition:
                filters[file_name] = condition['conditionMatchedLog']['filter']
    return filters


def run_logged(capsys, send) -> tuple[object, list[dict]]:
    """Run `send()` and turn what it printed into the LogEntries Cloud Logging would store."""
    capsys.readouterr()
    result = send()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith('{')]
    entries = [cloud_run_entry(line, CFG.function_name) for line in lines]
    return result, [entry for entry in entries if 'schema' not in entry['jsonPayload']]   # result documents aside


def test_each_policy_catches_the_runs_it_names_and_no_other(make_rig, capsys):  # noqa: F811
    log.configure(json=True)
    runs: dict[str, tuple[object, list[dict]]] = {}

    trading = make_rig(WITH_MACD)
    runs['ok allocation'] = run_logged(capsys, lambda: trading.send('allocation', key='clean'))
    trading.sim.faults.no_live_quote = {'SPY'}
    runs['rejected: risk limit'] = run_logged(capsys, lambda: trading.send('allocation', key='no-quote'))
    trading.sim.faults.no_live_quote = set()
    enabled = trading.settings
    trading.settings = replace(enabled, trading_config=replace(enabled.trading_config,
                                                               environment={'TRADING_ENABLED': 'false'}))
    runs['rejected: trading disabled'] = run_logged(capsys, lambda: trading.send('allocation', key='off'))
    trading.settings = enabled
    trading.sim.faults.hist_outage = True
    runs['degraded allocation'] = run_logged(capsys, lambda: trading.send('allocation', key='outage'))

    gateway = make_rig(time=None)          # the wall clock: health compares the gateway's clock with ours
    runs['healthy health'] = run_logged(capsys, lambda: gateway.send('health'))
    gateway.sim.faults.connectivity_lost = True        # 1100 and 2110: the gateway lost IB's servers
    runs['unhealthy health'] = run_logged(capsys, lambda: gateway.send('health'))

    results = {name: result for name, (result, _) in runs.items()}
    # the runs are what their names say (else the matrix below would prove nothing)
    assert (results['ok allocation'].status, results['ok allocation'].result['degraded']) == ('ok', False)
    assert (results['rejected: risk limit'].status,
            results['rejected: risk limit'].error.type) == ('rejected', 'RiskLimitBreached')
    assert (results['rejected: trading disabled'].status,
            results['rejected: trading disabled'].error.type) == ('rejected', 'TradingDisabled')
    degraded = results['degraded allocation']
    # dummy already holds its target, the failed strategy keeps none: a quiet-looking `skipped`, but degraded
    assert degraded.status == 'skipped' and degraded.result['degraded'] is True, degraded.result['problems']
    healthy, unhealthy = results['healthy health'], results['unhealthy health']
    assert (healthy.status, healthy.result['healthy']) == ('ok', True)
    assert (unhealthy.status, unhealthy.result['healthy']) == ('ok', False)

    caught = {name: sorted(run for run, (_, entries) in runs.items()
                           if any(matches(log_filter, entry) for entry in entries))
              for name, log_filter in log_filters().items()}
    assert caught == {
        'error-result.json': [],
        'rejected-result.json': ['rejected: risk limit'],        # TradingDisabled is deliberate
        'degraded-result.json': ['degraded allocation'],
        'unhealthy-gateway.json': ['unhealthy health'],
        'stuck-claim.json': [],
        'health metric': ['healthy health'],                     # a gateway that lost IB is not counted
    }


def test_the_filter_model_refuses_syntax_it_does_not_evaluate():
    entry = cloud_run_entry('{"status":"rejected","logging.googleapis.com/labels":{"intent":"health"}}', 'f')
    assert matches('jsonPayload.status="REJECTED" AND labels.intent="health"', entry)
    assert not matches('jsonPayload.status="rejected" AND NOT labels.intent="health"', entry)
    assert not matches('jsonPayload.error.type="TradingDisabled"', entry)     # a missing field compares false
    assert matches('NOT jsonPayload.error.type="TradingDisabled"', entry)
    # OR binds tighter than AND in this language: (health OR y) AND ok, which is false here
    assert not matches('labels.intent="health" OR labels.intent="y" AND jsonPayload.status="ok"', entry)
    for unsupported in ('jsonPayload.status!="ok"', 'jsonPayload.durationMs>5', '"free text"'):
        with pytest.raises(UnsupportedFilter):
            matches(unsupported, entry)
