"""What happened to one run, inside the function: one Outcome from the first check to the published result.

Every step of the lifecycle (functions/handler.py) answers with an Outcome when it ends the run; the run
itself fills one in as it goes (gateway, account, timings, the intent's output). The handler turns the
final Outcome into the one wire document, `functions.contract.IntentResult`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from functions.contract import ErrorInfo, Gateway, Status
from intents.base import IntentOutput
from lib.failures import Failure, redeliver
from lib.idempotency import RecordedOrder

if TYPE_CHECKING:
    from functions.admission import HeldClaim


@dataclass
class Outcome:
    """What happened to one intent run, in the terms of the result document."""

    status: Status
    result: dict | None = None
    failure: Failure | None = None    # why it failed or was refused, and whether Pub/Sub redelivers
    account: str | None = None
    gateway: Gateway | None = None
    connect_ms: float | None = None
    intent_ms: float | None = None
    orders: tuple[RecordedOrder, ...] = field(default=())   # what the run placed or found, for its claim record
    held: HeldClaim | None = None     # the claim this run holds, which admission.settle finishes
    abandoned: bool = False           # the intent's thread was still running when we gave up on it
    idempotency_key: str | None = None   # the key the run was admitted under (a derived one included)

    @classmethod
    def failed(cls, failure: Failure, result: dict | None = None, **fields) -> Outcome:
        """The outcome of a failure: its status, its error."""
        return cls(status=failure.status, result=result, failure=failure, **fields)

    def fail(self, failure: Failure) -> None:
        """Make this outcome the failure's."""
        self.status, self.failure = failure.status, failure

    def end_with(self, other: Outcome) -> None:
        """Take the status, result and failure of the outcome a step ended the run with."""
        self.status, self.result, self.failure = other.status, other.result, other.failure

    def take(self, output: IntentOutput) -> None:
        """Take the intent's output: its status and result; a refusal or failure becomes the error."""
        self.status = output.status
        self.result = dict(output.result)
        if output.status == 'rejected':
            self.fail(Failure.rejected('IntentRejected', output.reason or 'rejected'))
        elif output.status == 'error':
            self.fail(output.failure or Failure.permanent('IntentFailed', output.reason or 'failed'))
        elif output.reason:
            self.result['reason'] = output.reason

    @property
    def error(self) -> ErrorInfo | None:
        """The result document's error."""
        if self.failure is None:
            return None
        return ErrorInfo(type=self.failure.type, message=self.failure.message, retryable=self.failure.retryable)

    @property
    def redeliver(self) -> bool:
        """Pub/Sub must bring the message back (see lib.failures.redeliver)."""
        return redeliver(self.status, self.failure.error() if self.failure else None)
