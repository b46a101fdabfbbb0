"""Before and after an intent runs: the store, the trading config and trading enabled, the idempotency claim.

Order-placing intents (Intent.places_orders) go through, in this order, each failing closed:
the store and trading config must be readable (else StoreUnavailable, retryable: nothing is placed
now and the message comes back; a bad config is rejected: ConfigError);
the message must not be older than ORDER_MAX_AGE_SECONDS, whatever its maxAgeSeconds (StaleMessage);
trading must be enabled (TradingDisabled; dry runs are let through and only plan; the store is read
again before each order, see lib.orders);
once connected to the gateway, the account's lease must be taken (one order-placing run per account
at a time, waiting a bounded time, else AccountBusy, retryable), then the idempotency key claimed
atomically: finished by another run → duplicate (acked); running under a valid lease → KeyInFlight
(retryable, so Pub/Sub redelivers and a later delivery takes over if that run died); expired → taken
over. Claiming only after connecting means a gateway outage never uses up a claim. After the run the
claim is finished with a summary of the orders, which later deliveries see (a retryable failure
finishes it with retry: true, so the redelivery takes over), and the account lease is released.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from functions.contract import Decoded
from functions.runner import Outcome
from intents.base import Intent, IntentParams, RunContext
from lib import log
from lib.config import ConfigError, Settings
from lib.crash import crash_point
from lib.failures import Failure, failure_of
from lib.idempotency import IdempotencySettings, TooManyAttempts, claim_run, derive_key, legacy_claim
from lib.store import ClaimRecord, StoreUnavailable, open_store
from lib.times import iso
from lib.trading_config import load_trading_config

logger = log.get_logger(__name__)

# How often a run waiting for another run's account lease asks again.
ACCOUNT_POLL_SECONDS = 0.1
# What the claim keeps of each order: enough to attribute fills and to answer duplicates.
RECORDED_ORDER_FIELDS = ('orderRef', 'action', 'quantity', 'strategies', 'permId', 'status', 'filled')


@dataclass
class Admission:
    """The context to run with, or the outcome that ends the run before it starts.

    For a real (not dry) order-placing run, `begin` is the runner's before-intent hook: it takes the
    account lease, then claims the key; `claim_key` and `account_lease` name what this run holds and
    must finish or release.
    """

    context: RunContext
    outcome: Outcome | None = None
    lease_seconds: float | None = None     # set when the run has to claim its key before acting
    account_wait_seconds: float = 0.0      # how long to wait for another run's account lease
    claim_key: str | None = None
    account_lease: str | None = None

    @property
    def needs_claim(self) -> bool:
        return self.lease_seconds is not None

    def begin(self, context: RunContext) -> RunContext | Outcome:
        """Take the account lease, then claim the idempotency key: the context to act with, or the
        outcome that ends the run (duplicate, or a retryable failure so Pub/Sub redelivers)."""
        try:
            busy = self._take_account_lease(context)
            if busy is not None:
                return busy
            crash_point('after-account-lease')
            now = datetime.now(timezone.utc)
            earlier = legacy_claim(context.store, context.legacy_reference, now)
            if earlier is not None:   # claimed by a deployment from before orderRefs named their account
                self.release()
                return _not_claimed(earlier, context.idempotency_key)
            claim = claim_run(context.store, context.reference, context.run_id, self.lease_seconds, now)
        except (StoreUnavailable, TooManyAttempts) as exc:
            self.release()
            return Outcome.failed(_store_down(exc) if isinstance(exc, StoreUnavailable) else failure_of(exc),
                                  _key_result(context.idempotency_key))
        if not claim.held:
            self.release()
            return _not_claimed(claim.record, context.idempotency_key)
        self.claim_key = claim.claim_key
        crash_point('after-claim')
        if claim.takeover:
            logger.warning('taking over %s (attempt %s): orders already at the broker are not placed again',
                           claim.claim_key, claim.attempt)
        self.context = replace(context, takeover=claim.takeover, attempt=claim.attempt, claimed=True,
                               claimed_at=claim.claimed_at)
        return self.context

    def release(self) -> None:
        """Give the account lease back (a no-op when this run holds none)."""
        if self.account_lease is None:
            return
        name, self.account_lease = self.account_lease, None
        try:
            if not self.context.store.release_lease(name, self.context.run_id):
                logger.warning('account lease %s was taken over before this run released it', name)
        except StoreUnavailable as exc:
            logger.error('account lease %s not released, the store failed: %s; it ends with its lease', name, exc)

    def _take_account_lease(self, context: RunContext) -> Outcome | None:
        """None once this run holds the account's lease; else the retryable AccountBusy outcome."""
        name = f'account:{context.account}'
        give_up = time.monotonic() + self.account_wait_seconds
        while True:
            lease = context.store.take_lease(name, context.run_id, self.lease_seconds, datetime.now(timezone.utc))
            if lease.held:
                self.account_lease = name
                return None
            if time.monotonic() >= give_up:
                break
            time.sleep(ACCOUNT_POLL_SECONDS)
        message = (f'account {context.account} is being traded by run {lease.holder} (lease until '
                   f'{iso(lease.lease_until)}); waited {self.account_wait_seconds:g} s, redelivering')
        logger.warning('%s', message)
        return Outcome.failed(Failure.transient('AccountBusy', message),
                              {**_key_result(context.idempotency_key),
                               'accountLease': {'holder': lease.holder, 'leaseUntil': iso(lease.lease_until)}})


def admit(intent_cls: type[Intent], params: IntentParams, decoded: Decoded, *, run_id: str, dry_run: bool,
          settings: Settings, now: datetime | None = None) -> Admission:
    """Decide whether the run may start, and with what context."""
    now = now or datetime.now(timezone.utc)
    context = RunContext(run_id=run_id, settings=settings)
    if not (intent_cls.uses_store or intent_cls.places_orders):
        return Admission(context)
    try:
        store = open_store()
    except ConfigError as exc:
        return Admission(context, _refused('ConfigError', str(exc)))
    context = replace(context, store=store)
    if not intent_cls.places_orders:
        return Admission(context)
    try:
        idempotency = IdempotencySettings.from_env(settings.deadline_seconds)
        trading = load_trading_config(store, trading_mode=settings.trading_mode)
    except ConfigError as exc:
        return Admission(context, _refused('ConfigError', str(exc)))
    except StoreUnavailable as exc:
        return Admission(context, Outcome.failed(_store_down(exc)))
    request = decoded.request
    age = decoded.age_seconds(now)
    # maxAgeSeconds may tighten ORDER_MAX_AGE_SECONDS for an order, never loosen it
    if age is not None and age > idempotency.max_age_seconds:
        return Admission(context, _refused('StaleMessage', f'message is {age:.1f} s old, older than '
                                                           f'ORDER_MAX_AGE_SECONDS {idempotency.max_age_seconds:g} '
                                                           'for order-placing intents; not executed'))
    key = request.idempotency_key or derive_key(intent_cls.name, params.model_dump(mode='json', by_alias=True),
                                                decoded.publish_time or now, idempotency.window_seconds)
    # the run reference (orderRef prefix, claim key) needs the account: RunContext.for_account, once connected
    context = replace(context, trading=trading, idempotency_key=key)
    if dry_run:
        return Admission(context)
    if not trading.trading_enabled:
        return Admission(context, _refused('TradingDisabled', f'{trading.switch.reason()}: no orders are placed',
                                           key=key))
    # waiting for another run's account lease stays well inside this run's own deadline
    wait = min(idempotency.account_wait_seconds, settings.deadline_seconds / 4)
    return Admission(context, lease_seconds=idempotency.lease_for(settings.deadline_seconds),
                     account_wait_seconds=wait)


def settle(admission: Admission, outcome: Outcome, now: datetime | None = None) -> None:
    """Finish the claim the run held, so later deliveries answer duplicate (or retry, when retryable),
    then release the account lease."""
    if outcome.abandoned:
        # its thread may still be placing orders: leave the leases to expire, then a redelivery takes over
        logger.error('claim %s and account lease left to expire: the intent thread was abandoned',
                     admission.claim_key)
        return
    if admission.claim_key is not None:
        crash_point('before-settle')
        _finish_claim(admission, outcome, now)
    admission.release()


def _finish_claim(admission: Admission, outcome: Outcome, now: datetime | None) -> None:
    context = admission.context
    retry = outcome.redeliver
    result = outcome.result or {}
    # orders found at the broker (on takeover) are recorded with the state the broker reported, so
    # trade-reconciliation can attribute an earlier attempt's fills even when this run placed nothing
    orders = [*result.get('orders', []), *result.get('alreadyPlaced', [])]
    record = {'runId': context.run_id, 'status': outcome.status, 'retry': retry,
              'idempotencyKey': context.idempotency_key, 'error': outcome.error,
              'orders': [{name: order.get(name) for name in RECORDED_ORDER_FIELDS} | {'conId': _con_id(order)}
                         for order in orders]}
    try:
        still_held = context.store.finish(admission.claim_key, context.run_id, record,
                                          now or datetime.now(timezone.utc))
    except StoreUnavailable as exc:
        logger.error('claim %s not finished, the store failed: %s; it stays claimed until its lease ends',
                     admission.claim_key, exc)
        return
    if not still_held:
        logger.warning('claim %s was taken over by another run before this one finished', admission.claim_key)


def effective_dry_run(request_dry_run: bool, params: IntentParams) -> bool:
    """A run is dry when the request or the intent's own `dryRun` param says so."""
    return request_dry_run or bool(getattr(params, 'dry_run', False))


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
    return Outcome.failed(Failure.rejected(kind, message), _key_result(key))


def _key_result(key: str | None) -> dict | None:
    return {'idempotencyKey': key} if key else None


def _store_down(exc: StoreUnavailable) -> Failure:
    """A store fault places nothing now and is retried: fail closed means "not now", not "never"."""
    return Failure.transient('StoreUnavailable',
                             f'the state store is unreadable, so nothing is placed now (fail closed); '
                             f'the message is redelivered: {exc}')


def _con_id(order: dict) -> int | None:
    return (order.get('contract') or {}).get('conId')
