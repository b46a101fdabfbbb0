"""Fixtures for the trading tests: a rig (simulated gateway + real store + config file + handler)."""
from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

import pytest

from lib.config import IdempotencySettings, Settings, StoreSettings, TradingConfigSettings
from lib.store import open_store
from simulator import Simulator
from tests.trading.support import ACCOUNT, BASE_CONFIG, OPEN_TIME, Rig

MakeRig = Callable[..., Rig]


@pytest.fixture
def make_rig(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MakeRig]:
    """Builds rigs: `make_rig(config=..., time=..., backend='sqlite'|'firestore', deadline=10, lease=None)`.

    With `accounts=[...]` (more than one) the rig's deployment acts on the first (IB_ACCOUNT).
    """
    made: list[Rig] = []

    def make(config: str = BASE_CONFIG, time: datetime = OPEN_TIME, backend: str = 'sqlite',
             deadline: float = 10.0, lease: float | None = None, **sim_options) -> Rig:
        config_path = tmp_path / f'trading-{len(made)}.toml'
        config_path.write_text(config)
        if backend == 'sqlite':
            store = StoreSettings(sqlite_path=str(tmp_path / f'state-{len(made)}.sqlite3'), timeout_seconds=5.0)
        else:
            emulator = request.getfixturevalue('firestore_emulator')
            store = StoreSettings(backend='firestore', project=f'test-{uuid.uuid4().hex[:12]}',
                                  emulator_host=emulator.host, timeout_seconds=5.0)
        accounts = sim_options.pop('accounts', [ACCOUNT])
        sim = Simulator(accounts=accounts, time=time, **sim_options)
        sim.start()
        settings = Settings(gateway_host=sim.host, gateway_port=sim.port, connect_timeout=2.0,
                            deadline_seconds=deadline, account=accounts[0] if len(accounts) > 1 else None,
                            store=store, idempotency=IdempotencySettings(lease_seconds=lease),
                            trading_config=TradingConfigSettings(path=str(config_path)))
        rig = Rig(sim, open_store(store), settings)
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
