"""Durations in the environment have one parser (lib.config.env_seconds): every such variable refuses the
same values with the same message, naming itself."""
from __future__ import annotations

import pytest

from lib.config import ConfigError, Settings
from trading.idempotency import IdempotencySettings
from lib.store import open_store

READERS = {
    'INTENT_DEADLINE_SECONDS': lambda env: Settings.from_env(env),
    'IB_CONNECT_TIMEOUT': lambda env: Settings.from_env(env),
    'PUBLISH_TIMEOUT_SECONDS': lambda env: Settings.from_env(env),
    'IDEMPOTENCY_WINDOW_SECONDS': lambda env: IdempotencySettings.from_env(60.0, env),
    'ORDER_MAX_AGE_SECONDS': lambda env: IdempotencySettings.from_env(60.0, env),
    'ACCOUNT_LEASE_WAIT_SECONDS': lambda env: IdempotencySettings.from_env(60.0, env),
    'STORE_TIMEOUT_SECONDS': lambda env: open_store(env),
}


@pytest.mark.parametrize('name', sorted(READERS))
@pytest.mark.parametrize('raw', ['0', '-5', 'nan', 'inf', 'soon'])
def test_every_duration_variable_refuses_the_same_values_the_same_way(name, raw):
    with pytest.raises(ConfigError) as raised:
        READERS[name]({name: raw})
    assert str(raised.value) == f'{name}={raw!r} is invalid: expected a positive number of seconds, e.g. 30 or 2.5'


@pytest.mark.parametrize('name', sorted(READERS))
def test_a_blank_duration_variable_keeps_its_default(name):
    READERS[name]({name: '  '})
