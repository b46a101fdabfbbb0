"""The ExecutionFilter time we send is read by the gateway as the instant we mean, whatever zone its login runs in.

TWS reads 'yyyymmdd-hh:mm:ss' as UTC, 'yyyymmdd hh:mm:ss ZONE' in ZONE and 'yyyymmdd hh:mm:ss' in the TWS
login's own time zone (the simulator reads them the same way; sources in simulator/connection.py,
_parse_request_time). A form without a zone would move the filter by the login's offset: west of UTC it
starts late and misses the executions just made, east of UTC it starts early and brings back older ones.
Real ib_insync / ib_async client against the simulator, its login in New York and in Tokyo.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

from bench.activity import fill_activity
from lib.ibapi import IB
from lib.session import connect_client
from simulator import Simulator
from tests.trading.support import ACCOUNT, OPEN_TIME
from trading.market_data import execution_filter_time
from trading.orders import executions_since_claim


@pytest.mark.parametrize('login_zone', ['America/New_York', 'Asia/Tokyo'])
def test_the_takeover_filter_finds_the_executions_since_the_claim_and_no_older_ones(login_zone):
    with Simulator(accounts=[ACCOUNT], time=OPEN_TIME, time_zone=login_zone) as sim:
        fill_activity(sim, 2)                                      # two hours before the claim: not wanted
        sim.clock.set(OPEN_TIME + timedelta(hours=2))
        claimed_at = datetime.now(timezone.utc)
        fill_activity(sim, 3)                                      # since the claim: wanted
        wanted = {e.execId for e in sim.broker.executions(since=OPEN_TIME + timedelta(hours=1))}
        assert len(wanted) == 3

        async def fetch() -> tuple[str, set[str]]:
            ib = IB()
            await connect_client(ib, sim.host, sim.port, 902, 5)
            try:
                executions = await executions_since_claim(ib, ACCOUNT, claimed_at)
                fills = await ib.reqExecutionsAsync(executions)
                return executions.time, {f.execution.execId for f in fills}
            finally:
                ib.disconnect()

        with ThreadPoolExecutor(1) as thread:
            sent, found = thread.submit(asyncio.run, fetch()).result()
    assert found == wanted, f'filter time {sent!r} read in {login_zone}'


def test_a_time_without_a_zone_is_refused_rather_than_read_in_this_machines_zone():
    assert execution_filter_time(datetime(2026, 11, 24, 15, 0, 59, tzinfo=timezone.utc)) == '20261124-15:00:59'
    with pytest.raises(ValueError, match='time zone'):
        execution_filter_time(datetime(2026, 11, 24, 15, 0))
