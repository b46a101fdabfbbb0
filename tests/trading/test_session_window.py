"""Session windows on the simulator's clock: "15 minutes before the close" holds on half days too.

Every run goes through the real handler against the simulated gateway; what was placed is counted at
the simulator. 2026-11-27 (the day after Thanksgiving) closes at 13:00, 2026-11-30 is a normal day
(16:00), 2026-11-26 is Thanksgiving (closed).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from tests.trading.support import BASE_CONFIG

BEFORE_CLOSE = {'beforeClose': 900}


def at(moment: str) -> datetime:
    return datetime.fromisoformat(moment).replace(tzinfo=timezone.utc)


# (gateway time in UTC, what New York reads, whether an allocation in the 900 s window places orders)
CASES = [
    ('2026-11-27T17:45:00', 'half day, 12:45', True),
    ('2026-11-27T20:45:00', 'half day, 15:45', False),
    ('2026-11-30T17:45:00', 'normal day, 12:45', False),
    ('2026-11-30T20:45:00', 'normal day, 15:45', True),
    ('2026-11-26T17:45:00', 'Thanksgiving, 12:45', False),
    ('2026-11-26T20:45:00', 'Thanksgiving, 15:45', False),
]


@pytest.mark.parametrize('moment, label, runs', CASES, ids=[c[1] for c in CASES])
def test_an_allocation_runs_only_in_the_last_15_minutes_of_the_real_session(make_rig, moment, label, runs):
    rig = make_rig(time=at(moment))
    result = rig.send('allocation', {'strategies': ['dummy']}, window=BEFORE_CLOSE, key=f'window-{moment}')
    doc = result.to_wire()
    placed = rig.order_log()
    window = doc['result']['window']
    if runs:
        assert doc['status'] == 'ok', doc
        assert placed and {o.orderRef for o in placed} == {o['orderRef'] for o in doc['result']['orders']}
        assert window['inside'] is True
    else:
        assert doc['status'] == 'skipped', doc
        assert placed == [], f'{label}: orders placed outside the window'
        assert doc['result']['reason'].startswith('outside the session window')
        assert window['inside'] is False


def test_a_skipped_run_says_why_and_gives_todays_open_and_close_in_exchange_time_and_utc(make_rig):
    rig = make_rig(time=at('2026-11-30T17:45:00'))
    doc = rig.send('allocation', {'strategies': ['dummy']}, window=BEFORE_CLOSE).to_wire()
    assert doc['status'] == 'skipped'
    assert 'not within 900 s of the 16:00 EST close of SPY' in doc['result']['reason']
    session = doc['result']['window']['session']
    assert session['open'] == {'exchange': '2026-11-30 09:30 EST', 'utc': '2026-11-30T14:30:00Z'}
    assert session['close'] == {'exchange': '2026-11-30 16:00 EST', 'utc': '2026-11-30T21:00:00Z'}
    assert doc['result']['window']['rule'].startswith('the earliest close')

    half_day = make_rig(time=at('2026-11-27T20:45:00'))
    doc = half_day.send('allocation', {'strategies': ['dummy']}, window=BEFORE_CLOSE).to_wire()
    assert doc['status'] == 'skipped' and 'after the 13:00 EST close of SPY' in doc['result']['reason']
    assert doc['result']['window']['session']['close']['utc'] == '2026-11-27T18:00:00Z'


@pytest.mark.parametrize('moment, runs', [('2026-11-30T14:35:00', True), ('2026-11-30T14:45:00', False),
                                          ('2026-11-30T14:25:00', False), ('2026-11-27T14:35:00', True),
                                          ('2026-11-26T14:35:00', False)])
def test_after_open_runs_only_in_the_first_minutes_of_the_session(make_rig, moment, runs):
    rig = make_rig(time=at(moment))
    doc = rig.send('allocation', {'strategies': ['dummy']}, window={'afterOpen': 600},
                   key=f'open-{moment}').to_wire()
    assert (doc['status'] == 'ok') is runs, doc
    assert bool(rig.order_log()) is runs


def test_intents_that_trade_nothing_follow_the_us_equity_session(make_rig):
    rig = make_rig(time=at('2026-11-27T20:45:00'))        # 15:45 on a half day: after the close
    doc = rig.send('summary', window=BEFORE_CLOSE).to_wire()
    assert doc['status'] == 'skipped' and doc['result']['window']['session']['contract'] == 'SPY'
    inside = make_rig(time=at('2026-11-27T17:50:00')).send('summary', window=BEFORE_CLOSE).to_wire()
    assert inside['status'] == 'ok' and inside['result']['window']['inside'] is True
    assert inside['result']['positions'] is not None


def test_a_contract_with_other_hours_moves_the_window(make_rig, tmp_path):
    # A stock listed in Frankfurt time: its session is 09:30-16:00 Europe/Berlin, 03:30-10:00 in New York.
    contracts = tmp_path / 'contracts.json'
    contracts.write_text(json.dumps([{'conId': 990001, 'symbol': 'SAPX', 'secType': 'STK', 'exchange': 'SMART',
                                      'primaryExchange': 'IBIS', 'currency': 'EUR', 'timeZoneId': 'Europe/Berlin',
                                      'basePrice': 200.0}]))
    params = {'instruments': [{'symbol': 'SAPX', 'currency': 'EUR'}], 'barSize': '1 day', 'duration': '5 D'}
    berlin_close = make_rig(time=at('2026-11-30T14:50:00'), contracts_file=contracts)   # 15:50 in Berlin
    doc = berlin_close.send('collect-market-data', params, window=BEFORE_CLOSE).to_wire()
    assert doc['status'] == 'ok', doc
    assert doc['result']['window']['session']['close']['exchange'] == '2026-11-30 16:00 CET'
    new_york_close = make_rig(time=at('2026-11-30T20:50:00'), contracts_file=contracts)  # 15:50 in New York
    doc = new_york_close.send('collect-market-data', params, window=BEFORE_CLOSE).to_wire()
    assert doc['status'] == 'skipped' and 'after the 16:00 CET close of SAPX' in doc['result']['reason']


@pytest.mark.parametrize('window, problem', [
    ({'beforeClose': 900, 'afterOpen': 60}, 'exactly one'),
    ({}, 'exactly one'),
    ({'beforeClose': 0}, 'greater than 0'),
    ({'afterOpen': -5}, 'greater than 0'),
    ({'beforeclose': 900}, 'beforeclose'),
    ({'beforeClose': '900'}, 'beforeClose'),
    ({'beforeClose': True}, 'beforeClose'),
    ('15m', 'window'),
])
def test_a_bad_window_is_rejected_naming_the_problem(make_rig, window, problem):
    rig = make_rig(time=at('2026-11-30T20:50:00'))
    doc = rig.send('allocation', {'strategies': ['dummy']}, window=window).to_wire()
    assert doc['status'] == 'rejected' and doc['error']['type'] == 'InvalidRequest', doc
    assert problem in doc['error']['message'] and 'window' in doc['error']['message']
    assert rig.order_log() == []


def test_a_non_finite_window_is_rejected(make_rig):
    rig = make_rig(time=at('2026-11-30T20:50:00'))
    # JSON has no Infinity, but Python's encoder writes it and Python's decoder reads it back
    doc = rig.send('allocation', {'strategies': ['dummy']}, window={'beforeClose': float('inf')}).to_wire()
    assert doc['status'] == 'rejected' and doc['error']['type'] == 'InvalidRequest', doc
    assert rig.order_log() == []
