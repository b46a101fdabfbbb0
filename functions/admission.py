"""The safety steps around an order-placing run: admit before connecting, claim once connected, settle after.

`admit` (before connecting) needs the store and trading config readable (else StoreUnavailable, retryable:
nothing is placed now and the message comes back; a bad config is rejected: ConfigError); the message no
older than ORDER_MAX_AGE_SECONDS, whatever its maxAgeSeconds (StaleMessage); trading enabled
(TradingDisabled; dry runs are let through and only plan; the store is read again before each order, see
trading.orders). It answers `Admitted` (the context to run with, and the claim terms when the run must claim)
or the Outcome that ends the run.

`claim` (once connected: a gateway outage never uses up a claim) takes the account's lease (one
order-placing run per account at a time, waiting a bounded time, else AccountBusy, retryable), then the
idempotency key, atomically: finished by another run → duplicate (acked); running under a valid lease →
KeyInFlight (retryable, so Pub/Sub redelivers and a later delivery takes over if that run died); expired →
taken over. It answers the run's `Hold` (the claim key and account lease, with the context to act with) or the Outcome that ends the run,
having given back whatever it took.

`settle` (after the run) finishes the held claim with the run's `FinishedRun` record, which later
deliveries see (a retryable failure finishes it with retry: true, so the redelivery takes over), and
releases the account lease.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from functions.contract import Decoded
from intents.base import Intent, IntentParams, RunContext
from intents.outcome import Outcome
from lib import log
from lib.config import ConfigError, Settings
from lib.crash import crash_point
from lib.failures import Failure, failure_of
from trading.idempotency import FinishedRun, TooManyAttempts, claim_run, derive_key, legacy_claim, plan_key
from lib.store import ClaimRecord, Store, StoreUnavailable, open_store
from lib.times import iso
from trading.plans import PLAN_REJECTED
from trading.trading_config import load_trading_config

logger = log.get_logger(__name__)

# How often a run waiting for another run's account lease asks again.
ACCOUNT_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class ClaimTerms:
    """The terms a real (not dry) order-placing run claims on: its leases' length and how long it waits for the
    account."""

    lease_seconds: float
    account_wait_seconds: float


@dataclass(frozen=True)
class Admitted:
    """A run that may start: the context to run with, and `claim_terms` when it must claim before acting."""

    context: RunContext
    claim_terms: ClaimTerms | None = None


@dataclass(frozen=True)
class Hold:
    """What a running order-placing run holds: the claim key it claimed and the account lease, which `settle`
    finishes and releases; and the context to act with (takeover, attempt, claimed)."""

    context: RunContext
    claim_key: str
    account_lease: str


def admit(intent_cls: type[Intent], params: IntentParams, decoded: Decoded, *, run_id: str, dry_run: bool,
          settings: Settings, now: datetime | None = None) -> Admitted | Outcome:
    """Whether the run may start, and with what context; an Outcome ends it before connecting."""
    now = now or datetime.now(timezone.utc)
    request = decoded.request
    window = request.window.session_window() if request.window is not None else None
    context = RunContext(run_id=run_id, settings=settings, window=window)
    if not (intent_cls.uses_store or intent_cls.places_orders):
        return Admitted(context)
    try:
        store = open_store(settings.store)
    except ConfigError as exc:
        return _refused('ConfigError', str(exc))
    context = replace(context, store=store)
    if not intent_cls.places_orders:
        return Admitted(context)
    try:
        idempotency = settings.idempotency.checked()
        trading = load_trading_config(store, trading_mode=settings.trading_mode,
                                      env=settings.trading_config.environment, path=settings.trading_config.path)
    except ConfigError as exc:
        return _refused('ConfigError', str(exc))
    except StoreUnavailable as exc:
        return Outcome.failed(_store_down(exc))
    age = decoded.age_seconds(now)
    # maxAgeSeconds may tighten ORDER_MAX_AGE_SECONDS for an order, never loosen it
    if age is not None and age > idempotency.max_age_seconds:
        return _refused('StaleMessage', f'message is {age:.1f} s old, older than ORDER_MAX_AGE_SECONDS '
                                        f'{idempotency.max_age_seconds:g} for order-placing intents; not executed')
    # the stricter approval wins: a request cannot lower a configured "required"
    # (a dry run writes nothing, so it stores no plan either)
    planning = intent_cls.plannable and 'required' in (request.approval, trading.approval) and not dry_run
    key = (intent_cls.own_key(params) or request.idempotency_key
           or derive_key(intent_cls.name, params.model_dump(mode='json', by_alias=True), decoded.publish_time or now,
                         idempotency.window_seconds, approval='required' if planning else 'none'))
    # the run reference (orderRef prefix, claim key) needs the account: RunContext.for_account, once connected
    context = replace(context, trading=trading, idempotency_key=plan_key(key) if planning else key,
                      planning=planning)
    if dry_run:
        return Admitted(context)
    if planning:   # places nothing: trading enabled is checked when the plan is executed
        wait = min(idempotency.account_wait_seconds, settings.deadline_seconds / 4)
        return Admitted(context, ClaimTerms(idempotency.lease_for(settings.deadline_seconds), wait))
    if not trading.trading_enabled and not intent_cls.judges_trading_switch:
        return _refused('TradingDisabled', f'{trading.switch.reason()}: no orders are placed', key=key)
    # waiting for another run's account lease stays well inside this run's own deadline
    wait = min(idempotency.account_wait_seconds, settings.deadline_seconds / 4)
    return Admitted(context, ClaimTerms(idempotency.lease_for(settings.deadline_seconds), wait))


def claim(context: RunContext, terms: ClaimTerms) -> Hold | Outcome:
    """Take the account lease, then claim the idempotency key (blocking store calls: run it off the loop).

    Whatever does not end in a Hold gives back what it took before it returns or raises.
    """
    try:
        lease = _take_account_lease(context, terms)
    except StoreUnavailable as exc:
        return Outcome.failed(_store_down(exc), _key_result(context.idempotency_key))
    if isinstance(lease, Outcome):
        return lease
    try:
        crash_point('after-account-lease')
        now = datetime.now(timezone.utc)
        earlier = legacy_claim(context.store, context.legacy_reference, now)
        if earlier is not None:   # claimed by a deployment from before orderRefs named their account
            _release_lease(context.store, lease, context.run_id)
            return _not_claimed(earlier, context.idempotency_key)
        answer = claim_run(context.store, context.reference, context.run_id, terms.lease_seconds, now)
    except (StoreUnavailable, TooManyAttempts) as exc:
        _release_lease(context.store, lease, context.run_id)
        return Outcome.failed(_store_down(exc) if isinstance(exc, StoreUnavailable) else failure_of(exc),
                              _key_result(context.idempotency_key))
    except BaseException:
        _release_lease(context.store, lease, context.run_id)
        raise
    if not answer.held:
        _release_lease(context.store, lease, context.run_id)
        return _not_claimed(answer.record, context.idempotency_key)
    crash_point('after-claim')
    if answer.takeover:
        logger.warning('taking over %s (attempt %s): orders already at the broker are not placed again',
                       answer.claim_key, answer.attempt)
    return Hold(replace(context, takeover=answer.takeover, attempt=answer.attempt, claimed=True,
                        claimed_at=answer.claimed_at), answer.claim_key, lease)


def settle(held: Hold | None, outcome: Outcome, now: datetime | None = None) -> None:
    """Finish the claim the run held, so later deliveries answer duplicate (or retry, when retryable),
    then release the account lease. A run that held nothing has nothing to settle."""
    if held is None:
        return
    crash_point('before-settle')
    store, run_id = held.context.store, held.context.run_id
    # a refused plan execution placed nothing: a later request of it runs again (trading.plans.PLAN_REJECTED)
    again = outcome.failure is not None and outcome.failure.type == PLAN_REJECTED
    record = FinishedRun(run_id=run_id, status=outcome.status, retry=outcome.redeliver or again,
                         idempotency_key=held.context.idempotency_key,
                         error=outcome.failure.error() if outcome.failure else None, orders=outcome.orders)
    try:
        still_held = store.finish(held.claim_key, run_id, record.to_record(), now or datetime.now(timezone.utc))
    except StoreUnavailable as exc:
        logger.error('claim %s not finished, the store failed: %s; it stays claimed until its lease ends',
                     held.claim_key, exc)
    else:
        if not still_held:
            logger.warning('claim %s was taken over by another run before this one finished', held.claim_key)
    _release_lease(store, held.account_lease, run_id)


def _take_account_lease(context: RunContext, terms: ClaimTerms) -> str | Outcome:
    """The lease's name once this run holds the account; else the retryable AccountBusy outcome."""
    name = f'account:{context.account}'
    give_up = time.monotonic() + terms.account_wait_seconds
    while True:
        lease = context.store.take_lease(name, context.run_id, terms.lease_seconds, datetime.now(timezone.utc))
        if lease.held:
            return name
        if time.monotonic() >= give_up:
            break
        time.sleep(ACCOUNT_POLL_SECONDS)
    message = (f'account {context.account} is being traded by run {lease.holder} (lease until '
               f'{iso(lease.lease_until)}); waited {terms.account_wait_seconds:g} s, redelivering')
    logger.warning('%s', message)
    return Outcome.failed(Failure.transient('AccountBusy', message),
                          {**_key_result(context.idempotency_key),
                           'accountLease': {'holder': lease.holder, 'leaseUntil': iso(lease.lease_until)}})


def _release_lease(store: Store, name: str, run_id: str) -> None:
    """Give the account lease back."""
    try:
        if not store.release_lease(name, run_id):
            logger.warning('account lease %s was taken over before this run released it', name)
    except StoreUnavailable as exc:
        logger.error('account lease %s not released, the store failed: %s; it ends with its lease', name, exc)


def _not_claimed(record: ClaimRecord, key: str) -> Outcome:
    """Another run has the key. Finished: duplicate (acked). Running with a valid lease: a retryable
    KeyInFlight error, so Pub/Sub brings the message back; if that run dies, a later delivery takes
    over once its lease has expired (an acked message would never come back)."""
    pointer = {'runId': record.run_id, 'state': record.status, 'attempt': record.attempt,
               'claimedAt': iso(record.created_at)}
    if record.status == 'running':
        pointer['leaseUntil'] = iso(record.lease_until)
        message = (f'idempotency key {key} is being run by {record.run_id} (lease until {iso(record.lease_until)}); '
                   'answering non-2xx so Pub/Sub redelivers this message, which takes over if that run dies')
        logger.warning('%s', message)
        return Outcome.failed(Failure.transient('KeyInFlight', message), {'idempotencyKey': key, 'inFlight': pointer})
    reason = f'idempotency key {key} already ran as {record.run_id}'
    return Outcome(status='duplicate', result={'idempotencyKey': key, 'duplicateOf': pointer,
                                               'original': record.result, 'reason': reason})


def _refused(kind: str, message: str, key: str | None = None) -> Outcome:
    return Outcome.failed(Failure.rejected(kind, message), _key_result(key), idempotency_key=key)


def _key_result(key: str | None) -> dict | None:
    return {'idempotencyKey': key} if key else None


def _store_down(exc: StoreUnavailable) -> Failure:
    """A store fault places nothing now and is retried: fail closed means "not now", not "never"."""
    return Failure.transient('StoreUnavailable',
                             f'the state store is unreadable, so nothing is placed now (fail closed); '
                             f'the message is redelivered: {exc}')
