"""Holdings outside a strategy's universe: a missed futures roll, a contract removed from the config."""
from __future__ import annotations

from datetime import datetime, timezone

from tests.trading.support import BASE_CONFIG

MNQ_CONFIG = BASE_CONFIG.replace('symbol = "SPY"\nsec_type = "STK"\nexchange = "SMART"',
                                 'symbol = "MNQ"\nsec_type = "FUT"\nexchange = "CME"\nroll_days_before_expiry = 3')
BEFORE_ROLL = datetime(2026, 12, 11, 15, 0, tzinfo=timezone.utc)   # holds MNQZ6 (expires Dec 18, rolls from Dec 15)
AFTER_EXPIRY = datetime(2026, 12, 21, 15, 0, tzinfo=timezone.utc)  # the universe is MNQH7 only; no run in the window


def test_a_missed_roll_closes_the_old_contract_in_the_next_allocation(make_rig):
    rig = make_rig(MNQ_CONFIG, time=BEFORE_ROLL)
    first = rig.send('allocation', key='before-the-roll')
    assert first.status == 'ok', first.error
    held = rig.position('MNQZ6')
    assert held > 0 and first.result['strategies']['dummy']['instruments'] == ['MNQ:20261218']
    # the day's reconciliation books the fills (a gateway returns only the current day's executions)
    assert rig.send('trade-reconciliation', key='reconcile-before').result['strategies'] == {'dummy': {'MNQZ6': held}}

    rig.sim.clock.set(AFTER_EXPIRY)            # trading was disabled, or the gateway down, all through the roll window
    result = rig.send('allocation', key='after-the-roll')
    assert result.status == 'ok', result.error
    assert result.result['strategies']['dummy']['instruments'] == ['MNQ:20270319']
    assert rig.position('MNQZ6') == 0 and rig.position('MNQH7') < 0        # the day's signal is short
    close = next(o for o in result.result['orders'] if o['contract']['localSymbol'] == 'MNQZ6')
    assert (close['action'], close['quantity'], close['reduceOnly'], close['strategies']) == (
        'SELL', held, True, {'dummy': -held})
    ledger = rig.send('trade-reconciliation', key='reconcile').result
    assert 'MNQZ6' not in ledger['strategies']['dummy'] and ledger['drift'] == []


def test_a_holding_that_cannot_be_closed_makes_the_run_not_ok(make_rig):
    config = BASE_CONFIG
    rig = make_rig(config)
    assert rig.send('allocation', key='spy').status == 'ok'
    bought = rig.position('SPY')
    # the strategy now trades QQQ; SPY was sold elsewhere, so closing the strategy's SPY would open a short
    rig.sim.broker.set_position('DU1234567', rig.instrument('SPY'), 0, 0.0)
    rig.store.put_settings({'strategies': {'dummy': {'symbol': 'QQQ', 'sec_type': 'STK', 'exchange': 'SMART'}}})
    result = rig.send('allocation', key='qqq')
    assert result.status == 'error' and result.error.type == 'NotReduceOnly'
    assert f'SPY: SELL {bought:g} would not reduce the position of 0' in result.error.message
    assert rig.position('SPY') == 0 and rig.position('QQQ') > 0
