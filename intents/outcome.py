"""What happened to one run: the one Outcome an intent returns and the lifecycle completes.

An intent answers `Outcome.ok(result)`, `Outcome.skipped(reason, result)` or `Outcome.failed(failure, result)`;
the lifecycle (functions/handler.py) takes that into the run's own Outcome, which also holds what it learned
connecting (account, gateway, timings), the orders recorded for the claim and what the run holds (its `Hold`); every step that
ends a run early answers an Outcome too. The handler turns the final one into the wire document,
`functions.contract.IntentResult`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from lib.failures import Failure, redeliver
from trading.idempotency import RecordedOrder

if TYPE_CHECKING:   # the lifecycle's types, named here only for the reader
    from functions.admission import Hold
    from functions.contract import Gateway

Status = Literal['ok', 'error', 'rejected', 'skipped', 'duplicate']


@dataclass
class Outcome:
    """What happened to one intent run, in the terms of the result document."""

    status: Status
    result: dict | None = None
    failure: Failure | None = None    # why it failed or was refused (the result's error), and whether it is retried
    account: str | None = None
    gateway: Gateway | None = None
    connect_ms: float | None = None
    intent_ms: float | None = None
    orders: tuple[RecordedOrder, ...] = field(default=())   # what the run placed or found, for its claim record
    held: Hold | None = None          # the claim key and account lease this run holds, which admission.settle gives back
    abandoned: bool = False           # the intent's thread was still running when we gave up on it
    idempotency_key: str | None = None   # the key the run was admitted under (a derived one included)

    @classmethod
    def ok(cls, result: dict) -> Outcome:
        """The intent did its work; `result` is its output."""
        return cls(status='ok', result=result)

    @classmethod
    def skipped(cls, reason: str, result: dict | None = None) -> Outcome:
        """Nothing to do by design (outside the window, no trades needed); `result.reason` says why."""
        return cls(status='skipped', result={**(result or {}), 'reason': reason})

    @classmethod
    def failed(cls, failure: Failure, result: dict | None = None, **fields) -> Outcome:
        """The outcome of a failure: its status, its error."""
        return cls(status=failure.status, result=result, failure=failure, **fields)

    def fail(self, failure: Failure) -> None:
        """Make this outcome the failure's."""
        self.status, self.failure = failure.status, failure

    def end_with(self, other: Outcome) -> None:
        """Take the status, result and failure of the outcome a step (the intent, the claim) ended with."""
        self.status, self.result, self.failure = other.status, other.result, other.failure

    @property
    def redeliver(self) -> bool:
        """Pub/Sub must bring the message back (see lib.failures.redeliver)."""
        return redeliver(self.status, self.failure.error() if self.failure else None)
