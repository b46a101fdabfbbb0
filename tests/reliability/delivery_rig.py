"""The real function process behind the Pub/Sub delivery model, a simulated gateway, a store, a results inbox.

One functions-framework server (gunicorn, one worker, as deployed) serves a whole module of trials; a
second account of the gateway gets a deployment of its own (another server, its own IB_ACCOUNT, store
and crash control file), as separate deployments would. Each trial gets a fresh simulator on the same
port (the servers read their gateway address once), emptied SQLite stores, and messages of its own.
Results go to a results topic on the Pub/Sub emulator and are pulled back by messageId. The simulator's clock is frozen at MARKET_OPEN so that prices, and with them
the quantities an allocation computes, are the same for a clean delivery and for one redelivered later.
"""
from __future__ import annotations

import base64
import json
import sqlite3
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from simulator import Simulator
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
    stamp = (published or datetime.now(timezone.utc)).isoformat(timespec='milliseconds').replace('+00:00', 'Z')
    return {'data': base64.b64encode(json.dumps(request).encode()).decode(), 'attributes': attributes or {},
            'messageId': message_id or str(uuid.uuid4().int)[:16], 'publishTime': stamp}


@dataclass
class Deployment:
    """One function process (gunicorn, one worker) with its own store file and crash control file."""

    account: str | None              # its IB_ACCOUNT (None: the gateway's only account)
    server: FunctionServer
    endpoint: str
    store_path: Path
    crash_file: Path

    def arm(self, step: str | None) -> None:
        """Kill this process the next time a run reaches `step` (None: no kill)."""
        if step is None:
            self.crash_file.unlink(missing_ok=True)
        else:
            self.crash_file.write_text(step)

    def killed(self) -> bool:
        """Whether the armed kill happened (the dying process removes the control file)."""
        return not self.crash_file.exists()

    def empty_store(self) -> None:
        if not self.store_path.exists():
            return
        with sqlite3.connect(self.store_path, timeout=10) as db:
            present = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            for table in STORE_TABLES:
                if table in present:
                    db.execute(f'DELETE FROM {table}')


@dataclass
class DeliveryRig:
    """Function processes on one gateway port, each with its store and crash control file; one results inbox.

    The first deployment serves every trial; `deployment(account)` adds another on the same gateway, as a
    second deployment for another account of the gateway would be (its own process and store).
    """

    deployments: list[Deployment]
    port: int
    inbox: Inbox
    pubsub: PubSub
    work: Path
    env: dict[str, str]
    sim: Simulator | None = None
    first_perm_id: int = 0
    positions_before: dict[tuple[str, int], float] | None = None

    @classmethod
    def start(cls, pubsub: PubSub, work: Path, *, deadline: float, lease: float, others: tuple[str, ...] = (),
              **env: str) -> DeliveryRig:
        """The rig with its first deployment (env's IB_ACCOUNT, if any) and one for each of `others`."""
        results = pubsub.topic('results')
        inbox = Inbox(pubsub, pubsub.pull_subscription(results))
        port = free_port()
        env = {
            'THREADS': '8', 'RESULTS_TOPIC': results, 'GOOGLE_CLOUD_PROJECT': pubsub.project,
            'PUBSUB_EMULATOR_HOST': pubsub.emulator.host, 'IB_GATEWAY_HOST': '127.0.0.1', 'IB_GATEWAY_PORT': str(port),
            'IB_CONNECT_TIMEOUT': '2', 'IB_CONNECT_ATTEMPTS': '3', 'INTENT_DEADLINE_SECONDS': str(deadline),
            'IDEMPOTENCY_LEASE_SECONDS': str(lease), 'STORE_BACKEND': 'sqlite',
            'SYMBOL_ALLOWLIST': 'SPY,VIXY,MNQ,AAPL,EUR.USD', **env,
        }
        rig = cls([], port, inbox, pubsub, work, env)
        accounts = (env.get('IB_ACCOUNT'), *others)
        with ThreadPoolExecutor(len(accounts)) as pool:     # each process takes seconds to start: all at once
            starting = [pool.submit(rig._start_deployment, account, rig._work_dir(index))
                        for index, account in enumerate(accounts)]
        try:
            rig.deployments.extend(future.result() for future in starting)
        except Exception:
            for future in starting:
                if future.exception() is None:
                    future.result().server.stop()
            raise
        return rig

    def _work_dir(self, index: int) -> Path:
        if index == 0:
            return self.work
        work = self.work / f'deployment-{index}'
        work.mkdir(exist_ok=True)
        return work

    def _start_deployment(self, account: str | None, work: Path) -> Deployment:
        store_path, crash_file = work / 'state.sqlite3', work / 'crash-at'
        env = {**self.env, 'SQLITE_PATH': str(store_path), 'CRASH_CONTROL_FILE': str(crash_file)}
        if account:
            env['IB_ACCOUNT'] = account
        server = FunctionServer.start(env, work)
        return Deployment(account, server, server.push_endpoint(self.pubsub.project, 'intents'), store_path,
                          crash_file)

    def deployment(self, account: str | None = None) -> Deployment:
        """The deployment acting on `account` (None: the first), started on first use."""
        if account is None:
            return self.deployments[0]
        for deployment in self.deployments:
            if deployment.account == account:
                return deployment
        deployment = self._start_deployment(account, self._work_dir(len(self.deployments)))
        self.deployments.append(deployment)
        return deployment

    @property
    def server(self) -> FunctionServer:
        return self.deployments[0].server

    @property
    def endpoint(self) -> str:
        return self.deployments[0].endpoint

    @property
    def store_path(self) -> Path:
        return self.deployments[0].store_path

    @property
    def crash_file(self) -> Path:
        return self.deployments[0].crash_file

    def model(self, policy: DeliveryPolicy, rng=None, account: str | None = None) -> PushModel:
        """Pub/Sub's push delivery to the deployment of `account` (None: the first)."""
        return PushModel(self.deployment(account).endpoint, policy, rng)

    def fresh_gateway(self, prepare=None, accounts: tuple[str, ...] | None = None) -> Simulator:
        """A new simulator on the rig's port (the last one stopped), clock frozen, and empty stores."""
        self.stop_gateway()
        extra = {'accounts': list(accounts)} if accounts else {}
        sim = Simulator(time=MARKET_OPEN, seed=7, port=self.port, **extra)
        sim.clock.now = lambda: MARKET_OPEN          # prices hold still while messages are redelivered
        sim.start()
        if prepare:
            prepare(sim)
        self.sim = sim
        self.first_perm_id = max((o.permId for o in self.orders(all_orders=True)), default=0)
        self.positions_before = self._positions()
        for deployment in self.deployments:
            deployment.empty_store()
        return sim

    def stop_gateway(self) -> None:
        if self.sim is not None:
            self.sim.stop()
            self.sim = None

    def arm(self, step: str | None, account: str | None = None) -> None:
        """Kill the process of `account`'s deployment the next time a run reaches `step` (None: no kill)."""
        self.deployment(account).arm(step)

    def killed(self, account: str | None = None) -> bool:
        """Whether the kill armed in `account`'s deployment happened."""
        return self.deployment(account).killed()

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

    def fills(self) -> tuple[dict, dict, dict]:
        """This trial's signed fills per (account, conId), three ways the gateway tells them: the orders'
        filled quantities, its executions, and how far the positions moved. They agree unless a fill was
        booked to the wrong account or contract."""
        by_orders: dict[tuple[str, int], float] = defaultdict(float)
        for o in self.orders():
            by_orders[(o.account, o.instrument.conId)] += (1 if o.action == 'BUY' else -1) * o.filled
        by_executions: dict[tuple[str, int], float] = defaultdict(float)
        for e in self.sim.broker.executions():
            if e.permId > self.first_perm_id:
                by_executions[(e.account, e.instrument.conId)] += (1 if e.side == 'BOT' else -1) * e.shares
        now, before = self._positions(), self.positions_before or {}
        moved = {key: now.get(key, 0.0) - before.get(key, 0.0) for key in now.keys() | before.keys()}
        return tuple({key: round(q, 6) for key, q in view.items() if round(q, 6)}
                     for view in (by_orders, by_executions, moved))

    def _positions(self) -> dict[tuple[str, int], float]:
        return {(account, p.instrument.conId): p.quantity for account, p in self.sim.broker.positions()}

    def stop(self) -> None:
        self.stop_gateway()
        for deployment in self.deployments:
            deployment.server.stop()
