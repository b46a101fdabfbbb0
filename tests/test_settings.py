"""Durations in the environment have one parser (lib.config.env_seconds): every such variable refuses the
same values with the same message, naming itself."""
from __future__ import annotations

import pytest

from lib.config import ConfigError, IdempotencySettings, Settings, StoreSettings

READERS = {
    'INTENT_DEADLINE_SECONDS': lambda env: Settings.from_env(env),
    'IB_CONNECT_TIMEOUT': lambda env: Settings.from_env(env),
    'PUBLISH_TIMEOUT_SECONDS': lambda env: Settings.from_env(env),
    'IDEMPOTENCY_WINDOW_SECONDS': lambda env: IdempotencySettings.from_env(60.0, env),
    'ORDER_MAX_AGE_SECONDS': lambda env: IdempotencySettings.from_env(60.0, env),
    'ACCOUNT_LEASE_WAIT_SECONDS': lambda env: IdempotencySettings.from_env(60.0, env),
    'STORE_TIMEOUT_SECONDS': lambda env: StoreSettings.from_env(env),
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


def test_the_entry_reads_the_nested_settings_once_and_a_bad_part_waits_for_its_use():
    """Settings.from_env reads the store's, idempotency's, the trading config's, the history's and logging's
    variables with the rest; a bad one is kept with its part and raised where a run uses that part."""
    env = {'STORE_BACKEND': 'firestore', 'GOOGLE_CLOUD_PROJECT': 'p', 'FIRESTORE_DATABASE': 'paper',
           'IDEMPOTENCY_LEASE_SECONDS': '90', 'TRADING_CONFIG_PATH': '/etc/trading.toml', 'SYMBOL_ALLOWLIST': 'SPY',
           'RUN_HISTORY_DAYS': '7', 'LOG_LEVEL': 'DEBUG', 'IB_CLIENT_LOG_LEVEL': 'INFO'}
    settings = Settings.from_env(env)
    assert (settings.store.backend, settings.store.project, settings.store.database) == ('firestore', 'p', 'paper')
    assert settings.idempotency.lease_seconds == 90 and settings.history.days == 7
    assert settings.trading_config.path == '/etc/trading.toml'
    assert settings.trading_config.environment['SYMBOL_ALLOWLIST'] == 'SPY'
    assert (settings.logging.level, settings.logging.client_level) == ('DEBUG', 'INFO')

    broken = Settings.from_env({'STORE_BACKEND': 'redis', 'IDEMPOTENCY_LEASE_SECONDS': '5'})   # deadline 60
    with pytest.raises(ConfigError, match='STORE_BACKEND'):
        broken.store.checked()
    with pytest.raises(ConfigError, match='IDEMPOTENCY_LEASE_SECONDS'):
        broken.idempotency.checked()


def test_settings_of_a_harness_take_their_nested_parts_from_the_environment_it_sets():
    own = Settings(gateway_host='127.0.0.1', gateway_port=4010, deadline_seconds=20)
    deployed = own.with_parts_from_env({'SQLITE_PATH': '/tmp/x.sqlite3', 'IDEMPOTENCY_LEASE_SECONDS': '10'})
    assert (deployed.gateway_host, deployed.gateway_port, deployed.deadline_seconds) == ('127.0.0.1', 4010, 20)
    assert deployed.store.sqlite_path == '/tmp/x.sqlite3'
    with pytest.raises(ConfigError, match='at least the intent deadline'):   # checked against its own deadline
        deployed.idempotency.checked()
