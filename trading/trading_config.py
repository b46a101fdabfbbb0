"""Trading configuration: strategies, exposures, order and close policies, risk limits, trading enabled.

Four layers, each overriding the one before, key by key (tables merge, other values replace):

1. defaults in code (DEFAULTS below);
2. the config file, `config/trading.toml` (or TRADING_CONFIG_PATH);
3. environment variables (ENV_VARS below), from the snapshot the run's settings were read with
   (lib.config.TradingConfigSettings: `env=settings.trading_config.environment`);
4. the store's dynamic settings (`store.get_settings()`), read fresh on every call; a null value there
   means "not set".

Keys are the same in the file and the store: `tradingEnabled`, `exposure.overall`,
`exposure.strategies.<name>`, `strategies.<name>.*` (passed to the strategy as is), `limits.*`,
`orderPolicy.*`, `closePolicy.*`, `cashBalancerThreshold`, `approval` ("none" or "required": order-placing
runs only plan; a request cannot lower it). An unknown key or a bad value in any layer is a
ConfigError naming it, so a typo in `tradingEnabled` cannot go unnoticed.

`tradingEnabled` is the one exception to the layering, because it is an emergency switch: trading is
disabled if any source that sets it explicitly (env TRADING_ENABLED, the file, the store) says false;
otherwise the store's value counts, else the mode's default (paper: enabled, live: disabled). So the
environment and the file can only disable trading; enabling it is done in the store
(`python -m functions trading on`). Order-placing runs read the store again before each order
(`TradingSwitch.refreshed`).
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from lib.config import TRADING_MODES, ConfigError, parse_boolean
from lib.store import Store, StoreUnavailable

DEFAULT_PATH = Path(__file__).resolve().parent.parent / 'config' / 'trading.toml'
ORDER_TYPES = ('market', 'marketable-limit', 'adaptive')
TIFS = ('DAY', 'GTC', 'IOC')
ADAPTIVE_PRIORITIES = ('Patient', 'Normal', 'Urgent')
APPROVALS = ('none', 'required')
ALLOW_ALL = '*'
SHARE_TOLERANCE = 1e-9

# No configuration may let a marketable limit sit further than this through the market (10 %).
LIMIT_OFFSET_CEILING_BPS = 1000.0

DEFAULTS: dict[str, Any] = {
    'exposure': {'overall': 1.0, 'strategies': {}},
    'strategies': {},
    'limits': {'maxOrderNotional': 10_000.0, 'maxOrderNlvShare': 0.1, 'maxRunNlvShare': 0.5,
               'maxOrdersPerRun': 10, 'allowlist': [], 'priceBand': 0.05, 'maxLimitOffsetBps': 100.0},
    'orderPolicy': {'orderType': 'adaptive', 'tif': 'DAY', 'limitOffsetBps': 5.0, 'adaptivePriority': 'Normal'},
    'closePolicy': {'orderType': 'market', 'tif': 'DAY', 'limitOffsetBps': 50.0, 'adaptivePriority': 'Urgent'},
    'cashBalancerThreshold': 1000.0,
    'approval': 'none',
}


@dataclass(frozen=True)
class RiskLimits:
    """Pre-trade limits, enforced independently of strategy code. Amounts are in the base currency."""

    max_order_notional: float
    max_order_nlv_share: float      # one order's notional / net liquidation value
    max_run_nlv_share: float        # all orders of one run together / net liquidation value
    max_orders_per_run: int
    allowlist: tuple[str, ...]      # tradable symbols; empty allows nothing, '*' allows every symbol
    price_band: float               # max |expected fill price - last close| / last close
    max_limit_offset_bps: float = 100.0   # the largest limitOffsetBps the config or a message may set

    def describe(self) -> dict:
        """The limits under their config names (limits.*)."""
        return {'maxOrderNotional': self.max_order_notional, 'maxOrderNlvShare': self.max_order_nlv_share,
                'maxRunNlvShare': self.max_run_nlv_share, 'maxOrdersPerRun': self.max_orders_per_run,
                'allowlist': list(self.allowlist), 'priceBand': self.price_band,
                'maxLimitOffsetBps': self.max_limit_offset_bps}

    def allows(self, symbol: str) -> bool:
        """Whether orders in `symbol` may be sent."""
        return ALLOW_ALL in self.allowlist or symbol.upper() in self.allowlist


@dataclass(frozen=True)
class OrderPolicy:
    """How orders are sent."""

    order_type: str                 # 'market' | 'marketable-limit' | 'adaptive'
    tif: str                        # 'DAY' | 'GTC' | 'IOC'
    limit_offset_bps: float         # marketable limit: how far through the ask (buy) or bid (sell), in basis points
    adaptive_priority: str          # 'Patient' | 'Normal' | 'Urgent'


@dataclass(frozen=True)
class ClosePolicy:
    """How reduce-only orders (close-all, holdings outside a strategy's universe) are sent.

    They are exempt from the size and NLV limits, the allowlist and the price band: the day you need to
    get out is the day those limits would stop you. `price_band`, when set, is their own (wider) band.
    """

    order: OrderPolicy
    price_band: float | None = None


@dataclass(frozen=True)
class TradingSwitch:
    """Whether trading is enabled, and why: each source's explicit value (None: not set there)."""

    mode: str                       # 'paper' | 'live'
    env: bool | None                # TRADING_ENABLED
    file: bool | None               # tradingEnabled in the config file
    store: bool | None              # tradingEnabled in the store's settings
    file_path: str = ''
    store_error: str | None = None  # the store could not be read: disabled (fail closed)

    @property
    def default(self) -> bool:
        return self.mode == 'paper'

    @property
    def enabled(self) -> bool:
        """Disabled if any explicit source says false (or the store is unreadable); else the store, else the mode."""
        if self.store_error is not None or False in (self.env, self.file, self.store):
            return False
        return self.store if self.store is not None else self.default

    def disabling(self) -> list[str]:
        """What keeps trading disabled, one phrase per source; [] when it is enabled."""
        reasons = []
        if self.store_error is not None:
            reasons.append(f'the store is unreadable ({self.store_error})')
        if self.env is False:
            reasons.append('environment TRADING_ENABLED=false')
        if self.file is False:
            reasons.append(f'config file {self.file_path} tradingEnabled = false')
        if self.store is False:
            reasons.append('store setting tradingEnabled=false')
        if not reasons and not self.enabled:
            reasons.append(f'{self.mode} mode default (set tradingEnabled=true in the store to enable)')
        return reasons

    def reason(self) -> str:
        """One sentence for results and logs."""
        if self.enabled:
            return 'trading enabled'
        return 'trading disabled: ' + '; '.join(self.disabling())

    def refreshed(self, store: Store) -> TradingSwitch:
        """This switch with the store's value read again now; an unreadable store disables trading."""
        try:
            value = store.get_settings().get('tradingEnabled')
            value = None if value is None else _checked('tradingEnabled', value, _boolean, 'store settings')
        except (StoreUnavailable, ConfigError) as exc:
            return replace(self, store_error=str(exc))
        return replace(self, store=value, store_error=None)

    def describe(self) -> dict:
        return {'effective': self.enabled, 'mode': self.mode, 'modeDefault': self.default,
                'sources': {'env': self.env, 'file': self.file, 'store': self.store},
                'file': self.file_path, 'storeError': self.store_error, 'disabledBy': self.disabling()}


@dataclass(frozen=True)
class TradingConfig:
    """The configuration one run trades with."""

    switch: TradingSwitch
    exposure_overall: float         # share of net liquidation value the strategies may use together
    exposures: dict[str, float]     # strategy -> share of the overall exposure (absent: 0)
    strategies: dict[str, dict]     # strategy -> its config
    limits: RiskLimits
    order_policy: OrderPolicy
    close_policy: ClosePolicy
    cash_balancer_threshold: float  # non-base cash above this (in base currency) is converted
    approval: str = 'none'          # 'required': order-placing runs only plan, and wait for execute-plan

    @property
    def trading_enabled(self) -> bool:
        return self.switch.enabled


def load_trading_config(store: Store, *, trading_mode: str, env: Mapping[str, str],
                        path: str | Path | None = None) -> TradingConfig:
    """Merge defaults, the file, env and the store's settings; StoreUnavailable if the store can't be read."""
    if trading_mode not in TRADING_MODES:
        raise ConfigError(f'trading_mode={trading_mode!r} is invalid: expected one of {", ".join(TRADING_MODES)}')
    path = Path(path or env.get('TRADING_CONFIG_PATH', '').strip() or DEFAULT_PATH)
    layers = [_clean(_read_file(path), '', str(path)), _env_layer(env),
              _clean(store.get_settings(), '', 'store settings')]
    file_value, env_value, store_value = (layer.pop('tradingEnabled', None) for layer in layers)
    merged = DEFAULTS
    for layer in layers:
        merged = _merge(merged, layer)
    return _build(merged, TradingSwitch(trading_mode, env_value, file_value, store_value, str(path)))


def trading_switch(store: Store, *, trading_mode: str, env: Mapping[str, str],
                   path: str | Path | None = None) -> TradingSwitch:
    """Each source of tradingEnabled and the effective value; an unreadable store disables (no exception)."""
    path = Path(path or env.get('TRADING_CONFIG_PATH', '').strip() or DEFAULT_PATH)
    file_value = _clean(_read_file(path), '', str(path)).get('tradingEnabled')
    env_value = _env_layer(env).get('tradingEnabled')
    return TradingSwitch(trading_mode, env_value, file_value, None, str(path)).refreshed(store)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError('expected a finite number')
    return float(value)


def _positive(value: Any) -> float:
    number = _number(value)
    if number <= 0:
        raise ValueError('expected a number > 0')
    return number


def _non_negative(value: Any) -> float:
    number = _number(value)
    if number < 0:
        raise ValueError('expected a number >= 0')
    return number


def _share(value: Any) -> float:
    number = _number(value)
    if not 0 <= number <= 1:
        raise ValueError('expected a share between 0 and 1')
    return number


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError('expected an integer >= 1')
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError('expected true or false')
    return value


def _symbols(value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError('expected a list of symbols')
    symbols = []
    for symbol in value:
        if not isinstance(symbol, str) or not symbol.strip():
            raise ValueError(f'expected non-empty symbol strings, got {symbol!r}')
        symbols.append(symbol.strip().upper())
    return symbols


def _offset_bps(value: Any) -> float:
    number = _non_negative(value)
    if number > LIMIT_OFFSET_CEILING_BPS:
        raise ValueError(f'expected at most {LIMIT_OFFSET_CEILING_BPS:g} basis points')
    return number


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f'expected one of {", ".join(choices)}')
        return value
    return check


_LEAVES: dict[str, Callable[[Any], Any]] = {
    'tradingEnabled': _boolean,
    'exposure.overall': _non_negative,
    'limits.maxOrderNotional': _positive,
    'limits.maxOrderNlvShare': _positive,
    'limits.maxRunNlvShare': _positive,
    'limits.maxOrdersPerRun': _positive_int,
    'limits.allowlist': _symbols,
    'limits.priceBand': _positive,
    'orderPolicy.orderType': _one_of(ORDER_TYPES),
    'orderPolicy.tif': _one_of(TIFS),
    'orderPolicy.limitOffsetBps': _offset_bps,
    'orderPolicy.adaptivePriority': _one_of(ADAPTIVE_PRIORITIES),
    'limits.maxLimitOffsetBps': _offset_bps,
    'closePolicy.orderType': _one_of(ORDER_TYPES),
    'closePolicy.tif': _one_of(TIFS),
    'closePolicy.limitOffsetBps': _offset_bps,
    'closePolicy.adaptivePriority': _one_of(ADAPTIVE_PRIORITIES),
    'closePolicy.priceBand': _positive,
    'cashBalancerThreshold': _non_negative,
    'approval': _one_of(APPROVALS),
}
_TABLES = ('exposure', 'limits', 'orderPolicy', 'closePolicy')


def _csv_symbols(raw: str) -> list[str]:
    return _symbols([part for part in raw.split(',') if part.strip()])


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError('expected an integer') from None


def _float(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError('expected a number') from None


ENV_VARS: dict[str, tuple[str, Callable[[str], Any]]] = {
    'TRADING_ENABLED': ('tradingEnabled', parse_boolean),
    'EXPOSURE_OVERALL': ('exposure.overall', _float),
    'MAX_ORDER_NOTIONAL': ('limits.maxOrderNotional', _float),
    'MAX_ORDER_NLV_SHARE': ('limits.maxOrderNlvShare', _float),
    'MAX_RUN_NLV_SHARE': ('limits.maxRunNlvShare', _float),
    'MAX_ORDERS_PER_RUN': ('limits.maxOrdersPerRun', _int),
    'SYMBOL_ALLOWLIST': ('limits.allowlist', _csv_symbols),
    'PRICE_BAND': ('limits.priceBand', _float),
    'MAX_LIMIT_OFFSET_BPS': ('limits.maxLimitOffsetBps', _float),
    'ORDER_TYPE': ('orderPolicy.orderType', str.lower),
    'ORDER_TIF': ('orderPolicy.tif', str.upper),
    'LIMIT_OFFSET_BPS': ('orderPolicy.limitOffsetBps', _float),
    'ADAPTIVE_PRIORITY': ('orderPolicy.adaptivePriority', str.capitalize),
    'CASH_BALANCER_THRESHOLD': ('cashBalancerThreshold', _float),
    'ORDER_APPROVAL': ('approval', str.lower),
}
"""Environment variable -> (config key, parser of its text)."""


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, 'rb') as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f'trading config file {path} not found') from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f'trading config file {path}: {exc}') from None


def _env_layer(env: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for name, (key, parse) in ENV_VARS.items():
        raw = env.get(name, '').strip()
        if not raw:
            continue
        try:
            value = _LEAVES[key](parse(raw))
        except ValueError as exc:
            raise ConfigError(f'{name}={raw!r} is invalid: {exc}') from None
        *tables, leaf = key.split('.')
        target = layer
        for table in tables:
            target = target.setdefault(table, {})
        target[leaf] = value
    return layer


def _clean(table: Mapping[str, Any], prefix: str, source: str) -> dict[str, Any]:
    """Validate one layer: every key known, every value valid; null values are dropped."""
    cleaned: dict[str, Any] = {}
    for name, value in table.items():
        key = f'{prefix}{name}'
        if value is None:
            continue
        if key in _LEAVES:
            cleaned[name] = _checked(key, value, _LEAVES[key], source)
        elif key in _TABLES:
            cleaned[name] = _clean(_table(key, value, source), f'{key}.', source)
        elif key == 'exposure.strategies':
            cleaned[name] = {strategy: _checked(f'{key}.{strategy}', share, _share, source)
                             for strategy, share in _table(key, value, source).items() if share is not None}
        elif key == 'strategies':
            cleaned[name] = {strategy: dict(_table(f'{key}.{strategy}', config, source))
                             for strategy, config in _table(key, value, source).items() if config is not None}
        else:
            raise ConfigError(f'{source}: unknown key {key!r}')
    return cleaned


def _table(key: str, value: Any, source: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f'{source}: {key}={value!r} is invalid: expected a table')
    return value


def _checked(key: str, value: Any, check: Callable[[Any], Any], source: str) -> Any:
    try:
        return check(value)
    except ValueError as exc:
        raise ConfigError(f'{source}: {key}={value!r} is invalid: {exc}') from None


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for name, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(name), Mapping):
            merged[name] = _merge(merged[name], value)
        else:
            merged[name] = value
    return merged


def _build(config: Mapping[str, Any], switch: TradingSwitch) -> TradingConfig:
    exposures = dict(config['exposure']['strategies'])
    # a strategy's own table is optional: without one it runs with its defaults
    strategies = {**{name: {} for name in exposures},
                  **{name: dict(settings) for name, settings in config['strategies'].items()}}
    total = sum(exposures.values())
    if total > 1 + SHARE_TOLERANCE:
        raise ConfigError(f'exposure.strategies is invalid: the shares add up to {total:g}, more than 1')
    limits, policy, close = config['limits'], config['orderPolicy'], config['closePolicy']
    if policy['limitOffsetBps'] > limits['maxLimitOffsetBps']:
        raise ConfigError(f'orderPolicy.limitOffsetBps={policy["limitOffsetBps"]:g} is invalid: more than '
                          f'limits.maxLimitOffsetBps={limits["maxLimitOffsetBps"]:g}')
    return TradingConfig(
        switch=switch,
        exposure_overall=config['exposure']['overall'],
        exposures=exposures,
        strategies=strategies,
        limits=RiskLimits(
            max_order_notional=limits['maxOrderNotional'],
            max_order_nlv_share=limits['maxOrderNlvShare'],
            max_run_nlv_share=limits['maxRunNlvShare'],
            max_orders_per_run=limits['maxOrdersPerRun'],
            allowlist=tuple(limits['allowlist']),
            price_band=limits['priceBand'],
            max_limit_offset_bps=limits['maxLimitOffsetBps'],
        ),
        order_policy=OrderPolicy(
            order_type=policy['orderType'],
            tif=policy['tif'],
            limit_offset_bps=policy['limitOffsetBps'],
            adaptive_priority=policy['adaptivePriority'],
        ),
        close_policy=ClosePolicy(
            OrderPolicy(order_type=close['orderType'], tif=close['tif'], limit_offset_bps=close['limitOffsetBps'],
                        adaptive_priority=close['adaptivePriority']),
            price_band=close.get('priceBand'),
        ),
        cash_balancer_threshold=config['cashBalancerThreshold'],
        approval=config['approval'],
    )
