"""The SQLite store: one file, WAL mode, every write in a BEGIN IMMEDIATE transaction.

One connection per store guarded by a lock serialises this process's threads; BEGIN IMMEDIATE takes
the database's write lock before reading, so processes sharing the file are serialised too and a
claim is never decided on a stale read.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

from lib.store import ClaimAnswer, ClaimRecord, Delivery, DeliveryStart, Lease, StoreUnavailable
from lib.store.common import (
    DELIVERY_KEEP_DAYS, add_change, clean_settings, clean_targets, delivery_ended, delivery_taken, existing_outcome,
    fill_entry, holding_change, holding_view, is_empty, lease_end, sum_holdings, to_json,
)
from lib.times import iso, utc

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY, run_id TEXT NOT NULL, status TEXT NOT NULL, lease_until TEXT NOT NULL,
    attempt INTEGER NOT NULL, created_at TEXT NOT NULL, result TEXT
);
CREATE TABLE IF NOT EXISTS targets (
    strategy TEXT PRIMARY KEY, targets TEXT NOT NULL, updated_at TEXT NOT NULL, run_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS fills (
    exec_id TEXT PRIMARY KEY, time_us INTEGER NOT NULL, strategies TEXT NOT NULL, fill TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS fills_by_time ON fills (time_us);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, lease_until TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS history (
    run_id TEXT PRIMARY KEY, intent TEXT, status TEXT NOT NULL, finished_us INTEGER NOT NULL,
    keep_until_us INTEGER NOT NULL, document TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_time ON history (finished_us);
CREATE INDEX IF NOT EXISTS history_by_expiry ON history (keep_until_us);
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS plans (plan_id TEXT PRIMARY KEY, plan TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS holdings (
    account TEXT NOT NULL, con_id INTEGER NOT NULL, holding TEXT NOT NULL, PRIMARY KEY (account, con_id)
);
CREATE TABLE IF NOT EXISTS ledger_state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    result_id TEXT NOT NULL, sink TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL, holder TEXT,
    lease_until TEXT, detail TEXT, updated_at TEXT NOT NULL, PRIMARY KEY (result_id, sink)
);
CREATE INDEX IF NOT EXISTS deliveries_by_time ON deliveries (updated_at);
"""
# the ledger_state row saying the holdings table holds the ledger's sum (absent in a file of older code)
_TOTALS_KEPT = "holdings-kept"


class SqliteStore:
    """The Store on a SQLite file; the file and its folder are created on first use."""

    def __init__(self, path: str | Path, *, timeout: float = 10.0):
        self.path = Path(path)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._totals_kept = False     # seen the holdings kept (it never stops being so)

    def claim(self, key: str, run_id: str, lease_seconds: float, now: datetime) -> ClaimAnswer:
        now = utc(now)
        lease_until = lease_end(now, lease_seconds)
        with self._transaction() as db:
            inserted = db.execute(
                'INSERT INTO runs (key, run_id, status, lease_until, attempt, created_at) '
                "VALUES (?, ?, 'running', ?, 1, ?) ON CONFLICT (key) DO NOTHING",
                (key, run_id, lease_until.isoformat(), now.isoformat())).rowcount
            if inserted:
                return ClaimAnswer('new', ClaimRecord(key, run_id, 'running', lease_until, 1, now, None))
            record = _read_claim(db, key)
            outcome = existing_outcome(record, now, run_id)
            if outcome != 'expired':
                return ClaimAnswer(outcome, record)
            db.execute('UPDATE runs SET run_id = ?, lease_until = ?, attempt = attempt + 1 WHERE key = ?',
                       (run_id, lease_until.isoformat(), key))
            return ClaimAnswer('taken_over', replace(record, run_id=run_id, lease_until=lease_until,
                                                     attempt=record.attempt + 1))

    def finish(self, key: str, run_id: str, result: dict, now: datetime) -> bool:
        text = to_json(result, 'result')
        now = utc(now)
        with self._transaction() as db:
            if db.execute("UPDATE runs SET status = 'finished', result = ?, lease_until = ? "
                          "WHERE key = ? AND run_id = ? AND status = 'running'",
                          (text, now.isoformat(), key, run_id)).rowcount == 1:
                return True
            # A repeated finish of this run with the same result still counts as done.
            return db.execute("SELECT 1 FROM runs WHERE key = ? AND run_id = ? AND status = 'finished' AND result = ?",
                              (key, run_id, text)).fetchone() is not None

    def get_claim(self, key: str) -> ClaimRecord | None:
        with self._reading() as db:
            return _read_claim(db, key)

    def stuck_claims(self, lease_ended_before: datetime) -> list[ClaimRecord]:
        cutoff = utc(lease_ended_before, 'lease_ended_before')
        with self._reading() as db:
            keys = [row[0] for row in db.execute("SELECT key FROM runs WHERE status = 'running'")]
            records = [_read_claim(db, key) for key in keys]
        return sorted((r for r in records if r.lease_until < cutoff), key=lambda r: (r.lease_until, r.key))

    def take_lease(self, name: str, holder: str, lease_seconds: float, now: datetime) -> Lease:
        now = utc(now)
        lease_until = lease_end(now, lease_seconds)
        with self._transaction() as db:
            row = db.execute('SELECT holder, lease_until FROM leases WHERE name = ?', (name,)).fetchone()
            if row is not None and row[0] != holder and datetime.fromisoformat(row[1]) > now:
                return Lease(name, row[0], datetime.fromisoformat(row[1]), held=False)
            db.execute('INSERT INTO leases (name, holder, lease_until) VALUES (?, ?, ?) ON CONFLICT (name) '
                       'DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until',
                       (name, holder, lease_until.isoformat()))
            return Lease(name, holder, lease_until, held=True)

    def release_lease(self, name: str, holder: str) -> bool:
        with self._transaction() as db:
            db.execute('DELETE FROM leases WHERE name = ? AND holder = ?', (name, holder))
            return db.execute('SELECT 1 FROM leases WHERE name = ?', (name,)).fetchone() is None

    def get_targets(self, strategy: str) -> dict | None:
        with self._reading() as db:
            row = db.execute('SELECT targets, updated_at, run_id FROM targets WHERE strategy = ?',
                             (strategy,)).fetchone()
        if row is None:
            return None
        return {'targets': _loads(row[0]), 'updatedAt': iso(datetime.fromisoformat(row[1])), 'runId': row[2]}

    def put_targets(self, strategy: str, targets: dict[str, float], run_id: str, now: datetime) -> None:
        text = to_json(clean_targets(targets), 'targets')
        now = utc(now)
        with self._transaction() as db:
            db.execute('INSERT OR REPLACE INTO targets (strategy, targets, updated_at, run_id) VALUES (?, ?, ?, ?)',
                       (strategy, text, now.isoformat(), run_id))

    def record_fill(self, fill: dict) -> bool:
        entry, change = fill_entry(fill), holding_change(fill)
        with self._transaction() as db:
            self._keep_totals(db)
            new = db.execute(
                'INSERT INTO fills (exec_id, time_us, strategies, fill) VALUES (?, ?, ?, ?) '
                'ON CONFLICT (exec_id) DO NOTHING',
                (entry.exec_id, _micros(entry.time), to_json(list(entry.strategies), 'strategies'),
                 entry.text)).rowcount == 1
            if new and change is not None:
                row = db.execute('SELECT holding FROM holdings WHERE account = ? AND con_id = ?',
                                 (change.account, change.con_id)).fetchone()
                _put_holding(db, add_change(None if row is None else _loads(row[0]), change))
        self._totals_kept = True
        return new

    def holdings(self, account: str) -> list[dict]:
        if not self._totals_kept:
            with self._transaction() as db:
                self._keep_totals(db)
            self._totals_kept = True
        with self._reading() as db:
            rows = db.execute('SELECT holding FROM holdings WHERE account = ? ORDER BY con_id', (account,)).fetchall()
        return [holding_view(_loads(row[0])) for row in rows]

    def _keep_totals(self, db: sqlite3.Connection) -> None:
        """In a write transaction: sum the ledger into the holdings once, if older code wrote it without them.

        BEGIN IMMEDIATE serialises this with every other writer of the file: one run sums, the others see it done.
        """
        if self._totals_kept or db.execute('SELECT 1 FROM ledger_state WHERE name = ?', (_TOTALS_KEPT,)).fetchone():
            return
        db.execute('DELETE FROM holdings')
        for row in sum_holdings([_loads(text) for (text,) in db.execute('SELECT fill FROM fills')]).values():
            _put_holding(db, row)
        db.execute('INSERT INTO ledger_state (name, value) VALUES (?, ?)',
                   (_TOTALS_KEPT, to_json({'summedAt': iso(datetime.now(timezone.utc))}, 'ledger state')))

    def fills(self, *, since: datetime | None = None, strategy: str | None = None) -> list[dict]:
        since_us = None if since is None else _micros(utc(since, 'since'))
        with self._reading() as db:
            rows = db.execute(
                'SELECT fill FROM fills WHERE (?1 IS NULL OR time_us >= ?1) AND (?2 IS NULL OR EXISTS '
                '(SELECT 1 FROM json_each(fills.strategies) WHERE json_each.value = ?2)) ORDER BY time_us, exec_id',
                (since_us, strategy)).fetchall()
        return [_loads(row[0]) for row in rows]

    def get_settings(self) -> dict:
        with self._reading() as db:
            return {name: _loads(value) for name, value in db.execute('SELECT name, value FROM settings')}

    def put_settings(self, values: dict) -> None:
        texts = {name: to_json(value, f'setting {name}') for name, value in clean_settings(values).items()}
        with self._transaction() as db:
            db.executemany('INSERT INTO settings (name, value) VALUES (?, ?) '
                           'ON CONFLICT (name) DO UPDATE SET value = excluded.value', texts.items())

    def record_run(self, run_id: str, intent: str | None, status: str, finished_at: datetime, document: str,
                   keep_until: datetime) -> None:
        finished_us, keep_us = _micros(utc(finished_at, 'finished_at')), _micros(utc(keep_until, 'keep_until'))
        with self._transaction() as db:
            db.execute('DELETE FROM history WHERE keep_until_us <= ?', (finished_us,))   # retention
            db.execute('INSERT OR REPLACE INTO history (run_id, intent, status, finished_us, keep_until_us, document) '
                       'VALUES (?, ?, ?, ?, ?, ?)', (run_id, intent, status, finished_us, keep_us, document))

    def recent_runs(self, limit: int, now: datetime, intent: str | None = None) -> list[dict]:
        with self._reading() as db:
            rows = db.execute('SELECT document FROM history WHERE keep_until_us > ? AND (?2 IS NULL OR intent = ?2) '
                              'ORDER BY finished_us DESC, run_id LIMIT ?3',
                              (_micros(utc(now)), intent, limit)).fetchall()
        return [_loads(row[0]) for row in rows]

    def get_run(self, run_id: str) -> dict | None:
        with self._reading() as db:
            row = db.execute('SELECT document FROM history WHERE run_id = ?', (run_id,)).fetchone()
        return None if row is None else _loads(row[0])

    def get_cursor(self, name: str) -> dict | None:
        with self._reading() as db:
            row = db.execute('SELECT value FROM cursors WHERE name = ?', (name,)).fetchone()
        return None if row is None else _loads(row[0])

    def put_cursor(self, name: str, value: dict) -> None:
        text = to_json(dict(value), f'cursor {name}')
        with self._transaction() as db:
            db.execute('INSERT INTO cursors (name, value) VALUES (?, ?) '
                       'ON CONFLICT (name) DO UPDATE SET value = excluded.value', (name, text))

    def start_delivery(self, result_id: str, sink: str, holder: str, lease_seconds: float,
                       now: datetime) -> DeliveryStart:
        now = utc(now)
        lease_until = lease_end(now, lease_seconds)
        with self._transaction() as db:
            record = _read_delivery(db, result_id, sink)
            taken = delivery_taken(record, result_id, sink, holder, lease_until, now)
            if taken is None:
                return DeliveryStart(False, record)
            if record is None:   # retention: a new record clears those no redelivery can need any more
                db.execute('DELETE FROM deliveries WHERE updated_at < ?',
                           ((now - timedelta(days=DELIVERY_KEEP_DAYS)).isoformat(),))
            _put_delivery(db, taken)
            return DeliveryStart(True, taken)

    def end_delivery(self, result_id: str, sink: str, holder: str, state: str, detail: str,
                     now: datetime) -> bool:
        now = utc(now)
        with self._transaction() as db:
            ended = delivery_ended(_read_delivery(db, result_id, sink), holder, state, detail, now)
            if ended is not None:
                _put_delivery(db, ended)
            return ended is not None

    def deliveries(self, result_id: str) -> list[Delivery]:
        with self._reading() as db:
            sinks = [row[0] for row in db.execute('SELECT sink FROM deliveries WHERE result_id = ? ORDER BY sink',
                                                  (result_id,))]
            return [_read_delivery(db, result_id, sink) for sink in sinks]

    def get_plan(self, plan_id: str) -> dict | None:
        with self._reading() as db:
            row = db.execute('SELECT plan FROM plans WHERE plan_id = ?', (plan_id,)).fetchone()
        return None if row is None else _loads(row[0])

    def put_plan(self, plan_id: str, plan: dict) -> None:
        text = to_json(dict(plan), f'plan {plan_id}')
        with self._transaction() as db:
            db.execute('INSERT INTO plans (plan_id, plan) VALUES (?, ?) '
                       'ON CONFLICT (plan_id) DO UPDATE SET plan = excluded.plan', (plan_id, text))

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._unavailable_on_error():
            db = self._connect()
            db.execute('BEGIN IMMEDIATE')
            try:
                yield db
            except BaseException:
                db.rollback()
                raise
            db.execute('COMMIT')

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._unavailable_on_error():
            yield self._connect()

    @contextmanager
    def _unavailable_on_error(self) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f'SQLite store {self.path}: {exc}') from exc

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are explicit BEGIN IMMEDIATE ... COMMIT.
            db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
            try:
                self._prepare(db)
            except sqlite3.Error:
                db.close()
                raise
            self._connection = db
        return self._connection

    def _prepare(self, db: sqlite3.Connection) -> None:
        """Switch the file to WAL and create the tables, waiting (up to the timeout) for other writers.

        The switch to WAL takes its exclusive lock without SQLite's busy handler, so while another
        connection holds a write lock it fails at once with "database is locked" instead of waiting.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                db.execute('PRAGMA journal_mode = WAL')
                db.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)


def _read_claim(db: sqlite3.Connection, key: str) -> ClaimRecord | None:
    row = db.execute('SELECT run_id, status, lease_until, attempt, created_at, result FROM runs WHERE key = ?',
                     (key,)).fetchone()
    if row is None:
        return None
    run_id, status, lease_until, attempt, created_at, result = row
    return ClaimRecord(key, run_id, status, datetime.fromisoformat(lease_until), attempt,
                       datetime.fromisoformat(created_at), None if result is None else _loads(result))


def _read_delivery(db: sqlite3.Connection, result_id: str, sink: str) -> Delivery | None:
    row = db.execute('SELECT state, attempts, holder, lease_until, detail, updated_at FROM deliveries '
                     'WHERE result_id = ? AND sink = ?', (result_id, sink)).fetchone()
    if row is None:
        return None
    state, attempts, holder, lease_until, detail, updated_at = row
    return Delivery(result_id, sink, state, attempts, holder,
                    None if lease_until is None else datetime.fromisoformat(lease_until), detail,
                    datetime.fromisoformat(updated_at))


def _put_delivery(db: sqlite3.Connection, record: Delivery) -> None:
    db.execute('INSERT OR REPLACE INTO deliveries (result_id, sink, state, attempts, holder, lease_until, detail, '
               'updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
               (record.result_id, record.sink, record.state, record.attempts, record.holder,
                None if record.lease_until is None else record.lease_until.isoformat(), record.detail,
                record.updated_at.isoformat()))


def _put_holding(db: sqlite3.Connection, row: dict) -> None:
    if is_empty(row):
        db.execute('DELETE FROM holdings WHERE account = ? AND con_id = ?', (row['account'], row['conId']))
    else:
        db.execute('INSERT OR REPLACE INTO holdings (account, con_id, holding) VALUES (?, ?, ?)',
                   (row['account'], row['conId'], to_json(row, 'holding')))


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    primary_code = getattr(exc, 'sqlite_errorcode', sqlite3.SQLITE_BUSY) & 0xFF   # extended codes keep it in the low byte
    return primary_code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _loads(text: str) -> Any:
    return json.loads(text)
