"""What a client sees at a real gateway's limits, with IB's numbers: historical-data pacing, open historical
requests, message rate, market-data lines, connectivity to IB lost and restored, error 162's texts, and
executions of the current day only. Each limit is on by default and switchable per test (sim.limits)."""
import asyncio
import contextlib
import socket
import struct
import time
from datetime import timedelta

import pytest

from lib.ibapi import IB, MarketOrder, Stock
from simulator import Simulator
from simulator.faults import HIST_ERRORS
from simulator.limits import Limits

PACING = 'Historical Market Data Service error message:Historical data request pacing violation'
STOCKS = ('SPY', 'QQQ', 'AAPL', 'MSFT', 'TLT', 'GLD', 'VIXY')


def errors_of(ib):
    seen = []
    ib.errorEvent += lambda req_id, code, text, contract: seen.append((req_id, code, text))
    return seen


def bars(ib, contract, duration='60 S', bar_size='1 secs', what='MIDPOINT'):
    return ib.reqHistoricalData(contract, '', duration, bar_size, what, False)


def wait_for(condition, ib=None, timeout=5.0):
    """Wait until `condition()` holds, running `ib`'s event loop meanwhile (its events only arrive while it runs)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, 'condition not met in time'
        if ib is not None:
            ib.sleep(0.01)
        else:
            time.sleep(0.01)


@pytest.fixture
def spy(ib):
    return ib.qualifyContracts(Stock('SPY', 'SMART', 'USD'))[0]


def test_a_real_gateways_limits_are_on_by_default_and_limits_off_switches_them_all_off(sim):
    assert sim.limits.message_rate == 50 and sim.limits.hist_pacing and sim.limits.hist_open_requests == 50
    assert sim.limits.market_data_lines == 100 and sim.limits.executions_current_day
    off = Limits.off()
    assert not any((off.message_rate, off.hist_pacing, off.hist_open_requests, off.market_data_lines,
                    off.executions_current_day))


# --- historical data pacing (small bars: 30 secs or less) -------------------------------------------------------

def test_an_identical_small_bar_request_within_15_seconds_is_a_pacing_violation(sim, ib, spy):
    seen = errors_of(ib)
    start = sim.clock.now()
    assert len(bars(ib, spy)) > 0
    sim.clock.set(start + timedelta(seconds=14))
    assert len(bars(ib, spy)) == 0
    assert (162, PACING) in [(code, text) for _, code, text in seen]
    sim.clock.set(start + timedelta(seconds=15.5))   # 15 s after the first; the refused one counts too
    assert len(bars(ib, spy)) == 0
    sim.clock.set(start + timedelta(seconds=31))     # more than 15 s after the last one
    assert len(bars(ib, spy)) > 0


def test_six_small_bar_requests_for_one_contract_within_2_seconds_the_sixth_is_refused(sim, ib, spy):
    seen = errors_of(ib)
    start = sim.clock.now()
    answers = []
    for i in range(6):
        sim.clock.set(start)           # all six at one gateway instant, however slow this machine is
        answers.append(len(bars(ib, spy, duration=f'{60 + i} S')))
    assert all(answers[:5]) and answers[5] == 0
    assert [code for _, code, _ in seen if code == 162] == [162]
    sim.clock.advance(2.5)
    assert len(bars(ib, spy, duration='99 S')) > 0


def test_the_61st_small_bar_request_in_ten_minutes_is_refused_and_eleven_minutes_later_it_passes(sim, ib):
    contracts = ib.qualifyContracts(*(Stock(s, 'SMART', 'USD') for s in STOCKS))
    seen = errors_of(ib)
    kinds = [(c, what) for c in contracts for what in ('TRADES', 'MIDPOINT', 'BID_ASK')]   # 21: at most 3 each
    for i in range(60):
        contract, what = kinds[i % len(kinds)]
        assert len(bars(ib, contract, duration=f'{60 + i} S', what=what)) > 0, f'request {i + 1} refused'
    assert len(bars(ib, contracts[0], duration='300 S', what='TRADES')) == 0
    assert [text for _, code, text in seen if code == 162] == [PACING]
    sim.clock.advance(11 * 60)
    assert len(bars(ib, contracts[0], duration='301 S', what='TRADES')) > 0


def test_bars_larger_than_30_seconds_are_not_paced(ib, spy):
    seen = errors_of(ib)
    for _ in range(8):
        assert len(bars(ib, spy, duration='2 D', bar_size='1 min')) > 0
    assert not [code for _, code, _ in seen if code == 162]


def test_pacing_switched_off_for_a_test_serves_identical_requests(sim, ib, spy):
    sim.limits.hist_pacing = False
    assert all(len(bars(ib, spy)) > 0 for _ in range(8))


def test_more_than_50_open_historical_requests_the_51st_is_refused(sim, ib, spy):
    sim.faults.latency_ms = 2500   # every answer held back: the requests stay open
    seen = errors_of(ib)

    async def fire():
        requests = [ib.reqHistoricalDataAsync(spy, '', f'{d} D', '1 day', 'TRADES', True) for d in range(2, 53)]
        return await asyncio.gather(*requests)

    answers = ib.run(fire())
    assert sum(1 for a in answers if len(a) == 0) == 1
    assert [text for _, code, text in seen if code == 162] == [PACING]
    sim.faults.latency_ms = 0
    wait_for(lambda: sim.open_hist_requests == 0)


# --- error 162's texts ------------------------------------------------------------------------------------------

@pytest.mark.parametrize('kind', sorted(HIST_ERRORS))
def test_each_162_text_reaches_the_client_and_ends_the_request_with_no_bars(sim, ib, spy, kind):
    sim.faults.hist_error = kind
    seen = errors_of(ib)
    assert len(bars(ib, spy, duration='5 D', bar_size='1 day', what='TRADES')) == 0
    [(code, text)] = [(code, text) for _, code, text in seen if code == 162]
    assert text.startswith('Historical Market Data Service error message:')
    assert text == HIST_ERRORS[kind].format(symbol='SPY', exchange='SMART', secType='STK', what='TRADES',
                                            bar_size='1 day', duration='5 D')


def test_an_unknown_162_kind_is_refused_naming_the_known_ones(sim):
    with pytest.raises(ValueError, match='permissions'):
        sim.faults.hist_error = 'typo'


# --- message rate ------------------------------------------------------------------------------------------------

def test_a_client_throttled_to_45_per_second_never_hears_error_100(ib):
    seen = errors_of(ib)
    throttled = []
    ib.client.throttleStart += lambda: throttled.append(True)
    for _ in range(100):               # back to back: the library holds them to 45 per second
        assert ib.reqCurrentTime() is not None
    assert throttled and 100 not in [code for _, code, _ in seen]


def test_a_client_over_50_messages_per_second_hears_error_100_and_is_closed_when_it_keeps_on(ib):
    ib.client.MaxRequests = 0          # the library's own throttle off, as IB's official client has none
    seen = errors_of(ib)
    for _ in range(130):               # past the burst of two seconds' worth (100)
        ib.client.reqCurrentTime()
    ib.sleep(0.2)
    assert [code for _, code, _ in seen].count(100) == 1
    assert ib.isConnected()
    deadline = time.monotonic() + 10
    while ib.isConnected() and time.monotonic() < deadline:
        ib.client.reqCurrentTime()
        with contextlib.suppress(ConnectionError):   # what a waiting call sees when the gateway hangs up
            ib.sleep(0.005)
    assert not ib.isConnected()
    assert time.monotonic() < deadline - 5        # closed about a second into the flood, not at the deadline


def test_a_client_that_asked_to_be_paced_is_not_refused(sim):
    with socket.create_connection((sim.host, sim.port), timeout=5) as s:
        offer = b'v157..176 +PACEAPI'
        s.sendall(b'API\0' + struct.pack('>I', len(offer)) + offer)
        start_api = b'71\x002\x0031\x00\x00'
        requests = b''.join(struct.pack('>I', 5) + b'49\x001\x00' for _ in range(120))
        s.sendall(struct.pack('>I', len(start_api)) + start_api + requests)
        received = b''
        wait_for(lambda: sum(c['out'].get(49, 0) for c in sim.counters()) == 120)
        s.settimeout(0.5)
        try:
            while chunk := s.recv(65536):
                received += chunk
        except socket.timeout:
            pass
    assert b'\x00100\x00' not in received


def test_the_message_rate_limit_switched_off_lets_a_blasting_client_stay(sim, ib):
    sim.limits.message_rate = None
    ib.client.MaxRequests = 0
    seen = errors_of(ib)
    for _ in range(300):
        ib.client.reqCurrentTime()
    ib.sleep(0.3)
    assert ib.isConnected() and 100 not in [code for _, code, _ in seen]


# --- market-data lines --------------------------------------------------------------------------------------------

def test_streaming_past_the_market_data_lines_gets_error_101(sim, connect):
    sim.limits.market_data_lines = 3
    first, second = connect(1), connect(2)      # the lines are the account's, shared by every client
    contracts = first.qualifyContracts(*(Stock(s, 'SMART', 'USD') for s in STOCKS[:4]))
    seen = errors_of(second)
    for contract in contracts[:3]:
        first.reqMktData(contract)
    wait_for(lambda: sim.market_data_lines_used() == 3)
    second.reqMktData(contracts[3])
    wait_for(lambda: any(code == 101 for _, code, _ in seen), second)
    [(req_id, text)] = [(req_id, text) for req_id, code, text in seen if code == 101]
    assert req_id > 0 and text == 'Max number of tickers has been reached'
    assert sim.market_data_lines_used() == 3
    first.cancelMktData(contracts[0])
    wait_for(lambda: sim.market_data_lines_used() == 2)
    second.reqMktData(contracts[0])
    wait_for(lambda: sim.market_data_lines_used() == 3)


def test_snapshots_do_not_hold_a_line(sim, ib, spy):
    sim.limits.market_data_lines = 1
    ib.reqMktData(spy)
    qqq = ib.qualifyContracts(Stock('QQQ', 'SMART', 'USD'))[0]
    [ticker] = ib.reqTickers(qqq)
    assert ticker.bid > 0


# --- connectivity between the gateway and IB ------------------------------------------------------------------

def test_connectivity_lost_then_restored_reaches_every_client_while_the_socket_stays_up(sim, connect, spy):
    ib = connect(2)
    seen = errors_of(ib)
    ticker = ib.reqMktData(spy)
    sim.faults.connectivity_lost = True
    wait_for(lambda: {1100, 2110} <= {code for _, code, _ in seen}, ib)
    assert ib.isConnected() and all(req_id == -1 for req_id, _, _ in seen)
    wait_for(lambda: ticker.last > 0, ib)
    sim.set_price('SPY', 900.0)
    ib.sleep(0.8)                     # four of the simulator's ticks: nothing streams while IB is away
    assert ticker.last < 800
    sim.faults.connectivity_lost = False
    wait_for(lambda: 1102 in {code for _, code, _ in seen}, ib)
    assert 1101 not in {code for _, code, _ in seen}
    wait_for(lambda: ticker.last > 800, ib)


def test_connectivity_restored_with_data_lost_says_1101_and_drops_market_data(sim, ib, spy):
    seen = errors_of(ib)
    ib.reqMktData(spy)
    wait_for(lambda: sim.market_data_lines_used() == 1)
    sim.faults.connectivity_data_lost = True
    sim.faults.connectivity_lost = True
    wait_for(lambda: 1100 in {code for _, code, _ in seen}, ib)
    sim.faults.connectivity_lost = False
    wait_for(lambda: 1101 in {code for _, code, _ in seen}, ib)
    assert sim.market_data_lines_used() == 0 and ib.isConnected()


def test_a_client_connecting_while_ib_is_away_hears_1100_instead_of_farm_ok(sim):
    sim.faults.connectivity_lost = True
    ib = IB()
    seen = errors_of(ib)
    ib.connect(sim.host, sim.port, clientId=5, timeout=5)
    try:
        codes = {code for _, code, _ in seen}
        assert 1100 in codes and not codes & {2104, 2106, 2158}
    finally:
        ib.disconnect()


# --- executions: the current day only ------------------------------------------------------------------------------

def test_executions_of_an_earlier_day_are_not_returned_unless_the_limit_is_off(sim, connect):
    ib = connect(1)
    spy = ib.qualifyContracts(Stock('SPY', 'SMART', 'USD'))[0]
    trade = ib.placeOrder(spy, MarketOrder('BUY', 1, orderRef='yesterday'))
    wait_for(trade.isDone, ib)
    assert [f.execution.orderRef for f in ib.reqExecutions()] == ['yesterday']
    ib.disconnect()
    sim.clock.advance(24 * 3600)
    later = connect(2)
    assert later.reqExecutions() == [] and later.fills() == []
    sim.limits.executions_current_day = False
    assert [f.execution.orderRef for f in later.reqExecutions()] == ['yesterday']


def test_the_simulator_takes_limits_at_construction():
    with Simulator(limits=Limits.off()) as sim:
        assert sim.limits.message_rate is None and not sim.limits.executions_current_day
