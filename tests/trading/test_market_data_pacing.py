"""collect-market-data of many small-bar instruments at a gateway that paces as IB's does (on by default in the
simulator): the run fails retryable when paced (the redelivery's backoff is Pub/Sub's), and it never makes more
than one request per instrument per run, counted at the gateway: it stops at the first refusal. Error 162's other texts: what a run makes of each."""
from __future__ import annotations

from datetime import timedelta

import pytest

from simulator.faults import HIST_ERRORS

STOCKS = ['SPY', 'QQQ', 'AAPL', 'MSFT', 'TLT', 'GLD', 'VIXY']
PAIRS = [('EUR', 'USD'), ('GBP', 'USD'), ('USD', 'JPY'), ('USD', 'CHF')]
INSTRUMENTS = ([{'symbol': s} for s in STOCKS]
               + [{'symbol': b, 'secType': 'CASH', 'exchange': 'IDEALPRO', 'currency': q} for b, q in PAIRS])
SMALL_BARS = {'instruments': INSTRUMENTS, 'barSize': '5 secs', 'duration': '1800 S', 'whatToShow': 'MIDPOINT',
              'useRth': False, 'maxBars': 50}


def historical_requests(rig) -> int:
    """reqHistoricalData messages the gateway received, over every connection so far."""
    return sum(c['in'].get(20, 0) for c in rig.sim.counters())


def test_small_bars_for_eleven_instruments_pass_once_and_a_rerun_within_15_seconds_fails_retryable(rig):
    assert rig.sim.limits.hist_pacing          # a real gateway's pacing, the simulator's default
    start = rig.sim.clock.now()
    first = rig.send('collect-market-data', SMALL_BARS)
    assert first.status == 'ok', first.error
    assert [i['count'] for i in first.result['instruments']] == [50] * len(INSTRUMENTS)
    assert historical_requests(rig) == len(INSTRUMENTS)

    rig.sim.clock.set(start + timedelta(seconds=10))         # identical requests within 15 s, however slow
    again = rig.send('collect-market-data', SMALL_BARS)
    assert again.status == 'error'
    assert again.error.type == 'HistoricalDataUnavailable' and again.error.retryable is True
    assert 'pacing violation' in again.error.message
    # at most one request per instrument, and none retried inside the run (it ends at the first refusal)
    assert len(INSTRUMENTS) < historical_requests(rig) <= 2 * len(INSTRUMENTS)

    rig.sim.clock.set(start + timedelta(seconds=30))         # 15 s after the refused ones too
    assert rig.send('collect-market-data', SMALL_BARS).status == 'ok'


def test_runs_past_60_small_bar_requests_in_ten_minutes_fail_retryable_without_a_retry_storm(rig):
    outcomes = []
    for _ in range(6):                                        # 6 runs x 11 instruments = 66 requests
        outcomes.append(rig.send('collect-market-data', SMALL_BARS))
        rig.sim.clock.advance(16)                             # past the identical-request window
    assert [o.status for o in outcomes[:5]] == ['ok'] * 5
    assert outcomes[5].status == 'error' and outcomes[5].error.retryable is True
    assert 'pacing violation' in outcomes[5].error.message
    assert 61 <= historical_requests(rig) <= 66             # the 61st is refused; at most one per instrument

    rig.sim.clock.advance(10 * 60)
    assert rig.send('collect-market-data', SMALL_BARS).status == 'ok'


def test_daily_bars_are_never_paced(rig):
    daily = {**SMALL_BARS, 'barSize': '1 day', 'duration': '30 D', 'maxBars': 5}
    assert all(rig.send('collect-market-data', daily).status == 'ok' for _ in range(3))


@pytest.mark.parametrize('kind', ['outage', 'pacing'])
def test_transient_162_texts_fail_the_run_retryable(rig, kind):
    rig.sim.faults.hist_error = kind
    result = rig.send('collect-market-data', {'instruments': [{'symbol': 'SPY'}]})
    assert result.status == 'error' and result.error.retryable is True
    assert HIST_ERRORS[kind].split(':', 1)[1].split('{')[0] in result.error.message


def test_hmds_no_data_is_an_empty_series_not_a_failure(rig):
    rig.sim.faults.hist_error = 'no-data'
    result = rig.send('collect-market-data', {'instruments': [{'symbol': 'SPY'}]})
    assert result.status == 'ok', result.error
    assert result.result['instruments'][0]['count'] == 0


@pytest.mark.parametrize('kind', ['permissions', 'bar-size', 'duration'])
def test_permanent_162_texts_fail_the_run_for_good(rig, kind):
    rig.sim.faults.hist_error = kind
    result = rig.send('collect-market-data', {'instruments': [{'symbol': 'SPY'}]})
    assert result.status == 'rejected' and result.error.retryable is False   # trading.market_data.HMDS_162_TEXTS
