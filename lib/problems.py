"""The `problems` contract: what went wrong in a run, on every result as `{code, message, contract?, orderRef?}`.

Two kinds, by code:
- order problems (ORDER_CODES): an order or position that is hidden, not cancelled, not acknowledged,
  not ours or rejected. The run's status is `error` (`retryable` when a retry could fix it: ORDER_CODES
  says which), whatever else it did.
- strategy or data problems (everything else): the run still did what it could; its status stays
  `ok` (or `skipped`) and `result.degraded` is true.
"""
from __future__ import annotations

from typing import Any

# code -> whether a redelivery could fix it (the takeover completes what is missing and cancels again)
ORDER_CODES = {
    'order-unacknowledged': True,   # placed, but the gateway did not answer before the deadline
    'order-not-cancelled': True,    # a stale order of ours still works (its client id was busy, say)
    'order-rejected': True,         # the gateway rejected it; the retry re-sends only the remainder
}
STRATEGY_FAILED = 'strategy-failed'
NO_PRICE = 'no-price'
CONTRACTS_UNRESOLVED = 'contracts-unresolved'
HOURS_UNREADABLE = 'hours-unreadable'


def problem(code: str, message: str, *, contract: dict | None = None, order_ref: str | None = None) -> dict:
    """One entry of `result.problems`; `contract` and `orderRef` only when it is about one."""
    entry: dict[str, Any] = {'code': code, 'message': message}
    if contract is not None:
        entry['contract'] = contract
    if order_ref is not None:
        entry['orderRef'] = order_ref
    return entry


def order_problems(problems: list[dict]) -> list[dict]:
    """The problems that make a run's status `error`."""
    return [p for p in problems if p.get('code') in ORDER_CODES]


def degraded(problems: list[dict]) -> bool:
    """True when a strategy or data problem is among `problems` (the run did what it could)."""
    return any(p.get('code') not in ORDER_CODES for p in problems)


def with_problems(result: dict | None) -> dict:
    """`result` with `problems` (a list, [] when absent) and `degraded`, as every result document carries."""
    body = dict(result or {})
    body['problems'] = [p if isinstance(p, dict) else problem('unspecified', str(p))
                        for p in body.get('problems') or []]
    body['degraded'] = bool(body.get('degraded')) or degraded(body['problems'])
    return body
