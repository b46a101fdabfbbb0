"""Runtime settings: the one module that reads the environment (tests/test_settings_read_once.py keeps every
other module under lib/ and trading/ from reading it).

The entry (functions/main.py through the handler, the CLI) reads `Settings.from_env()` once per invocation and
passes it down: the gateway and run settings, and nested, the store's (`StoreSettings`), idempotency's
(`IdempotencySettings`), the trading config's file and environment layer (`TradingConfigSettings`), the run
history's (`HistorySettings`) and logging's (`LoggingSettings`). A nested part whose variables are bad keeps
its ConfigError (`error`) until a run uses it (`checked()`), so a bad store setting refuses the runs that need
the store and not a `summary`. Three readings are per process, not per invocation, and also made here: the IB
client library (chosen when lib/ibapi.py is imported), the secrets logging masks (read at every line, so a
secret set late is masked too) and the test-only crash hook.
"""
from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Callable, Mapping, TypeVar

T = TypeVar('T')

TRADING_MODES = ('paper', 'live')
STORE_BACKENDS = ('sqlite', 'firestore')
DEFAULT_SQLITE_PATH = './.local/state.sqlite3'
DEFAULT_FIRESTORE_DATABASE = '(default)'
DEFAULT_STORE_TIMEOUT_SECONDS = 10.0
DEFAULT_HISTORY_DAYS = 30.0
LEASE_MARGIN_SECONDS = 10.0      # a lease past the work it covers (a run's deadline, a sink's send)


class ConfigError(ValueError):
    """An environment variable holds a value that cannot be used."""


def environment() -> Mapping[str, str]:
    """The process environment, live: for the per-process readings only (see the module's docstring)."""
    return os.environ


def client_library(env: Mapping[str, str] | None = None) -> str:
    """IB_CLIENT_LIBRARY (default ib_insync): which IB client lib/ibapi.py imports; it checks the name."""
    return (os.environ if env is None else env).get('IB_CLIENT_LIBRARY') or 'ib_insync'


def crash_control_file(env: Mapping[str, str] | None = None) -> str | None:
    """CRASH_CONTROL_FILE, the test-only crash hook's control file (lib/crash.py); None when unset or with
    TRADING_MODE=live."""
    env = os.environ if env is None else env
    path = env.get('CRASH_CONTROL_FILE')
    if not path or env.get('TRADING_MODE', '').strip().lower() == 'live':
        return None
    return path


@dataclass(frozen=True)
class StoreSettings:
    """Which state store and how long an operation may take (lib/store: `open_store(settings.store)`):

    STORE_BACKEND (sqlite), SQLITE_PATH, GOOGLE_CLOUD_PROJECT (required for firestore), FIRESTORE_DATABASE,
    FIRESTORE_EMULATOR_HOST, STORE_TIMEOUT_SECONDS (10).
    """

    backend: str = 'sqlite'
    sqlite_path: str = DEFAULT_SQLITE_PATH
    project: str | None = None
    database: str = DEFAULT_FIRESTORE_DATABASE
    emulator_host: str | None = None
    timeout_seconds: float = DEFAULT_STORE_TIMEOUT_SECONDS
    error: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StoreSettings:
        """The store's settings from env (default os.environ); ConfigError names a bad variable."""
        env = os.environ if env is None else env
        get = _getter(env)
        backend = (get('STORE_BACKEND') or cls.backend).lower()
        timeout = env_seconds(env, 'STORE_TIMEOUT_SECONDS', cls.timeout_seconds)
        if backend not in STORE_BACKENDS:
            raise ConfigError(f'STORE_BACKEND={backend!r} is invalid: expected one of {", ".join(STORE_BACKENDS)}')
        project = get('GOOGLE_CLOUD_PROJECT')
        if backend == 'firestore' and project is None:
            raise ConfigError('GOOGLE_CLOUD_PROJECT is required when STORE_BACKEND=firestore')
        return cls(backend, get('SQLITE_PATH') or DEFAULT_SQLITE_PATH, project,
                   get('FIRESTORE_DATABASE') or DEFAULT_FIRESTORE_DATABASE, get('FIRESTORE_EMULATOR_HOST'), timeout)

    def checked(self) -> StoreSettings:
        """These settings, or the ConfigError they were read with."""
        return _checked(self)


@dataclass(frozen=True)
class IdempotencySettings:
    """How keys are derived and claims held (trading/idempotency.py). Read from the environment:

    IDEMPOTENCY_WINDOW_SECONDS (300): width of the scheduled-time window of derived keys;
    IDEMPOTENCY_LEASE_SECONDS (deadline + 10): how long a claim protects a run, at least the deadline;
    ORDER_MAX_AGE_SECONDS (1800): order-placing messages older than this are rejected (a message's
    maxAgeSeconds can only be shorter);
    ACCOUNT_LEASE_WAIT_SECONDS (10): how long a run waits for another run's lease on the account before
    it is redelivered (at most a quarter of the deadline).
    """

    window_seconds: float = 300.0
    lease_seconds: float | None = None
    max_age_seconds: float = 1800.0
    account_wait_seconds: float = 10.0
    error: str | None = None

    @classmethod
    def from_env(cls, deadline_seconds: float, env: Mapping[str, str] | None = None) -> IdempotencySettings:
        """Settings from env (default os.environ); ConfigError names a bad variable."""
        env = os.environ if env is None else env
        window = env_seconds(env, 'IDEMPOTENCY_WINDOW_SECONDS', cls.window_seconds)
        lease = env_seconds(env, 'IDEMPOTENCY_LEASE_SECONDS', None)
        if lease is not None and lease < deadline_seconds:
            raise ConfigError(f'IDEMPOTENCY_LEASE_SECONDS={lease:g} is invalid: it must be at least the intent '
                              f'deadline ({deadline_seconds:g} s), or a run could be taken over while it places orders')
        return cls(window, lease, env_seconds(env, 'ORDER_MAX_AGE_SECONDS', cls.max_age_seconds),
                   env_seconds(env, 'ACCOUNT_LEASE_WAIT_SECONDS', cls.account_wait_seconds))

    def lease_for(self, deadline_seconds: float) -> float:
        """The claim's lease: past the deadline, so a live run is never taken over."""
        return self.lease_seconds if self.lease_seconds is not None else deadline_seconds + LEASE_MARGIN_SECONDS

    def checked(self) -> IdempotencySettings:
        """These settings, or the ConfigError they were read with."""
        return _checked(self)



@dataclass(frozen=True)
class TradingConfigSettings:
    """Where the trading config comes from (trading/trading_config.py): its file (TRADING_CONFIG_PATH, None:
    config/trading.toml) and the environment its environment layer reads (a snapshot taken with the settings)."""

    path: str | None = None
    environment: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TradingConfigSettings:
        env = os.environ if env is None else env
        return cls(env.get('TRADING_CONFIG_PATH', '').strip() or None, MappingProxyType(dict(env)))


@dataclass(frozen=True)
class HistorySettings:
    """RUN_HISTORY_DAYS (30; 0 keeps nothing): how long results are kept in the run history (functions/history.py)."""

    days: float = DEFAULT_HISTORY_DAYS
    error: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HistorySettings:
        """The history's settings from env (default os.environ); ConfigError names a bad value."""
        raw = (os.environ if env is None else env).get('RUN_HISTORY_DAYS', '').strip()
        if not raw:
            return cls()
        try:
            days = float(raw)
        except ValueError:
            days = -1.0
        if not 0 <= days <= 3650:
            raise ConfigError(f'RUN_HISTORY_DAYS={raw!r} is invalid: expected a number of days from 0 to 3650, e.g. 30')
        return cls(days)

    def checked(self) -> HistorySettings:
        """These settings, or the ConfigError they were read with."""
        return _checked(self)


@dataclass(frozen=True)
class LoggingSettings:
    """LOG_LEVEL (INFO) and IB_CLIENT_LOG_LEVEL (WARNING: the client library's own loggers), for lib/log.py."""

    level: str | None = None
    client_level: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LoggingSettings:
        env = os.environ if env is None else env
        return cls(env.get('LOG_LEVEL') or None, env.get('IB_CLIENT_LOG_LEVEL') or None)


@dataclass(frozen=True)
class Settings:
    """Everything an invocation needs to know about its environment."""

    gateway_host: str | None = None
    gateway_port: int = 4002
    client_id_min: int = 100
    client_id_max: int = 999
    connect_timeout: float = 4.0
    connect_attempts: int = 3
    account: str | None = None
    trading_mode: str = 'paper'
    allow_live: bool = False
    deadline_seconds: float = 60.0
    results_topic: str | None = None
    intents_topic: str | None = None   # the topic requests come on: where a plan's approve command publishes
    plan_ttl_seconds: float = 900.0    # PLAN_TTL_SECONDS: how long a plan (approval required) can be executed
    project: str | None = None
    publish_timeout: float = 10.0
    store: StoreSettings = StoreSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    trading_config: TradingConfigSettings = field(default_factory=TradingConfigSettings)
    history: HistorySettings = HistorySettings()
    logging: LoggingSettings = LoggingSettings()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `env` (default: os.environ); raise ConfigError naming the bad variable."""
        env = os.environ if env is None else env
        get = _getter(env)

        def parse(name: str, convert: Callable[[str], T], default: T) -> T:
            raw = get(name)
            if raw is None:
                return default
            try:
                return convert(raw)
            except ValueError as exc:
                raise ConfigError(f'{name}={raw!r} is invalid: {exc}') from None

        low, high = parse('IB_CLIENT_ID_RANGE', _client_id_range, (cls.client_id_min, cls.client_id_max))
        trading_mode = (get('TRADING_MODE') or cls.trading_mode).lower()
        if trading_mode not in TRADING_MODES:
            raise ConfigError(f'TRADING_MODE={trading_mode!r} is invalid: expected one of {", ".join(TRADING_MODES)}')
        deadline = parse('INTENT_DEADLINE_SECONDS', positive_seconds, cls.deadline_seconds)
        return cls(
            gateway_host=get('IB_GATEWAY_HOST'),
            gateway_port=parse('IB_GATEWAY_PORT', _port, cls.gateway_port),
            client_id_min=low,
            client_id_max=high,
            connect_timeout=parse('IB_CONNECT_TIMEOUT', positive_seconds, cls.connect_timeout),
            connect_attempts=parse('IB_CONNECT_ATTEMPTS', _positive_int, cls.connect_attempts),
            account=get('IB_ACCOUNT'),
            trading_mode=trading_mode,
            allow_live=parse('ALLOW_LIVE_TRADING', parse_boolean, cls.allow_live),
            deadline_seconds=deadline,
            results_topic=get('RESULTS_TOPIC'),
            intents_topic=get('INTENTS_TOPIC'),
            plan_ttl_seconds=parse('PLAN_TTL_SECONDS', positive_seconds, cls.plan_ttl_seconds),
            project=get('GOOGLE_CLOUD_PROJECT'),
            publish_timeout=parse('PUBLISH_TIMEOUT_SECONDS', positive_seconds, cls.publish_timeout),
            store=_or_error(lambda: StoreSettings.from_env(env), StoreSettings),
            idempotency=_or_error(lambda: IdempotencySettings.from_env(deadline, env), IdempotencySettings),
            trading_config=TradingConfigSettings.from_env(env),
            history=_or_error(lambda: HistorySettings.from_env(env), HistorySettings),
            logging=LoggingSettings.from_env(env),
        )

    def with_parts_from_env(self, env: Mapping[str, str] | None = None) -> Settings:
        """These settings with their nested parts (store, idempotency, trading config, history, logging) read from
        env (default os.environ) now: for a harness or benchmark that plays the entry with gateway settings of its
        own and configures the rest in its environment, as a deployment does."""
        env = os.environ if env is None else env
        parts = Settings.from_env({**env, 'INTENT_DEADLINE_SECONDS': str(self.deadline_seconds)})
        return replace(self, store=parts.store, idempotency=parts.idempotency, trading_config=parts.trading_config,
                       history=parts.history, logging=parts.logging)


def _getter(env: Mapping[str, str]) -> Callable[[str], str | None]:
    def get(name: str) -> str | None:
        value = env.get(name, '').strip()
        return value or None
    return get


def _or_error(read: Callable[[], T], kind: Callable[..., T]) -> T:
    """A nested part read now, or its defaults carrying the ConfigError, raised when a run uses it (checked)."""
    try:
        return read()
    except ConfigError as exc:
        return kind(error=str(exc))


def _checked(part: T) -> T:
    if part.error is not None:
        raise ConfigError(part.error)
    return part


def _port(raw: str) -> int:
    port = _number(raw, int, 'a TCP port 1-65535, e.g. 4002 (IB Gateway paper), 4001 (live), 7497 or 7496 (TWS)')
    if not 1 <= port <= 65535:
        raise ValueError('expected a TCP port 1-65535, e.g. 4002 (IB Gateway paper), 4001 (live), 7497 or 7496 (TWS)')
    return port


def _positive_int(raw: str) -> int:
    value = _number(raw, int, 'a whole number >= 1, e.g. 3')
    if value < 1:
        raise ValueError('expected a whole number >= 1, e.g. 3')
    return value


def positive_seconds(raw: str) -> float:
    """A duration from the environment: a finite number of seconds > 0; ValueError says what was expected."""
    value = _number(raw, float, 'a positive number of seconds, e.g. 30 or 2.5')
    if not 0 < value < float('inf'):
        raise ValueError('expected a positive number of seconds, e.g. 30 or 2.5')
    return value


def env_seconds(env: Mapping[str, str], name: str, default: T) -> float | T:
    """The positive number of seconds `env[name]` holds, or `default` when it is unset or blank;
    ConfigError names the variable and its bad value. The one parser of durations from the environment."""
    raw = env.get(name, '').strip()
    if not raw:
        return default
    try:
        return positive_seconds(raw)
    except ValueError as exc:
        raise ConfigError(f'{name}={raw!r} is invalid: {exc}') from None


def _number(raw: str, convert: Callable[[str], T], expected: str) -> T:
    """`convert(raw)`, with a message that says what was expected instead of Python's."""
    try:
        return convert(raw)
    except ValueError:
        raise ValueError(f'expected {expected}') from None


def parse_boolean(raw: str) -> bool:
    """An environment flag: 1/true/yes/on or 0/false/no/off, any case."""
    lowered = raw.lower()
    if lowered in ('1', 'true', 'yes', 'on'):
        return True
    if lowered in ('0', 'false', 'no', 'off'):
        return False
    raise ValueError('expected true or false')


def _client_id_range(raw: str) -> tuple[int, int]:
    parts = raw.split('-')
    if len(parts) != 2:
        raise ValueError('expected LOW-HIGH, e.g. 100-999')
    low, high = (_number(part, int, 'LOW-HIGH, e.g. 100-999') for part in parts)
    if not 1 <= low <= high <= 2**31 - 1:
        raise ValueError('expected 1 <= LOW <= HIGH')
    return low, high


NOTIFY_TAGS = ('planned', 'orders')
NOTIFY_DEFAULT_STATUSES = ('error', 'rejected', 'planned', 'orders')
RESULT_STATUSES = ('ok', 'skipped', 'rejected', 'duplicate', 'error')


@dataclass(frozen=True)
class NotifySettings:
    """What the notify_result function sends where: its filters and sinks (README "Notifications").

    The sink URLs and the bot token are secrets (Secret Manager in the cloud): kept out of repr.
    """

    statuses: frozenset[str] = frozenset(NOTIFY_DEFAULT_STATUSES)
    intents: frozenset[str] | None = None          # None: every intent
    webhook_url: str | None = field(default=None, repr=False)
    slack_webhook_url: str | None = field(default=None, repr=False)
    telegram_bot_token: str | None = field(default=None, repr=False)
    telegram_chat_id: str | None = None
    telegram_api_base: str = 'https://api.telegram.org'
    timeout: float = 10.0
    max_attempts: int = 5
    store: StoreSettings = StoreSettings()       # where each sink's delivery of each result is recorded

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NotifySettings:
        """NOTIFY_* and the store's settings from `env` (default: os.environ); ConfigError names the bad variable."""
        env = os.environ if env is None else env
        get = _getter(env)

        statuses = _names(get('NOTIFY_STATUSES'), 'NOTIFY_STATUSES', RESULT_STATUSES + NOTIFY_TAGS)
        intents = _names(get('NOTIFY_INTENTS'), 'NOTIFY_INTENTS', None)
        token, chat = get('NOTIFY_TELEGRAM_BOT_TOKEN'), get('NOTIFY_TELEGRAM_CHAT_ID')
        if bool(token) != bool(chat):
            raise ConfigError('NOTIFY_TELEGRAM_BOT_TOKEN and NOTIFY_TELEGRAM_CHAT_ID go together: set both or neither')
        urls = {name: get(name) for name in ('NOTIFY_WEBHOOK_URL', 'NOTIFY_SLACK_WEBHOOK_URL', 'NOTIFY_TELEGRAM_API_BASE')}
        for name, url in urls.items():
            problem = None if url is None else _url_problem(url)
            if problem:
                raise ConfigError(f'{name} is invalid: {problem}')   # never the value: it may be a secret
        max_attempts = env.get('NOTIFY_MAX_ATTEMPTS', '').strip()
        try:
            attempts = _positive_int(max_attempts) if max_attempts else cls.max_attempts
        except ValueError as exc:
            raise ConfigError(f'NOTIFY_MAX_ATTEMPTS={max_attempts!r} is invalid: {exc}') from None
        return cls(
            statuses=statuses if statuses is not None else cls.statuses,
            intents=intents,
            webhook_url=urls['NOTIFY_WEBHOOK_URL'],
            slack_webhook_url=urls['NOTIFY_SLACK_WEBHOOK_URL'],
            telegram_bot_token=token,
            telegram_chat_id=chat,
            telegram_api_base=(urls['NOTIFY_TELEGRAM_API_BASE'] or cls.telegram_api_base).rstrip('/'),
            timeout=env_seconds(env, 'NOTIFY_TIMEOUT_SECONDS', cls.timeout),
            max_attempts=attempts,
            store=StoreSettings.from_env(env),
        )


def _url_problem(url: str) -> str | None:
    """Why urllib could never POST to `url` (without quoting it), or None."""
    if not url.startswith(('https://', 'http://')):
        return 'expected an http(s):// URL'
    if any(char.isspace() for char in url):
        return 'the URL has a space or line break inside'
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port                                # raises ValueError for a port that is not a number
    except ValueError:
        return 'the URL cannot be parsed (its host or port)'
    if not parts.hostname:
        return 'the URL has no host'
    if '@' in parts.netloc:
        return 'user or password in the URL are not sent; put the credential in the path, as the service gives it'
    return None


def _names(raw: str | None, name: str, allowed: tuple[str, ...] | None) -> frozenset[str] | None:
    """A comma list of names; None when unset; ConfigError for an empty list or a name not `allowed`."""
    if raw is None:
        return None
    names = frozenset(item.strip() for item in raw.split(',') if item.strip())
    if not names:
        raise ConfigError(f'{name}={raw!r} is invalid: expected a comma list of names')
    unknown = sorted(names - set(allowed)) if allowed is not None else []
    if unknown:
        raise ConfigError(f'{name}={raw!r} is invalid: unknown {", ".join(unknown)}; '
                          f'expected some of {", ".join(allowed)}')
    return names
