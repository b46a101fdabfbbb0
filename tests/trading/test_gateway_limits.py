"""Intents at a gateway's limits and faults: health while the gateway has lost IB's servers (1100 and 2110 to
every client, the API socket up) and once it is back (1102 or 1101); an allocation with no market-data line
free (quotes are snapshots, which hold none)."""
from __future__ import annotations

import pytest


@pytest.fixture
def wall_clock_rig(make_rig):
    """A gateway on the wall clock: health compares the gateway's clock with this machine's."""
    return make_rig(time=None)


def codes(result) -> set[int]:
    """The gateway notices health reports as problems."""
    return {int(p['message'].split(':', 1)[0]) for p in result.result['problems'] if p['code'] == 'gateway-notice'}


def test_health_is_unhealthy_while_ib_is_away_and_healthy_once_connectivity_is_restored(wall_clock_rig):
    rig = wall_clock_rig
    before = rig.send('health')
    assert before.result['healthy'] is True, before.result
    rig.sim.faults.connectivity_lost = True
    away = rig.send('health')
    assert away.result['healthy'] is False and codes(away) == {1100, 2110}
    rig.sim.faults.connectivity_lost = False      # 1102 "restored - data maintained"
    back = rig.send('health')
    assert back.result['healthy'] is True and codes(back) == set()


def test_health_after_a_restore_with_data_lost_is_healthy_again(wall_clock_rig):
    rig = wall_clock_rig
    rig.sim.faults.connectivity_data_lost = True
    rig.sim.faults.connectivity_lost = True
    assert rig.send('health').result['healthy'] is False
    rig.sim.faults.connectivity_lost = False      # 1101 "restored - data lost"
    assert rig.send('health').result['healthy'] is True


def test_an_allocation_needs_no_market_data_line(rig):
    rig.sim.limits.market_data_lines = 0         # every streaming request would get error 101
    result = rig.send('allocation', {'strategies': ['dummy']})
    assert result.status == 'ok', result.error
    assert rig.position('SPY') > 0
