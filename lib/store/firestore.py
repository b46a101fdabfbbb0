"""The Firestore store.

Layout (document ids of runs, targets and fills are the sha256 hex of the key, because keys may hold
'/' and other characters Firestore ids cannot; the original is kept in a field):

- `runs/{sha256(key)}`: key, runId, status ('running' | 'finished'), leaseUntil, attempt, createdAt,
  result (JSON text, or null while running);
- `targets/{sha256(strategy)}`: strategy, targets (map key -> weight), updatedAt, runId;
- `fills/{sha256(execId)}`: execId, time, strategies (array of names), fill (the fill as JSON text);
- `leases/{sha256(name)}`: name, holder, leaseUntil (one order-placing run per account at a time);
- `cursors/{sha256(name)}`: name, value (JSON text): how far incremental work (booking executions) has got;
- `plans/{sha256(planId)}`: planId, plan (JSON text), expireAt (PLAN_KEEP_DAYS after the plan expires; the
  deploy's TTL policy deletes it then): a plan waiting for approval (approval: required);
- `holdings/{sha256(account, conId)}`: account, conId, contract (map), position and strategies (map name ->
  part), in integer units of 1e-8 share: the account's running holding of the contract, incremented in the
  same atomic write that creates a new fill (one that is back to zero is deleted when next read, unless it
  changed since); `ledgerState/holdings` says they are kept (absent: the ledger
  was written by older code and is summed once, in a transaction, by the first store call that needs them);
- `deliveries/{sha256(resultId, sink)}`: resultId, sink, state ('sending' | 'sent' | 'rejected' | 'failed'),
  attempts, holder, leaseUntil, detail, updatedAt, expireAt (the deploy's TTL policy deletes it after
  DELIVERY_KEEP_DAYS): one notification of one result to one sink;
- `settings/trading`: the dynamic settings as plain fields (tradingEnabled, exposure, limits, ...),
  meant to be edited in the console.

A claim is a `create` (fails if the document exists). Taking over an expired lease and finishing are
updates conditional on the document's update time as read, so of two concurrent writers one wins and
the other re-reads. Every call has the store's timeout, so an unreachable database fails fast.
Paper and live deployments must not share a database (use FIRESTORE_DATABASE or another project).
"""
from __future__ import annotations

import hashlib
import json
import threading
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

from lib.store import ClaimAnswer, ClaimRecord, Delivery, DeliveryStart, Lease, StoreUnavailable
from lib.store.common import (
    DELIVERIES_COLLECTION, DELIVERY_KEEP_DAYS, HISTORY_COLLECTION, HISTORY_EXPIRY_FIELD, PLANS_COLLECTION,
    HoldingChange, clean_settings, clean_targets, delivery_ended, delivery_taken, existing_outcome, fill_entry,
    holding_change, holding_view, is_empty, lease_end, plan_keep_until, sum_holdings, to_json,
)
from lib.times import iso, utc

SETTINGS_DOCUMENT = ('settings', 'trading')
HISTORY = HISTORY_COLLECTION   # the deploy sets a TTL policy on its HISTORY_EXPIRY_FIELD
CURSORS = 'cursors'
PLANS = PLANS_COLLECTION   # the deploy sets a TTL policy on its HISTORY_EXPIRY_FIELD
HOLDINGS = 'holdings'
HOLDINGS_KEPT = ('ledgerState', 'holdings')
HISTORY_SCAN_FACTOR = 20       # runs read per run wanted when filtering by intent
HISTORY_SCAN_MAX = 1000
CONDITIONAL_WRITE_ATTEMPTS = 20


class FirestoreStore:
    """The Store on a Firestore database; the client is created on first use."""

    def __init__(self, project: str, *, database: str = '(default)', emulator_host: str | None = None,
                 timeout: float = 10.0):
        self.project = project
        self.database = database
        self.emulator_host = emulator_host
        self.timeout = timeout
        self._retry = gretry.Retry(predicate=gretry.if_transient_error, initial=0.1, maximum=1.0,
                                   multiplier=2.0, timeout=timeout)
        self._lock = threading.Lock()
        self._client: firestore.Client | None = None
        self._totals_kept = False     # seen ledgerState/holdings (it is never removed)

    def claim(self, key: str, run_id: str, lease_seconds: float, now: datetime) -> ClaimAnswer:
        now = utc(now)
        lease_until = lease_end(now, lease_seconds)
        fresh = ClaimRecord(key, run_id, 'running', lease_until, 1, now, None)
        with self._unavailable_on_error():
            ref = self._doc('runs', key)
            for _ in range(CONDITIONAL_WRITE_ATTEMPTS):
                try:
                    ref.create(_claim_fields(fresh), **self._call())
                    return ClaimAnswer('new', fresh)
                except gexc.AlreadyExists:
                    pass
                snapshot = ref.get(**self._call())
                if not snapshot.exists:     # deleted by hand since our create failed: create again
                    continue
                record = _claim_record(snapshot.to_dict())
                outcome = existing_outcome(record, now, run_id)
                if outcome != 'expired':
                    return ClaimAnswer(outcome, record)
                taken = replace(record, run_id=run_id, lease_until=lease_until, attempt=record.attempt + 1)
                if self._update_unchanged(ref, snapshot, {'runId': run_id, 'leaseUntil': lease_until,
                                                          'attempt': taken.attempt}):
                    return ClaimAnswer('taken_over', taken)
        raise StoreUnavailable(f'Firestore {self.project}/{self.database}: claim of {key!r} kept changing under us')

    def finish(self, key: str, run_id: str, result: dict, now: datetime) -> bool:
        text = to_json(result, 'result')
        now = utc(now)
        with self._unavailable_on_error():
            ref = self._doc('runs', key)
            for _ in range(CONDITIONAL_WRITE_ATTEMPTS):
                snapshot = ref.get(**self._call())
                fields = snapshot.to_dict() if snapshot.exists else {}
                if fields.get('runId') != run_id or fields.get('status') != 'running':
                    return _finished_with(fields, run_id, text)
                if self._update_unchanged(ref, snapshot, {'status': 'finished', 'result': text, 'leaseUntil': now}):
                    return True
        raise StoreUnavailable(f'Firestore {self.project}/{self.database}: claim of {key!r} kept changing under us')

    def get_claim(self, key: str) -> ClaimRecord | None:
        with self._unavailable_on_error():
            snapshot = self._doc('runs', key).get(**self._call())
        return _claim_record(snapshot.to_dict()) if snapshot.exists else None

    def stuck_claims(self, lease_ended_before: datetime) -> list[ClaimRecord]:
        cutoff = utc(lease_ended_before, 'lease_ended_before')
        with self._unavailable_on_error():
            query = self._client_or_connect().collection('runs').where(filter=FieldFilter('status', '==', 'running'))
            records = [_claim_record(snapshot.to_dict()) for snapshot in query.stream(**self._call())]
        return sorted((r for r in records if r.lease_until < cutoff), key=lambda r: (r.lease_until, r.key))

    def take_lease(self, name: str, holder: str, lease_seconds: float, now: datetime) -> Lease:
        now = utc(now)
        lease_until = lease_end(now, lease_seconds)
        fields = {'name': name, 'holder': holder, 'leaseUntil': lease_until}
        with self._unavailable_on_error():
            ref = self._doc('leases', name)
            for _ in range(CONDITIONAL_WRITE_ATTEMPTS):
                try:
                    ref.create(fields, **self._call())
                    return Lease(name, holder, lease_until, held=True)
                except gexc.AlreadyExists:
                    pass
                snapshot = ref.get(**self._call())
                if not snapshot.exists:
                    continue
                current = snapshot.to_dict()
                current_until = _datetime(current['leaseUntil'])
                if current['holder'] != holder and current_until > now:
                    return Lease(name, current['holder'], current_until, held=False)
                if self._update_unchanged(ref, snapshot, {'holder': holder, 'leaseUntil': lease_until}):
                    return Lease(name, holder, lease_until, held=True)
        raise StoreUnavailable(f'Firestore {self.project}/{self.database}: lease {name!r} kept changing under us')

    def release_lease(self, name: str, holder: str) -> bool:
        with self._unavailable_on_error():
            ref = self._doc('leases', name)
            for _ in range(CONDITIONAL_WRITE_ATTEMPTS):
                snapshot = ref.get(**self._call())
                if not snapshot.exists:
                    return True
                if snapshot.to_dict()['holder'] != holder:
                    return False
                option = self._client_or_connect().write_option(last_update_time=snapshot.update_time)
                try:
                    ref.delete(option=option, **self._call())
                    return True
                except (gexc.FailedPrecondition, gexc.NotFound):
                    continue
        raise StoreUnavailable(f'Firestore {self.project}/{self.database}: lease {name!r} kept changing under us')

    def get_targets(self, strategy: str) -> dict | None:
        with self._unavailable_on_error():
            snapshot = self._doc('targets', strategy).get(**self._call())
        if not snapshot.exists:
            return None
        fields = snapshot.to_dict()
        return {'targets': {key: float(weight) for key, weight in fields['targets'].items()},
                'updatedAt': iso(fields['updatedAt']), 'runId': fields['runId']}

    def put_targets(self, strategy: str, targets: dict[str, float], run_id: str, now: datetime) -> None:
        fields = {'strategy': strategy, 'targets': clean_targets(targets), 'updatedAt': utc(now), 'runId': run_id}
        with self._unavailable_on_error():
            self._doc('targets', strategy).set(fields, **self._call())

    def record_fill(self, fill: dict) -> bool:
        entry, change = fill_entry(fill), holding_change(fill)
        fields = {'execId': entry.exec_id, 'time': entry.time, 'strategies': list(entry.strategies),
                  'fill': entry.text}
        with self._unavailable_on_error():
            self._keep_totals()
            # one atomic commit: the create fails if the execId is recorded, and then nothing is added
            batch = self._client_or_connect().batch()
            batch.create(self._doc('fills', entry.exec_id), fields)
            if change is not None:
                batch.set(self._holding_doc(change.account, change.con_id), _increments(change), merge=True)
            try:
                batch.commit(**self._call())
            except gexc.AlreadyExists:
                return False
        return True

    def holdings(self, account: str) -> list[dict]:
        with self._unavailable_on_error():
            self._keep_totals()
            query = self._client_or_connect().collection(HOLDINGS).where(filter=FieldFilter('account', '==', account))
            rows = []
            for snapshot in query.stream(**self._call()):
                row = _holding_row(snapshot.to_dict())
                if is_empty(row):     # nothing held any more: deleted unless an increment came since
                    self._delete_unchanged(snapshot)
                else:
                    rows.append(row)
        return [holding_view(row) for row in sorted(rows, key=lambda row: row['conId'])]

    def _delete_unchanged(self, snapshot: firestore.DocumentSnapshot) -> None:
        option = self._client_or_connect().write_option(last_update_time=snapshot.update_time)
        try:
            snapshot.reference.delete(option=option, **self._call())
        except (gexc.FailedPrecondition, gexc.NotFound):
            pass

    def _keep_totals(self) -> None:
        """Sum the ledger into the holdings once, if older code wrote it without them.

        A transaction reading the marker: of two runs summing at once, one commits and the other is retried
        and finds the marker. A fill is added (with its increment) only after its writer has seen the marker
        committed, so the sum and the increments never count one fill twice.
        """
        if self._totals_kept:
            return
        client = self._client_or_connect()
        marker = client.document(*HOLDINGS_KEPT)
        if marker.get(**self._call()).exists:     # as it is, but once, on a ledger older code wrote
            self._totals_kept = True
            return

        @firestore.transactional
        def sum_once(transaction: firestore.Transaction) -> None:
            if marker.get(transaction=transaction, timeout=self.timeout).exists:
                return
            fills = [json.loads(snapshot.get('fill'))
                     for snapshot in client.collection('fills').stream(transaction=transaction, timeout=self.timeout)]
            for snapshot in client.collection(HOLDINGS).stream(transaction=transaction, timeout=self.timeout):
                transaction.delete(snapshot.reference)
            for row in sum_holdings(fills).values():
                transaction.set(self._holding_doc(row['account'], row['conId']), row)
            transaction.set(marker, {'summedAt': firestore.SERVER_TIMESTAMP, 'fills': len(fills)})

        try:
            sum_once(client.transaction(max_attempts=CONDITIONAL_WRITE_ATTEMPTS))
        except ValueError as exc:    # the transaction's own bookkeeping after a failed call (no rollback to do)
            raise StoreUnavailable(f'Firestore {self.project}/{self.database}: summing the ledger: {exc}') from exc
        self._totals_kept = True

    def _holding_doc(self, account: str, con_id: int) -> firestore.DocumentReference:
        return self._doc(HOLDINGS, json.dumps([account, con_id]))

    def fills(self, *, since: datetime | None = None, strategy: str | None = None) -> list[dict]:
        # One filter on the server keeps to single-field indexes (no composite index to deploy);
        # when both are given the time range is the server's and the strategy is checked here.
        with self._unavailable_on_error():
            query = self._client_or_connect().collection('fills')
            if since is not None:
                query = query.where(filter=FieldFilter('time', '>=', utc(since, 'since')))
            elif strategy is not None:
                query = query.where(filter=FieldFilter('strategies', 'array_contains', strategy))
            documents = [snapshot.to_dict() for snapshot in query.stream(**self._call())]
        if strategy is not None:
            documents = [fields for fields in documents if strategy in fields['strategies']]
        documents.sort(key=lambda fields: (fields['time'], fields['execId']))
        return [json.loads(fields['fill']) for fields in documents]

    def get_settings(self) -> dict:
        with self._unavailable_on_error():
            snapshot = self._client_or_connect().document(*SETTINGS_DOCUMENT).get(**self._call())
        return snapshot.to_dict() if snapshot.exists else {}

    def put_settings(self, values: dict) -> None:
        values = clean_settings(values)
        for name, value in values.items():
            to_json(value, f'setting {name}')
        if not values:
            return
        with self._unavailable_on_error():
            # Naming each top-level field replaces its value whole; merge=True would merge nested maps.
            self._client_or_connect().document(*SETTINGS_DOCUMENT).set(
                values, merge=[FieldPath(name) for name in values], **self._call())

    def record_run(self, run_id: str, intent: str | None, status: str, finished_at: datetime, document: str,
                   keep_until: datetime) -> None:
        fields = {'runId': run_id, 'intent': intent, 'status': status, 'finishedAt': utc(finished_at, 'finished_at'),
                  HISTORY_EXPIRY_FIELD: utc(keep_until, 'keep_until'), 'document': document}
        with self._unavailable_on_error():
            self._doc(HISTORY, run_id).set(fields, **self._call())

    def recent_runs(self, limit: int, now: datetime, intent: str | None = None) -> list[dict]:
        # Ordered by one field only, so no composite index is needed; the intent and the expiry (a TTL
        # policy deletes expired documents, up to a day late) are checked here over a bounded scan.
        scan = limit if intent is None else min(max(limit * HISTORY_SCAN_FACTOR, 200), HISTORY_SCAN_MAX)
        with self._unavailable_on_error():
            query = (self._client_or_connect().collection(HISTORY)
                     .order_by('finishedAt', direction=firestore.Query.DESCENDING).limit(scan))
            documents = [snapshot.to_dict() for snapshot in query.stream(**self._call())]
        kept = [fields for fields in documents if fields[HISTORY_EXPIRY_FIELD] > utc(now)
                and (intent is None or fields['intent'] == intent)]
        return [json.loads(fields['document']) for fields in kept[:limit]]

    def get_run(self, run_id: str) -> dict | None:
        with self._unavailable_on_error():
            snapshot = self._doc(HISTORY, run_id).get(**self._call())
        return json.loads(snapshot.to_dict()['document']) if snapshot.exists else None

    def get_cursor(self, name: str) -> dict | None:
        with self._unavailable_on_error():
            snapshot = self._doc(CURSORS, name).get(**self._call())
        return json.loads(snapshot.to_dict()['value']) if snapshot.exists else None

    def put_cursor(self, name: str, value: dict) -> None:
        fields = {'name': name, 'value': to_json(dict(value), f'cursor {name}')}
        with self._unavailable_on_error():
            self._doc(CURSORS, name).set(fields, **self._call())

    def start_delivery(self, result_id: str, sink: str, holder: str, lease_seconds: float,
                       now: datetime) -> DeliveryStart:
        now = utc(now)
        lease_until = lease_end(now, lease_seconds)
        with self._unavailable_on_error():
            ref = self._delivery_doc(result_id, sink)
            for _ in range(CONDITIONAL_WRITE_ATTEMPTS):
                snapshot = ref.get(**self._call())
                record = _delivery(snapshot.to_dict()) if snapshot.exists else None
                taken = delivery_taken(record, result_id, sink, holder, lease_until, now)
                if taken is None:
                    return DeliveryStart(False, record)
                if record is None:
                    try:
                        ref.create(_delivery_fields(taken), **self._call())
                    except gexc.AlreadyExists:
                        continue
                    return DeliveryStart(True, taken)
                if self._update_unchanged(ref, snapshot, _delivery_fields(taken)):
                    return DeliveryStart(True, taken)
        raise StoreUnavailable(f'Firestore {self.project}/{self.database}: delivery of {result_id!r} to {sink!r} '
                               'kept changing under us')

    def end_delivery(self, result_id: str, sink: str, holder: str, state: str, detail: str,
                     now: datetime) -> bool:
        now = utc(now)
        with self._unavailable_on_error():
            ref = self._delivery_doc(result_id, sink)
            for _ in range(CONDITIONAL_WRITE_ATTEMPTS):
                snapshot = ref.get(**self._call())
                ended = delivery_ended(_delivery(snapshot.to_dict()) if snapshot.exists else None, holder, state,
                                       detail, now)
                if ended is None:
                    return False
                if self._update_unchanged(ref, snapshot, _delivery_fields(ended)):
                    return True
        raise StoreUnavailable(f'Firestore {self.project}/{self.database}: delivery of {result_id!r} to {sink!r} '
                               'kept changing under us')

    def deliveries(self, result_id: str) -> list[Delivery]:
        with self._unavailable_on_error():
            query = (self._client_or_connect().collection(DELIVERIES_COLLECTION)
                     .where(filter=FieldFilter('resultId', '==', result_id)))
            records = [_delivery(snapshot.to_dict()) for snapshot in query.stream(**self._call())]
        return sorted(records, key=lambda record: record.sink)

    def _delivery_doc(self, result_id: str, sink: str) -> firestore.DocumentReference:
        return self._doc(DELIVERIES_COLLECTION, json.dumps([result_id, sink]))

    def get_plan(self, plan_id: str) -> dict | None:
        with self._unavailable_on_error():
            snapshot = self._doc(PLANS, plan_id).get(**self._call())
        return json.loads(snapshot.to_dict()['plan']) if snapshot.exists else None

    def put_plan(self, plan_id: str, plan: dict) -> None:
        fields = {'planId': plan_id, 'plan': to_json(dict(plan), f'plan {plan_id}'),
                  HISTORY_EXPIRY_FIELD: plan_keep_until(plan, datetime.now(timezone.utc))}
        with self._unavailable_on_error():
            self._doc(PLANS, plan_id).set(fields, **self._call())

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _call(self) -> dict[str, Any]:
        return {'retry': self._retry, 'timeout': self.timeout}

    def _doc(self, collection: str, key: str) -> firestore.DocumentReference:
        return self._client_or_connect().collection(collection).document(hashlib.sha256(key.encode()).hexdigest())

    def _update_unchanged(self, ref: firestore.DocumentReference, snapshot: firestore.DocumentSnapshot,
                          fields: dict[str, Any]) -> bool:
        """Update only if the document is still as in `snapshot`; False when someone changed it meanwhile."""
        option = self._client_or_connect().write_option(last_update_time=snapshot.update_time)
        try:
            ref.update(fields, option=option, **self._call())
        except (gexc.FailedPrecondition, gexc.NotFound):
            return False
        return True

    def _client_or_connect(self) -> firestore.Client:
        with self._lock:
            if self._client is None:
                self._client = self._new_client()
            return self._client

    def _new_client(self) -> firestore.Client:
        if self.emulator_host is None:
            return firestore.Client(project=self.project, database=self.database)
        client = firestore.Client(project=self.project, database=self.database, credentials=AnonymousCredentials())
        # The client reads FIRESTORE_EMULATOR_HOST from os.environ only; the host given to us wins.
        client._emulator_host = self.emulator_host
        return client

    @contextmanager
    def _unavailable_on_error(self) -> Iterator[None]:
        try:
            yield
        except (gexc.GoogleAPIError, auth_exceptions.GoogleAuthError) as exc:
            raise StoreUnavailable(f'Firestore {self.project}/{self.database}: {exc}') from exc


def _increments(change: HoldingChange) -> dict[str, Any]:
    """The merge that adds `change` to its holding document (created at zero if absent)."""
    fields: dict[str, Any] = {'account': change.account, 'conId': change.con_id, 'contract': change.contract,
                              'position': firestore.Increment(change.position)}
    if change.strategies:     # an empty map given to a merge would replace the stored one
        fields['strategies'] = {name: firestore.Increment(units) for name, units in change.strategies.items()}
    return fields


def _delivery_fields(record: Delivery) -> dict[str, Any]:
    return {'resultId': record.result_id, 'sink': record.sink, 'state': record.state, 'attempts': record.attempts,
            'holder': record.holder, 'leaseUntil': record.lease_until, 'detail': record.detail,
            'updatedAt': record.updated_at, HISTORY_EXPIRY_FIELD: record.updated_at + timedelta(days=DELIVERY_KEEP_DAYS)}


def _delivery(fields: dict[str, Any]) -> Delivery:
    lease_until = fields.get('leaseUntil')
    return Delivery(fields['resultId'], fields['sink'], fields['state'], fields['attempts'], fields.get('holder'),
                    None if lease_until is None else _datetime(lease_until), fields.get('detail'),
                    _datetime(fields['updatedAt']))


def _holding_row(fields: dict[str, Any]) -> dict:
    return {'account': fields['account'], 'conId': fields['conId'], 'contract': fields.get('contract') or {},
            'position': fields.get('position', 0), 'strategies': fields.get('strategies') or {}}


def _finished_with(fields: dict[str, Any], run_id: str, result_text: str) -> bool:
    """Whether this run already finished the key with this very result (a repeated finish)."""
    return fields.get('runId') == run_id and fields.get('status') == 'finished' and fields.get('result') == result_text


def _claim_fields(record: ClaimRecord) -> dict[str, Any]:
    return {'key': record.key, 'runId': record.run_id, 'status': record.status, 'leaseUntil': record.lease_until,
            'attempt': record.attempt, 'createdAt': record.created_at,
            'result': None if record.result is None else to_json(record.result, 'result')}


def _claim_record(fields: dict[str, Any]) -> ClaimRecord:
    return ClaimRecord(fields['key'], fields['runId'], fields['status'], _datetime(fields['leaseUntil']),
                       fields['attempt'], _datetime(fields['createdAt']),
                       None if fields['result'] is None else json.loads(fields['result']))


def _datetime(timestamp: datetime) -> datetime:
    """A plain UTC datetime from Firestore's DatetimeWithNanoseconds."""
    moment = timestamp.astimezone(timezone.utc)
    return datetime(moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second,
                    moment.microsecond, tzinfo=timezone.utc)
