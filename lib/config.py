"""Runtime settings read from environment variables, validated once per invocation."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Mapping, TypeVar

T = TypeVar('T')

TRADING_MODES = ('paper', 'live')


class ConfigError(ValueError):
    """An environment variable holds a value that cannot be used."""


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
    project: str | None = None
    publish_timeout: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `env` (default: os.environ); raise ConfigError naming the bad variable."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, '').strip()
            return value or None

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
            deadline_seconds=parse('INTENT_DEADLINE_SECONDS', positive_seconds, cls.deadline_seconds),
            results_topic=get('RESULTS_TOPIC'),
            project=get('GOOGLE_CLOUD_PROJECT'),
            publish_timeout=parse('PUBLISH_TIMEOUT_SECONDS', positive_seconds, cls.publish_timeout),
        )


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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NotifySettings:
        """NOTIFY_* from `env` (default: os.environ); ConfigError names the bad variable."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, '').strip()
            return value or None

        statuses = _names(get('NOTIFY_STATUSES'), 'NOTIFY_STATUSES', RESULT_STATUSES + NOTIFY_TAGS)
        intents = _names(get('NOTIFY_INTENTS'), 'NOTIFY_INTENTS', None)
        token, chat = get('NOTIFY_TELEGRAM_BOT_TOKEN'), get('NOTIFY_TELEGRAM_CHAT_ID')
        if bool(token) != bool(chat):
            raise ConfigError('NOTIFY_TELEGRAM_BOT_TOKEN and NOTIFY_TELEGRAM_CHAT_ID go together: set both or neither')
        urls = {name: get(name) for name in ('NOTIFY_WEBHOOK_URL', 'NOTIFY_SLACK_WEBHOOK_URL', 'NOTIFY_TELEGRAM_API_BASE')}
        for name, url in urls.items():
            if url is not None and not url.startswith(('https://', 'http://')):
                raise ConfigError(f'{name} is invalid: expected an http(s):// URL')   # the value may be a secret
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
        )


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
