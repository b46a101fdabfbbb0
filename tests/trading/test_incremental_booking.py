"""Booking executions into the fills ledger is incremental: each booking fetches only what came since the last.

Counted where it lands: the execution reports (execDetails, message 11) the simulated gateway sends to the
connection that booked; and checked against the gateway's own list of executions.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from bench.activity import ACTIVITY_CLIENT_ID, fill_activity
from lib.ibapi import IB
from trading.idempotency import claim_key
from trading.ledger import BOOKING_CURSOR_PREFIX, Booking, book_executions
from lib.config import StoreSettings
from lib.session import connect_client
from lib.store import open_store
from simulator import Simulator
from simulator.model import Order
from tests.test_lean_connect import requests_of
from tests.trading.support import ACCOUNT, OPEN_TIME

EXEC_DETAILS = 11
REFERENCE = 'ibj:00c0ffee00'


def test_an_allocation_fetches_only_the_executions_since_the_last_booking(make_rig):
    rig = make_rig()
    rig.sim.clock.set(OPEN_TIME - timedelta(minutes=30))
    fill_activity(rig.sim, 100)                                  # a busy morning, from another client id
    rig.sim.clock.set(OPEN_TIME)
    first = rig.send('allocation', {'strategies': ['dummy']}, key='first')
    assert first.status == 'ok', first.error
    # the first booking of the day fetches the day so far
    assert requests_of(rig.sim, first.gateway.client_id)['out'].get(EXEC_DETAILS, 0) >= 100
    own = [e for e in rig.sim.broker.executions(account=ACCOUNT) if e.orderRef.startswith('ibj:')]
    assert own                                                    # the first allocation traded

    rig.sim.clock.set(OPEN_TIME + timedelta(minutes=5))
    fill_activity(rig.sim, 30)                                    # activity since the first booking
    rig.sim.clock.set(OPEN_TIME + timedelta(minutes=10))
    second = rig.send('allocation', {'strategies': ['dummy']}, key='second', dry_run=True)
    assert second.status in ('ok', 'skipped'), second.error
    # only what came since: the 30 new fills and the first run's own (inside the booking overlap)
    assert requests_of(rig.sim, second.gateway.client_id)['out'].get(EXEC_DETAILS, 0) == 30 + len(own)

    rig.sim.clock.set(OPEN_TIME + timedelta(minutes=20))
    third = rig.send('allocation', {'strategies': ['dummy']}, key='third', dry_run=True)
    assert requests_of(rig.sim, third.gateway.client_id)['out'].get(EXEC_DETAILS, 0) == 0

    # the ledger is what one booking of the whole day gives: every execution once, none missed
    reconciliation = rig.send('trade-reconciliation')
    assert reconciliation.status == 'ok', reconciliation.error
    assert reconciliation.result['recorded'] == []
    assert reconciliation.result['executions'] == reconciliation.result['alreadyRecorded'] == 130 + len(own)
    ledger = [f['execId'] for f in rig.store.fills() if not f['execId'].startswith('transfer:')]
    assert sorted(ledger) == sorted(e.execId for e in rig.sim.broker.executions(account=ACCOUNT))
    assert reconciliation.result['drift'] == []


def test_fills_in_the_same_second_a_waiting_fill_and_the_first_booking_of_a_day_are_booked_once(tmp_path):
    store = open_store(StoreSettings(sqlite_path=str(tmp_path / 'state.sqlite3')))
    with Simulator(accounts=[ACCOUNT], time=OPEN_TIME) as sim:
        sim.clock.freeze()                                 # every fill below lands in the booking's own second
        fill_activity(sim, 3)
        first = book(sim, store)
        assert (len(first.recorded), first.already) == (3, 0)
        fill_activity(sim, 2)                              # same second as the booking's cursor
        second = book(sim, store)
        assert (len(second.recorded), second.already) == (2, 3)

        # a fill of ours whose run has not recorded its order yet waits, and keeps the cursor at its time
        spy = next(i for i in sim.universe.all() if i.symbol == 'SPY' and i.secType == 'STK')
        ref = f'{REFERENCE}:{spy.conId}'
        sim.broker.place(Order(orderId=sim.broker.next_order_id(ACTIVITY_CLIENT_ID), clientId=ACTIVITY_CLIENT_ID,
                               permId=0, account=ACCOUNT, instrument=spy, action='BUY', totalQuantity=4.0,
                               orderType='MKT', orderRef=ref))
        sim.clock.set(OPEN_TIME + timedelta(hours=1))
        third = book(sim, store)
        assert [w['orderRef'] for w in third.waiting] == [ref] and third.recorded == []
        # its run records the order later; an hour on, the booking still fetches it and attributes it
        run_id = 'run-1'
        assert store.claim(claim_key(REFERENCE, 1), run_id, 60, OPEN_TIME).held
        store.finish(claim_key(REFERENCE, 1), run_id, {'orders': [
            {'orderRef': ref, 'quantity': 4.0, 'strategies': {'dummy': 4.0}}]}, OPEN_TIME)
        sim.clock.set(OPEN_TIME + timedelta(hours=2))
        fourth = book(sim, store)
        assert [(e['orderRef'], e['strategies']) for e in fourth.recorded] == [(ref, {'dummy': 4.0})]
        assert fourth.waiting == []
        later = book(sim, store)
        assert later.executions == 0                       # nothing new since: nothing fetched

        # a cursor from an earlier day: the day's executions are all fetched (and none booked twice)
        store.put_cursor(f'{BOOKING_CURSOR_PREFIX}{ACCOUNT}', {'through': '2026-11-23T20:00:00+00:00'})
        next_day = book(sim, store)
        assert (next_day.executions, next_day.already, next_day.recorded) == (6, 6, [])
        assert sorted(f['execId'] for f in store.fills()) == sorted(e.execId for e in sim.broker.executions())
    store.close()


def book(sim: Simulator, store) -> Booking:
    """One booking by a fresh client, as a run does it: the gateway's time first, then the executions."""
    async def run() -> Booking:
        ib = IB()
        await connect_client(ib, sim.host, sim.port, 901, 5)
        try:
            now: datetime = await ib.reqCurrentTimeAsync()
            return await book_executions(ib, store, ACCOUNT, now)
        finally:
            ib.disconnect()
    with ThreadPoolExecutor(1) as thread:    # its own loop, as a run has: the main thread's stays as it is
        return thread.submit(asyncio.run, run()).result()
