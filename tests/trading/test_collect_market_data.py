"""collect-market-data: bars in the result, bounded, and a clear retryable error when the HMDS is down."""
from __future__ import annotations

from tests.trading.support import OPEN_TIME


def test_bars_come_back_bounded_and_equal_to_the_gateways(rig):
    result = rig.send('collect-market-data', {
        'instruments': [{'symbol': 'SPY'}, {'symbol': 'EUR', 'secType': 'CASH', 'exchange': 'IDEALPRO'}],
        'barSize': '1 day', 'duration': '60 D', 'whatToShow': 'MIDPOINT', 'maxBars': 10})
    assert result.status == 'ok', result.error
    spy, eur = result.result['instruments']
    assert (spy['contract']['symbol'], eur['contract']['localSymbol']) == ('SPY', 'EUR.USD')
    assert spy['count'] == 10 and spy['truncated'] is True
    expected = rig.sim.prices.bars(rig.instrument('SPY'), rig.sim.clock.now(), '60 D', '1 day', 'MIDPOINT', True)
    assert [b['close'] for b in spy['bars']] == [b.close for b in expected[-10:]]
    assert spy['bars'][-1]['date'] == OPEN_TIME.date().isoformat()
    assert result.result['whatToShow'] == 'MIDPOINT'


def test_a_historical_data_outage_is_a_clear_retryable_error(rig):
    rig.sim.faults.hist_outage = True
    result = rig.send('collect-market-data', {'instruments': [{'symbol': 'SPY'}]})
    assert result.status == 'error'
    assert result.error.type == 'HistoricalDataUnavailable' and result.error.retryable is True
    assert 'historical data service failed for STK SPY' in result.error.message


def test_unknown_instruments_and_unbounded_requests_are_rejected(rig):
    unknown = rig.send('collect-market-data', {'instruments': [{'symbol': 'NOSUCH'}]})
    assert unknown.status == 'rejected' and 'knows no contract STK NOSUCH' in unknown.error.message
    too_many = rig.send('collect-market-data', {'instruments': [{'symbol': 'SPY'}] * 21})
    assert too_many.status == 'rejected' and too_many.error.type == 'InvalidParams'
    too_long = rig.send('collect-market-data', {'instruments': [{'symbol': 'SPY'}], 'maxBars': 50_000})
    assert too_long.status == 'rejected' and 'params.maxBars' in too_long.error.message
