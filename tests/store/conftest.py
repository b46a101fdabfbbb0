"""Fixtures for the store suite: a store per backend with its own data (the emulator is in tests/conftest.py)."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from lib.store import Store
from lib.store.firestore import FirestoreStore
from lib.store.sqlite import SqliteStore

StoreFactory = Callable[[], Store]


@pytest.fixture(params=['sqlite', 'firestore'])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Makes independent store instances (own connection or client) on this test's own data."""
    if request.param == 'sqlite':
        path = tmp_path / 'state.sqlite3'

        def make() -> Store:
            return SqliteStore(path, timeout=10)
    else:
        host = request.getfixturevalue('firestore_emulator').host
        project = f'test-{uuid.uuid4().hex[:12]}'   # a project of its own: no other test sees this data

        def make() -> Store:
            return FirestoreStore(project, emulator_host=host, timeout=10)

    made: list[Store] = []

    def tracked() -> Store:
        made.append(make())
        return made[-1]

    try:
        yield tracked
    finally:
        for store in made:
            store.close()


@pytest.fixture
def store(new_store: StoreFactory) -> Store:
    """One store of the backend under test."""
    return new_store()
