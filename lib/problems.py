"""The `problems` contract: what went wrong in a run, on every result as `{code, message, contract?, orderRef?}`.

Two kinds, by code:
- order problems (ORDER_CODES, all `order-*`): an order or position that is hidden, not cancelled, not
  acknowledged, not ours or rejected, or an order the run asked for that the safety rails stopped (trading
  disabled mid-run, a close that would not reduce the position or lies outside the close policy's band,
  a holding that cannot be closed). The run's status is `error` (`retryable` when a retry could fix it:
  ORDER_CODES says which), whatever else it did.
- strategy or data problems (everything else): the run still did what it could; its status stays
  `ok` (or `skipped`) and `result.degraded` is true. A run where they left nothing to evaluate (every
  strategy failed, every contract a failed strategy's, no contract priced) and nothing was placed is not
  `skipped` but `error` (StrategiesFailed, NoPrices; retryable when a data outage caused it), with the
  problems still listed.
"""
from __future__ import annotations

from typing import Any

# code -> whether a redelivery could fix it (the takeover completes what is missing and cancels again)
ORDER_CODES = {
    'order-unacknowledged': True,   # placed, but the gateway did not answer before the deadline
    'order-not-cancelled': True,    # a stale order of ours still works (its client id was busy, say)
    'order-rejected': True,         # the gateway rejected it; the retry re-sends only the remainder
    # stopped by a safety rail before placing; a redelivery must not place what the rail stopped
    'order-trading-disabled': False,   # trading was disabled mid-run: this and the remaining legs not placed
    'order-not-reduce-only': False,    # a close that would grow or flip the position at the gateway
    'order-close-band': False,         # a close outside the close policy's own price band
    'order-not-closed': False,         # a holding to close whose contract the gateway no longer describes
}
ERROR_TYPES = {'order-not-cancelled': 'OrdersNotCancelled', 'order-rejected': 'OrdersRejected',
               'order-unacknowledged': 'OrdersUnacknowledged', 'order-trading-disabled': 'TradingDisabled',
               'order-not-reduce-only': 'NotReduceOnly', 'order-close-band': 'ClosePriceBand',
               'order-not-closed': 'PositionsNotClosed'}
"""The run's error type when a code is among its order problems."""
TRADING_DISABLED = 'order-trading-disabled'
NOT_REDUCE_ONLY = 'order-not-reduce-only'
CLOSE_BAND = 'order-close-band'
NOT_CLOSED = 'order-not-closed'
STRATEGY_FAILED = 'strategy-failed'
NO_PRICE = 'no-price'
CONTRACTS_UNRESOLVED = 'contracts-unresolved'
HOURS_UNREADABLE = 'hours-unreadable'
POSITION_DRIFT = 'position-drift'          # the gateway's position is not what the fills ledger expects
FILL_UNATTRIBUTED = 'fill-unattributed'    # a fill of ours whose run recorded no order yet
HOLDINGS_MISMATCH = 'holdings-mismatch'    # the store's running holdings are not the fills ledger's sum
MISSED_DAY = 'missed-day'                  # a trading day without a completed reconciliation: its fills are lost
REDUCED_TO_POSITION = 'reduced-to-position'   # a close trimmed to the position so it does not flip it


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
