"""Before and after an intent runs: the store, the trading config and kill switch, the idempotency claim.

Order-placing intents (Intent.places_orders) go through, in this order, each failing closed:
the store and trading config must be readable (else rejected: StoreUnavailable / ConfigError);
the message must not be older than ORDER_MAX_AGE_SECONDS unless it sets maxAgeSeconds (StaleMessage);
the kill switch must be on (TradingDisabled; dry runs are let through and only plan);
once connected to the gateway, the idempotency key must be claimed atomically (else duplicate,
pointing at the run that has it). Claiming only after connecting means a gateway outage never
uses up a claim. After the run the claim is finished with a summary of the orders, which later
deliveries see (a retryable failure finishes it with retry: true, so the redelivery takes over).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone

from functions.contract import Decoded
from functions.runner import Outcome
from intents.base import Intent, IntentParams, RunContext
from lib import log
from lib.config import ConfigError, Settings
from lib.idempotency import IdempotencySettings, TooManyAttempts, claim_run, derive_key, legacy_claim
from lib.store import ClaimRecord, StoreUnavailable, open_store
from lib.store.common import iso
from lib.trading_config import load_trading_config

logger = log.get_logger(__name__)

# What the claim keeps of each order: enough to attribute fills and to answer duplicates.
RECORDED_ORDER_FIELDS = ('orderRef', 'action', 'quantity', 'strategies', 'permId', 'status', 'filled')


@dataclass
class Admission:
    """The context to run with, or the outcome that ends the run before it starts.

    For a real (not dry) order-placing run, `claim` is the runner's before-intent hook; once it has
    claimed the key, `claim_key` names the claim this run must finish.
    """

    context: RunContext
    outcome: Outcome | None = None
    lease_seconds: float | None = None     # set when the run has to claim its key before acting
    claim_key: str | None = None

    @property
    def needs_claim(self) -> bool:
        return self.lease_seconds is not None

    def claim(self, context: RunContext) -> RunContext | Outcome:
        """Claim the idempotency key: the context to act with, or a duplicate / rejected outcome."""
        now = datetime.now(timezone.utc)
        try:
            earlier = legacy_claim(context.store, context.legacy_reference, now)
            if earlier is not None:   # claimed by a deployment from before orderRefs named their account
                return _duplicate(earlier, context.idempotency_key)
            claim = claim_run(context.store, context.reference, context.run_id, self.lease_seconds, now)
        except StoreUnavailable as exc:
            return _store_down(exc)
        except TooManyAttempts as exc:
            return _refused('TooManyAttempts', str(exc), key=context.idempotency_key)
        if not claim.held:
            return _duplicate(claim.record, context.idempotency_key)
        self.claim_key = claim.claim_key
        if claim.takeover:
            logger.warning('taking over %s (attempt %s): orders already at the broker are not placed again',
                           claim.claim_key, claim.attempt)
        self.context = replace(context, takeover=claim.takeover, attempt=claim.attempt, claimed=True,
                               claimed_at=claim.claimed_at)
        return self.context


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
        return Admission(context, _store_down(exc))
    request = decoded.request
    age = decoded.age_seconds(now)
    if request.max_age_seconds is None and age is not None and age > idempotency.max_age_seconds:
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
        return Admission(context, _refused('TradingDisabled', 'tradingEnabled is false (the kill switch is off): '
                                                              'no orders are placed', key=key))
    return Admission(context, lease_seconds=idempotency.lease_for(settings.deadline_seconds))


def settle(admission: Admission, outcome: Outcome, now: datetime | None = None) -> None:
    """Finish the claim the run held, so later deliveries answer duplicate (or retry, when retryable)."""
    if admission.claim_key is None:
        return
    if outcome.abandoned:
        # its thread may still be placing orders: leave the lease to expire, then a redelivery takes over
        logger.error('claim %s left to its lease: the intent thread was abandoned', admission.claim_key)
        return
    context = admission.context
    retry = bool(outcome.error and outcome.error.get('retryable'))
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


def _duplicate(record: ClaimRecord, key: str) -> Outcome:
    in_flight = record.status == 'running'
    pointer = {'runId': record.run_id, 'state': record.status, 'attempt': record.attempt,
               'claimedAt': iso(record.created_at)}
    if in_flight:
        pointer['leaseUntil'] = iso(record.lease_until)
        reason = f'idempotency key {key} is being run by {record.run_id} (lease until {iso(record.lease_until)})'
    else:
        reason = f'idempotency key {key} already ran as {record.run_id}'
    return Outcome(status='duplicate', result={'idempotencyKey': key, 'duplicateOf': pointer,
                                               'original': record.result, 'reason': reason})


def _refused(kind: str, message: str, key: str | None = None) -> Outcome:
    result = {'idempotencyKey': key} if key else None
    return Outcome(status='rejected', result=result, error={'type': kind, 'message': message, 'retryable': False})


def _store_down(exc: StoreUnavailable) -> Outcome:
    return _refused('StoreUnavailable', f'the state store is unreadable, so no orders are placed (fail closed): {exc}')


def _con_id(order: dict) -> int | None:
    return (order.get('contract') or {}).get('conId')
