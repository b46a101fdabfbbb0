"""Crash exploration: the function process is SIGKILLed at each step boundary of an order-placing run,
then the message is delivered as Pub/Sub would (tests/reliability/pubsub_model.py).

The process is the real functions-framework server (gunicorn, one worker); lib.crash kills the worker at
the armed step, once, and gunicorn starts a new one, as a lost instance is replaced. The steps, in the
order a run reaches them: after-account-lease, after-claim, after-place-order:N, before-settle,
before-publish. The pushes in flight at the kill fail (no answer), so the model redelivers after its
(scaled) backoff, possibly twice at once, until an answer is a 2xx.

Pass, per trial: every message is acked with a published terminal result (none dead-lettered); no
orderRef is at the gateway twice; per account and contract, the filled plus working quantity at the
simulator equals what one clean delivery of the same request reaches, and the fills agree three ways
(the orders' filled quantities, the executions, the positions' moves). The report counts the kills per
step; each step must be hit.

Trials come from `draw_trials` (seeded with CRASH_SEED): a step to kill at, and VARIANTS that change
the delivery (an idempotency key or the derived one, duplicate pushes, a second message for the same
request, partial fills, two accounts on one gateway). A new variant is one function added to VARIANTS.
RELIABILITY_HEAVY=1 runs 200 trials, the two-account ones among them; the default run forces the
two-account variant on two of its five trials (one per step).

Two accounts on one gateway: the simulator manages ACCOUNT and SECOND_ACCOUNT, both in the same state
(mirror_accounts); each account has its own deployment (function process with IB_ACCOUNT, its own store,
as separate deployments have). The same schedule slot (the same request, each deployment's own messages,
one publish time) goes to both at once, and the kill is armed in one of them. Counted at the simulator,
each account must reach exactly what one clean single-account delivery reaches: an order lost, doubled
or placed, cancelled or counted for the other account shows as a miscount.
"""
from __future__ import annotations

import os
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import pytest

from tests.reliability.delivery_rig import DeliveryRig, is_terminal, pubsub_message
from tests.reliability.examples import ACCOUNT, Example, examples_for
from tests.reliability.harness import HEAVY
from tests.reliability.pubsub_model import DeliveryPolicy

CRASH_SEED = int(os.environ.get('CRASH_SEED', '20261203'))
TRIALS = int(os.environ.get('CRASH_TRIALS', 200 if HEAVY else 5))   # default: each step once
DEADLINE_SECONDS = 2.5       # order intents confirm until 1 s before it
LEASE_SECONDS = 2.5          # the shortest the runtime allows: a killed run's claim frees up soonest
# Deployed backoff 10..600 s scaled by 0.02: 0.2, 0.4, 0.8, 1.6, 3.2 s ... ; 10 attempts then dead letter.
POLICY = DeliveryPolicy(time_scale=0.02, ack_deadline=30.0)
STEPS = ('after-account-lease', 'after-claim', 'after-place-order', 'before-settle', 'before-publish')
SECOND_ACCOUNT = 'DU2222222'
# The default run's trials that take a variant whatever the draw (trial number -> variant names)
DEFAULT_FORCED = {} if HEAVY else {2: ('two-accounts',), 4: ('two-accounts',)}


@dataclass(frozen=True)
class TrialSpec:
    """One drawn trial: what to send, where to kill, how Pub/Sub delivers."""

    number: int
    example: Example
    legs: int                         # orders one clean delivery places
    step: str | None                  # None: a control trial, no kill
    key: str | None = None            # idempotencyKey; None: the derived key
    messages: int = 1                 # copies of the request, each its own messageId (a Scheduler double-run)
    duplicate_chance: float = 0.0
    partial_fill: float | None = None   # the gateway fills this fraction at once, the rest keeps working
    accounts: tuple[str, ...] = (ACCOUNT,)   # one deployment per account, all on one gateway
    crashed: str = ACCOUNT              # the account whose deployment is killed at `step`
    variants: tuple[str, ...] = ()


def _with_key(rng: random.Random, spec: TrialSpec) -> TrialSpec:
    return replace(spec, key=f'crash-{CRASH_SEED}-{spec.number}')


def _duplicate_pushes(rng: random.Random, spec: TrialSpec) -> TrialSpec:
    return replace(spec, duplicate_chance=0.5)


def _double_run(rng: random.Random, spec: TrialSpec) -> TrialSpec:
    return replace(spec, messages=2)


def _partial_fills(rng: random.Random, spec: TrialSpec) -> TrialSpec:
    # filled plus working is what the pass rule counts, so one clean (fully filled) delivery stays the measure
    return replace(spec, partial_fill=0.5)


def _two_accounts(rng: random.Random, spec: TrialSpec) -> TrialSpec:
    accounts = (ACCOUNT, SECOND_ACCOUNT)
    return replace(spec, accounts=accounts, crashed=rng.choice(accounts))


# name -> (weight, how it changes a drawn trial)
VARIANTS: dict[str, tuple[float, Callable[[random.Random, TrialSpec], TrialSpec]]] = {
    'idempotency-key': (0.5, _with_key),
    'duplicate-pushes': (0.3, _duplicate_pushes),
    'scheduler-double-run': (0.2, _double_run),
    'partial-fill': (0.3, _partial_fills),
    'two-accounts': (0.25, _two_accounts),
}


def crash_examples() -> list[Example]:
    """The order-placing examples (allocation's two legs first: it reaches every step)."""
    placing = [e for intent in ('allocation', 'close-all', 'cash-balancer') for e in examples_for(intent)
               if e.places_orders]
    return placing if HEAVY else placing[:1]


def draw_trials(rng: random.Random, count: int, legs_of: Callable[[Example], int]) -> list[TrialSpec]:
    """`count` trials; the first ones cover every step once, then steps and variants are drawn."""
    examples = crash_examples()
    specs = []
    for number in range(count):
        example = examples[number % len(examples)]
        legs = legs_of(example)
        step = STEPS[number] if number < len(STEPS) else rng.choice(STEPS)
        if step == 'after-place-order':
            step = f'after-place-order:{rng.randint(1, legs)}'
        spec = TrialSpec(number, example, legs, step)
        forced = DEFAULT_FORCED.get(number, ())
        for name, (weight, change) in VARIANTS.items():
            if rng.random() < weight or name in forced:
                spec = replace(change(rng, spec), variants=(*spec.variants, name))
        specs.append(spec)
    return specs


@dataclass
class Report:
    hits: Counter = field(default_factory=Counter)
    trials: int = 0
    pushes: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    lost: int = 0
    miscounted: int = 0


@pytest.fixture(scope='module')
def rig(module_pubsub, tmp_path_factory) -> DeliveryRig:
    rig = DeliveryRig.start(module_pubsub, tmp_path_factory.mktemp('crash'), deadline=DEADLINE_SECONDS,
                            lease=LEASE_SECONDS, others=(SECOND_ACCOUNT,), IB_ACCOUNT=ACCOUNT)
    try:
        yield rig
    finally:
        rig.stop()


def mirror_accounts(prepare: Callable | None, accounts: tuple[str, ...]) -> Callable | None:
    """`prepare`, then every other account given ACCOUNT's cash and positions (its orders are not copied)."""
    if len(accounts) == 1:
        return prepare

    def prepared(sim) -> None:
        if prepare:
            prepare(sim)
        cash = {c: float(v) for k, v, c in sim.broker.account_values(ACCOUNT) if k == 'CashBalance' and c != 'BASE'}
        held = [p for _, p in sim.broker.positions(ACCOUNT)]
        for other in accounts[1:]:
            for currency, amount in cash.items():
                sim.broker.set_cash(other, currency, amount)
            for position in held:
                sim.broker.set_position(other, position.instrument, position.quantity, position.avgCost)
    return prepared


def run_trial(rig: DeliveryRig, spec: TrialSpec, rng: random.Random) -> tuple[dict, list, list]:
    """Deliver the trial's messages to each account's deployment at once, the kill armed in one;
    returns (exposure, orders, fates)."""
    request = dict(spec.example.request)
    if spec.key:
        request['idempotencyKey'] = spec.key
    sim = rig.fresh_gateway(mirror_accounts(spec.example.prepare, spec.accounts), accounts=spec.accounts)
    sim.faults.partial_fill = spec.partial_fill
    published = datetime.now(timezone.utc)          # one schedule slot: every message derives the same key
    policy = replace(POLICY, duplicate_chance=spec.duplicate_chance)
    deliveries = [(rig.model(policy, random.Random(rng.random()), account=account),
                   [pubsub_message(request, published=published) for _ in range(spec.messages)])
                  for account in spec.accounts]
    rig.arm(spec.step, account=spec.crashed)
    with ThreadPoolExecutor(len(deliveries)) as pool:
        delivered = pool.map(lambda delivery: delivery[0].deliver_all(delivery[1]), deliveries)
        fates = [fate for account_fates in delivered for fate in account_fates]
    if spec.step is not None and not rig.killed(spec.crashed):
        rig.arm(None, account=spec.crashed)
    return rig.exposure(), rig.orders(), fates


_clean: dict[int, dict] = {}


def clean_exposure(rig: DeliveryRig, example: Example) -> dict:
    """What one clean delivery of `example` leaves at the gateway (measured once per example, one account)."""
    if id(example) not in _clean:
        spec = TrialSpec(-1, example, 0, None)
        exposure, orders, fates = run_trial(rig, spec, random.Random(0))
        assert [f.state for f in fates] == ['acked'] and orders, (fates, orders)
        _clean[id(example)] = exposure
    return _clean[id(example)]


def expected_exposure(rig: DeliveryRig, spec: TrialSpec) -> dict:
    """One clean delivery's exposure, for each of the trial's accounts."""
    clean = clean_exposure(rig, spec.example)
    return {(account, con_id): quantity for account in spec.accounts for (_, con_id), quantity in clean.items()}


def test_killed_at_every_step_then_delivered_as_pubsub_does(rig):
    rng = random.Random(CRASH_SEED)
    specs = draw_trials(rng, TRIALS, lambda e: len(clean_exposure(rig, e)))
    report = Report()
    started = time.monotonic()
    failures = []
    for spec in specs:
        expected = expected_exposure(rig, spec)
        exposure, orders, fates = run_trial(rig, spec, rng)
        context = (f'trial {spec.number} (kill {spec.step} in {spec.crashed}, {spec.example.intent}, {spec.variants}, '
                   f'CRASH_SEED={CRASH_SEED})')
        report.trials += 1
        if spec.step is not None and rig.killed(spec.crashed):
            report.hits[spec.step.partition(':')[0]] += 1
        results = rig.inbox.wait_terminal([f.message_id for f in fates])
        for fate in fates:
            report.pushes[len(fate.pushes)] += 1
            docs = results[fate.message_id]
            report.statuses.update(doc['status'] for doc in docs)
            if fate.state != 'acked' or not any(is_terminal(doc) for doc in docs):
                report.lost += 1
                failures.append(f'{context}: message {fate.message_id} {fate.state}, results '
                                f'{[(d["status"], (d["error"] or {}).get("type")) for d in docs]}, pushes {fate.pushes}')
        refs = Counter(o.orderRef for o in orders)
        twice = [ref for ref, count in refs.items() if count > 1]
        by_orders, by_executions, moved = rig.fills()
        if not by_orders == by_executions == moved:
            report.miscounted += 1
            failures.append(f'{context}: fills per account and contract disagree: orders {by_orders}, '
                            f'executions {by_executions}, positions moved {moved}')
        if twice or exposure != expected:
            report.miscounted += 1
            failures.append(f'{context}: at the gateway {exposure}, one clean delivery {expected}; '
                            f'orderRefs placed twice {twice}')
        if failures and not HEAVY:
            break
    rig.stop_gateway()
    seconds = time.monotonic() - started
    print(f'\ncrash exploration: {report.trials} trials in {seconds:.0f} s, CRASH_SEED={CRASH_SEED}; kills per step '
          f'{dict(report.hits)}; lost {report.lost}; over- or under-traded {report.miscounted}; '
          f'pushes per message {dict(sorted(report.pushes.items()))}; results {dict(report.statuses)}; '
          f'variants {dict(Counter(name for spec in specs for name in spec.variants))}')
    assert not failures, '\n'.join(failures[:10])
    assert {step: report.hits[step] for step in STEPS if report.hits[step] == 0} == {}, report.hits
