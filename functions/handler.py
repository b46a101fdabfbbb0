"""One run's lifecycle, top to bottom: one Pub/Sub message in, one result published, then ack or redeliver.

    handle(cloud_event)
      decode       the message → a Job (intent class, params) or a rejected Outcome   (functions/contract.py)
      admit        order intents: store, trading config, staleness, trading enabled    (functions/admission.py)
      run_isolated in a fresh thread with its own event loop, under the deadline:      (functions/runner.py)
        connect      IB() created in that loop; client id, the account state the intent declares (lib/session.py)
        claim        order intents: the account lease, then the idempotency key     (admission.claim)
        run          the intent (intents/<name>.py); a dropped gateway ends it at once
        disconnect   always; the loop is closed and the thread ends before the run goes on
      settle       finish the claim with the orders placed, release the account lease  (admission.settle)
      publish      the IntentResult on the results topic; kept in the run history      (functions/publisher.py)
      conclude     return (Pub/Sub acks) or raise TransientFailure (non-2xx: redelivered)

Every step that ends the run early answers with an Outcome (intents/outcome.py), and every failure is a
lib.failures.Failure; `conclude` is the one place that turns the published result into ack or redeliver.
A result that could not be published raises too, so no message is acked without its result.
Claiming only after connecting means a gateway outage never uses up a claim.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from functions import admission, history, publisher
from functions.admission import ClaimTerms, Hold
from functions.contract import (
    Decoded, Envelope, ErrorInfo, Gateway, IntentResult, InvalidMessage, Timings, decode_message,
    describe_validation_error,
)
from functions.runner import Abandoned, in_fresh_loop, until_disconnected
from intents.base import Intent, RunContext
from intents.outcome import Outcome
from intents.registry import UnknownIntent, get_intent, plannable_intents
from lib import log
from lib.config import ConfigError, Settings
from lib.crash import crash_point
from lib.failures import Failure, failure_of, redeliver
from lib.ibapi import IB
from lib.problems import with_problems
from lib.session import Session, close_session, disconnect, open_session

logger = log.get_logger(__name__)

Publish = Callable[[IntentResult, Settings], None]
# Pub/Sub stamps publishTime on its servers; more than this ahead of our clock is not clock skew.
MAX_PUBLISH_SKEW_SECONDS = 60.0
_LOG_LEVELS = {'rejected': logging.WARNING, 'error': logging.ERROR}


class TransientFailure(RuntimeError):
    """The run failed in a way a redelivery may fix; raised after the result was published, so the
    function answers non-2xx and Pub/Sub delivers the message again."""

    def __init__(self, message: str, result: IntentResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class Run:
    """What is known about a run before its intent executes."""

    run_id: str
    started_at: datetime
    started: float                    # time.monotonic() at start
    envelope: Envelope
    intent: str | None
    dry_run: bool = False
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Job:
    """A decoded request the function can run: the intent's class and its validated params."""

    decoded: Decoded
    intent_cls: type[Intent]
    params: BaseModel


# ---------------------------------------------------------------------------------------------- the lifecycle

def handle(cloud_event: Any, settings: Settings | None = None, *,
           publish: Publish = publisher.publish_result) -> IntentResult:
    """Handle one Pub/Sub CloudEvent end to end and return the published result.

    Raises TransientFailure (after publishing) when the error is retryable, and PublishFailed
    when the result could not be published: both make Pub/Sub redeliver.
    """
    log.ensure_configured()
    settings = settings or _settings_from_env()
    run, decoded = _decode(cloud_event)
    with log.bind(runId=run.run_id, messageId=run.envelope.message_id, intent=run.intent):
        outcome = execute(run, decoded, settings)
        result = _result(run, outcome, settings)
        _publish(result, settings, publish)
        return conclude(result)


def execute(run: Run, decoded: Decoded | InvalidMessage, settings: Settings) -> Outcome:
    """decode → admit → run_isolated (connect → claim → run → disconnect) → settle: the run's Outcome."""
    job = _job(decoded, run)
    if isinstance(job, Outcome):
        return job
    try:
        admitted = admission.admit(job.intent_cls, job.params, job.decoded, run_id=run.run_id,
                                   dry_run=run.dry_run, settings=settings, now=run.started_at)
    except Exception as exc:   # admit turns store and config failures into outcomes; anything else is a bug
        logger.exception('admission failed')
        return Outcome.failed(Failure.permanent(type(exc).__name__, str(exc)))
    if isinstance(admitted, Outcome):
        return admitted
    # a planning run (approval required) acts as a dry run once it holds its claim: it places nothing
    outcome = run_isolated(job.intent_cls, job.params, dry_run=run.dry_run or admitted.context.planning,
                           settings=settings,
                           context=admitted.context, claim_terms=admitted.claim_terms)
    admission.settle(outcome.held, outcome)
    outcome.idempotency_key = admitted.context.idempotency_key
    return outcome


def run_isolated(intent_cls: type[Intent], params: BaseModel, *, dry_run: bool, settings: Settings,
                 labels: dict[str, str] | None = None, context: RunContext | None = None,
                 claim_terms: ClaimTerms | None = None) -> Outcome:
    """Run `intent_cls` with `params` on its own thread, loop and IB(); every failure becomes an Outcome.

    With `claim_terms`, the run claims (admission.claim) once connected and before the intent starts; the
    Outcome's `held` is then the claim to settle. Nothing survives the call: IB(), loop, tasks and thread end.
    """
    context = context or RunContext(settings=settings)
    with log.bind(**(labels or {})):
        try:
            return in_fresh_loop(lambda: _connected_run(intent_cls, params, dry_run, settings, context, claim_terms),
                                 deadline_seconds=settings.deadline_seconds, name=f'intent-{intent_cls.name}',
                                 on_crash=lambda exc: Outcome.failed(Failure.permanent(type(exc).__name__, str(exc))))
        except Abandoned as exc:
            # its thread may still be placing orders: leave the leases to expire, then a redelivery takes over
            logger.error('claim %s and account lease left to expire: the intent thread was abandoned',
                         context.idempotency_key)
            return Outcome.failed(Failure.permanent('DeadlineExceeded', str(exc)), abandoned=True)
        except Exception as exc:   # the thread machinery itself failed: still publish a result
            logger.exception('runner failed outside the intent')
            return Outcome.failed(Failure.permanent(type(exc).__name__, str(exc)))


async def _connected_run(intent_cls: type[Intent], params: BaseModel, dry_run: bool, settings: Settings,
                         context: RunContext, claim_terms: ClaimTerms | None) -> Outcome:
    """Inside the fresh loop: connect → claim → run the intent → disconnect, all under the deadline."""
    loop = asyncio.get_running_loop()
    ib = IB()
    outcome = Outcome(status='error', gateway=Gateway(host=settings.gateway_host, port=settings.gateway_port))
    session: Session | None = None
    intent: Intent | None = None
    intent_started: float | None = None
    deadline = asyncio.timeout(settings.deadline_seconds)
    deadline_at = loop.time() + settings.deadline_seconds
    with contextlib.ExitStack() as labels:
        try:
            async with deadline:
                session = await open_session(ib, settings, deadline=deadline_at,
                                             account_state=intent_cls.account_state)
                labels.enter_context(log.bind(clientId=session.client_id))
                outcome.account, outcome.gateway = session.account, Gateway(**session.gateway())
                outcome.connect_ms = round(session.connect_ms, 1)
                context = context.for_account(intent_cls.name, session.account)
                if claim_terms is not None:
                    claimed = await _claim(context, claim_terms, outcome)
                    if isinstance(claimed, Outcome):
                        outcome.end_with(claimed)
                        return outcome
                    context, outcome.held = claimed.context, claimed
                intent = intent_cls(session, params, dry_run=dry_run, context=context, deadline=deadline_at)
                intent_started = time.perf_counter()
                output = await until_disconnected(ib, intent.start())   # the intent's own Outcome
                outcome.intent_ms = _ms_since(intent_started)
                outcome.end_with(output)
        except Exception as exc:
            outcome.fail(_describe_failure(exc, intent_cls, settings, deadline.expired(),
                                           intent_started is not None, context.claimed))
            if intent is not None:   # an order-placing run lists what it placed before it failed
                outcome.result = intent.interrupted_result()
        finally:
            if intent is not None:
                outcome.orders = intent.recorded_orders()
            if session is not None:
                close_session(session)
            else:
                disconnect(ib)
            await asyncio.sleep(0)   # let the transport finish closing its socket inside this loop
    if intent_started is not None and outcome.intent_ms is None:
        outcome.intent_ms = _ms_since(intent_started)
    return outcome


async def _claim(context: RunContext, terms: ClaimTerms, outcome: Outcome) -> Hold | Outcome:
    """admission.claim off the loop (blocking store calls). If the deadline strikes meanwhile, its answer is
    still awaited, and a claim it took goes on `outcome.held`, so it is settled rather than left to expire."""
    claiming = asyncio.ensure_future(asyncio.to_thread(admission.claim, context, terms))
    try:
        return await asyncio.shield(claiming)
    except asyncio.CancelledError:
        [answer] = await asyncio.gather(claiming, return_exceptions=True)
        if isinstance(answer, Hold):
            outcome.held = answer
        raise


def conclude(result: IntentResult) -> IntentResult:
    """Return the published result (Pub/Sub acks the message), or raise TransientFailure so the
    function answers non-2xx and Pub/Sub redelivers it: the one place that decides (lib.failures.redeliver)."""
    error = result.error.to_wire() if result.error else None
    if redeliver(result.status, error):
        raise TransientFailure(f'{error["type"]}: {error["message"]}', result)
    return result


# --------------------------------------------------------------------------------------------------- the steps

def _settings_from_env() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        logger.critical('configuration is invalid, so every message fails until it is fixed: %s', exc)
        raise


def _decode(cloud_event: Any) -> tuple[Run, Decoded | InvalidMessage]:
    """The run's id and start time, and the decoded message (or why it cannot be decoded)."""
    started_at, started = datetime.now(timezone.utc), time.monotonic()
    run_id = str(uuid.uuid4())
    try:
        decoded = decode_message(cloud_event)
    except InvalidMessage as exc:
        return Run(run_id, started_at, started, exc.envelope, exc.intent), exc
    request = decoded.request
    return Run(run_id, started_at, started, decoded.envelope, request.intent, request.dry_run,
               request.idempotency_key), decoded


def _job(decoded: Decoded | InvalidMessage, run: Run) -> Job | Outcome:
    """The intent and params to run, or the rejection: unreadable, from the future, stale, unknown, bad params."""
    if isinstance(decoded, InvalidMessage):
        return _rejected(decoded.error_type, str(decoded))
    request = decoded.request
    age = decoded.age_seconds(run.started_at)
    if age is not None and age < -MAX_PUBLISH_SKEW_SECONDS:
        return _rejected('FuturePublishTime', f'publishTime is {-age:.1f} s in the future (more than the '
                                              f'{MAX_PUBLISH_SKEW_SECONDS:g} s clock skew allowed); not executed')
    if request.max_age_seconds is not None and age is not None and age > request.max_age_seconds:
        return _rejected('StaleMessage', f'message is {age:.1f} s old, older than maxAgeSeconds '
                                         f'{request.max_age_seconds:g}; not executed')
    try:
        intent_cls = get_intent(request.intent)
    except UnknownIntent as exc:
        return _rejected('UnknownIntent', str(exc))
    if 'approval' in request.model_fields_set and not intent_cls.plannable:
        return _rejected('InvalidRequest', f'approval: {request.intent} takes no approval; only '
                                           f'{", ".join(plannable_intents())} plan and wait for approval')
    try:
        params = intent_cls.Params.model_validate(request.params)
    except ValidationError as exc:
        return _rejected('InvalidParams', describe_validation_error(exc, prefix='params', model=intent_cls.Params))
    return Job(decoded, intent_cls, params)


def _describe_failure(exc: Exception, intent_cls: type[Intent], settings: Settings, deadline_hit: bool,
                      intent_started: bool, claimed: bool) -> Failure:
    """The Failure an exception means (lib.failures.failure_of), logged at a severity that fits it.

    A retry is safe before the intent started, for intents that place no orders, and for order-placing runs
    that hold their idempotency claim: the redelivery takes over and places only what is missing.
    """
    safe_to_retry = not intent_started or not intent_cls.places_orders or claimed
    if deadline_hit:
        logger.warning('%s hit its deadline of %gs', intent_cls.name, settings.deadline_seconds)
        failure = Failure.permanent('DeadlineExceeded',
                                    f'{intent_cls.name} did not finish within {settings.deadline_seconds:g}s')
        return Failure.transient(failure.type, failure.message) if safe_to_retry else failure
    failure = failure_of(exc, safe_to_retry=safe_to_retry)
    if failure.status == 'rejected':
        logger.warning('%s refused: %s', intent_cls.name, str(exc))
    elif failure.retryable:
        # the text, not the exception: a kept log record must not keep its frames (and the IB) alive
        logger.warning('%s failed: %s: %s', intent_cls.name, type(exc).__name__, str(exc))
    else:
        logger.exception('%s failed', intent_cls.name)
    return failure


def _result(run: Run, outcome: Outcome, settings: Settings) -> IntentResult:
    """The wire document of the run."""
    return IntentResult(
        run_id=run.run_id,
        message_id=run.envelope.message_id,
        idempotency_key=outcome.idempotency_key or run.idempotency_key,
        intent=run.intent,
        status=outcome.status,
        dry_run=run.dry_run,
        trading_mode=settings.trading_mode,
        account=outcome.account,
        started_at=run.started_at,
        finished_at=datetime.now(timezone.utc),
        duration_ms=_ms(time.monotonic() - run.started),
        timings=Timings(queue_ms=_queue_ms(run), connect_ms=outcome.connect_ms, intent_ms=outcome.intent_ms),
        gateway=outcome.gateway,
        result=with_problems(outcome.result),
        error=_error_info(outcome.failure),
    )


def _publish(result: IntentResult, settings: Settings, publish: Publish) -> None:
    """Publish the result (raising when that fails, so the message comes back), keep it, log the run."""
    crash_point('before-publish')
    publish_started = time.monotonic()
    try:
        publish(result, settings)
    except Exception:
        logger.exception('result of %s not published; raising so the message is delivered again', result.intent)
        raise
    publish_ms = _ms(time.monotonic() - publish_started)
    history.record(result, settings)
    _log_run(result, publish_ms)


def _log_run(result: IntentResult, publish_ms: float) -> None:
    fields = {'status': result.status, 'durationMs': result.duration_ms,
              'timings': {**result.timings.to_wire(), 'publishMs': publish_ms}, 'account': result.account,
              'error': result.error.to_wire() if result.error else None, **_alert_fields(result.result)}
    client_id = result.gateway.client_id if result.gateway else None
    summary = f'{result.intent or "message"} {result.status} in {result.duration_ms:.0f} ms'
    if result.error is not None:
        summary += f': {result.error.type}: {result.error.message}'
    level = _LOG_LEVELS.get(result.status, logging.INFO)
    logger.log(level, summary, extra={'fields': fields, 'labels': {'clientId': client_id}})


def _alert_fields(body: dict[str, Any] | None) -> dict[str, Any]:
    """What the deploy's alert policies match in the run's log line (deploy/alerts): `degraded`, the problem
    codes, and `healthy` for a health run."""
    body = body or {}
    fields: dict[str, Any] = {'degraded': bool(body.get('degraded')),
                              'problemCodes': [p.get('code') for p in body.get('problems') or []]}
    if isinstance(body.get('healthy'), bool):
        fields['healthy'] = body['healthy']
    return fields


def _error_info(failure: Failure | None) -> ErrorInfo | None:
    return None if failure is None else ErrorInfo(type=failure.type, message=failure.message,
                                                  retryable=failure.retryable)


def _rejected(error_type: str, message: str) -> Outcome:
    return Outcome.failed(Failure.rejected(error_type, message))


def _queue_ms(run: Run) -> float | None:
    published = run.envelope.publish_time
    return None if published is None else _ms((run.started_at - published).total_seconds())


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
