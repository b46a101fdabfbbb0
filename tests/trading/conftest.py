"""Fixtures for the trading tests: a rig (simulated gateway + real store + config file + handler)."""
from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

import pytest

from lib.config import Settings, StoreSettings
from lib.store import open_store
from simulator import Simulator
from tests.trading.support import ACCOUNT, BASE_CONFIG, OPEN_TIME, Rig

MakeRig = Callable[..., Rig]


@pytest.fixture
def make_rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[MakeRig]:
    """Builds rigs: `make_rig(config=..., time=..., backend='sqlite'|'firestore', deadline=10, lease=None)`.

    With `accounts=[...]` (more than one) the rig's deployment acts on the first (IB_ACCOUNT).
    """
    made: list[Rig] = []

    def make(config: str = BASE_CONFIG, time: datetime = OPEN_TIME, backend: str = 'sqlite',
             deadline: float = 10.0, lease: float | None = None, **sim_options) -> Rig:
        config_path = tmp_path / f'trading-{len(made)}.toml'
        config_path.write_text(config)
        monkeypatch.setenv('TRADING_CONFIG_PATH', str(config_path))
        monkeypatch.setenv('STORE_TIMEOUT_SECONDS', '5')
        if lease is not None:
            monkeypatch.setenv('IDEMPOTENCY_LEASE_SECONDS', str(lease))
        if backend == 'sqlite':
            monkeypatch.setenv('STORE_BACKEND', 'sqlite')
            monkeypatch.setenv('SQLITE_PATH', str(tmp_path / f'state-{len(made)}.sqlite3'))
        else:
            request.getfixturevalue('firestore_emulator')   # sets FIRESTORE_EMULATOR_HOST
            monkeypatch.setenv('STORE_BACKEND', 'firestore')
            monkeypatch.setenv('GOOGLE_CLOUD_PROJECT', f'test-{uuid.uuid4().hex[:12]}')
        accounts = sim_options.pop('accounts', [ACCOUNT])
        sim = Simulator(accounts=accounts, time=time, **sim_options)
        sim.start()
        settings = Settings(gateway_host=sim.host, gateway_port=sim.port, connect_timeout=2.0,
                            deadline_seconds=deadline, account=accounts[0] if len(accounts) > 1 else None)
        rig = Rig(sim, open_store(StoreSettings.from_env()), settings)
        made.append(rig)
        return rig

    try:
        yield make
    finally:
        for rig in made:
            rig.sim.stop()
            rig.store.close()


@pytest.fixture
def rig(make_rig: MakeRig) -> Rig:
    """A rig with the base config (dummy on SPY, half the NLV), SQLite store, market open."""
    return make_rig()
