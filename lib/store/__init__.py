"""The state store: run claims and results, strategy targets, the fills ledger, dynamic settings, run history,
cursors (how far incremental work such as booking executions has got), plans waiting for approval, each account's
running holdings (the fills ledger's sum, kept as fills are recorded), and the notify function's deliveries (each
sink's answer for each result, so a redelivered result goes only to the sinks not done).

Two backends behave the same (one shared test suite): SQLite, the embedded default for local runs,
and Firestore for the cloud. `open_store(settings.store)` picks one (lib.config.StoreSettings, read from
the environment at the entry):

| variable | default | meaning |
|---|---|---|
| STORE_BACKEND | sqlite | `sqlite` or `firestore` |
| SQLITE_PATH | ./.local/state.sqlite3 | the SQLite file (its folder is created on first use) |
| GOOGLE_CLOUD_PROJECT | (required for firestore) | the Firestore project |
| FIRESTORE_DATABASE | (default) | the Firestore database id |
| FIRESTORE_EMULATOR_HOST | unset | host:port of a Firestore emulator (no credentials then) |
| STORE_TIMEOUT_SECONDS | 10 | how long one store operation may take before it counts as unavailable |

Every failure of the backend (unreachable, timeout, permission, corrupt file) raises StoreUnavailable;
callers that place orders treat it as "no": they fail closed. Timestamps are tz-aware UTC datetimes.
Nothing here does I/O before the first store operation.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from lib.config import StoreSettings

__all__ = [
    'ClaimAnswer', 'ClaimRecord', 'Delivery', 'DeliveryStart', 'Lease', 'Store', 'StoreUnavailable', 'open_store',
]

ClaimOutcome = Literal['new', 'taken_over', 'finished', 'running']


class StoreUnavailable(Exception):
    """The store could not be read or written (unreachable, timed out, refused, broken)."""


@dataclass
class ClaimRecord:
    """What the store keeps under one claim key (trading.idempotency names the claim's vocabulary)."""

    key: str
    run_id: str                 # the run that holds (or finished) the key
    status: str                 # 'running' | 'finished'
    lease_until: datetime
    attempt: int                # 1 for the first run, +1 for each takeover
    created_at: datetime
    result: dict | None


@dataclass
class ClaimAnswer:
    """The store's answer to claim() of one claim key: what happened and the record as it stands after it.

    outcome 'new': we hold the key. 'taken_over': the previous lease had expired; we hold it now
    (record.attempt counts the takeovers). 'finished': someone finished it; record.result is theirs.
    'running': someone else holds a valid lease.
    """

    outcome: ClaimOutcome
    record: ClaimRecord

    @property
    def held(self) -> bool:
        """True when the caller now holds the key and may do the work."""
        return self.outcome in ('new', 'taken_over')


@dataclass
class Lease:
    """The answer to take_lease(): who holds the named lease, until when, and whether that is the caller."""

    name: str
    holder: str
    lease_until: datetime
    held: bool


DeliveryState = Literal['sending', 'sent', 'rejected', 'failed']


@dataclass
class Delivery:
    """One notification of one result to one sink: where it stands and how often it was tried."""

    result_id: str
    sink: str
    state: str                  # DeliveryState
    attempts: int               # sends started (a delivery that found it done or busy adds none)
    holder: str | None          # the invocation sending it now (state 'sending')
    lease_until: datetime | None
    detail: str | None          # the last answer: 'HTTP 200', 'HTTP 400: ...', 'no answer within 10 s'
    updated_at: datetime


@dataclass
class DeliveryStart:
    """The answer to start_delivery(): held True means the caller may send now (attempts counts this one)."""

    held: bool
    delivery: Delivery


class Store(Protocol):
    """What every backend offers. All methods raise StoreUnavailable when the backend fails."""

    def claim(self, key: str, run_id: str, lease_seconds: float, now: datetime) -> ClaimAnswer:
        """Atomically claim `key` for `run_id` with a lease of lease_seconds from now."""

    def finish(self, key: str, run_id: str, result: dict, now: datetime) -> bool:
        """Mark the key finished with `result` and end the lease; False if run_id no longer holds it.

        Repeating a finish with the same result returns True again (a retried call is safe).
        """

    def get_claim(self, key: str) -> ClaimRecord | None:
        """The stored claim of `key`, or None."""

    def stuck_claims(self, lease_ended_before: datetime) -> list[ClaimRecord]:
        """Claims still 'running' whose lease ended before `lease_ended_before`, oldest lease first.

        Needs no composite index on Firestore (one equality filter; the time is compared here).
        """

    def take_lease(self, name: str, holder: str, lease_seconds: float, now: datetime) -> Lease:
        """Atomically take the lease `name` for `holder` if it is free, expired or already theirs
        (then it is renewed); otherwise held=False with the current holder."""

    def release_lease(self, name: str, holder: str) -> bool:
        """End `holder`'s lease `name`; False (and nothing changes) when someone else holds it now."""

    def get_targets(self, strategy: str) -> dict | None:
        """{"targets": {key: weight}, "updatedAt": ISO 8601 UTC, "runId": str} or None."""

    def put_targets(self, strategy: str, targets: dict[str, float], run_id: str, now: datetime) -> None:
        """Replace the strategy's last targets."""

    def record_fill(self, fill: dict) -> bool:
        """Add a fill to the ledger, keyed by fill["execId"]; False when it was already there."""

    def fills(self, *, since: datetime | None = None, strategy: str | None = None) -> list[dict]:
        """Recorded fills with time >= since serving `strategy`, oldest first."""

    def holdings(self, account: str) -> list[dict]:
        """The account's running holdings, by conId: [{conId, contract, position, strategies}], non-zero only.

        record_fill keeps them in the same atomic write that adds a new ledger entry with `account`, `conId`,
        `quantity` and `strategies` (name -> part), so they are the ledger's sum (lib.store.common.sum_holdings,
        in units of 1e-8) without reading the ledger. A ledger written before the totals existed is summed
        once, by the first call of either method.
        """

    def get_settings(self) -> dict:
        """The dynamic settings (tradingEnabled, limits, exposures); {} when none were stored."""

    def put_settings(self, values: dict) -> None:
        """Merge values into the settings: each top-level key given replaces the stored one."""

    def record_run(self, run_id: str, intent: str | None, status: str, finished_at: datetime, document: str,
                   keep_until: datetime) -> None:
        """Keep one run's result document (JSON text) until `keep_until`; recording a run_id again replaces it."""

    def recent_runs(self, limit: int, now: datetime, intent: str | None = None) -> list[dict]:
        """Up to `limit` result documents still kept at `now`, newest first; only `intent`'s when given."""

    def get_run(self, run_id: str) -> dict | None:
        """The result document of `run_id` (expired or not), or None."""

    def get_cursor(self, name: str) -> dict | None:
        """The JSON document last put under cursor `name` (how far some work has got), or None."""

    def put_cursor(self, name: str, value: dict) -> None:
        """Replace cursor `name` with `value` (a JSON-able dict); the last writer wins."""

    def start_delivery(self, result_id: str, sink: str, holder: str, lease_seconds: float,
                       now: datetime) -> DeliveryStart:
        """Atomically take the send of `result_id` to `sink` for `holder`, unless it is done (sent or rejected)
        or another holder's lease on it is valid; taking it counts an attempt and leases it until
        now + lease_seconds. The holder repeating its call keeps its lease and its count."""

    def end_delivery(self, result_id: str, sink: str, holder: str, state: str, detail: str,
                     now: datetime) -> bool:
        """Record how `holder`'s send ended ('sent', 'rejected', 'failed') and end its lease; False (and nothing
        changes) when `holder` no longer holds it."""

    def deliveries(self, result_id: str) -> list[Delivery]:
        """Every sink's delivery of `result_id`, by sink name."""

    def get_plan(self, plan_id: str) -> dict | None:
        """The plan stored under `plan_id` (a planning run's orders waiting for approval), or None."""

    def put_plan(self, plan_id: str, plan: dict) -> None:
        """Store (or replace: discarding marks it) the JSON-able plan under `plan_id`; the last writer wins
        (execute-plan and discard run under the plan account's lease, one at a time)."""

    def close(self) -> None:
        """Release connections; the store reconnects if used again."""


def open_store(settings: StoreSettings) -> Store:
    """The process's store for `settings`, created on first use; ConfigError when they are bad."""
    config = _store_config(settings.checked())
    with _STORES_LOCK:
        store = _STORES.get(config)
        if store is None:
            store = _STORES[config] = _create(config)
        return store


_STORES: dict[tuple, Store] = {}
_STORES_LOCK = threading.Lock()


def _store_config(settings: StoreSettings) -> tuple:
    if settings.backend == 'sqlite':
        return ('sqlite', os.path.abspath(settings.sqlite_path), settings.timeout_seconds)
    return ('firestore', settings.project, settings.database, settings.emulator_host, settings.timeout_seconds)


def _create(config: tuple) -> Store:
    if config[0] == 'sqlite':
        from lib.store.sqlite import SqliteStore

        _, path, timeout = config
        return SqliteStore(path, timeout=timeout)
    from lib.store.firestore import FirestoreStore

    _, project, database, emulator_host, timeout = config
    return FirestoreStore(project, database=database, emulator_host=emulator_host, timeout=timeout)
