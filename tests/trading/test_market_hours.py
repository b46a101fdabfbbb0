"""Market hours from liquidHours/timeZoneId, as IB writes them and as the simulated gateway reports them."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from lib.ibapi import IB, Stock
from trading.market_hours import HoursUnreadable, market_state, sessions
from simulator import Simulator
from tests.trading.support import HOLIDAY

UTC = timezone.utc


def test_the_current_format_with_closed_days():
    hours = '20261225:CLOSED;20261228:0930-20261228:1600'
    assert sessions(hours, 'US/Eastern') == [(datetime(2026, 12, 28, 14, 30, tzinfo=UTC),
                                              datetime(2026, 12, 28, 21, 0, tzinfo=UTC))]
    closed = market_state(hours, 'US/Eastern', HOLIDAY)
    assert not closed.open and closed.next_open == datetime(2026, 12, 28, 14, 30, tzinfo=UTC)
    assert closed.describe('SPY') == 'SPY: market closed at 2026-12-25T15:00:00Z; next open 2026-12-28T14:30:00Z'
    open_ = market_state(hours, 'US/Eastern', datetime(2026, 12, 28, 20, 59, tzinfo=UTC))
    assert open_.open and open_.closes_at == datetime(2026, 12, 28, 21, 0, tzinfo=UTC)
    assert not market_state(hours, 'US/Eastern', datetime(2026, 12, 28, 21, 0, tzinfo=UTC)).open


def test_sessions_crossing_midnight_and_the_old_format():
    overnight = '20261124:1700-20261125:1600;20261125:1700-20261126:1600'
    assert market_state(overnight, 'US/Central', datetime(2026, 11, 25, 3, 0, tzinfo=UTC)).open
    old = '20090507:0700-1830,1830-2330;20090508:CLOSED'
    assert sessions(old, 'EST') == [(datetime(2009, 5, 7, 12, 0, tzinfo=UTC), datetime(2009, 5, 8, 4, 30, tzinfo=UTC))]
    assert sessions('20090507:1700-0300', 'EST')[0][1] == datetime(2009, 5, 8, 8, 0, tzinfo=UTC)


def test_no_open_session_in_the_reported_days_has_no_next_open():
    state = market_state('20261225:CLOSED', 'US/Eastern', HOLIDAY)
    assert not state.open and state.next_open is None
    assert 'not within the hours the gateway reported' in state.describe('SPY')


@pytest.mark.parametrize(('hours', 'zone'), [('20261228:0930', 'US/Eastern'), ('2026122:0930-1600', 'US/Eastern'),
                                            ('20261228:0930-1600', 'Mars/Olympus')])
def test_unreadable_hours_are_an_error_not_a_guess(hours, zone):
    with pytest.raises(HoursUnreadable):
        sessions(hours, zone)


def test_the_gateways_own_hours_on_a_holiday_and_a_trading_day():
    with Simulator(time=HOLIDAY) as sim:
        ib = IB()
        ib.connect(sim.host, sim.port, clientId=1)
        try:
            details = ib.reqContractDetails(Stock('SPY', 'SMART', 'USD'))[0]
            now = ib.reqCurrentTime()
        finally:
            ib.disconnect()
    state = market_state(details.liquidHours, details.timeZoneId, now)
    assert not state.open and state.next_open == datetime(2026, 12, 28, 14, 30, tzinfo=UTC)
    assert market_state(details.liquidHours, details.timeZoneId, datetime(2026, 12, 28, 15, tzinfo=UTC)).open
