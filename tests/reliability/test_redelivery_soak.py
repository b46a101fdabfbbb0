"""Redelivery soak: randomized at-least-once deliveries of order-placing requests place one set of orders.

Each trial starts from a fresh simulated gateway and a fresh state store, and delivers one request the
way Pub/Sub and Cloud Scheduler can: the same message pushed several times at once, the same request
republished as new messages in turn, a first attempt whose connection is killed right after (or right
before) the gateway gets its orders, a whole process killed after placing, or two Scheduler messages
(two messageIds, no idempotency key) for one schedule window. As Pub/Sub does, a message is delivered
again only while no push of it was acked (the handler raised): an acked message never comes back
(tests/reliability/pubsub_model.py states the rules). Then the gateway's own order log must hold each
order of the request exactly once: the same orders a single clean delivery places, no orderRef twice,
no contract twice. Killing the real function process at every step is test_crash_exploration.py.

The trials are drawn from a seeded random generator (SOAK_SEED), so a failure can be replayed.
RELIABILITY_HEAVY=1 runs six times as many trials (300), on every example that places orders.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest

from intents.registry import get_intent, intent_names
from simulator import Simulator
from tests.pubsub_events import new_message_id, request_event
from tests.reliability.examples import Example, examples_for
from tests.reliability.gateway_faults import PLACE_ORDER, clear
from tests.reliability.harness import (
    HEAVY, MARKET_OPEN, REPO, Delivery, check_published, deliver, duplicate_orders, holdings, last_perm_id, legs,
    only_new_objects, order_log, printed_results, settings_for, using_store,
    wait_for_release,
)

SOAK_SEED = int(os.environ.get('SOAK_SEED', '20261125'))
TRIALS = 300 if HEAVY else 50
PROCESS_KILLS = 4 if HEAVY else 2          # slow trials: a process start and a lease to wait out
# Order intents confirm their orders until 1 s before the deadline; 2.5 s leaves them 1.5 s.
DEADLINE_SECONDS = 2.5
LEASE_SECONDS = DEADLINE_SECONDS            # the shortest the runtime allows
WINDOW_SECONDS = 300                        # IDEMPOTENCY_WINDOW_SECONDS, the default
KINDS = {'concurrent': 30, 'republished': 25, 'connection-killed-after-placing': 20,
         'connection-killed-before-placing': 10, 'scheduler-double-run': 15}
MAX_REDELIVERIES = 20


def soak_examples() -> list[Example]:
    placing = [e for name in intent_names() if get_intent(name).places_orders for e in examples_for(name)
               if e.places_orders]
    return placing if HEAVY else [e for e in placing if e.intent == 'allocation'][:1]


@dataclass
class Trial:
    """One drawn trial and what happened in it."""

    number: int
    kind: str
    example: Example
    sim: Simulator
    first_order: int                      # permId above which the gateway's orders are this trial's
    deliveries: list[Delivery] = field(default_factory=list)
    acked: set = field(default_factory=set)   # messageIds a push of which was acked (no raise)

    def orders(self) -> list:
        return order_log(self.sim, after_perm_id=self.first_order)

    def settings(self):
        return settings_for(self.sim, deadline_seconds=DEADLINE_SECONDS)

    def deliver(self, event) -> Delivery:
        assert event['id'] not in self.acked, 'the test would redeliver a message Pub/Sub acked'
        delivery = deliver(event, self.settings())
        self.deliveries.append(delivery)
        if not delivery.raised:
            self.acked.add(event['id'])
        return delivery

    def deliver_at_once(self, events: list) -> None:
        start = threading.Barrier(len(events))

        def one(event) -> Delivery:
            start.wait()
            return deliver(event, self.settings())

        assert not {event['id'] for event in events} & self.acked
        with ThreadPoolExecutor(len(events)) as pool:
            done = list(pool.map(one, events))
        self.deliveries.extend(done)
        self.acked.update(event['id'] for event, delivery in zip(events, done) if not delivery.raised)

    def deliver_in_turn(self, events: list) -> None:
        for event in events:
            self.deliver(event)

    def deliver_until_acked(self, event, pause: float = 0.0) -> None:
        """Pub/Sub delivers again (after `pause`, its backoff) while no push was acked."""
        for _ in range(MAX_REDELIVERIES):
            if event['id'] in self.acked:
                return
            time.sleep(pause)
            self.deliver(event)
        if event['id'] not in self.acked:
            raise AssertionError(f'trial {self.number}: still failing after {MAX_REDELIVERIES} redeliveries: '
                                 f'{self.deliveries[-1].doc["error"]}')


class Worker:
    """A handler_worker process, started ahead of its trial because its imports take a second."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, '-m', 'tests.reliability.handler_worker'], cwd=REPO,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True, env={**os.environ, 'PYTHONUNBUFFERED': '1'})

    def handle(self, order: dict) -> None:
        assert self.process.stdout.readline().strip() == 'ready'
        self.process.stdin.write(json.dumps(order) + '\n')
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == 'handling'

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process.stdin.close()
        self.process.stdout.close()


@dataclass(frozen=True)
class Reference:
    """What one clean delivery of an example does on a fresh gateway."""

    legs: Counter                 # (conId, action) of each order it places
    messages_to_first_order: int  # messages its connection sends up to and including the first placeOrder


_references: dict[int, Reference] = {}     # by id() of the example (examples live for the whole session)


def reference(example: Example, tmp_path: Path) -> Reference:
    """Measure (once per example) a clean delivery, and how far a delivery gets before its first order."""
    key = id(example)
    if key not in _references:
        settings = {'deadline_seconds': DEADLINE_SECONDS}
        with using_store(tmp_path / 'reference.sqlite3'), Simulator(time=MARKET_OPEN, seed=7) as sim:
            example.prepare(sim)
            first = last_perm_id(sim)
            clean = deliver(request_event(example.request), settings_for(sim, **settings))
            assert clean.doc['status'] == 'ok', clean.doc
            placed = legs(order_log(sim, after_perm_id=first))
        with using_store(tmp_path / 'reference-dropped.sqlite3'), Simulator(time=MARKET_OPEN, seed=7) as sim:
            example.prepare(sim)
            sim.faults.drop_on = {PLACE_ORDER}
            deliver(request_event(example.request), settings_for(sim, **settings))
            dropped = [c for c in sim.counters() if c['in'].get(PLACE_ORDER)]
            assert len(dropped) == 1, dropped
        _references[key] = Reference(placed, dropped[0]['messagesIn'])
    return _references[key]


def one_window(rng: random.Random, count: int) -> list[datetime]:
    """`count` publish times inside the current schedule window, none in the future."""
    now = time.time()
    start = now // WINDOW_SECONDS * WINDOW_SECONDS
    return [datetime.fromtimestamp(start + rng.uniform(0, now - start), timezone.utc) for _ in range(count)]


def run_trial(trial: Trial, rng: random.Random, worker: Worker | None, store_path: Path, expected: Reference) -> None:
    request = dict(trial.example.request)
    if trial.kind != 'scheduler-double-run' and 'idempotencyKey' not in request and rng.random() < 0.5:
        request['idempotencyKey'] = f'soak-{SOAK_SEED}-{trial.number}'
    published = datetime.now(timezone.utc)
    message_id = new_message_id()
    event = request_event(request, message_id=message_id, published=published)
    sim = trial.sim

    if trial.kind == 'concurrent':
        trial.deliver_at_once([event] * rng.randint(2, 6))
    elif trial.kind == 'republished':
        # the same request published again: new messages, the same key (given, or derived in one window)
        copies = [event] + [request_event(request, published=published) for _ in range(rng.randint(1, 4))]
        for copy in copies:
            trial.deliver(copy)
            trial.deliver_until_acked(copy)
    elif trial.kind == 'connection-killed-after-placing':
        placed = rng.randint(1, sum(expected.legs.values()))
        # the gateway accepts the placed-th order, then closes the connection before acknowledging it
        sim.faults.drop_after = expected.messages_to_first_order + placed - 1
        first = trial.deliver(event)
        clear(sim)
        assert first.raised, first.doc
        assert len(trial.orders()) == placed
        if rng.random() < 0.5:
            trial.deliver_at_once([event] * rng.randint(1, 3))      # redelivered, possibly pushed twice
    elif trial.kind == 'connection-killed-before-placing':
        sim.faults.drop_on = {PLACE_ORDER}
        first = trial.deliver(event)
        clear(sim)
        assert first.raised, first.doc
        assert not trial.orders()
    elif trial.kind == 'scheduler-double-run':
        events = [request_event(request, published=moment) for moment in one_window(rng, rng.randint(2, 3))]
        (trial.deliver_at_once if rng.random() < 0.5 else trial.deliver_in_turn)(events)
        for other in events[:-1]:
            trial.deliver_until_acked(other, pause=0.05)
        event = events[-1]
    elif trial.kind == 'process-killed':
        worker.handle({'env': {'SQLITE_PATH': str(store_path)}, 'request': request, 'messageId': message_id,
                       'publishTime': published.isoformat(), 'gateway': [sim.host, sim.port],
                       'deadline': DEADLINE_SECONDS})
        deadline = time.monotonic() + 10
        while not trial.orders() and time.monotonic() < deadline:
            time.sleep(0.0005)
        worker.kill()
        assert trial.orders(), 'the worker placed no order'
        # the dead run's leases are live: the delivery is answered non-2xx, so Pub/Sub brings it back
        in_flight = trial.deliver(event)
        assert in_flight.raised and in_flight.doc['error']['type'] in ('AccountBusy', 'KeyInFlight'), in_flight.doc
        trial.deliver_until_acked(event, pause=0.3)               # backoff, until the leases end
        # the kill may land after the dead run finished its claim but before it released the account
        # lease: then the redelivery, once that lease ends, finds the key finished (duplicate)
        taken_over = trial.deliveries[-1]
        assert taken_over.doc['status'] == 'duplicate' or taken_over.doc['result']['takeover'] is True, \
            taken_over.doc
    else:
        raise ValueError(trial.kind)
    trial.deliver_until_acked(event, pause=0.05)


@pytest.mark.skipif(not soak_examples(), reason='no registered intent places orders yet')
def test_redeliveries_never_duplicate_an_order(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('IDEMPOTENCY_LEASE_SECONDS', str(LEASE_SECONDS))
    rng = random.Random(SOAK_SEED)
    examples = soak_examples()
    kinds = rng.choices(list(KINDS), weights=list(KINDS.values()), k=TRIALS)
    for number in rng.sample(range(TRIALS), PROCESS_KILLS):
        kinds[number] = 'process-killed'
    kills_left = PROCESS_KILLS
    worker = Worker() if kills_left else None
    tally: Counter = Counter()
    statuses: Counter = Counter()
    seconds_by_kind: Counter = Counter()
    started = time.monotonic()
    before = holdings(deep=False)
    try:
        with only_new_objects():
            for number, kind in enumerate(kinds):
                example = examples[number % len(examples)]
                expected = reference(example, tmp_path)
                capsys.readouterr()
                store_path = tmp_path / f'trial-{number}.sqlite3'
                context = f'trial {number} ({kind}, {example.intent}, SOAK_SEED={SOAK_SEED})'
                trial_started = time.monotonic()
                with using_store(store_path), Simulator(time=MARKET_OPEN, seed=7) as sim:
                    example.prepare(sim)
                    trial = Trial(number, kind, example, sim, first_order=last_perm_id(sim))
                    try:
                        run_trial(trial, rng, worker, store_path, expected)
                    except AssertionError as exc:
                        raise AssertionError(f'{context}: {exc}') from exc
                    if kind == 'process-killed':
                        kills_left -= 1
                        worker = Worker() if kills_left else None
                    orders = trial.orders()
                printed = printed_results(capsys.readouterr().out)
                for delivery in trial.deliveries:
                    check_published(delivery, printed)
                    statuses[delivery.doc['status']] += 1
                assert not duplicate_orders(orders), f'{context}: {duplicate_orders(orders)}'
                assert legs(orders) == expected.legs, \
                    f'{context}: placed {legs(orders)}, a single delivery places {expected.legs}'
                tally[kind] += 1
                seconds_by_kind[kind] += time.monotonic() - trial_started
            leaks = wait_for_release(before)
    finally:
        if worker is not None:
            worker.kill()
    seconds = time.monotonic() - started
    print(f'\nsoak: {TRIALS} trials, {sum(statuses.values())} deliveries, no duplicate order, {seconds:.1f} s; '
          f'trials {dict(tally)}; results {dict(statuses)}; '
          f'seconds by kind { {kind: round(sec, 1) for kind, sec in seconds_by_kind.items()} }')
    assert sum(tally.values()) == TRIALS
    assert not leaks
