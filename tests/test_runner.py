"""The fresh-loop runner against the simulated gateway: outcomes, isolation, deadlines, concurrency, labels."""
from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from functions.handler import run_isolated
from intents.base import Intent, IntentParams, IntentRejected, NoParams
from intents.outcome import Outcome
from intents.health import Health
from lib import log
from lib.config import Settings
from lib.failures import Failure
from lib.ibapi import CLIENT_LIBRARY
from simulator import Simulator
from tests.polling import wait_until

ACCOUNT = 'DU1234567'
CURRENT_TIME = 49   # reqCurrentTime's message id

probes: list[dict] = []
probes_lock = threading.Lock()


class ProbeParams(IntentParams):
    hold: float = 0.0
    fail: str | None = None   # 'bug', 'rejected', 'exit'


class Probe(Intent):
    """Asks the gateway for its time, holds, and records where it ran."""

    name = 'probe'
    Params = ProbeParams

    async def run(self) -> Outcome:
        gateway_time = await self.ib.reqCurrentTimeAsync()
        await asyncio.sleep(self.params.hold)
        with probes_lock:
            probes.append({'loop': asyncio.get_running_loop(), 'ib': self.ib, 'thread': threading.current_thread()})
        if self.params.fail == 'bug':
            raise ValueError('boom')
        if self.params.fail == 'rejected':
            raise IntentRejected('over the limit')
        if self.params.fail == 'exit':
            raise SystemExit(3)
        return Outcome.ok({'gatewayTime': gateway_time.isoformat()})


class PlacingProbe(Probe):
    """The same, posing as an order-placing intent."""

    name = 'placing-probe'
    places_orders = True


@pytest.fixture(autouse=True)
def clean_probes():
    probes.clear()


def settings_for(sim: Simulator, **overrides) -> Settings:
    return Settings(gateway_host=sim.host, gateway_port=sim.port, **overrides)


def our_threads() -> set[threading.Thread]:
    """Threads other than the simulator's and pytest's own, which live for the whole module."""
    return {t for t in threading.enumerate() if t.name != 'ib-simulator'}


def test_the_intent_result_is_handed_back_with_gateway_and_timings(gateway):
    outcome = run_isolated(Health, NoParams(), dry_run=False, settings=settings_for(gateway))
    assert outcome.status == 'ok' and outcome.failure is None
    assert outcome.result['serverVersion'] == 176 and outcome.result['managedAccounts'] == [ACCOUNT]
    assert outcome.account == ACCOUNT
    assert outcome.gateway.host == gateway.host and outcome.gateway.port == gateway.port
    assert 100 <= outcome.gateway.client_id <= 999 and outcome.gateway.server_version == 176
    assert outcome.connect_ms > 0 and outcome.intent_ms > 0


def test_a_bug_in_the_intent_comes_back_as_a_non_retryable_error(gateway):
    outcome = run_isolated(Probe, ProbeParams(fail='bug'), dry_run=False, settings=settings_for(gateway))
    assert outcome.status == 'error'
    assert outcome.failure == Failure.permanent('ValueError', 'boom')
    assert outcome.account == ACCOUNT and outcome.gateway.client_id is not None
    assert wait_until(lambda: not gateway.connected_client_ids())


def test_even_system_exit_in_an_intent_becomes_an_outcome(gateway):
    outcome = run_isolated(Probe, ProbeParams(fail='exit'), dry_run=False, settings=settings_for(gateway))
    assert outcome.status == 'error' and outcome.failure.type == 'SystemExit'


def test_a_business_rejection_is_status_rejected(gateway):
    outcome = run_isolated(Probe, ProbeParams(fail='rejected'), dry_run=False, settings=settings_for(gateway))
    assert outcome.status == 'rejected'
    assert outcome.failure == Failure.rejected('IntentRejected', 'over the limit')


def test_an_account_rule_violation_is_status_rejected(gateway):
    outcome = run_isolated(Probe, ProbeParams(), dry_run=False, settings=settings_for(gateway, account='DU7654321'))
    assert outcome.status == 'rejected'
    assert outcome.failure.type == 'AccountNotManaged' and outcome.failure.retryable is False


def test_the_loop_is_closed_and_the_thread_gone_after_each_call(gateway):
    before = our_threads()
    for _ in range(3):
        outcome = run_isolated(Probe, ProbeParams(), dry_run=False, settings=settings_for(gateway))
        assert outcome.status == 'ok'
    assert our_threads() == before
    assert len(probes) == 3
    for probe in probes:
        assert probe['loop'].is_closed()
        assert not probe['thread'].is_alive()
        assert not probe['ib'].isConnected()
    # probes keeps every loop and IB alive, so equal ids would mean a shared object
    assert len({id(p['loop']) for p in probes}) == 3
    assert len({id(p['ib']) for p in probes}) == 3



class Blocking(Probe):
    """Makes blocking calls (as the store's) through asyncio.to_thread, one of them still running at its end."""

    name = 'blocking-probe'

    async def run(self) -> Outcome:
        await asyncio.gather(*(asyncio.to_thread(time.sleep, 0.01) for _ in range(3)))
        started = threading.Event()
        late = asyncio.ensure_future(asyncio.to_thread(lambda: (started.set(), time.sleep(0.2))))
        while not started.is_set():     # the call is running when the intent ends
            await asyncio.sleep(0.001)
        with probes_lock:
            probes.append({'late': late})
        return Outcome.ok({})


def test_blocking_calls_start_no_thread_per_run_and_are_over_before_the_run_is(gateway, monkeypatch):
    run_isolated(Blocking, NoParams(), dry_run=False, settings=settings_for(gateway))    # the pool's threads exist
    started: list[str] = []
    start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, 'start', lambda thread: (started.append(thread.name), start(thread))[1])
    for _ in range(3):
        began = time.monotonic()
        assert run_isolated(Blocking, NoParams(), dry_run=False, settings=settings_for(gateway)).status == 'ok'
        assert time.monotonic() - began >= 0.2     # the call still running at the intent's end was waited for
    # one thread per run, the intent's: its blocking calls go to the process's pool (functions/blocking.py)
    assert started == ['intent-blocking-probe'] * 3

def test_a_deadline_hit_mid_intent_returns_promptly_and_leaves_nothing_behind(gateway):
    gateway.faults.stall = {CURRENT_TIME}
    before = our_threads()
    started = time.perf_counter()
    outcome = run_isolated(Health, NoParams(), dry_run=False, settings=settings_for(gateway, deadline_seconds=1.0))
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0
    assert outcome.status == 'error'
    assert outcome.failure.type == 'DeadlineExceeded' and outcome.failure.retryable is True
    assert outcome.gateway.client_id is not None and outcome.intent_ms is not None
    assert our_threads() == before
    assert wait_until(lambda: not gateway.connected_client_ids())


def test_a_deadline_hit_by_an_order_intent_is_not_retryable(gateway):
    gateway.faults.stall = {CURRENT_TIME}
    outcome = run_isolated(PlacingProbe, ProbeParams(), dry_run=False,
                           settings=settings_for(gateway, deadline_seconds=0.5))
    assert outcome.failure.type == 'DeadlineExceeded' and outcome.failure.retryable is False


def test_gateway_down_is_a_retryable_error_not_an_exception(gateway):
    gateway.faults.refuse_connections = True
    outcome = run_isolated(Health, NoParams(), dry_run=False, settings=settings_for(gateway, connect_attempts=2))
    assert outcome.status == 'error'
    assert outcome.failure.type == 'GatewayUnavailable' and outcome.failure.retryable is True
    assert outcome.gateway.to_wire() == {'host': gateway.host, 'port': gateway.port, 'clientId': None, 'serverVersion': None}


def test_a_disconnect_mid_intent_ends_the_run_at_once_as_retryable(gateway):
    gateway.faults.stall = {CURRENT_TIME}
    restart = threading.Timer(0.3, gateway.disconnect_all)
    restart.start()
    started = time.perf_counter()
    outcome = run_isolated(PlacingProbe, ProbeParams(), dry_run=False,
                           settings=settings_for(gateway, deadline_seconds=10))
    restart.join()
    assert time.perf_counter() - started < 2.0
    assert outcome.status == 'error' and outcome.failure.retryable is True
    assert outcome.failure.type in ('GatewayDisconnected', 'ConnectionError')


def test_twenty_concurrent_runs_get_distinct_client_ids_and_their_own_loop_and_ib(gateway):
    settings = settings_for(gateway)
    peak = []

    def one(_):
        return run_isolated(Probe, ProbeParams(hold=0.3), dry_run=False, settings=settings)

    def watch():
        while len(peak) < 200 and not done.is_set():
            peak.append(len(gateway.connected_client_ids()))
            time.sleep(0.01)

    done = threading.Event()
    watcher = threading.Thread(target=watch)
    watcher.start()
    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(one, range(20)))
    done.set()
    watcher.join()
    assert [o.status for o in outcomes] == ['ok'] * 20
    client_ids = {o.gateway.client_id for o in outcomes}
    assert len(client_ids) == 20
    assert max(peak) >= 10   # the runs really overlapped at the gateway
    assert len({id(p['loop']) for p in probes}) == 20
    assert len({id(p['ib']) for p in probes}) == 20
    assert len({id(p['thread']) for p in probes}) == 20


def test_labels_reach_log_lines_written_inside_the_thread(gateway, monkeypatch):
    monkeypatch.setenv('IB_CLIENT_LOG_LEVEL', 'INFO')   # the client library's connect lines, off by default
    lines = io.StringIO()
    log.configure(json=True, stream=lines, level='INFO')
    try:
        outcome = run_isolated(Health, NoParams(), dry_run=False, settings=settings_for(gateway),
                               labels={'runId': 'run-1', 'intent': 'health', 'messageId': 'm-1'})
    finally:
        monkeypatch.delenv('IB_CLIENT_LOG_LEVEL')
        log.configure()
    entries = [json.loads(line) for line in lines.getvalue().splitlines()]
    from_ib = [e for e in entries if e['logger'].startswith(CLIENT_LIBRARY)]
    assert from_ib, f'{CLIENT_LIBRARY} logs its connect inside the thread'
    for entry in from_ib:
        labels = entry['logging.googleapis.com/labels']
        assert labels['runId'] == 'run-1' and labels['intent'] == 'health' and labels['messageId'] == 'm-1'
    client_id = str(outcome.gateway.client_id)
    assert any(e['logging.googleapis.com/labels'].get('clientId') == client_id for e in from_ib)
