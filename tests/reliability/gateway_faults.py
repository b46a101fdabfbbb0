"""The simulator's faults, each switched on for one delivery and off again afterwards.

| fault | what the gateway does |
|---|---|
| refuse | closes its listening socket: every connect is refused |
| drop-in-connect | closes each connection on the last message a client sends while connecting |
| drop-in-intent | closes each connection on the intent's first request |
| stall | lets clients connect, then never answers another request |
| stall-orders | never answers placeOrder: the order is neither placed nor acknowledged |
| disconnect-all | drops every client (its nightly restart) the moment the intent's first request arrives |
| reject-orders | rejects every new order (error 201) |
| partial-fill | fills half of each order at once; the rest keeps working |
| hist-outage | historical data requests fail (error 162) |

`stall` and `disconnect-all` act when a connection has sent its startup requests (watched from a
thread); replies are held back DELAY_MS meanwhile, so the client cannot get further before that.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Iterator

from functions.handler import run_isolated
from intents.base import Intent
from intents.outcome import Outcome
from tests.reliability.harness import settings_for

FAULTS = ('refuse', 'drop-in-connect', 'drop-in-intent', 'stall', 'stall-orders', 'disconnect-all',
          'reject-orders', 'partial-fill', 'hist-outage')
PLACE_ORDER = 3                  # the placeOrder request's message id
ALL_REQUEST_IDS = frozenset(range(1, 256))
DELAY_MS = 50
# After the last startup request arrives, wait this long before stalling: its handling must be over.
SETTLE_SECONDS = 0.01


class _Noop(Intent):
    name = 'reliability-noop'

    async def run(self) -> Outcome:
        return Outcome.ok({})


class _NoopPlacing(_Noop):
    places_orders = True


_startups: dict[tuple, int] = {}


def startup_messages(sim: Any, intent_cls: type[Intent]) -> int:
    """How many messages `intent_cls`'s session sends while connecting (handshake and the account state
    the intent declares, see lib/session.py), before any request of the intent itself.

    Measured once per kind of session, with an intent that does nothing but connects the same way.
    """
    kind = (intent_cls.places_orders, intent_cls.account_state)
    if kind not in _startups:
        noop = type('ReliabilityNoop', (_NoopPlacing if intent_cls.places_orders else _Noop,),
                    {'account_state': intent_cls.account_state})
        before = len(sim.counters())
        outcome = run_isolated(noop, noop.Params(), dry_run=False, settings=settings_for(sim))
        assert outcome.status == 'ok', outcome.failure
        _startups[kind] = sim.counters()[before]['messagesIn']
    return _startups[kind]


@contextlib.contextmanager
def fault(name: str, sim: Any, startup: int, *, drop_after: int | None = None) -> Iterator[None]:
    """Switch fault `name` on for the block.

    `startup` is startup_messages() of the session the block will open; drop_after overrides the
    message count of the drop faults.
    """
    faults = sim.faults
    watcher = None
    stop = threading.Event()
    if name == 'refuse':
        faults.refuse_connections = True
    elif name == 'drop-in-connect':
        faults.drop_after = drop_after or startup
    elif name == 'drop-in-intent':
        faults.drop_after = drop_after or startup + 1
    elif name == 'stall':
        faults.latency_ms = DELAY_MS
        watcher = _watch(sim, startup, stop, _stall_everything)
    elif name == 'stall-orders':
        faults.stall = {PLACE_ORDER}
    elif name == 'disconnect-all':
        faults.latency_ms = DELAY_MS
        watcher = _watch(sim, startup + 1, stop, lambda sim: sim.disconnect_all())
    elif name == 'reject-orders':
        faults.reject_orders = 'simulated rejection'
    elif name == 'partial-fill':
        faults.partial_fill = 0.5
    elif name == 'hist-outage':
        faults.hist_outage = True
    elif name != 'none':
        raise ValueError(f'unknown fault {name!r}')
    try:
        yield
    finally:
        stop.set()
        if watcher is not None:
            watcher.join()
        clear(sim)


def clear(sim: Any) -> None:
    """Switch every fault off."""
    sim.faults.clear()


def _watch(sim: Any, messages: int, stop: threading.Event, action) -> threading.Thread:
    """A thread that calls action(sim) once a connection has sent `messages` messages."""
    def watch() -> None:
        while not stop.is_set():
            if any(c['open'] and c['messagesIn'] >= messages for c in sim.counters()):
                action(sim)
                return
            time.sleep(0.001)

    thread = threading.Thread(target=watch, name='fault-watcher')
    thread.start()
    return thread


def _stall_everything(sim: Any) -> None:
    time.sleep(SETTLE_SECONDS)
    sim.faults.stall = set(ALL_REQUEST_IDS)
