"""What the client sees under each fault the simulator can inject."""
import asyncio
import contextlib
import time

import pytest

from lib.ibapi import IB, LimitOrder, MarketOrder, Stock


def test_latency_delays_every_reply(sim, connect):
    ib = connect(1)
    started = time.perf_counter()
    ib.reqCurrentTime()
    fast = time.perf_counter() - started
    sim.faults.latency_ms = 100
    started = time.perf_counter()
    ib.reqCurrentTime()
    slow = time.perf_counter() - started
    assert slow >= 0.1 > fast


def test_refused_connections_fail_at_once_and_recover(sim):
    sim.faults.refuse_connections = True
    ib = IB()
    started = time.perf_counter()
    with pytest.raises(ConnectionRefusedError):
        ib.connect(sim.host, sim.port, clientId=1, timeout=2)
    assert time.perf_counter() - started < 1
    sim.faults.refuse_connections = False
    ib.connect(sim.host, sim.port, clientId=1, timeout=2)
    assert ib.isConnected()
    ib.disconnect()


def test_drop_after_n_messages_disconnects_the_client(sim, connect):
    ib = connect(1)
    sent = sum(sim.counters()[-1]['in'].values())
    sim.faults.drop_after = sent + 1
    with pytest.raises(ConnectionError):
        ib.reqCurrentTime()
    assert not ib.isConnected()


def test_drop_on_a_given_request(sim, connect):
    ib = connect(1)
    sim.faults.drop_on = {49}
    with pytest.raises(ConnectionError):
        ib.reqCurrentTime()


def test_stalled_request_never_answers(sim, connect):
    ib = connect(1)
    sim.faults.stall = {49}

    async def ask():
        return await asyncio.wait_for(ib.reqCurrentTimeAsync(), 0.5)

    with pytest.raises(asyncio.TimeoutError):
        ib.run(ask())
    sim.faults.stall = set()
    assert ib.reqCurrentTime() is not None


def test_a_rejected_order_gets_201_then_inactive_and_is_listed_among_completed_orders(sim, connect):
    """As a real TWS does (ib_insync issues #554, #559): error 201, then openOrder and orderStatus `Inactive`
    with a permId; later reqCompletedOrders lists the order as Cancelled, the reject text its completedStatus."""
    ib = connect(1)
    sim.faults.reject_orders = 'simulated rejection'
    codes = []
    ib.errorEvent += lambda req_id, code, text, contract: codes.append(code)
    spy = ib.qualifyContracts(Stock('SPY', 'SMART', 'USD'))[0]
    trade = ib.placeOrder(spy, MarketOrder('BUY', 1, orderRef='ibj:0123456789:756733'))
    assert wait_for(ib, lambda: trade.orderStatus.status == 'Inactive')
    assert 201 in codes and trade.order.permId > 0 and trade.orderStatus.filled == 0
    assert [e.errorCode for e in trade.log if e.errorCode] == [201]
    assert sim.broker.executions() == [] and ib.reqAllOpenOrders() == []

    states = []
    decoded = ib.wrapper.completedOrder          # the client's own decoding; the OrderState it is handed

    def completed_order(contract, order, state):
        states.append(state)
        decoded(contract, order, state)

    ib.wrapper.completedOrder = completed_order
    [listed] = ib.reqCompletedOrders(False)
    assert (listed.order.permId, listed.order.orderRef, listed.order.filledQuantity, listed.orderStatus.status) == (
        trade.order.permId, 'ibj:0123456789:756733', 0, 'Cancelled')
    assert [s.completedStatus for s in states] == ['Order rejected - reason:simulated rejection']


def wait_for(ib, condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        ib.sleep(0.02)
    return condition()


def test_partial_fill_leaves_the_rest_working(sim, connect):
    ib = connect(1)
    sim.faults.partial_fill = 0.5
    spy = ib.qualifyContracts(Stock('SPY', 'SMART', 'USD'))[0]
    trade = ib.placeOrder(spy, LimitOrder('BUY', 10, 100000.0))
    ib.sleep(0.5)
    assert trade.orderStatus.filled == 5
    assert trade.orderStatus.remaining == 5
    assert not trade.isDone()


def test_historical_data_outage_returns_error_162_and_no_bars(sim, connect):
    ib = connect(1)
    sim.faults.hist_outage = True
    codes = []
    ib.errorEvent += lambda req_id, code, text, contract: codes.append(code)
    spy = ib.qualifyContracts(Stock('SPY', 'SMART', 'USD'))[0]
    assert len(ib.reqHistoricalData(spy, '', '5 D', '1 day', 'TRADES', True)) == 0
    assert 162 in codes


def test_disconnect_all_drops_every_client_and_they_can_reconnect(sim, connect):
    clients = [connect(i) for i in (1, 2, 3)]
    sim.disconnect_all()
    for ib in clients:
        for _ in range(100):
            if not ib.isConnected():
                break
            with contextlib.suppress(ConnectionError):   # what a waiting call sees: 'Socket disconnect'
                ib.sleep(0.02)
        assert not ib.isConnected()
    clients[0].connect(sim.host, sim.port, clientId=1, timeout=5)
    assert clients[0].isConnected()


def test_counters_report_messages_and_round_trips(sim, connect):
    # replies leave after the client's batched requests have all arrived, even on a loaded machine
    sim.faults.latency_ms = 50
    ib = connect(1)
    ib.reqCurrentTime()
    stats = sim.counters()[-1]
    assert stats['clientId'] == 1
    assert stats['in'][49] == 1 and stats['out'][49] == 1
    assert stats['roundTrips'] == 5     # handshake, startApi, startup batch, executions, request


def test_with_latency_a_refused_client_id_still_hears_326(sim, connect):
    sim.faults.latency_ms = 50
    connect(8)
    second = IB()
    codes = []
    second.errorEvent += lambda req_id, code, text, contract: codes.append(code)
    with contextlib.suppress(TimeoutError, ConnectionError, asyncio.TimeoutError):
        second.connect(sim.host, sim.port, clientId=8, timeout=1)
    second.disconnect()
    assert 326 in codes


def test_clear_switches_every_fault_off(sim, connect):
    f = sim.faults
    f.refuse_connections, f.stall, f.drop_on, f.latency_ms, f.hist_outage = True, {49}, {17}, 30, True
    f.clear()
    assert f == type(f)()
    assert connect(1).reqCurrentTime() is not None
