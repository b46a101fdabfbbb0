"""Fixtures: a simulated gateway per test, and real IB clients (lib.ibapi: ib_insync or ib_async) connected to it."""
from datetime import datetime, timezone

import pytest

from lib.ibapi import IB
from simulator import Simulator

# Wednesday 2026-11-25, 10:00 New York: a regular session is open.
MARKET_OPEN = datetime(2026, 11, 25, 15, 0, tzinfo=timezone.utc)


@pytest.fixture
def sim():
    simulator = Simulator(time=MARKET_OPEN, seed=7)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def connect(sim):
    """connect(clientId=1, **kw) -> a connected IB; every client is disconnected afterwards."""
    clients = []

    def _connect(client_id=1, **kwargs):
        ib = IB()
        ib.connect(sim.host, sim.port, clientId=client_id, timeout=5, **kwargs)
        clients.append(ib)
        return ib

    yield _connect
    for ib in clients:
        ib.disconnect()


@pytest.fixture
def ib(connect):
    return connect(1)
