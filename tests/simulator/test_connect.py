"""Connecting: handshake, startup sync, client ids, the client limit."""
import asyncio
import threading
import time

import pytest

from lib.ibapi import IB


def test_connect_reports_accounts_version_and_farm_notices(sim):
    ib = IB()
    notices = []
    ib.errorEvent += lambda req_id, code, text, contract: notices.append(code)
    ib.connect(sim.host, sim.port, clientId=3, timeout=5)
    try:
        assert ib.client.serverVersion() == 176
        assert ib.managedAccounts() == ['DU1234567']
        assert {2104, 2106, 2158} <= set(notices)
        assert ib.client.getReqId() > 0
    finally:
        ib.disconnect()


def test_200_connect_disconnect_cycles_with_the_same_client_id(sim):
    ib = IB()
    for _ in range(200):
        ib.connect(sim.host, sim.port, clientId=5, timeout=5)
        assert ib.isConnected()
        ib.disconnect()
    deadline = time.time() + 2
    while sim.connected_client_ids() and time.time() < deadline:
        time.sleep(0.01)
    assert sim.connected_client_ids() == set()


def test_30_concurrent_clients_with_distinct_ids(sim):
    results = {}

    def client(client_id):
        async def run():
            ib = IB()
            await ib.connectAsync(sim.host, sim.port, clientId=client_id, timeout=10)
            results[client_id] = (ib.managedAccounts(), await ib.reqCurrentTimeAsync())
            await asyncio.sleep(0.3)   # stay connected while the others connect
            ib.disconnect()
        asyncio.run(run())

    threads = [threading.Thread(target=client, args=(100 + i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == list(range(100, 130))
    assert all(accounts == ['DU1234567'] for accounts, _ in results.values())


def test_duplicate_client_id_gets_error_326_within_a_second(connect, sim):
    connect(7)
    second = IB()
    seen = []
    second.errorEvent += lambda req_id, code, text, contract: seen.append((code, time.monotonic()))
    started = time.monotonic()
    try:
        second.connect(sim.host, sim.port, clientId=7, timeout=2)
    except (TimeoutError, ConnectionError, asyncio.TimeoutError):
        pass
    finally:
        second.disconnect()
    assert seen and seen[0][0] == 326
    assert seen[0][1] - started < 1.0


def test_a_33rd_client_is_refused(connect, sim):
    for client_id in range(1, 33):
        connect(client_id, readonly=True)
    extra = IB()
    codes = []
    extra.errorEvent += lambda req_id, code, text, contract: codes.append(code)
    try:
        extra.connect(sim.host, sim.port, clientId=99, timeout=1)
    except (TimeoutError, ConnectionError, asyncio.TimeoutError):
        pass
    finally:
        extra.disconnect()
    assert codes == [502]
    assert 99 not in sim.connected_client_ids()


def test_next_valid_id_stays_above_ids_a_client_used_before(connect, sim):
    from lib.ibapi import MarketOrder, Stock
    ib = connect(4)
    contract = ib.qualifyContracts(Stock('SPY', 'SMART', 'USD'))[0]
    trade = ib.placeOrder(contract, MarketOrder('BUY', 1))
    used = trade.order.orderId
    ib.disconnect()
    again = connect(4)
    assert again.client.getReqId() > used


def _handshake(sim, offer: bytes) -> list[list[str]]:
    """Send the API handshake offering `offer` (e.g. b'v100..150'); every message until the gateway closes."""
    import socket
    import struct
    with socket.create_connection((sim.host, sim.port), timeout=5) as s:
        s.sendall(b'API\0' + struct.pack('>I', len(offer)) + offer)
        data = b''
        while chunk := s.recv(65536):
            data += chunk
    messages = []
    while data:
        (size,) = struct.unpack('>I', data[:4])
        messages.append(data[4:4 + size].decode().split('\0')[:-1])
        data = data[4 + size:]
    return messages


def test_a_client_older_than_157_hears_the_gateway_version_and_why_before_the_close(sim):
    handshake, refusal = _handshake(sim, b'v100..150')
    assert handshake[0] == '157' and len(handshake) == 2
    assert refusal[:4] == ['4', '2', '-1', '10301']   # the error layout of 157, the version announced
    assert 'v100..150' in refusal[4] and '157 to 176' in refusal[4] and len(refusal) == 5
    assert sim.connected_client_ids() == set()


@pytest.mark.parametrize('version', [157, 163, 166, 170, 175])
def test_the_client_library_capped_below_176_connects_qualifies_trades_and_cancels(sim, version):
    """The library the runtime uses (ib_insync or ib_async), offering at most `version`: every layout it decodes
    follows that version, so nothing it waits for is lost."""
    from lib.ibapi import LimitOrder, MarketOrder, Stock
    ib = IB()
    ib.client.MaxClientVersion = version
    errors = []
    ib.errorEvent += lambda req_id, code, text, contract: errors.append(code)
    ib.connect(sim.host, sim.port, clientId=21, timeout=5)
    try:
        assert ib.client.serverVersion() == version
        spy = ib.qualifyContracts(Stock('SPY', 'SMART', 'USD'))[0]
        assert spy.conId == 756733
        assert ib.qualifyContracts(Stock('NOSUCH', 'SMART', 'USD')) == [] or errors.count(200) == 1
        fill = ib.placeOrder(spy, MarketOrder('BUY', 2, orderRef=f'v{version}'))
        while not fill.isDone():
            ib.waitOnUpdate(timeout=5)
        assert fill.orderStatus.status == 'Filled' and fill.fills[0].execution.orderRef == f'v{version}'
        resting = ib.placeOrder(spy, LimitOrder('BUY', 1, 1.0))
        ib.sleep(0.1)
        ib.cancelOrder(resting.order)
        while not resting.isDone():
            ib.waitOnUpdate(timeout=5)
        assert resting.orderStatus.status == 'Cancelled'
        for _ in range(50):                  # error 202 may be decoded just after the status that ends the trade
            if 202 in errors:
                break
            ib.waitOnUpdate(timeout=0.1)
        assert 200 in errors and 202 in errors
        assert [t.order.orderRef for t in ib.reqCompletedOrders(apiOnly=False)][:1] == [f'v{version}']
        assert len(ib.reqHistoricalData(spy, '', '5 D', '1 day', 'TRADES', True)) >= 3
    finally:
        ib.disconnect()
