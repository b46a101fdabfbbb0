"""Machinery of the reliability suite: deliveries of Pub/Sub events (tests/pubsub_events.py) through the real handler,
the simulator's order log, and snapshots of what a process holds (threads, sockets, loops, IB objects).

Everything runs in this process against an in-process Simulator; results are published the way the
function does without RESULTS_TOPIC (one JSON line on stdout), so tests read them back with capsys.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import jsonschema
from cloudevents.http import CloudEvent

from functions.blocking import THREAD_NAME_PREFIX as BLOCKING_THREADS
from functions.contract import IntentResult, result_schema
from functions.handler import TransientFailure, handle
from lib.config import Settings, StoreSettings
from lib.ibapi import IB, util
from lib.store import open_store
from simulator import Simulator
from tests.pubsub_events import request_event

HEAVY = os.environ.get('RELIABILITY_HEAVY') == '1'
REPO = Path(__file__).resolve().parents[2]
# Wednesday 2026-11-25, 10:00 New York: a regular session is open, so order intents have work to do.
MARKET_OPEN = datetime(2026, 11, 25, 15, 0, tzinfo=timezone.utc)
DEADLINE_SECONDS = 2.0
# One connect attempt keeps refused and dropped connects quick; the heavy run uses the default three.
CONNECT_ATTEMPTS = 3 if HEAVY else 1
# A run ends within its deadline; publishing and the thread join may add a little on a loaded machine.
DEADLINE_SLACK_SECONDS = 1.0
RESULT_SCHEMA = jsonschema.Draft202012Validator(result_schema(), format_checker=jsonschema.FormatChecker())


def settings_for(sim: Any, **overrides: Any) -> Settings:
    """Settings pointing at `sim`, with a short deadline, results printed on stdout; the store, idempotency and
    trading config as the test's environment says now (the harness plays the entry, which reads it)."""
    deadline = overrides.pop('deadline_seconds', DEADLINE_SECONDS)
    base = Settings.from_env({**os.environ, 'IB_GATEWAY_HOST': sim.host, 'IB_GATEWAY_PORT': str(sim.port),
                              'IB_CONNECT_TIMEOUT': '1', 'IB_CONNECT_ATTEMPTS': str(CONNECT_ATTEMPTS),
                              'INTENT_DEADLINE_SECONDS': str(deadline)})
    return replace(base, **overrides)


# --- deliveries -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Delivery:
    """One call of the handler: the result it published and whether it raised (Pub/Sub redelivers then)."""

    result: IntentResult
    raised: bool
    seconds: float

    @property
    def doc(self) -> dict:
        return self.result.to_wire()


def deliver(event: CloudEvent, settings: Settings) -> Delivery:
    """Hand `event` to the handler as functions-framework does; a TransientFailure counts as 'raised'.

    Any other exception propagates: for the handler that is a bug (or a failed publish).
    """
    started = time.monotonic()
    try:
        result, raised = handle(event, settings), False
    except TransientFailure as exc:
        result, raised = exc.result, True
    return Delivery(result, raised, time.monotonic() - started)


def _lines(out: str) -> list[str]:
    # Only \n ends a line: a log reader splits there, while str.splitlines() would also split inside
    # a JSON string at U+0085 or U+2028, which JSON leaves unescaped.
    return out.split('\n')


def printed_results(out: str) -> list[dict]:
    """The result documents among the JSON lines written to stdout (log lines are there too)."""
    docs = []
    for line in _lines(out):
        if line.startswith('{'):
            doc = json.loads(line)
            if doc.get('schema') == 'intent-result/v1':
                docs.append(doc)
    return docs


def log_lines(out: str) -> list[dict]:
    """The JSON log lines among the lines written to stdout."""
    lines = []
    for line in _lines(out):
        if line.startswith('{'):
            doc = json.loads(line)
            if 'severity' in doc:
                lines.append(doc)
    return lines


def check_published(delivery: Delivery, printed: list[dict]) -> dict:
    """Assert the delivery's result was printed exactly once, is schema-valid and says why it failed."""
    doc = delivery.doc
    mine = [p for p in printed if p['runId'] == doc['runId']]
    assert mine == [doc], f'result of run {doc["runId"]} published {len(mine)} times'
    RESULT_SCHEMA.validate(doc)
    if doc['status'] in ('error', 'rejected'):
        assert doc['error'] and doc['error']['type'] and doc['error']['message'], doc
    assert delivery.raised == (doc['status'] == 'error' and doc['error']['retryable']), doc
    return doc


@contextlib.contextmanager
def using_store(path: Path) -> Iterator[None]:
    """Intents inside the block use the SQLite store at `path`; it is closed afterwards."""
    previous = os.environ.get('SQLITE_PATH')
    os.environ['SQLITE_PATH'] = str(path)
    try:
        yield
    finally:
        open_store(StoreSettings.from_env()).close()
        if previous is None:
            del os.environ['SQLITE_PATH']
        else:
            os.environ['SQLITE_PATH'] = previous


# --- the simulator's order log --------------------------------------------------------------

def order_log(sim: Any, after_perm_id: int = 0) -> list:
    """Every order the gateway holds (live and completed) with a permId above `after_perm_id`."""
    orders = sim.broker.open_orders() + sim.broker.completed_orders()
    return sorted((o for o in orders if o.permId > after_perm_id), key=lambda o: o.permId)


def was_rejected(order: Any) -> bool:
    """An order the gateway refused (error 201): it keeps it, as TWS does, Cancelled with the reject text."""
    return order.status == 'Cancelled' and not order.filled and order.completedStatus.startswith('Order rejected')


def last_perm_id(sim: Any) -> int:
    """The highest permId the gateway gave so far: later orders have higher ones."""
    return max((o.permId for o in order_log(sim)), default=0)


def legs(orders: list) -> Counter:
    """(conId, action) of each order."""
    return Counter((o.instrument.conId, o.action) for o in orders)


def duplicate_orders(orders: list) -> dict[str, list[str]]:
    """Orders that repeat another: the same orderRef twice, or two orders for one contract.

    One request places at most one order per contract (trades are netted per contract), so a second
    order for a contract within one request and its redeliveries is a duplicate whatever its orderRef;
    a rejected order does not count there (its remainder is re-sent under the leg's next orderRef).
    """
    found: dict[str, list[str]] = {}
    by_ref = Counter(o.orderRef for o in orders if o.orderRef)
    for ref, count in by_ref.items():
        if count > 1:
            found[f'orderRef {ref}'] = [_describe(o) for o in orders if o.orderRef == ref]
    by_contract = Counter(o.instrument.conId for o in orders if not was_rejected(o))
    for con_id, count in by_contract.items():
        if count > 1:
            found[f'conId {con_id}'] = [_describe(o) for o in orders
                                        if o.instrument.conId == con_id and not was_rejected(o)]
    return found


def _describe(order: Any) -> str:
    return (f'{order.action} {order.totalQuantity:g} {order.instrument.symbol} ref={order.orderRef!r} '
            f'client={order.clientId} status={order.status}')


_clean_legs: dict[int, Counter] = {}      # by id() of the example (examples live for the whole session)


def clean_run_legs(example: Any, store_path: Path) -> Counter:
    """The orders one delivery of `example` places on a fresh, healthy gateway (measured once per example).

    The run uses its own store at `store_path` and prints its result like any other.
    """
    key = id(example)
    if key not in _clean_legs:
        with using_store(store_path), Simulator(time=MARKET_OPEN, seed=7) as sim:
            if example.prepare:
                example.prepare(sim)
            first = last_perm_id(sim)
            delivery = deliver(request_event(example.request), settings_for(sim))
            assert delivery.doc['status'] == example.status, delivery.doc
            _clean_legs[key] = legs(order_log(sim, after_perm_id=first))
    return _clean_legs[key]


# --- what this process holds ----------------------------------------------------------------

@dataclass(frozen=True)
class Holdings:
    """Threads, sockets, open event loops and IB objects of this process at one moment."""

    threads: frozenset[int]
    sockets: frozenset[str]
    gateway_sockets: int            # client sockets connected to the gateway's port
    open_loops: int = 0             # counted by a full garbage collection, which `deep` asks for
    live_ibs: int = 0

    def leaks_since(self, before: Holdings) -> list[str]:
        """What is held now that was not before."""
        leaks = []
        new_threads = self.threads - before.threads
        # the process's pool for blocking calls (functions/blocking.py) grows to what concurrency needs and
        # keeps its threads for later runs: bounded and reused, not a run's leftover
        names = [t.name for t in threading.enumerate() if t.ident in new_threads
                 and not t.name.startswith(f'{BLOCKING_THREADS}_')]
        if names:
            leaks.append(f'threads {names}')
        if len(self.sockets) > len(before.sockets):
            leaks.append(f'{len(self.sockets) - len(before.sockets)} more sockets')
        if self.gateway_sockets:
            leaks.append(f'{self.gateway_sockets} sockets still connected to the gateway')
        if self.open_loops > before.open_loops:
            leaks.append(f'{self.open_loops - before.open_loops} event loops not closed')
        if self.live_ibs > before.live_ibs:
            leaks.append(f'{self.live_ibs - before.live_ibs} IB objects alive')
        return leaks


@contextlib.contextmanager
def only_new_objects() -> Iterator[None]:
    """Inside the block, `holdings` counts only loops and IB objects created in it.

    Everything that exists when the block starts is frozen out of the garbage collector's view
    (gc.freeze), which also keeps each collection inside the block small and fast.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def holdings(gateway_port: int | None = None, *, deep: bool = True) -> Holdings:
    """What the process holds now; `deep` adds loops and IB objects (after a garbage collection).

    With `gateway_port`, client sockets still connected to that port are counted apart.
    """
    sockets = _socket_inodes()
    to_gateway = sockets & _inodes_with_remote_port(gateway_port) if gateway_port else frozenset()
    held = Holdings(threads=frozenset(t.ident for t in threading.enumerate()), sockets=sockets,
                    gateway_sockets=len(to_gateway))
    if not deep:
        return held
    gc.collect()
    kept_by_client_library = _ibs_kept_by_last_global_error()
    loops = ibs = 0
    for o in gc.get_objects():
        if isinstance(o, (asyncio.AbstractEventLoop, IB)):
            if isinstance(o, IB):
                ibs += id(o) not in kept_by_client_library
            elif not o.is_closed():
                loops += 1
    return replace(held, open_loops=loops, live_ibs=ibs)


def wait_for_release(before: Holdings, gateway_port: int | None = None, timeout: float = 3.0) -> list[str]:
    """Leaks left once the process had `timeout` seconds to let go of what a run held; [] when none.

    Threads and sockets are polled until they are back to `before`; only then are loops and IB
    objects counted, which takes a full garbage collection.
    """
    deadline = time.monotonic() + timeout
    while True:
        leaks = holdings(gateway_port, deep=False).leaks_since(before)
        if not leaks:
            leaks = holdings(gateway_port).leaks_since(before)
            if not leaks:
                return []
        if time.monotonic() > deadline:
            return leaks
        time.sleep(0.01)


def _ibs_kept_by_last_global_error() -> set[int]:
    """Ids of the IB objects that only the client library's last connection error keeps alive.

    ib_insync emits every lost connection on a process-wide event (util.globalErrorEvent) that keeps
    the last value; its traceback holds the frame, and so the IB, of the last session that lost its
    connection. That is one IB at most, replaced by the next error: retention, not a leak.
    """
    event = getattr(util, 'globalErrorEvent', None)
    last = event.value() if event is not None else None
    kept = set()
    tb = last.__traceback__ if isinstance(last, BaseException) else None
    while tb is not None:
        kept.update(id(v) for v in tb.tb_frame.f_locals.values() if isinstance(v, IB))
        tb = tb.tb_next
    return kept


def _socket_inodes() -> frozenset[str]:
    inodes = set()
    for fd in os.listdir('/proc/self/fd'):
        try:
            target = os.readlink(f'/proc/self/fd/{fd}')
        except OSError:
            continue
        if target.startswith('socket:['):
            inodes.add(target[8:-1])
    return frozenset(inodes)


def _inodes_with_remote_port(port: int) -> frozenset[str]:
    """Inodes of TCP sockets (any process) whose remote end is `port`, from /proc/net/tcp{,6}."""
    inodes = set()
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        try:
            with open(table) as rows:
                next(rows)
                for row in rows:
                    fields = row.split()
                    remote_port = int(fields[2].rsplit(':', 1)[1], 16)
                    if remote_port == port:
                        inodes.add(fields[9])
        except FileNotFoundError:
            continue
    return frozenset(inodes)
