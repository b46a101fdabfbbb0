"""Reading and writing a store's data past the Store (for probes): as older code wrote it, or to look at it raw."""
from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import datetime, timedelta, timezone

from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore

from lib.store import Store
from lib.store.common import fill_entry


def _client(store: Store) -> firestore.Client:
    client = firestore.Client(project=store.project, credentials=AnonymousCredentials())
    client._emulator_host = store.emulator_host
    return client


def record_as_older_code(store: Store, fills: list[dict]) -> None:
    """Write fills the way the store did before it kept holdings: the ledger alone."""
    entries = [fill_entry(fill) for fill in fills]
    if hasattr(store, 'path'):
        with sqlite3.connect(store.path) as db:
            db.execute('CREATE TABLE IF NOT EXISTS fills (exec_id TEXT PRIMARY KEY, time_us INTEGER NOT NULL, '
                       'strategies TEXT NOT NULL, fill TEXT NOT NULL)')
            db.executemany('INSERT INTO fills VALUES (?, ?, ?, ?)', [
                (e.exec_id, (e.time - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1),
                 json.dumps(list(e.strategies)), e.text) for e in entries])
        db.close()
    else:
        client = _client(store)
        batch = client.batch()
        for e in entries:
            batch.create(client.collection('fills').document(hashlib.sha256(e.exec_id.encode()).hexdigest()),
                         {'execId': e.exec_id, 'time': e.time, 'strategies': list(e.strategies), 'fill': e.text})
        batch.commit()
        client.close()


def stored_holding_rows(store: Store) -> int:
    """How many holdings the backend stores (every account's), read past the Store."""
    if hasattr(store, 'path'):
        with sqlite3.connect(store.path) as db:
            count = db.execute('SELECT COUNT(*) FROM holdings').fetchone()[0]
        db.close()
        return count
    client = _client(store)
    count = len(list(client.collection('holdings').stream()))
    client.close()
    return count


def empty_the_ledger(store: Store) -> None:
    """Delete every fill past the Store (a probe: holdings must not come from the ledger)."""
    if hasattr(store, 'path'):
        with sqlite3.connect(store.path) as db:
            db.execute('DELETE FROM fills')
        db.close()
    else:
        client = _client(store)
        for snapshot in client.collection('fills').stream():
            snapshot.reference.delete()
        client.close()
    assert store.fills() == []


def firestore_plan_expiry(store: Store, plan_id: str) -> datetime:
    """The expireAt the Firestore store wrote on a plan's document (what the deploy's TTL policy deletes by)."""
    snapshot = _client(store).collection('plans').document(hashlib.sha256(plan_id.encode()).hexdigest()).get()
    return snapshot.to_dict()['expireAt']
