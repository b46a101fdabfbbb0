"""Rules both store backends share: claim decisions and what may be stored (times: lib/times.py)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Mapping

from lib.store import ClaimRecord, Delivery
from lib.times import parse_instant, utc


# Firestore's run history: collection and the timestamp field its TTL policy deletes by (deploy/store.py sets it).
HISTORY_COLLECTION = 'history'
HISTORY_EXPIRY_FIELD = 'expireAt'


def lease_end(now: datetime, lease_seconds: float) -> datetime:
    """When a lease taken at `now` expires."""
    if not 0 < lease_seconds < math.inf:
        raise ValueError(f'lease_seconds must be a positive number, got {lease_seconds!r}')
    return utc(now) + timedelta(seconds=lease_seconds)


def existing_outcome(record: ClaimRecord, now: datetime,
                     run_id: str) -> Literal['new', 'taken_over', 'finished', 'running', 'expired']:
    """How a claim by run_id meets an existing record; 'expired' means the caller may take it over.

    The run that already holds a valid lease gets its own outcome back ('new' or 'taken_over'), so a
    claim whose reply was lost can be repeated.
    """
    if record.status == 'finished':
        return 'finished'
    if record.lease_until <= utc(now):
        return 'expired'
    if record.run_id == run_id:
        return 'new' if record.attempt == 1 else 'taken_over'
    return 'running'


def to_json(value: Any, what: str) -> str:
    """Strict JSON text of value (no NaN or infinity); TypeError/ValueError names `what`."""
    try:
        return json.dumps(value, allow_nan=False, sort_keys=True, separators=(',', ':'))
    except (TypeError, ValueError) as exc:
        raise type(exc)(f'{what} is not JSON-serialisable: {exc}') from None


def clean_targets(targets: Mapping[str, float]) -> dict[str, float]:
    """Targets as {str: finite float}; anything else is a ValueError naming the key."""
    cleaned: dict[str, float] = {}
    for key, weight in targets.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f'target keys must be non-empty strings, got {key!r}')
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ValueError(f'target {key!r} must be a finite number, got {weight!r}')
        cleaned[key] = float(weight)
    return cleaned


def clean_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """Settings keyed by non-empty strings; Firestore reserves names like __name__, so they are refused."""
    for name in values:
        if not isinstance(name, str) or not name or (name.startswith('__') and name.endswith('__')):
            raise ValueError(f'setting names must be non-empty strings not of the form __x__, got {name!r}')
    return dict(values)


@dataclass(frozen=True)
class FillEntry:
    """A fill as the ledger indexes it: its id, time and the strategies it serves, plus the JSON text."""

    exec_id: str
    time: datetime
    strategies: tuple[str, ...]
    text: str


def fill_entry(fill: Mapping[str, Any]) -> FillEntry:
    """Validate a fill for the ledger.

    A fill is a JSON-able dict with at least `execId` (str) and `time` (ISO 8601 with a zone);
    `strategies` (a list of names, or a dict keyed by name, e.g. name -> quantity) says whom it serves.
    """
    exec_id = fill.get('execId')
    if not isinstance(exec_id, str) or not exec_id:
        raise ValueError(f'fill needs a non-empty string execId, got {exec_id!r}')
    raw_time = fill.get('time')
    try:
        moment = datetime.fromisoformat(raw_time) if isinstance(raw_time, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValueError(f'fill {exec_id}: time must be an ISO 8601 string with a zone, got {raw_time!r}')
    strategies = fill.get('strategies') or ()
    if not isinstance(strategies, (list, tuple, dict)) or not all(isinstance(name, str) for name in strategies):
        raise ValueError(f'fill {exec_id}: strategies must be a list of names or a dict keyed by name')
    return FillEntry(exec_id, utc(moment), tuple(sorted(set(strategies))), to_json(dict(fill), f'fill {exec_id}'))


# --- running holdings: each account's position and strategies' parts per contract, kept with the ledger ----

QUANTITY_DIGITS = 8
UNITS_PER_SHARE = 10 ** QUANTITY_DIGITS     # holdings are summed in whole units, so the order of addition
                                            # does not matter and the totals equal the ledger's sum exactly
CONTRACT_FIELDS = ('conId', 'symbol', 'secType', 'localSymbol', 'currency')


@dataclass(frozen=True)
class HoldingChange:
    """What one ledger entry adds to its account's holding of its contract, in units (1e-8 of a share)."""

    account: str
    con_id: int
    contract: dict
    position: int
    strategies: dict[str, int]


def to_units(quantity: float) -> int:
    """A quantity in whole units of 10^-QUANTITY_DIGITS (the ledger's rounding)."""
    return round(quantity * UNITS_PER_SHARE)


def holding_change(fill: Mapping[str, Any]) -> HoldingChange | None:
    """The change a ledger entry (an execution or an internal transfer) makes to the running holdings;
    None for a fill without account, conId and quantity (it moves no holding)."""
    account, con_id, quantity = fill.get('account'), fill.get('conId'), fill.get('quantity')
    if not isinstance(account, str) or not isinstance(con_id, int) or isinstance(quantity, bool) \
            or not isinstance(quantity, (int, float)):
        return None
    parts = fill.get('strategies')
    parts = parts if isinstance(parts, dict) else {}
    return HoldingChange(account, con_id, {name: fill.get(name) for name in CONTRACT_FIELDS},
                         to_units(quantity), {name: to_units(part) for name, part in parts.items()})


def add_change(row: dict | None, change: HoldingChange) -> dict:
    """A stored holding row (units) with `change` added: {account, conId, contract, position, strategies}."""
    strategies = dict(row['strategies']) if row else {}
    for name, units in change.strategies.items():
        strategies[name] = strategies.get(name, 0) + units
    return {'account': change.account, 'conId': change.con_id, 'contract': change.contract,
            'position': (row['position'] if row else 0) + change.position,
            'strategies': {name: units for name, units in sorted(strategies.items()) if units}}


def is_empty(row: Mapping[str, Any]) -> bool:
    """A holding with no position and no strategy's part (it need not be kept)."""
    return not row['position'] and not any(row['strategies'].values())


def holding_view(row: Mapping[str, Any]) -> dict:
    """A stored holding row as the Store returns it: quantities in shares, zero parts left out."""
    return {'conId': row['conId'], 'contract': dict(row['contract']),
            'position': row['position'] / UNITS_PER_SHARE,
            'strategies': {name: units / UNITS_PER_SHARE for name, units in sorted(row['strategies'].items())
                           if units}}


def sum_holdings(fills: list[Mapping[str, Any]]) -> dict[tuple[str, int], dict]:
    """(account, conId) -> the holding row (units) the ledger entries add up to; empty rows left out."""
    rows: dict[tuple[str, int], dict] = {}
    for fill in fills:
        change = holding_change(fill)
        if change is not None:
            key = (change.account, change.con_id)
            rows[key] = add_change(rows.get(key), change)
    return {key: row for key, row in rows.items() if not is_empty(row)}


# --- notification deliveries: one record per (result, sink) ---------------------------------------------

DELIVERIES_COLLECTION = 'deliveries'
DELIVERY_STATES = ('sent', 'rejected', 'failed')
DELIVERY_DONE = ('sent', 'rejected')
DELIVERY_KEEP_DAYS = 30      # a redelivery comes within Pub/Sub's 7-day retention; older records may go

# --- plans waiting for approval -------------------------------------------------------------------------------

PLANS_COLLECTION = 'plans'
PLAN_KEEP_DAYS = 30          # past its expiresAt a plan only answers "expired"; kept a while for the record


def plan_keep_until(plan: Mapping[str, Any], now: datetime) -> datetime:
    """When a stored plan may be deleted: PLAN_KEEP_DAYS after it expires (after `now` when it names no expiry)."""
    expires = plan.get('expiresAt')
    start = parse_instant(expires) if isinstance(expires, str) else utc(now)
    return start + timedelta(days=PLAN_KEEP_DAYS)


def delivery_taken(record: Delivery | None, result_id: str, sink: str, holder: str, lease_until: datetime,
                   now: datetime) -> Delivery | None:
    """The record after `holder` takes the send, or None when it may not: done, or leased to another."""
    if record is None:
        return Delivery(result_id, sink, 'sending', 1, holder, lease_until, None, utc(now))
    if record.state in DELIVERY_DONE:
        return None
    leased = record.state == 'sending' and record.lease_until is not None and record.lease_until > utc(now)
    if leased and record.holder != holder:
        return None
    attempts = record.attempts if leased else record.attempts + 1   # the holder repeating its call counts once
    return Delivery(result_id, sink, 'sending', attempts, holder, lease_until, record.detail, utc(now))


def delivery_ended(record: Delivery | None, holder: str, state: str, detail: str, now: datetime) -> Delivery | None:
    """The record after `holder` ends its send with `state`, or None when it no longer holds it."""
    if state not in DELIVERY_STATES:
        raise ValueError(f'delivery state must be one of {", ".join(DELIVERY_STATES)}, got {state!r}')
    if record is None or record.state != 'sending' or record.holder != holder:
        return None
    return Delivery(record.result_id, record.sink, state, record.attempts, None, None, detail, utc(now))
