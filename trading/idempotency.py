"""Idempotency of order-placing runs: the key, the orderRefs derived from it, and the claim in the store.

A request's key is its `idempotencyKey`, else `auto:<window>:<hash>` of the intent, its canonical params
and the time window its publishTime falls in (IDEMPOTENCY_WINDOW_SECONDS, floored; these settings are
lib.config.IdempotencySettings), so two Cloud
Scheduler messages for one slot share a key. From (account, intent, key) comes the run reference
`ibj:<hash10>`; every order carries `ibj:<hash10>:<leg>` as orderRef (`ibj:<hash10>:<leg>.<n>` for the
n-th order of a leg, when a takeover re-sends what an earlier order left unfilled), so the broker can
tell what a key already did on this account. Two accounts on one gateway that derive the same key for
one schedule slot still never share an orderRef.

The claim is one atomic store operation. A run that fails in a way a redelivery may fix finishes its
claim with `retry: true`; the redelivery then claims the next generation (`ibj:<hash10>#2`, ...), which
is again atomic, and acts as a takeover: it looks up the orderRefs at the broker and places only what is
missing. A run that dies without finishing leaves a lease that expires; the store lets the next claim
of that generation take over.

The claim's vocabulary, one name per concept:
- claim key: the store key of one generation of a run reference (`ibj:<hash10>`, `ibj:<hash10>#2`, ...);
- `ClaimRecord` (lib.store): what the store keeps under a claim key: holder, lease, attempt, and once
  finished its result, a `FinishedRun` (with the `RecordedOrder`s the order layer made);
- `ClaimAnswer` (lib.store): the store's answer to claiming one claim key (new, taken over, finished, running);
- `RunClaim` (here, `claim_run`): a run's claim of its reference across generations: the claim key it holds,
  or the record of the run that holds or finished it;
- `ClaimTerms` (functions.admission): the terms a run claims on: lease length, how long to wait for the account;
- `Hold` (functions.admission): what a running run holds, its claim key and the account lease, which
  `admission.settle` finishes and releases.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from lib.store import ClaimRecord, Store
from lib.times import iso

ORDER_REF_TAG = 'ibj'
MAX_GENERATIONS = 50
# A claim still 'running' this long after its lease ended is stuck: Pub/Sub's longest backoff (600 s,
# as deployed) plus a margin has passed, so the message was acked or dead-lettered and will not take it over.
PUBSUB_MAX_BACKOFF_SECONDS = 600.0
STUCK_MARGIN_SECONDS = 300.0
STUCK_AFTER_SECONDS = PUBSUB_MAX_BACKOFF_SECONDS + STUCK_MARGIN_SECONDS
_RUN_REFERENCE = re.compile(rf'^({ORDER_REF_TAG}:[0-9a-f]{{10}}):')
_ORDER_REF = re.compile(rf'^({ORDER_REF_TAG}:[0-9a-f]{{10}}):([^.:]+)(?:\.([1-9][0-9]*))?$')


def stuck_claims(store: Store, now: datetime) -> list[ClaimRecord]:
    """Claims still running STUCK_AFTER_SECONDS after their lease ended: no redelivery will come for them."""
    return store.stuck_claims(now - timedelta(seconds=STUCK_AFTER_SECONDS))


def derive_key(intent: str, params: Mapping[str, Any], published: datetime, window_seconds: float,
               approval: str = 'none') -> str:
    """`auto:<window start>:<hash>` of the intent, its params (as JSON, keys sorted), the time window and, for a
    request that needs approval, `approval` (left out when "none", so keys derived before approval existed stay).

    Caveat: two messages meant for one slot but published on either side of a window boundary get
    different keys; schedules should fire at multiples of the window (Cloud Scheduler publishes a
    few seconds after the scheduled minute, well inside it).
    """
    start = math.floor(published.timestamp() / window_seconds) * window_seconds
    window = iso(datetime.fromtimestamp(start, timezone.utc))
    fields = {'intent': intent, 'params': params, **({'approval': approval} if approval != 'none' else {})}
    canonical = json.dumps(fields, sort_keys=True, separators=(',', ':'))
    return f'auto:{window}:{hashlib.sha256(canonical.encode()).hexdigest()[:16]}'


def plan_key(key: str) -> str:
    """The key a planning run (approval required) claims for the request key `key`: never `key` itself, so the
    request's real run, later, is not answered duplicate of its plan."""
    return f'plan:{key}'


def run_reference(account: str, intent: str, key: str) -> str:
    """`ibj:<hash10>`: the prefix of every orderRef of this (account, intent, key) and its claim's store key."""
    digest = hashlib.sha256(f'{account}\n{intent}\n{key}'.encode()).hexdigest()
    return f'{ORDER_REF_TAG}:{digest[:10]}'


def legacy_reference(intent: str, key: str) -> str:
    """The run reference of (intent, key) before orderRefs named their account; claims of an older deployment."""
    digest = hashlib.sha256(f'{intent}\n{key}'.encode()).hexdigest()
    return f'{ORDER_REF_TAG}:{digest[:10]}'


def legacy_claim(store: Store, reference: str | None, now: datetime) -> ClaimRecord | None:
    """The claim an older deployment made under `reference` (legacy_reference) if it still stands.

    Across an upgrade a redelivered message must not run again because its key now hashes to another
    claim: a first-generation claim that finished for good, or runs under a valid lease, still answers.
    """
    record = store.get_claim(reference) if reference else None
    if record is None:
        return None
    if record.status == 'finished':
        return None if FinishedRun.retried(record) else record
    return record if record.lease_until > now else None


def order_ref(reference: str, leg: str | int, attempt: int = 1) -> str:
    """The orderRef of one leg (e.g. the conId) of a run: `ibj:<hash10>:<leg>`, `...:<leg>.<n>` for its n-th order."""
    return f'{reference}:{leg}' if attempt == 1 else f'{reference}:{leg}.{attempt}'


def parse_order_ref(order_ref_text: str) -> tuple[str, str, int] | None:
    """(run reference, leg, n) of one of our orderRefs, or None when it is not in our grammar."""
    match = _ORDER_REF.match(order_ref_text or '')
    return (match.group(1), match.group(2), int(match.group(3) or 1)) if match else None


def reference_of(order_ref_text: str) -> str | None:
    """The run reference an orderRef belongs to, or None for orders that are not ours (manual, other tools)."""
    match = _RUN_REFERENCE.match(order_ref_text or '')
    return match.group(1) if match else None


def is_ours(order_ref_text: str) -> bool:
    """True for orderRefs this system wrote."""
    return reference_of(order_ref_text) is not None


@dataclass(frozen=True)
class RunClaim:
    """The answer to claim_run: the claim key (generation) the run now holds, or the record of the run that
    holds or finished it (held False)."""

    held: bool
    claim_key: str
    record: ClaimRecord
    takeover: bool = False        # an earlier attempt under this key may have placed orders
    claimed_at: datetime | None = None   # when the key's first generation was claimed: no order of it is older

    @property
    def attempt(self) -> int:
        """1 for the first attempt; counts takeovers and retried generations."""
        generation = int(self.claim_key.rpartition('#')[2]) if '#' in self.claim_key else 1
        return generation + self.record.attempt - 1


@dataclass(frozen=True)
class RecordedOrder:
    """One order as a finished claim records it: enough to attribute its fills and to answer duplicates.

    The order layer makes them (trading.orders.RunOrders.recorded); stored as `orders` of the claim's
    result, in the camelCase keys of `to_record` (records written by earlier versions read the same).
    """

    order_ref: str
    action: str | None = None
    quantity: float | None = None
    strategies: dict[str, float] | None = None   # strategy -> its signed share of the order
    perm_id: int | None = None
    status: str | None = None
    filled: float | None = None
    con_id: int | None = None

    def to_record(self) -> dict:
        return {'orderRef': self.order_ref, 'action': self.action, 'quantity': self.quantity,
                'strategies': self.strategies, 'permId': self.perm_id, 'status': self.status,
                'filled': self.filled, 'conId': self.con_id}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> RecordedOrder:
        return cls(record['orderRef'], record.get('action'), record.get('quantity'), record.get('strategies'),
                   record.get('permId'), record.get('status'), record.get('filled'), record.get('conId'))


@dataclass(frozen=True)
class FinishedRun:
    """What `finish` stores as a claim's result: the run, how it ended, whether a redelivery retries it,
    and every order it placed or found (so a later run can attribute their fills)."""

    run_id: str
    status: str
    retry: bool
    idempotency_key: str | None
    error: dict | None
    orders: tuple[RecordedOrder, ...] = ()

    def to_record(self) -> dict:
        return {'runId': self.run_id, 'status': self.status, 'retry': self.retry,
                'idempotencyKey': self.idempotency_key, 'error': self.error,
                'orders': [order.to_record() for order in self.orders]}

    @classmethod
    def of(cls, record: ClaimRecord) -> FinishedRun | None:
        """The finished run a stored claim holds (None while it runs: the store keeps a result once finished)."""
        stored = record.result
        if not stored:
            return None
        return cls(stored.get('runId', record.run_id), stored.get('status', ''), bool(stored.get('retry')),
                   stored.get('idempotencyKey'), stored.get('error'),
                   tuple(RecordedOrder.from_record(order) for order in stored.get('orders') or []))

    @classmethod
    def retried(cls, record: ClaimRecord) -> bool:
        """The claim finished asking for a redelivery to take the next generation (retry: true)."""
        finished = cls.of(record)
        return finished is not None and finished.retry


class TooManyAttempts(Exception):
    """The key was retried MAX_GENERATIONS times; it is not tried again."""


def claim_run(store: Store, reference: str, run_id: str, lease_seconds: float, now: datetime) -> RunClaim:
    """Claim the first generation of `reference` that is free, expired or unfinished.

    Returns held=False with the blocking record when another run holds a valid lease ('running') or a
    generation finished for good ('finished' without retry).
    """
    first_claimed = None
    for generation in range(1, MAX_GENERATIONS + 1):
        key = claim_key(reference, generation)
        claim = store.claim(key, run_id, lease_seconds, now)
        first_claimed = first_claimed or claim.record.created_at
        if claim.held:
            return RunClaim(True, key, claim.record, takeover=claim.outcome == 'taken_over' or generation > 1,
                            claimed_at=first_claimed)
        if claim.outcome == 'finished' and FinishedRun.retried(claim.record):
            continue
        return RunClaim(False, key, claim.record)
    raise TooManyAttempts(f'{reference} was attempted {MAX_GENERATIONS} times; not trying again')


def claim_key(reference: str, generation: int) -> str:
    """The store key of one generation of a run's claim."""
    return reference if generation == 1 else f'{reference}#{generation}'


def recorded_orders(store: Store, reference: str) -> dict[str, RecordedOrder]:
    """orderRef -> the order as recorded by the runs of `reference`.

    The earliest record of an orderRef wins: it comes from the run that placed the order; a takeover
    only records it when that run died before recording anything.
    """
    orders: dict[str, dict] = {}
    for generation in range(1, MAX_GENERATIONS + 1):
        record = store.get_claim(claim_key(reference, generation))
        if record is None:
            break
        finished = FinishedRun.of(record)
        for order in finished.orders if finished else ():
            orders.setdefault(order.order_ref, order)
    return orders
