"""The real function process behind the Pub/Sub delivery model, a simulated gateway, a store, a results inbox.

One functions-framework server (gunicorn, one worker, as deployed) serves a whole module of trials. Each
trial gets a fresh simulator on the same port (the server reads its gateway address once), an emptied
SQLite store, and messages of its own. Results go to a results topic on the Pub/Sub emulator and are
pulled back by messageId. The simulator's clock is frozen at MARKET_OPEN so that prices, and with them
the quantities an allocation computes, are the same for a clean delivery and for one redelivered later.
"""
from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from simulator import Simulator
from tests import pubsub_events
from tests.emulators import FunctionServer, PubSub, free_port
from tests.reliability.harness import MARKET_OPEN
from tests.reliability.pubsub_model import DeliveryPolicy, PushModel

TERMINAL = ('ok', 'skipped', 'duplicate', 'rejected')
STORE_TABLES = ('runs', 'leases', 'targets', 'fills')


class Inbox:
    """Results pulled from the results topic, by the messageId of the request they answer."""

    def __init__(self, pubsub: PubSub, subscription: str) -> None:
        self.pubsub, self.subscription = pubsub, subscription
        self.by_message: dict[str, list[dict]] = defaultdict(list)

    def wait_terminal(self, message_ids: list[str], timeout: float = 30.0) -> dict[str, list[dict]]:
        """Pull until each message has a terminal result (or timeout); return every result of each."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(self.terminal(i) for i in message_ids):
            self._pull()
        return {i: list(self.by_message.get(i, [])) for i in message_ids}

    def terminal(self, message_id: str) -> bool:
        return any(is_terminal(doc) for doc in self.by_message.get(message_id, []))

    def _pull(self) -> None:
        batch = self.pubsub.pull_once(self.subscription)
        for message in batch:
            doc = message.json()
            assert message.attributes['runId'] == doc['runId']
            self.by_message[doc['messageId']].append(doc)
        if not batch:
            time.sleep(0.02)


def is_terminal(doc: dict) -> bool:
    """A result after which Pub/Sub acks: anything but a retryable error."""
    return doc['status'] in TERMINAL or (doc['status'] == 'error' and not doc['error']['retryable'])


def pubsub_message(request: dict[str, Any], *, message_id: str | None = None,
                   published: datetime | None = None, attributes: dict[str, str] | None = None) -> dict[str, Any]:
    """A PubsubMessage as a push body carries it."""
    return pubsub_events.pubsub_message(pubsub_events.b64(request), message_id=message_id, published=published,
                                        attributes=attributes)


@dataclass
class DeliveryRig:
    """The function process, its gateway port, store file, crash control file and results inbox."""

    server: FunctionServer
    port: int
    store_path: Path
    crash_file: Path
    inbox: Inbox
    endpoint: str
    sim: Simulator | None = None
    first_perm_id: int = 0
    kills_seen: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, pubsub: PubSub, work: Path, *, deadline: float, lease: float, **env: str) -> DeliveryRig:
        results = pubsub.topic('results')
        inbox = Inbox(pubsub, pubsub.pull_subscription(results))
        port = free_port()
        store_path, crash_file = work / 'state.sqlite3', work / 'crash-at'
        server = FunctionServer.start({
            'THREADS': '8', 'RESULTS_TOPIC': results, 'GOOGLE_CLOUD_PROJECT': pubsub.project,
            'PUBSUB_EMULATOR_HOST': pubsub.emulator.host, 'IB_GATEWAY_HOST': '127.0.0.1', 'IB_GATEWAY_PORT': str(port),
            'IB_CONNECT_TIMEOUT': '2', 'IB_CONNECT_ATTEMPTS': '3', 'INTENT_DEADLINE_SECONDS': str(deadline),
            'IDEMPOTENCY_LEASE_SECONDS': str(lease), 'STORE_BACKEND': 'sqlite', 'SQLITE_PATH': str(store_path),
            'SYMBOL_ALLOWLIST': 'SPY,VIXY,MNQ,AAPL,EUR.USD', 'CRASH_CONTROL_FILE': str(crash_file),
            **env,
        }, work)
        return cls(server, port, store_path, crash_file, inbox,
                   server.push_endpoint(pubsub.project, 'intents'))

    def model(self, policy: DeliveryPolicy, rng=None) -> PushModel:
        return PushModel(self.endpoint, policy, rng)

    def fresh_gateway(self, prepare=None) -> Simulator:
        """A new simulator on the rig's port (the last one stopped), clock frozen, and an empty store."""
        self.stop_gateway()
        sim = Simulator(time=MARKET_OPEN, seed=7, port=self.port)
        sim.clock.now = lambda: MARKET_OPEN          # prices hold still while messages are redelivered
        sim.start()
        if prepare:
            prepare(sim)
        self.sim = sim
        self.first_perm_id = max((o.permId for o in self.orders(all_orders=True)), default=0)
        self._empty_store()
        return sim

    def stop_gateway(self) -> None:
        if self.sim is not None:
            self.sim.stop()
            self.sim = None

    def arm(self, step: str | None) -> None:
        """Kill the function process the next time a run reaches `step` (None: no kill)."""
        if step is None:
            self.crash_file.unlink(missing_ok=True)
        else:
            self.crash_file.write_text(step)

    def killed(self) -> bool:
        """Whether the armed kill happened (the dying process removes the control file)."""
        return not self.crash_file.exists()

    def orders(self, all_orders: bool = False) -> list:
        """The gateway's orders (live and completed) placed in this trial."""
        orders = self.sim.broker.open_orders() + self.sim.broker.completed_orders()
        return sorted((o for o in orders if all_orders or o.permId > self.first_perm_id), key=lambda o: o.permId)

    def exposure(self) -> dict[tuple[str, int], float]:
        """Per (account, conId): signed filled plus working quantity of this trial's orders."""
        totals: dict[tuple[str, int], float] = defaultdict(float)
        for o in self.orders():
            working = o.remaining if o.status in ('PreSubmitted', 'Submitted') else 0.0
            totals[(o.account, o.instrument.conId)] += (1 if o.action == 'BUY' else -1) * (o.filled + working)
        return {key: qty for key, qty in totals.items() if qty}

    def _empty_store(self) -> None:
        if not self.store_path.exists():
            return
        with sqlite3.connect(self.store_path, timeout=10) as db:
            present = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            for table in STORE_TABLES:
                if table in present:
                    db.execute(f'DELETE FROM {table}')

    def stop(self) -> None:
        self.stop_gateway()
        self.server.stop()
