"""Gateway sessions against the simulated gateway: client ids, error 326, retries, account and mode rules."""
from __future__ import annotations

import asyncio
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lib.client_ids import ClientIdAllocator, ClientIdsExhausted
from lib.config import ConfigError, Settings, StoreSettings, TradingConfigSettings
from lib.failures import failure_of
from lib.ibapi import IB
from lib.session import (AccountNotManaged, GatewayUnavailable, OtherClientUnavailable, TradingModeViolation,
                         close_session, open_session, other_client)
from simulator import Simulator
from tests.polling import wait_until

ACCOUNT = 'DU1234567'


def settings_for(sim: Simulator, **overrides) -> Settings:
    return Settings(gateway_host=sim.host, gateway_port=sim.port, **overrides)


def in_fresh_loop(coro_fn, *args, **kwargs):
    """Run a coroutine the way production does: its own thread, its own loop."""
    result: list = []

    def target():
        try:
            result.append(('ok', asyncio.run(coro_fn(*args, **kwargs))))
        except BaseException as exc:
            result.append(('raised', exc))

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    kind, value = result[0]
    if kind == 'raised':
        raise value
    return value


async def connect_and_describe(settings: Settings, *, allocator=None, hold=None):
    """Open a session, report what a caller sees, close it."""
    ib = IB()
    kwargs = {'allocator': allocator} if allocator else {}
    started = time.perf_counter()
    session = await open_session(ib, settings, **kwargs)
    elapsed = time.perf_counter() - started
    try:
        if hold:
            await hold(session)
        return {'client_id': session.client_id, 'account': session.account, 'managed': session.managed_accounts,
                'server_version': session.server_version, 'notices': [n['code'] for n in session.notices],
                'attempts': session.attempts, 'connected': ib.isConnected(), 'elapsed': elapsed,
                'gateway': session.gateway()}
    finally:
        if allocator:
            close_session(session, allocator)
        else:
            close_session(session)


def test_connects_with_a_client_id_from_the_range_and_releases_it(gateway):
    allocator = ClientIdAllocator()
    seen_by_gateway = []

    async def hold(session):
        seen_by_gateway.extend(gateway.connected_client_ids())

    info = in_fresh_loop(connect_and_describe, settings_for(gateway, client_id_min=500, client_id_max=520),
                         allocator=allocator, hold=hold)
    assert 500 <= info['client_id'] <= 520
    assert info['client_id'] in seen_by_gateway
    assert info['connected'] and info['account'] == ACCOUNT and info['managed'] == [ACCOUNT]
    assert info['server_version'] == 176
    assert info['gateway'] == {'host': gateway.host, 'port': gateway.port, 'clientId': info['client_id'],
                               'serverVersion': 176}
    assert allocator.in_use() == frozenset()
    assert wait_until(lambda: info['client_id'] not in gateway.connected_client_ids())


def test_farm_status_notices_sent_while_connecting_are_kept(gateway):
    # the gateway sends them right after startApi; they are in by the reply to the session's first request
    info = in_fresh_loop(connect_and_describe, settings_for(gateway), hold=lambda s: s.ib.reqCurrentTimeAsync())
    assert {2104, 2106, 2158} <= set(info['notices'])


def test_a_clientid_clash_is_retried_with_another_id_within_a_second(gateway):
    low, high = 600, 699
    first_choice = random.Random(7).randint(low, high)
    allocator = ClientIdAllocator(rng=random.Random(7))

    async def clash():
        squatter = IB()   # another client already holds the id the allocator will pick first
        await squatter.connectAsync(gateway.host, gateway.port, first_choice, timeout=4)
        try:
            return await connect_and_describe(settings_for(gateway, client_id_min=low, client_id_max=high,
                                                           connect_timeout=4), allocator=allocator)
        finally:
            squatter.disconnect()

    info = in_fresh_loop(clash)
    assert info['client_id'] != first_choice and low <= info['client_id'] <= high
    assert info['attempts'] == 2
    assert info['elapsed'] < 1.0   # ib_insync alone would wait out the 4 s connect timeout


def test_a_range_with_every_id_taken_is_reported_as_exhausted(gateway):
    async def clash():
        squatter = IB()
        await squatter.connectAsync(gateway.host, gateway.port, 700, timeout=4)
        try:
            started = time.perf_counter()
            with pytest.raises(ClientIdsExhausted) as caught:
                await open_session(IB(), settings_for(gateway, client_id_min=700, client_id_max=700))
            return caught.value, time.perf_counter() - started
        finally:
            squatter.disconnect()

    error, elapsed = in_fresh_loop(clash)
    assert failure_of(error).retryable and '700' in str(error)
    assert elapsed < 1.0


def test_gateway_down_gives_up_after_the_configured_attempts(gateway):
    gateway.faults.refuse_connections = True
    started = time.perf_counter()
    with pytest.raises(GatewayUnavailable) as caught:
        in_fresh_loop(connect_and_describe, settings_for(gateway, connect_attempts=3))
    elapsed = time.perf_counter() - started
    assert failure_of(caught.value).retryable
    assert 'after 3 attempt(s)' in str(caught.value)
    assert 0.7 <= elapsed < 2.0   # backoff 0.25 s + 0.5 s between the three attempts


def test_a_gateway_that_never_answers_times_out_per_attempt(gateway):
    gateway.faults.stall = {71}   # startApi is read and never answered
    started = time.perf_counter()
    with pytest.raises(GatewayUnavailable) as caught:
        in_fresh_loop(connect_and_describe, settings_for(gateway, connect_attempts=2, connect_timeout=0.3))
    elapsed = time.perf_counter() - started
    assert 'timed out' in str(caught.value)
    assert 0.8 <= elapsed < 2.0   # two 0.3 s attempts and a 0.25 s backoff


def test_retries_stop_when_the_deadline_leaves_no_room(gateway):
    gateway.faults.refuse_connections = True

    async def with_deadline():
        loop = asyncio.get_running_loop()
        await open_session(IB(), settings_for(gateway, connect_attempts=10), deadline=loop.time() + 0.5)

    started = time.perf_counter()
    with pytest.raises(GatewayUnavailable):
        in_fresh_loop(with_deadline)
    assert time.perf_counter() - started < 0.6


def test_an_account_the_gateway_does_not_manage_is_rejected_quickly(gateway):
    started = time.perf_counter()
    with pytest.raises(AccountNotManaged) as caught:
        in_fresh_loop(connect_and_describe, settings_for(gateway, account='DU7654321', connect_timeout=4))
    assert time.perf_counter() - started < 1.0
    assert 'DU7654321' in str(caught.value) and ACCOUNT in str(caught.value)
    assert wait_until(lambda: not gateway.connected_client_ids())


def test_several_managed_accounts_need_ib_account():
    with Simulator(accounts=['DU1111111', 'DU2222222']) as sim:
        with pytest.raises(AccountNotManaged, match='set IB_ACCOUNT'):
            in_fresh_loop(connect_and_describe, settings_for(sim))
        info = in_fresh_loop(connect_and_describe, settings_for(sim, account='DU2222222'))
    assert info['account'] == 'DU2222222'
    assert info['managed'] == ['DU1111111', 'DU2222222']


def test_live_mode_without_the_opt_in_is_refused_before_connecting(gateway):
    connections_before = len(gateway.counters())
    with pytest.raises(TradingModeViolation, match='ALLOW_LIVE_TRADING'):
        in_fresh_loop(connect_and_describe, settings_for(gateway, trading_mode='live'))
    assert len(gateway.counters()) == connections_before


def test_live_mode_refuses_a_paper_account(gateway):
    with pytest.raises(TradingModeViolation, match='paper account'):
        in_fresh_loop(connect_and_describe, settings_for(gateway, trading_mode='live', allow_live=True))


def test_paper_mode_refuses_a_live_account_and_live_mode_accepts_it():
    with Simulator(accounts=['U1234567']) as sim:
        with pytest.raises(TradingModeViolation, match='live account'):
            in_fresh_loop(connect_and_describe, settings_for(sim))
        info = in_fresh_loop(connect_and_describe, settings_for(sim, trading_mode='live', allow_live=True))
    assert info['account'] == 'U1234567'


def test_concurrent_holders_never_share_an_id():
    allocator = ClientIdAllocator()
    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(lambda _: allocator.acquire(1, 64), range(64)))
    assert sorted(ids) == list(range(1, 65))
    with pytest.raises(ClientIdsExhausted):
        allocator.acquire(1, 64)
    allocator.release(5)
    assert allocator.acquire(1, 64) == 5


def test_settings_from_env_defaults_and_values():
    assert Settings.from_env({}) == Settings()
    env = {
        'IB_GATEWAY_HOST': 'ib-gateway.internal', 'IB_GATEWAY_PORT': '4004', 'IB_CLIENT_ID_RANGE': '10-20',
        'IB_CONNECT_TIMEOUT': '2.5', 'IB_CONNECT_ATTEMPTS': '5', 'IB_ACCOUNT': 'U1234567',
        'TRADING_MODE': 'LIVE', 'ALLOW_LIVE_TRADING': 'true', 'INTENT_DEADLINE_SECONDS': '30',
        'RESULTS_TOPIC': 'projects/p/topics/results', 'GOOGLE_CLOUD_PROJECT': 'p', 'PUBLISH_TIMEOUT_SECONDS': '3'}
    settings = Settings.from_env(env)
    assert settings == Settings(
        gateway_host='ib-gateway.internal', gateway_port=4004, client_id_min=10, client_id_max=20,
        connect_timeout=2.5, connect_attempts=5, account='U1234567', trading_mode='live', allow_live=True,
        deadline_seconds=30, results_topic='projects/p/topics/results', project='p', publish_timeout=3,
        # the nested parts: the store's project, and the environment the trading config's env layer reads
        store=StoreSettings(project='p'), trading_config=TradingConfigSettings(environment=env))


@pytest.mark.parametrize('name, value', [
    ('IB_GATEWAY_PORT', 'http'), ('IB_GATEWAY_PORT', '70000'), ('IB_CLIENT_ID_RANGE', '900-100'),
    ('IB_CLIENT_ID_RANGE', '100'), ('IB_CONNECT_TIMEOUT', '-1'), ('IB_CONNECT_ATTEMPTS', '0'),
    ('TRADING_MODE', 'real'), ('ALLOW_LIVE_TRADING', 'sure'), ('INTENT_DEADLINE_SECONDS', 'nan'),
])
def test_settings_from_env_names_the_bad_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})



def test_another_client_ids_connection_is_closed_on_every_path(gateway):
    """lib.session.other_client, the second connection a cancel needs: open inside the block, gone after it
    however the block ends, and an id connected elsewhere refused at once (error 326) leaving nothing behind."""

    async def inside(client_id: int, fail: bool = False) -> tuple[bool, set[int]]:
        async with other_client(gateway.host, gateway.port, client_id, timeout=5) as ib:
            if fail:
                raise RuntimeError('the work failed')
            return ib.isConnected(), set(gateway.connected_client_ids())

    connected, seen = in_fresh_loop(inside, 41)
    assert connected and 41 in seen
    assert wait_until(lambda: 41 not in gateway.connected_client_ids())

    with pytest.raises(RuntimeError, match='the work failed'):
        in_fresh_loop(inside, 42, fail=True)
    assert wait_until(lambda: 42 not in gateway.connected_client_ids())

    holder = IB()
    holder.connect(gateway.host, gateway.port, clientId=43)
    try:
        started = time.monotonic()
        with pytest.raises(OtherClientUnavailable, match='326'):
            in_fresh_loop(inside, 43)
        assert time.monotonic() - started < 3   # 326 is the answer; the 5 s timeout is not waited out
        assert wait_until(lambda: gateway.connected_client_ids() == {43})
    finally:
        holder.disconnect()
