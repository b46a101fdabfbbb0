"""open_store: the backend from the environment, one instance per configuration, nothing until first use."""
from __future__ import annotations

import sqlite3
import threading
import uuid
from datetime import datetime, timezone

import pytest

from lib.config import ConfigError, StoreSettings
from lib.store import StoreUnavailable, open_store
from lib.store.firestore import FirestoreStore
from lib.store.sqlite import SqliteStore

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)


def test_sqlite_is_the_default_and_creates_its_file_on_first_use(tmp_path):
    path = tmp_path / 'nested' / 'state.sqlite3'
    store = open_store(StoreSettings.from_env({'SQLITE_PATH': str(path)}))
    assert not path.exists()

    store.put_settings({'tradingEnabled': False})

    assert path.exists()
    store.close()
    reopened = SqliteStore(path)      # as after a process restart
    assert reopened.get_settings() == {'tradingEnabled': False}
    reopened.close()


def test_opening_waits_for_another_connections_write_lock_instead_of_failing(tmp_path):
    """The switch to WAL bypasses SQLite's busy handler; a store opened while another opener writes must wait."""
    path = tmp_path / 'state.sqlite3'
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)   # rollback journal, as on a fresh file
    other.execute('CREATE TABLE opener (n)')
    other.execute('BEGIN IMMEDIATE')
    other.execute('INSERT INTO opener VALUES (1)')
    releaser = threading.Timer(0.3, lambda: other.execute('COMMIT'))
    releaser.start()
    store = SqliteStore(path, timeout=5)
    try:
        store.put_settings({'tradingEnabled': False})
        assert store.get_settings() == {'tradingEnabled': False}
    finally:
        releaser.join()
        store.close()
        other.close()


def test_opening_still_gives_up_at_its_timeout(tmp_path):
    path = tmp_path / 'state.sqlite3'
    other = sqlite3.connect(path, isolation_level=None)
    other.execute('CREATE TABLE opener (n)')
    other.execute('BEGIN IMMEDIATE')
    other.execute('INSERT INTO opener VALUES (1)')
    store = SqliteStore(path, timeout=0.3)
    try:
        with pytest.raises(StoreUnavailable, match='database is locked'):
            store.get_settings()
    finally:
        other.execute('ROLLBACK')
        other.close()
        store.close()


def test_one_instance_per_configuration_even_when_asked_concurrently(tmp_path):
    env = {'STORE_BACKEND': 'sqlite', 'SQLITE_PATH': str(tmp_path / 'a.sqlite3')}
    stores = [None] * 16
    barrier = threading.Barrier(16)

    def ask(i: int) -> None:
        barrier.wait()
        stores[i] = open_store(StoreSettings.from_env(env))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert all(store is stores[0] for store in stores)
    assert open_store(StoreSettings.from_env({**env, 'SQLITE_PATH': str(tmp_path / 'b.sqlite3')})) is not stores[0]


@pytest.mark.parametrize('env, named', [
    ({'STORE_BACKEND': 'redis'}, 'STORE_BACKEND'),
    ({'STORE_BACKEND': 'firestore'}, 'GOOGLE_CLOUD_PROJECT'),
    ({'STORE_TIMEOUT_SECONDS': '0'}, 'STORE_TIMEOUT_SECONDS'),
    ({'STORE_TIMEOUT_SECONDS': 'soon'}, 'STORE_TIMEOUT_SECONDS'),
])
def test_bad_store_settings_are_named(env, named):
    with pytest.raises(ConfigError, match=named):
        open_store(StoreSettings.from_env(env))


def test_firestore_backend_uses_the_configured_project_and_database(firestore_emulator):
    project = f'test-{uuid.uuid4().hex[:12]}'
    env = {'STORE_BACKEND': 'Firestore', 'GOOGLE_CLOUD_PROJECT': project,
           'FIRESTORE_EMULATOR_HOST': firestore_emulator.host}
    paper = open_store(StoreSettings.from_env({**env, 'FIRESTORE_DATABASE': 'paper'}))
    live = open_store(StoreSettings.from_env({**env, 'FIRESTORE_DATABASE': 'live'}))

    paper.put_settings({'tradingEnabled': True})
    paper.put_targets('dummy', {'MNQ:20261218': 1.0}, 'run-1', NOW)

    assert live.get_settings() == {}
    assert live.get_targets('dummy') is None
    direct = FirestoreStore(project, database='paper', emulator_host=firestore_emulator.host)
    assert direct.get_settings() == {'tradingEnabled': True}
    assert direct.get_targets('dummy')['targets'] == {'MNQ:20261218': 1.0}
    for store in (paper, live, direct):
        store.close()
