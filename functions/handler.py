"""One invocation: decode the message, run the intent in a fresh loop, publish the result.

Order-placing intents are admitted first (functions/admission.py: store, trading enabled, account
lease, idempotency claim); a duplicate delivery ends there. Every failure is a lib.failures.Failure;
`conclude` is the one place that maps the published result to "return" (Pub/Sub acks) or "raise
TransientFailure" (non-2xx: Pub/Sub redelivers after backoff). A result that could not be published
raises too, so no message is acked without its result.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable

from pydantic import ValidationError

from functions import history, publisher
from functions.admission import Admission, admit, effective_dry_run, settle
from functions.contract import (
    Decoded, Envelope, ErrorInfo, Gateway, IntentResult, InvalidMessage, Timings, decode_message,
    describe_validation_error,
)
from functions.runner import Outcome, run_isolated
from intents.base import Intent, IntentParams
from intents.registry import UnknownIntent, get_intent
from lib import log
from lib.config import ConfigError, Settings
from lib.crash import crash_point
from lib.failures import Failure, redeliver
from lib.problems import with_problems

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
class _Run:
    """What is known about a run before the intent executes."""

    run_id: str
    started_at: datetime
    started: float                    # time.monotonic() at start
    envelope: Envelope
    intent: str | None
    dry_run: bool = False
    idempotency_key: str | None = None


def handle(cloud_event: Any, settings: Settings | None = None, *,
           publish: Publish = publisher.publish_result) -> IntentResult:
    """Handle one Pub/Sub CloudEvent end to end and return the published result.

    Raises TransientFailure (after publishing) when the error is retryable, and PublishFailed
    when the result could not be published: both make Pub/Sub redeliver.
    """
    log.ensure_configured()
    if settings is None:
        try:
            settings = Settings.from_env()
        except ConfigError as exc:
            logger.critical('configuration is invalid, so every message fails until it is fixed: %s', exc)
            raise
    started_at, started = datetime.now(timezone.utc), time.monotonic()
    run_id = str(uuid.uuid4())
    try:
        decoded = decode_message(cloud_event)
    except InvalidMessage as exc:
        run = _Run(run_id, started_at, started, exc.envelope, exc.intent)
        with log.bind(runId=run_id, messageId=run.envelope.message_id, intent=run.intent):
            return _finish(run, Outcome.failed(Failure.rejected(exc.error_type, str(exc))), settings, publish)
    request = decoded.request
    run = _Run(run_id, started_at, started, decoded.envelope, request.intent, request.dry_run,
               request.idempotency_key)
    with log.bind(runId=run_id, messageId=run.envelope.message_id, intent=run.intent):
        return _finish(run, _execute(decoded, settings, run), settings, publish)


def _execute(decoded: Decoded, settings: Settings, run: _Run) -> Outcome:
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
    try:
        params = intent_cls.Params.model_validate(request.params)
    except ValidationError as exc:
        return _rejected('InvalidParams', describe_validation_error(exc, prefix='params', model=intent_cls.Params))
    dry_run = effective_dry_run(request.dry_run, params)
    try:
        admission = admit(intent_cls, params, decoded, run_id=run.run_id, dry_run=dry_run, settings=settings,
                          now=run.started_at)
    except Exception as exc:   # admit turns store and config failures into outcomes; anything else is a bug
        logger.exception('admission failed')
        return Outcome.failed(Failure.permanent(type(exc).__name__, str(exc)))
    if request.window is not None:
        admission.context = replace(admission.context, window=request.window.session_window())
    outcome = admission.outcome or _run_admitted(intent_cls, params, dry_run, settings, admission)
    outcome.dry_run, outcome.idempotency_key = dry_run, admission.context.idempotency_key
    return outcome


def _run_admitted(intent_cls: type[Intent], params: IntentParams, dry_run: bool, settings: Settings,
                  admission: Admission) -> Outcome:
    """Run the intent with the admitted context, then finish its idempotency claim (if it holds one)."""
    try:
        outcome = run_isolated(intent_cls, params, dry_run=dry_run, settings=settings, labels=log.current_labels(),
                               context=admission.context,
                               before_intent=admission.begin if admission.needs_claim else None)
    except Exception as exc:   # run_isolated promises not to raise; if it does, still publish a result
        logger.exception('runner failed outside the intent')
        outcome = Outcome.failed(Failure.permanent(type(exc).__name__, str(exc)))
    settle(admission, outcome)
    return outcome


def _finish(run: _Run, outcome: Outcome, settings: Settings, publish: Publish) -> IntentResult:
    finished_at = datetime.now(timezone.utc)
    result = IntentResult(
        run_id=run.run_id,
        message_id=run.envelope.message_id,
        idempotency_key=outcome.idempotency_key or run.idempotency_key,
        intent=run.intent,
        status=outcome.status,
        dry_run=run.dry_run or outcome.dry_run,
        trading_mode=settings.trading_mode,
        account=outcome.account,
        started_at=run.started_at,
        finished_at=finished_at,
        duration_ms=_ms(time.monotonic() - run.started),
        timings=Timings(queue_ms=_queue_ms(run), connect_ms=outcome.connect_ms, intent_ms=outcome.intent_ms),
        gateway=Gateway(**outcome.gateway) if outcome.gateway else None,
        result=with_problems(outcome.result),
        error=ErrorInfo(**outcome.error) if outcome.error else None,
    )
    crash_point('before-publish')
    publish_started = time.monotonic()
    try:
        publish(result, settings)
    except Exception:
        logger.exception('result of %s not published; raising so the message is delivered again', run.intent)
        raise
    publish_ms = _ms(time.monotonic() - publish_started)
    history.record(result)
    _log_run(result, publish_ms)
    return conclude(result)


def conclude(result: IntentResult) -> IntentResult:
    """Return the published result (Pub/Sub acks the message), or raise TransientFailure so the
    function answers non-2xx and Pub/Sub redelivers it: the one place that decides (lib.failures.redeliver)."""
    error = result.error.to_wire() if result.error else None
    if redeliver(result.status, error):
        raise TransientFailure(f'{error["type"]}: {error["message"]}', result)
    return result


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


def _rejected(error_type: str, message: str) -> Outcome:
    return Outcome.failed(Failure.rejected(error_type, message))


def _queue_ms(run: _Run) -> float | None:
    published = run.envelope.publish_time
    return None if published is None else _ms((run.started_at - published).total_seconds())


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
