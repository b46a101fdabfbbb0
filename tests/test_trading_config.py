"""Trading config: defaults < file < env < store; trading enabled by mode and any explicit false; bad values named."""
from __future__ import annotations

from pathlib import Path

import pytest

from lib.config import ConfigError
from lib.store import StoreUnavailable
from lib.store.sqlite import SqliteStore
from trading.trading_config import DEFAULT_PATH, load_trading_config, trading_switch
from strategies.registry import get_strategy

FILE = """
cashBalancerThreshold = 2500.0

[exposure]
overall = 0.8

[exposure.strategies]
spy-macd-vixy = 0.5
dummy = 0.25

[strategies.spy-macd-vixy]
fast = 10

[strategies.dummy]

[limits]
maxOrderNotional = 2000.0
maxOrdersPerRun = 5
priceBand = 0.2
allowlist = ["spy", "VIXY"]

[orderPolicy]
orderType = "marketable-limit"
"""


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(tmp_path / 'state.sqlite3')
    yield store
    store.close()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / 'trading.toml'
    path.write_text(FILE)
    return path


def test_each_layer_overrides_the_one_below_key_by_key(store, config_file):
    env = {'MAX_ORDERS_PER_RUN': '7', 'PRICE_BAND': '0.3', 'ORDER_TIF': 'gtc', 'TRADING_CONFIG_PATH': '/nonexistent'}
    store.put_settings({'limits': {'priceBand': 0.4}, 'exposure': {'strategies': {'dummy': 0.0}}})

    config = load_trading_config(store, trading_mode='paper', env=env, path=config_file)

    assert config.limits.max_order_nlv_share == 0.1          # code default
    assert config.limits.max_order_notional == 2000.0        # file
    assert config.limits.max_orders_per_run == 7             # env over file
    assert config.limits.price_band == 0.4                   # store over env over file
    assert config.order_policy.order_type == 'marketable-limit'
    assert config.order_policy.tif == 'GTC'
    assert config.order_policy.adaptive_priority == 'Normal'
    assert config.exposure_overall == 0.8
    assert config.exposures == {'spy-macd-vixy': 0.5, 'dummy': 0.0}   # the store changed one share only
    assert config.strategies == {'spy-macd-vixy': {'fast': 10}, 'dummy': {}}
    assert config.limits.allowlist == ('SPY', 'VIXY')
    assert config.cash_balancer_threshold == 2500.0


def test_file_comes_from_trading_config_path_when_no_path_is_given(store, config_file):
    config = load_trading_config(store, trading_mode='paper', env={'TRADING_CONFIG_PATH': str(config_file)})

    assert config.limits.max_order_notional == 2000.0


def test_the_repository_file_loads_and_its_strategies_accept_their_config(store):
    config = load_trading_config(store, trading_mode='paper', env={})

    assert set(config.strategies) == {'spy-macd-vixy', 'dummy'}
    assert set(config.exposures) <= set(config.strategies)
    for name, settings in config.strategies.items():
        get_strategy(name)(settings)     # raises ValueError on a key the strategy does not know
    assert (config.order_policy.order_type, config.order_policy.tif) == ('adaptive', 'DAY')
    assert config.limits.allows('SPY') and not config.limits.allows('TSLA')


def test_the_shipped_config_trades_no_test_signal_until_opted_in(store):
    """A new user's first scheduled allocation must not trade `dummy`'s seeded signal: its share is 0."""
    config = load_trading_config(store, trading_mode='paper', env={})
    assert config.exposures['dummy'] == 0.0 and config.exposures['spy-macd-vixy'] > 0


def test_trading_is_enabled_by_default_in_paper_and_disabled_in_live(store, config_file):
    assert load_trading_config(store, trading_mode='paper', env={}, path=config_file).trading_enabled is True
    assert load_trading_config(store, trading_mode='live', env={}, path=config_file).trading_enabled is False


def test_any_explicit_false_disables_trading_and_only_the_store_enables_it(store, config_file, tmp_path):
    def enabled(mode: str, env: dict, path=config_file) -> bool:
        return load_trading_config(store, trading_mode=mode, env=env, path=path).trading_enabled

    store.put_settings({'tradingEnabled': True})
    assert enabled('live', {}) is True
    # the environment's false is not undone by a leftover true in the store
    assert enabled('live', {'TRADING_ENABLED': 'false'}) is False
    assert enabled('paper', {'TRADING_ENABLED': 'off'}) is False
    disabled_file = tmp_path / 'disabled.toml'
    disabled_file.write_text('tradingEnabled = false\n' + config_file.read_text())
    assert enabled('paper', {}, disabled_file) is False

    store.put_settings({'tradingEnabled': False})
    assert enabled('paper', {'TRADING_ENABLED': 'true'}) is False

    store.put_settings({'tradingEnabled': None})          # null in the store: not set there
    # env and file can only disable: without the store's true, live keeps its default
    assert enabled('live', {'TRADING_ENABLED': 'yes'}) is False
    assert enabled('paper', {'TRADING_ENABLED': 'yes'}) is True


def test_trading_switch_names_every_source_and_reads_the_store_again(store, config_file):
    switch = trading_switch(store, trading_mode='live', env={'TRADING_ENABLED': 'false'}, path=config_file)
    assert (switch.env, switch.file, switch.store, switch.enabled) == (False, None, None, False)
    assert switch.disabling() == ['environment TRADING_ENABLED=false']
    store.put_settings({'tradingEnabled': False})
    assert switch.refreshed(store).disabling() == ['environment TRADING_ENABLED=false',
                                                   'store setting tradingEnabled=false']
    live = trading_switch(store, trading_mode='live', env={}, path=config_file)
    store.put_settings({'tradingEnabled': None})
    assert live.refreshed(store).disabling() == [
        'live mode default (set tradingEnabled=true in the store to enable)']
    store.put_settings({'tradingEnabled': True})
    assert live.refreshed(store).enabled is True and live.refreshed(store).disabling() == []


def test_limit_offset_is_bounded(store, config_file):
    store.put_settings({'orderPolicy': {'limitOffsetBps': 150.0}})
    with pytest.raises(ConfigError, match='orderPolicy.limitOffsetBps=150 is invalid: more than '
                                          'limits.maxLimitOffsetBps=100'):
        load_trading_config(store, trading_mode='paper', env={}, path=config_file)
    store.put_settings({'limits': {'maxLimitOffsetBps': 5000.0}})
    with pytest.raises(ConfigError, match='expected at most 1000 basis points'):
        load_trading_config(store, trading_mode='paper', env={}, path=config_file)
    store.put_settings({'limits': {'maxLimitOffsetBps': 200.0}})
    config = load_trading_config(store, trading_mode='paper', env={}, path=config_file)
    assert (config.order_policy.limit_offset_bps, config.limits.max_limit_offset_bps) == (150.0, 200.0)
    assert (config.close_policy.order.order_type, config.close_policy.price_band) == ('market', None)


def test_unreadable_store_fails_closed(tmp_path, config_file):
    blocker = tmp_path / 'a-file'
    blocker.write_text('')
    broken = SqliteStore(blocker / 'state.sqlite3')

    with pytest.raises(StoreUnavailable):
        load_trading_config(broken, trading_mode='paper', env={}, path=config_file)


def test_allowlist_empty_allows_nothing_and_star_allows_all(store, config_file):
    store.put_settings({'limits': {'allowlist': []}})
    nothing = load_trading_config(store, trading_mode='paper', env={}, path=config_file).limits
    assert not nothing.allows('SPY')

    everything = load_trading_config(store, trading_mode='paper', env={'SYMBOL_ALLOWLIST': '*'},
                                     path=config_file).limits
    assert not everything.allows('SPY')                   # the store's [] still wins over env

    store.put_settings({'limits': None})
    everything = load_trading_config(store, trading_mode='paper', env={'SYMBOL_ALLOWLIST': ' *, '},
                                     path=config_file).limits
    assert everything.allows('TSLA') and everything.allows('spy')


@pytest.mark.parametrize('layer, content, named', [
    ('file', 'cashBalancerThreshold = -1.0', 'trading.toml: cashBalancerThreshold=-1.0 is invalid'),
    ('file', '[limits]\nmaxOrdersPerRun = 2.5', 'limits.maxOrdersPerRun=2.5 is invalid'),
    ('file', '[orderPolicy]\norderType = "limit"', 'orderPolicy.orderType'),
    ('file', '[limits]\nmaxOrderNotinal = 5.0', "unknown key 'limits.maxOrderNotinal'"),
    ('file', 'limits = 5', 'limits=5 is invalid: expected a table'),
    ('file', '[exposure.strategies]\nmomentum = -0.1', 'exposure.strategies.momentum=-0.1 is invalid'),
    ('file', '[exposure.strategies]\nspy-macd-vixy = 1.5', 'exposure.strategies.spy-macd-vixy=1.5'),
    ('file', 'this is not toml', 'trading.toml'),
    ('env', {'MAX_ORDER_NOTIONAL': 'lots'}, 'MAX_ORDER_NOTIONAL='),
    ('env', {'MAX_ORDER_NOTIONAL': '-5'}, 'MAX_ORDER_NOTIONAL='),
    ('env', {'PRICE_BAND': 'nan'}, 'PRICE_BAND='),
    ('env', {'TRADING_ENABLED': 'maybe'}, 'TRADING_ENABLED='),
    ('env', {'ORDER_TYPE': 'stop'}, 'ORDER_TYPE='),
    ('file', 'approval = "maybe"', "approval='maybe' is invalid: expected one of none, required"),
    ('env', {'ORDER_APPROVAL': 'sometimes'}, 'ORDER_APPROVAL='),
    ('store', {'tradingEnabled': 'false'}, "store settings: tradingEnabled='false' is invalid"),
    ('store', {'tradingEnable': False}, "store settings: unknown key 'tradingEnable'"),
    ('store', {'limits': {'maxOrdersPerRun': 0}}, 'store settings: limits.maxOrdersPerRun=0'),
    ('store', {'exposure': {'strategies': {'dummy': 0.9}}}, 'shares add up to 1.4'),
])
def test_invalid_values_are_refused_naming_the_key(store, config_file, layer, content, named):
    env = {}
    if layer == 'file':
        config_file.write_text(content if 'exposure' not in content else FILE.replace(
            '[exposure.strategies]\nspy-macd-vixy = 0.5\ndummy = 0.25', content))
    elif layer == 'env':
        env = content
    else:
        store.put_settings(content)

    with pytest.raises(ConfigError) as raised:
        load_trading_config(store, trading_mode='paper', env=env, path=config_file)
    assert named in str(raised.value)


def test_missing_file_and_unknown_mode_are_refused(store, tmp_path):
    with pytest.raises(ConfigError, match='not found'):
        load_trading_config(store, trading_mode='paper', env={}, path=tmp_path / 'missing.toml')
    with pytest.raises(ConfigError, match='trading_mode'):
        load_trading_config(store, trading_mode='demo', env={}, path=DEFAULT_PATH)


def test_approval_is_none_by_default_and_required_from_any_layer(store, config_file):
    assert load_trading_config(store, trading_mode='paper', env={}, path=config_file).approval == 'none'
    assert load_trading_config(store, trading_mode='paper', env={'ORDER_APPROVAL': 'REQUIRED'},
                               path=config_file).approval == 'required'
    store.put_settings({'approval': 'required'})
    assert load_trading_config(store, trading_mode='paper', env={}, path=config_file).approval == 'required'
