"""Why a run did not succeed, and the one decision that follows from it: ack the message or have it redelivered.

Pub/Sub (and Eventarc push) treats every 2xx answer as an ack and never delivers that message again;
only a non-2xx answer (the function raising) or a timeout brings it back, with backoff, until the
dead-letter limit. So every failure is described once, as a `Failure`, which says its status
(`rejected`: refused, a redelivery cannot help; `error`: failed) and whether a redelivery could
succeed (`retryable`). `failure_of` is the table from exceptions to failures; `redeliver` is the
only place that turns a result into "raise" (redeliver) or "return" (ack). README "Ack or redeliver"
lists the same table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FailureStatus = Literal['rejected', 'error']


@dataclass(frozen=True)
class Failure:
    """A failed or refused run: the result's status and error, and so whether Pub/Sub redelivers."""

    status: FailureStatus
    type: str
    message: str
    retryable: bool

    @classmethod
    def rejected(cls, kind: str, message: str) -> Failure:
        """Refused before acting (bad input, a business rule, configuration): acked, never retried."""
        return cls('rejected', kind, message, False)

    @classmethod
    def permanent(cls, kind: str, message: str) -> Failure:
        """Failed in a way a redelivery repeats: acked, with status error."""
        return cls('error', kind, message, False)

    @classmethod
    def transient(cls, kind: str, message: str) -> Failure:
        """Failed in a way a redelivery may fix: published, then redelivered."""
        return cls('error', kind, message, True)

    def error(self) -> dict:
        """The result document's `error`."""
        return {'type': self.type, 'message': self.message, 'retryable': self.retryable}


class Failed(Exception):
    """An exception that carries its Failure (raised by code that knows what its failure means)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


# Exception class name -> disposition. Matched along the exception's class hierarchy (most derived
# first), so lib modules need not import this one and this one need not import them.
#   rejected:   refused; a redelivery would be refused again (acked)
#   permanent:  error, not retryable (acked)
#   transient:  error, retryable (redelivered)
#   transient-if-safe: retryable only when a repeat cannot act twice (see failure_of)
EXCEPTION_TABLE: dict[str, str] = dict((
    ('IntentRejected', 'rejected'),          # a business rule refused the work
    ('SessionRejected', 'rejected'),         # account / trading-mode rules forbid this session
    ('RiskLimitBreached', 'rejected'),       # a risk limit refused the orders
    ('ConfigError', 'rejected'),             # configuration is invalid: fix it, then republish
    ('HistoricalDataError', 'rejected'),     # the gateway refused a historical data request for good
    ('TooManyAttempts', 'rejected'),         # the key was retried MAX_GENERATIONS times
    ('GatewayUnavailable', 'transient'),     # refused, timed out or dropped while connecting
    ('ClientIdsExhausted', 'transient'),     # every client id is busy right now
    ('HistoricalDataUnavailable', 'transient'),   # HMDS outage or pacing (error 162, see trading.market_data)
    ('StoreUnavailable', 'transient'),       # the store is unreadable: nothing was placed, try later
    ('AccountBusy', 'transient'),            # another order-placing run holds the account's lease
    ('ConnectionError', 'transient'),        # the gateway connection broke
    ('TimeoutError', 'transient-if-safe'),
    ('SessionError', 'permanent'),
))


def failure_of(exc: BaseException, *, safe_to_retry: bool = True) -> Failure:
    """The Failure an exception means. `safe_to_retry`: a repeat of the run cannot act twice (it has
    not started acting, is read-only, or holds its idempotency claim so a redelivery takes over).

    Exceptions not in EXCEPTION_TABLE are bugs: permanent errors (a redelivery would hit them again).
    """
    if isinstance(exc, Failed):
        return exc.failure
    kind, message = type(exc).__name__, str(exc) or type(exc).__name__
    for cls in type(exc).__mro__:
        disposition = EXCEPTION_TABLE.get(cls.__name__)
        if disposition is None:
            continue
        if disposition == 'rejected':
            return Failure.rejected(kind, message)
        if disposition == 'transient' or (disposition == 'transient-if-safe' and safe_to_retry):
            return Failure.transient(kind, message)
        return Failure.permanent(kind, message)
    return Failure.permanent(kind, message)


def redeliver(status: str, error: dict | None) -> bool:
    """True when the message must come back (the function raises, a non-2xx answer); False: ack it."""
    return status == 'error' and bool(error and error.get('retryable'))
