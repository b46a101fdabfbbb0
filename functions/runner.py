"""Run one intent in a fresh thread that owns a new event loop and its own IB(); never raises.

Nothing survives a call: the IB object, the loop, its tasks, its blocking calls and the thread all end
before run_isolated returns, so no state leaks from one invocation into the next. (Blocking calls run
on the process's thread pool, functions/blocking.py, whose idle threads do outlive the run.)
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

from pydantic import BaseModel

from functions.blocking import RunExecutor
from intents.base import Intent, IntentOutput, RunContext
from lib.config import Settings
from lib.failures import Failure, failure_of, redeliver
from lib.ibapi import IB
from lib.log import bind, get_logger
from lib.session import close_session, disconnect, open_session

log = get_logger(__name__)

# How long past the deadline to wait for the thread before giving up on it (it can only be stuck in
# synchronous code, which the loop's deadline cannot interrupt).
JOIN_GRACE_SECONDS = 5.0


@dataclass
class Outcome:
    """What happened to one intent run, in the terms of the result document."""

    status: str                       # ok | error | rejected | skipped | duplicate
    result: dict | None = None
    failure: Failure | None = None    # why it failed or was refused, and whether Pub/Sub redelivers
    account: str | None = None
    gateway: dict | None = None       # {"host", "port", "clientId", "serverVersion"}
    connect_ms: float | None = None
    intent_ms: float | None = None
    abandoned: bool = False           # the intent's thread was still running when we gave up on it
    dry_run: bool = False             # as the handler decided it (the request or the intent's dryRun param)
    idempotency_key: str | None = None

    @classmethod
    def failed(cls, failure: Failure, result: dict | None = None, **fields) -> Outcome:
        """The outcome of a failure: its status, its error."""
        return cls(status=failure.status, result=result, failure=failure, **fields)

    def fail(self, failure: Failure) -> None:
        """Make this outcome the failure's."""
        self.status, self.failure = failure.status, failure

    @property
    def error(self) -> dict | None:
        """The result document's error."""
        return self.failure.error() if self.failure else None

    @property
    def redeliver(self) -> bool:
        """Pub/Sub must bring the message back (see lib.failures.redeliver)."""
        return redeliver(self.status, self.error)


BeforeIntent = Callable[[RunContext], RunContext | Outcome]


class GatewayDisconnected(ConnectionError):
    """The gateway closed the connection while the intent was running."""


def run_isolated(intent_cls: type[Intent], params: BaseModel, *, dry_run: bool, settings: Settings,
                 labels: dict[str, str] | None = None, context: RunContext | None = None,
                 before_intent: BeforeIntent | None = None) -> Outcome:
    """Run `intent_cls` with `params` on its own thread, loop and IB(); every failure becomes an Outcome.

    `before_intent`, when given, is called (in a worker thread) once the session is connected and
    before the intent starts: it returns the context to run with, or an Outcome that ends the run there.
    """
    variables = contextvars.copy_context()
    box: list[Outcome] = []
    run_context = context or RunContext(settings=settings)

    def target() -> None:
        with bind(**(labels or {})):
            box.append(_run_in_fresh_loop(intent_cls, params, dry_run, settings, run_context, before_intent))

    thread = threading.Thread(target=variables.run, args=(target,), name=f'intent-{intent_cls.name}', daemon=True)
    thread.start()
    thread.join(settings.deadline_seconds + JOIN_GRACE_SECONDS)
    if thread.is_alive():
        with bind(**(labels or {})):
            log.error('intent thread %s still running %.0fs after its deadline; abandoning it',
                      thread.name, JOIN_GRACE_SECONDS)
        return Outcome.failed(Failure.permanent('DeadlineExceeded', 'intent blocked its event loop past the deadline'),
                              abandoned=True)
    return box[0]


def _run_in_fresh_loop(intent_cls: type[Intent], params: BaseModel, dry_run: bool, settings: Settings,
                       context: RunContext, before_intent: BeforeIntent | None) -> Outcome:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)   # ib_insync looks the loop up through the policy, not the running loop
    blocking = RunExecutor()       # to_thread on the process's pool: no thread started and joined per run
    loop.set_default_executor(blocking)
    try:
        return loop.run_until_complete(_execute(intent_cls, params, dry_run, settings, context, before_intent))
    except BaseException as exc:   # SystemExit from an intent, or a bug here: still hand back an Outcome
        log.exception('intent runner failed')
        return Outcome.failed(Failure.permanent(type(exc).__name__, str(exc)))
    finally:
        _cancel_leftovers(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        blocking.shutdown(wait=True)   # the run's blocking calls are over before the run is
        asyncio.set_event_loop(None)
        loop.close()


async def _execute(intent_cls: type[Intent], params: BaseModel, dry_run: bool, settings: Settings,
                   context: RunContext, before_intent: BeforeIntent | None) -> Outcome:
    loop = asyncio.get_running_loop()
    ib = IB()
    outcome = Outcome(status='error', gateway={'host': settings.gateway_host, 'port': settings.gateway_port,
                                               'clientId': None, 'serverVersion': None})
    session = None
    intent = None
    intent_started = None
    deadline = asyncio.timeout(settings.deadline_seconds)
    deadline_at = loop.time() + settings.deadline_seconds
    with contextlib.ExitStack() as labels:
        try:
            async with deadline:
                session = await open_session(ib, settings, readonly=intent_cls.readonly, deadline=deadline_at,
                                             account_state=intent_cls.account_state)
                labels.enter_context(bind(clientId=session.client_id))
                outcome.account, outcome.gateway = session.account, session.gateway()
                outcome.connect_ms = round(session.connect_ms, 1)
                context = context.for_account(intent_cls.name, session.account)
                admitted = context if before_intent is None else await asyncio.to_thread(before_intent, context)
                if isinstance(admitted, Outcome):
                    outcome.status, outcome.result, outcome.failure = admitted.status, admitted.result, admitted.failure
                else:
                    context = admitted
                    intent = intent_cls(session, params, dry_run=dry_run, context=context, deadline=deadline_at)
                    intent_started = time.perf_counter()
                    output = await _until_disconnected(ib, intent.start())
                    outcome.intent_ms = _ms_since(intent_started)
                    _apply(outcome, output)
        except Exception as exc:
            outcome.fail(_describe_failure(exc, intent_cls, settings, deadline.expired(),
                                           intent_started is not None, context.claimed))
            if intent is not None:   # an order-placing run lists what it placed before it failed
                outcome.result = intent.interrupted_result()
        finally:
            if session is not None:
                close_session(session)
            else:
                disconnect(ib)
            await asyncio.sleep(0)   # let the transport finish closing its socket inside this loop
    if intent_started is not None and outcome.intent_ms is None:
        outcome.intent_ms = _ms_since(intent_started)
    return outcome


def _describe_failure(exc: Exception, intent_cls: type[Intent], settings: Settings, deadline_hit: bool,
                      intent_started: bool, claimed: bool) -> Failure:
    """The Failure an exception means (lib.failures.failure_of), logged at a severity that fits it.

    A retry is safe before the intent started, for read-only intents, and for order-placing runs that
    hold their idempotency claim: the redelivery takes over and places only what is missing.
    """
    safe_to_retry = not intent_started or intent_cls.readonly or claimed
    if deadline_hit:
        log.warning('%s hit its deadline of %gs', intent_cls.name, settings.deadline_seconds)
        failure = Failure.permanent('DeadlineExceeded',
                                    f'{intent_cls.name} did not finish within {settings.deadline_seconds:g}s')
        return Failure.transient(failure.type, failure.message) if safe_to_retry else failure
    failure = failure_of(exc, safe_to_retry=safe_to_retry)
    if failure.status == 'rejected':
        log.warning('%s refused: %s', intent_cls.name, str(exc))
    elif failure.retryable:
        # the text, not the exception: a kept log record must not keep its frames (and the IB) alive
        log.warning('%s failed: %s: %s', intent_cls.name, type(exc).__name__, str(exc))
    else:
        log.exception('%s failed', intent_cls.name)
    return failure


async def _until_disconnected(ib: IB, work) -> IntentOutput:
    """Await `work`, but fail at once if the gateway drops the connection meanwhile."""
    task = asyncio.ensure_future(work)
    dropped = asyncio.get_running_loop().create_future()

    def on_disconnect() -> None:
        if not dropped.done():
            dropped.set_result(None)

    ib.disconnectedEvent += on_disconnect
    try:
        await asyncio.wait({task, dropped}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            try:
                return task.result()
            except ConnectionError as exc:   # a request cut off by the drop says 'Socket disconnect'
                if ib.isConnected():
                    raise
                raise GatewayDisconnected('the gateway closed the connection during the intent') from exc
        raise GatewayDisconnected('the gateway closed the connection during the intent')
    finally:
        ib.disconnectedEvent -= on_disconnect
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _apply(outcome: Outcome, output: IntentOutput) -> None:
    outcome.status = output.status
    outcome.result = dict(output.result)
    if output.status == 'rejected':
        outcome.fail(Failure.rejected('IntentRejected', output.reason or 'rejected'))
    elif output.status == 'error':
        outcome.fail(output.failure or Failure.permanent('IntentFailed', output.reason or 'failed'))
    elif output.reason:
        outcome.result['reason'] = output.reason


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
