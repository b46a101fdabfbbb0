"""Fixtures of the reliability suite: a fresh simulated gateway, a fresh state store, JSON logs on stdout."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from lib import log
from lib.config import StoreSettings
from lib.store import open_store
from simulator import Simulator
from tests.reliability.harness import MARKET_OPEN


@pytest.fixture(autouse=True)
def fresh_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test gets its own SQLite state store (claims, targets, fills), closed afterwards."""
    path = tmp_path / 'state.sqlite3'
    monkeypatch.setenv('STORE_BACKEND', 'sqlite')
    monkeypatch.setenv('SQLITE_PATH', str(path))
    yield path
    open_store(StoreSettings.from_env()).close()


@pytest.fixture(autouse=True)
def trading_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """The repository's config/trading.toml, with the FX pair and a manual stock added to the allowlist.

    The shipped allowlist (SPY, VIXY, MNQ) would refuse cash-balancer's EUR.USD order and close-all's
    sale of a manual AAPL position.
    """
    monkeypatch.delenv('TRADING_CONFIG_PATH', raising=False)
    monkeypatch.setenv('SYMBOL_ALLOWLIST', 'SPY,VIXY,MNQ,AAPL,EUR.USD')


@pytest.fixture(autouse=True)
def json_logs_on_stdout() -> None:
    """Log lines as JSON on whatever sys.stdout is at the time (capsys), as in the cloud."""
    log.configure(json=True)


@pytest.fixture
def gateway() -> Iterator[Simulator]:
    """A simulated gateway at a time the US market is open, with seeded prices."""
    with Simulator(time=MARKET_OPEN, seed=7) as sim:
        yield sim
