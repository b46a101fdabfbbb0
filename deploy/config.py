"""The deploy settings: one env file (see deploy/config.env.example), validated before anything runs.

IB credentials may come from the file or, better, from the environment (`IB_USERNAME`, `IB_PASSWORD`).
They are uploaded to Secret Manager through gcloud's standard input and never appear in a command line.
"""
from __future__ import annotations

import os
import re
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, TypeVar

T = TypeVar('T')

REPO = Path(__file__).resolve().parent.parent
# IB Gateway accepts at most 32 simultaneous API clients.
GATEWAY_API_CLIENTS = 32
# Event-driven 2nd gen functions run at most 540 s; a Pub/Sub ack deadline is at most 600 s.
MAX_FUNCTION_TIMEOUT = 540
MAX_ACK_DEADLINE = 600
# Time the function needs besides the intent itself: connecting, publishing the result.
TIMEOUT_MARGIN_SECONDS = 30
# gnzsnz/ib-gateway relays the API with socat on 4004 (paper) and 4003 (live).
GATEWAY_PORTS = {'paper': 4004, 'live': 4003}
# the notify function's sinks, and the setting holding each one's secret (its URL or bot token)
NOTIFY_SINK_SECRETS = {'webhook': 'NOTIFY_WEBHOOK_URL', 'slack': 'NOTIFY_SLACK_WEBHOOK_URL',
                       'telegram': 'NOTIFY_TELEGRAM_BOT_TOKEN'}
SECRET_VALUE_NAMES = ('IB_USERNAME', 'IB_PASSWORD', *NOTIFY_SINK_SECRETS.values())

_PROJECT_ID = re.compile(r'^[a-z][a-z0-9-]{4,28}[a-z0-9]$')
_NAME = re.compile(r'^[a-z][a-z0-9-]*[a-z0-9]$')
_TOPIC = re.compile(r'^[A-Za-z][A-Za-z0-9._~%+-]{2,254}$')
_SECRET_REF = re.compile(r'^([A-Z_][A-Z0-9_]*)=([A-Za-z0-9_-]+):(latest|[0-9]+)$')
_CLOCK_TIME = re.compile(r'^(0?[1-9]|1[0-2]):[0-5][0-9] (AM|PM)$')
_CIDR_28 = re.compile(r'^(\d{1,3}\.){3}\d{1,3}/28$')
_IPV4 = re.compile(r'^(\d{1,3}\.){3}\d{1,3}$')


class ConfigError(ValueError):
    """The deploy configuration cannot be used; the message names the setting."""


@dataclass(frozen=True)
class FunctionSecret:
    """An environment variable of the function filled from Secret Manager."""

    env: str
    secret: str
    version: str


@dataclass(frozen=True)
class DeployConfig:
    """Validated deploy settings; see deploy/config.env.example for what each one means."""

    project: str
    region: str = 'us-central1'
    zone: str = 'us-central1-a'
    name_prefix: str = 'ib-jobs'
    function_name: str = ''
    # the topics and the database default to names derived from name_prefix (see config_from_values)
    intents_topic: str = 'ib-jobs-intents'
    results_topic: str = 'ib-jobs-results'
    dead_letter_topic: str = 'ib-jobs-intents-dead-letter'
    function_memory: str = '512Mi'
    function_cpu: float = 1.0
    function_concurrency: int = 4
    function_max_instances: int = 5
    function_min_instances: int = 0
    function_timeout_seconds: int = 120
    function_secrets: tuple[FunctionSecret, ...] = ()
    ack_deadline_seconds: int = 600
    max_delivery_attempts: int = 10
    intent_deadline_seconds: int = 60
    client_id_range: tuple[int, int] = (100, 199)
    ib_account: str = ''
    trading_mode: str = 'paper'
    allow_live_trading: bool = False
    firestore_database: str = 'ib-jobs'
    firestore_location: str = 'nam5'
    network: str = 'default'
    subnet: str = 'default'
    connector_range: str = '10.8.0.0/28'
    gateway_machine_type: str = 'e2-medium'
    gateway_image: str = 'ghcr.io/gnzsnz/ib-gateway:10.37.1n'
    gateway_internal_ip: str = ''
    gateway_auto_restart_time: str = '11:59 PM'
    gateway_twofa_timeout_action: str = 'restart'
    gateway_relogin_after_twofa_timeout: bool = True
    gateway_existing_session_action: str = 'primary'
    gateway_read_only_api: bool = False
    gateway_time_zone: str = 'America/New_York'
    ib_username_secret: str = ''
    ib_password_secret: str = ''
    schedules_file: Path = REPO / 'deploy' / 'schedules.yaml'
    bigquery_table: str = ''
    alert_notification_channels: tuple[str, ...] = ()
    notify_sinks: tuple[str, ...] = ()          # none: no notify function
    notify_statuses: str = ''                   # empty: the function's default
    notify_intents: str = ''
    notify_telegram_chat_id: str = ''
    secret_values: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def gateway_port(self) -> int:
        """The port the gateway container serves the API on for this trading mode."""
        return GATEWAY_PORTS[self.trading_mode]

    @property
    def gateway_vm(self) -> str:
        return f'{self.name_prefix}-gateway'

    @property
    def gateway_address(self) -> str:
        return f'{self.name_prefix}-gateway-ip'

    @property
    def gateway_tag(self) -> str:
        """Network tag the firewall rule targets."""
        return f'{self.name_prefix}-gateway'

    @property
    def connector(self) -> str:
        return f'{self.name_prefix}-conn'

    @property
    def connector_path(self) -> str:
        return f'projects/{self.project}/locations/{self.region}/connectors/{self.connector}'

    @property
    def firewall_rule(self) -> str:
        return f'{self.name_prefix}-gateway-api'

    @property
    def firewall_deny_rule(self) -> str:
        return f'{self.name_prefix}-gateway-api-deny'

    @property
    def router(self) -> str:
        return f'{self.name_prefix}-router'

    @property
    def nat(self) -> str:
        return f'{self.name_prefix}-nat'

    @property
    def dead_letter_subscription(self) -> str:
        return f'{self.dead_letter_topic}-pull'

    @property
    def results_subscription(self) -> str:
        return f'{self.results_topic}-pull'

    @property
    def bigquery_subscription(self) -> str:
        return f'{self.results_topic}-bigquery'

    @property
    def notify_function(self) -> str:
        return f'{self.name_prefix}-notify'

    @property
    def notify_dead_letter_topic(self) -> str:
        return f'{self.results_topic}-dead-letter'

    def notify_secret(self, sink: str) -> str:
        """The Secret Manager secret holding `sink`'s URL or token: <prefix>-notify-webhook-url, ..."""
        return f'{self.name_prefix}-{NOTIFY_SINK_SECRETS[sink].lower().replace("_", "-")}'

    def service_account(self, role: str) -> str:
        """Email of the deploy's service account for `role` (runtime, trigger, scheduler, gateway, build)."""
        return f'{self.name_prefix}-{role}@{self.project}.iam.gserviceaccount.com'

    def topic_path(self, topic: str) -> str:
        return f'projects/{self.project}/topics/{topic}'

    @property
    def client_slots(self) -> int:
        """The most API clients the function can hold open at once."""
        return self.function_concurrency * self.function_max_instances


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines; blank lines, `#` comment lines and an `export ` prefix are allowed.

    A value may be wrapped in single or double quotes, which are removed.
    """
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith('#'):
            continue
        if line.startswith('export '):
            line = line[len('export '):].lstrip()
        key, sep, value = line.partition('=')
        key, value = key.strip(), value.strip()
        if not sep or not re.fullmatch(r'[A-Z_][A-Z0-9_]*', key):
            raise ConfigError(f'line {number}: expected KEY=VALUE, got {raw!r}')
        if len(value) >= 2 and value[0] == value[-1] and value[0] in '\'"':
            value = value[1:-1]
        values[key] = value
    return values


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> DeployConfig:
    """Read and validate the env file at `path`; IB_USERNAME/IB_PASSWORD in `environ` win over the file."""
    environ = os.environ if environ is None else environ
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f'cannot read {path}: {exc.strerror or exc}') from None
    return config_from_values(parse_env_file(text), environ)


def config_from_values(values: Mapping[str, str], environ: Mapping[str, str]) -> DeployConfig:
    """Build a DeployConfig from parsed KEY=VALUE pairs; raise ConfigError naming the bad setting."""
    unknown = sorted(set(values) - _KNOWN_KEYS)
    if unknown:
        raise ConfigError(f'unknown setting(s): {", ".join(unknown)} (see deploy/config.env.example)')
    reader = _Reader(values)
    defaults = DeployConfig(project='x')
    project = reader.text('PROJECT', '')
    if not _PROJECT_ID.match(project):
        raise ConfigError(f'PROJECT={project!r} is not a Google Cloud project id')
    prefix = reader.text('NAME_PREFIX', defaults.name_prefix)
    if not _NAME.match(prefix) or len(prefix) > 15:
        raise ConfigError(f'NAME_PREFIX={prefix!r} must be lowercase letters, digits and dashes, at most 15')
    trading_mode = reader.choice('TRADING_MODE', defaults.trading_mode, ('paper', 'live'))
    if reader.text('STORE_BACKEND', 'firestore') != 'firestore':
        raise ConfigError('STORE_BACKEND must be firestore in the cloud: instances share no disk, '
                          'so an SQLite store could not see claims made by another instance')
    schedules = Path(reader.text('SCHEDULES_FILE', str(defaults.schedules_file)))
    # Named after the prefix, so two deploys (paper and live) in one project share no topic or database.
    intents_topic = reader.topic('INTENTS_TOPIC', f'{prefix}-intents')
    secrets = {name: environ.get(name) or values.get(name, '') for name in SECRET_VALUE_NAMES}
    config = DeployConfig(
        project=project,
        region=reader.name('REGION', defaults.region),
        zone=reader.name('ZONE', defaults.zone),
        name_prefix=prefix,
        function_name=reader.name('FUNCTION_NAME', f'{prefix}-intents'),
        intents_topic=intents_topic,
        results_topic=reader.topic('RESULTS_TOPIC', f'{prefix}-results'),
        dead_letter_topic=reader.topic('DEAD_LETTER_TOPIC', f'{intents_topic}-dead-letter'),
        function_memory=reader.matching('FUNCTION_MEMORY', defaults.function_memory,
                                        r'^[0-9]+(k|M|G|Ki|Mi|Gi)$', 'a size such as 512Mi or 1Gi'),
        function_cpu=reader.number('FUNCTION_CPU', defaults.function_cpu, float, minimum=0.083),
        function_concurrency=reader.number('FUNCTION_CONCURRENCY', defaults.function_concurrency, int, minimum=1),
        function_max_instances=reader.number('FUNCTION_MAX_INSTANCES', defaults.function_max_instances, int,
                                             minimum=1),
        function_min_instances=reader.number('FUNCTION_MIN_INSTANCES', defaults.function_min_instances, int,
                                             minimum=0),
        function_timeout_seconds=reader.number('FUNCTION_TIMEOUT_SECONDS', defaults.function_timeout_seconds, int,
                                               minimum=1),
        function_secrets=reader.function_secrets('FUNCTION_SECRETS'),
        ack_deadline_seconds=reader.number('ACK_DEADLINE_SECONDS', defaults.ack_deadline_seconds, int, minimum=10),
        max_delivery_attempts=reader.number('MAX_DELIVERY_ATTEMPTS', defaults.max_delivery_attempts, int,
                                            minimum=5, maximum=100),
        intent_deadline_seconds=reader.number('INTENT_DEADLINE_SECONDS', defaults.intent_deadline_seconds, int,
                                              minimum=1),
        client_id_range=reader.client_id_range('IB_CLIENT_ID_RANGE', defaults.client_id_range),
        ib_account=reader.text('IB_ACCOUNT', ''),
        trading_mode=trading_mode,
        allow_live_trading=reader.boolean('ALLOW_LIVE_TRADING', defaults.allow_live_trading),
        firestore_database=reader.name('FIRESTORE_DATABASE', prefix),
        firestore_location=reader.name('FIRESTORE_LOCATION', defaults.firestore_location),
        network=reader.name('NETWORK', defaults.network),
        subnet=reader.name('SUBNET', defaults.subnet),
        connector_range=reader.matching('CONNECTOR_RANGE', defaults.connector_range, _CIDR_28.pattern,
                                        'an unused /28 range such as 10.8.0.0/28'),
        gateway_machine_type=reader.name('GATEWAY_MACHINE_TYPE', defaults.gateway_machine_type),
        gateway_image=reader.pinned_image('GATEWAY_IMAGE', defaults.gateway_image),
        gateway_internal_ip=reader.matching('GATEWAY_INTERNAL_IP', '', _IPV4.pattern, 'an IPv4 address', empty=True),
        gateway_auto_restart_time=reader.matching('GATEWAY_AUTO_RESTART_TIME', defaults.gateway_auto_restart_time,
                                                  _CLOCK_TIME.pattern, 'hh:mm AM or hh:mm PM', empty=True),
        gateway_twofa_timeout_action=reader.choice('GATEWAY_TWOFA_TIMEOUT_ACTION',
                                                   defaults.gateway_twofa_timeout_action, ('restart', 'exit')),
        gateway_relogin_after_twofa_timeout=reader.boolean('GATEWAY_RELOGIN_AFTER_TWOFA_TIMEOUT',
                                                           defaults.gateway_relogin_after_twofa_timeout),
        gateway_existing_session_action=reader.choice(
            'GATEWAY_EXISTING_SESSION_ACTION', defaults.gateway_existing_session_action,
            ('primary', 'primaryoverride', 'secondary', 'manual')),
        gateway_read_only_api=reader.boolean('GATEWAY_READ_ONLY_API', defaults.gateway_read_only_api),
        gateway_time_zone=reader.time_zone('GATEWAY_TIME_ZONE', defaults.gateway_time_zone),
        ib_username_secret=reader.name('IB_USERNAME_SECRET', f'{prefix}-ib-username'),
        ib_password_secret=reader.name('IB_PASSWORD_SECRET', f'{prefix}-ib-password'),
        schedules_file=schedules if schedules.is_absolute() else REPO / schedules,
        bigquery_table=reader.matching('BIGQUERY_TABLE', '', r'^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$',
                                       'DATASET.TABLE', empty=True),
        alert_notification_channels=reader.items('ALERT_NOTIFICATION_CHANNELS'),
        notify_sinks=reader.subset('NOTIFY_SINKS', tuple(NOTIFY_SINK_SECRETS)),
        notify_statuses=','.join(reader.items('NOTIFY_STATUSES')),
        notify_intents=','.join(reader.items('NOTIFY_INTENTS')),
        notify_telegram_chat_id=reader.matching('NOTIFY_TELEGRAM_CHAT_ID', '', r'^(-?[0-9]+|@[A-Za-z0-9_]{5,})$',
                                                'a numeric chat id or @channelname', empty=True),
        secret_values={name: value for name, value in secrets.items() if value},
    )
    _check_limits(config)
    return config


def _check_limits(config: DeployConfig) -> None:
    _check_notify(config)
    database = config.firestore_database
    if database != '(default)' and not 4 <= len(database) <= 63:
        raise ConfigError(f'FIRESTORE_DATABASE={database!r} must be 4 to 63 characters (Firestore database ids); '
                          'it defaults to NAME_PREFIX, so set it or use a longer prefix')
    slots = config.client_slots
    if slots >= GATEWAY_API_CLIENTS:
        raise ConfigError(f'FUNCTION_CONCURRENCY x FUNCTION_MAX_INSTANCES = {slots}: it must stay below the '
                          f"gateway's {GATEWAY_API_CLIENTS} API clients (leave room for TWS and checks)")
    low, high = config.client_id_range
    if high - low + 1 < slots:
        raise ConfigError(f'IB_CLIENT_ID_RANGE={low}-{high} holds {high - low + 1} ids, fewer than the '
                          f'{slots} clients the function may open at once')
    if config.function_concurrency > 1 and config.function_cpu < 1:
        raise ConfigError('FUNCTION_CONCURRENCY above 1 needs FUNCTION_CPU of at least 1')
    if config.function_min_instances > config.function_max_instances:
        raise ConfigError('FUNCTION_MIN_INSTANCES is above FUNCTION_MAX_INSTANCES')
    least = config.intent_deadline_seconds + TIMEOUT_MARGIN_SECONDS
    if not least <= config.function_timeout_seconds <= MAX_FUNCTION_TIMEOUT:
        raise ConfigError(f'FUNCTION_TIMEOUT_SECONDS={config.function_timeout_seconds} must be between '
                          f'INTENT_DEADLINE_SECONDS + {TIMEOUT_MARGIN_SECONDS} ({least}) and {MAX_FUNCTION_TIMEOUT}')
    if not config.function_timeout_seconds < config.ack_deadline_seconds <= MAX_ACK_DEADLINE:
        raise ConfigError(f'ACK_DEADLINE_SECONDS={config.ack_deadline_seconds} must be above '
                          f'FUNCTION_TIMEOUT_SECONDS ({config.function_timeout_seconds}) and at most {MAX_ACK_DEADLINE}'
                          ', or Pub/Sub delivers the message again while the first run is still going')


def _check_notify(config: DeployConfig) -> None:
    from functions.notify import checked_intents
    from lib.config import ConfigError as SettingsError, NotifySettings

    if 'telegram' in config.notify_sinks and not config.notify_telegram_chat_id:
        raise ConfigError('NOTIFY_SINKS has telegram: set NOTIFY_TELEGRAM_CHAT_ID too')
    try:   # the function's own reading of its filters, so the deploy refuses what the function would
        checked_intents(NotifySettings.from_env({'NOTIFY_STATUSES': config.notify_statuses,
                                                 'NOTIFY_INTENTS': config.notify_intents}))
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None


class _Reader:
    """Typed access to the raw settings, each error naming its key."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values

    def text(self, key: str, default: str) -> str:
        value = self.values.get(key, '').strip()
        return value or default

    def name(self, key: str, default: str) -> str:
        value = self.text(key, default)
        if not _NAME.match(value) and value != '(default)':
            raise ConfigError(f'{key}={value!r} must be lowercase letters, digits and dashes')
        return value

    def topic(self, key: str, default: str) -> str:
        value = self.text(key, default)
        if not _TOPIC.match(value) or value.startswith('goog'):
            raise ConfigError(f'{key}={value!r} is not a valid Pub/Sub topic id')
        return value

    def matching(self, key: str, default: str, pattern: str, what: str, empty: bool = False) -> str:
        value = self.text(key, default)
        if (value or not empty) and not re.match(pattern, value):
            raise ConfigError(f'{key}={value!r} must be {what}')
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(key, default).lower()
        if value not in choices:
            raise ConfigError(f'{key}={value!r} must be one of {", ".join(choices)}')
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.text(key, '').lower()
        if not value:
            return default
        if value in ('1', 'true', 'yes', 'on'):
            return True
        if value in ('0', 'false', 'no', 'off'):
            return False
        raise ConfigError(f'{key}={value!r} must be true or false')

    def number(self, key: str, default: T, convert: Callable[[str], T], minimum: float,
               maximum: float | None = None) -> T:
        raw = self.text(key, '')
        if not raw:
            return default
        try:
            value = convert(raw)
        except ValueError:
            raise ConfigError(f'{key}={raw!r} is not a {convert.__name__}') from None
        if value < minimum or (maximum is not None and value > maximum):   # type: ignore[operator]
            bounds = f'at least {minimum:g}' + (f' and at most {maximum:g}' if maximum is not None else '')
            raise ConfigError(f'{key}={raw!r} must be {bounds}')
        return value

    def client_id_range(self, key: str, default: tuple[int, int]) -> tuple[int, int]:
        raw = self.text(key, '')
        if not raw:
            return default
        match = re.fullmatch(r'(\d+)-(\d+)', raw)
        if not match or not 1 <= int(match[1]) <= int(match[2]):
            raise ConfigError(f'{key}={raw!r} must be LOW-HIGH with 1 <= LOW <= HIGH')
        return int(match[1]), int(match[2])

    def time_zone(self, key: str, default: str) -> str:
        value = self.text(key, default)
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f'{key}={value!r} is not an IANA time zone') from None
        return value

    def pinned_image(self, key: str, default: str) -> str:
        value = self.text(key, default)
        reference = value.rsplit('/', 1)[-1]
        if '@sha256:' not in value and (':' not in reference or reference.endswith((':latest', ':stable'))):
            raise ConfigError(f'{key}={value!r} must name a fixed version (a version tag or @sha256 digest), '
                              'so a redeploy never changes the gateway by surprise')
        return value

    def items(self, key: str) -> tuple[str, ...]:
        return tuple(item.strip() for item in self.text(key, '').split(',') if item.strip())

    def subset(self, key: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
        chosen = self.items(key)
        unknown = [item for item in chosen if item not in allowed]
        if unknown:
            raise ConfigError(f'{key}: {", ".join(unknown)} unknown; choose from {", ".join(allowed)}')
        return tuple(dict.fromkeys(chosen))

    def function_secrets(self, key: str) -> tuple[FunctionSecret, ...]:
        found = []
        for item in self.items(key):
            match = _SECRET_REF.match(item)
            if not match:
                raise ConfigError(f'{key}: {item!r} must be ENV_NAME=SECRET_NAME:VERSION')
            found.append(FunctionSecret(match[1], match[2], match[3]))
        return tuple(found)


_KNOWN_KEYS = frozenset({
    'PROJECT', 'REGION', 'ZONE', 'NAME_PREFIX', 'FUNCTION_NAME', 'INTENTS_TOPIC', 'RESULTS_TOPIC',
    'DEAD_LETTER_TOPIC', 'FUNCTION_MEMORY', 'FUNCTION_CPU', 'FUNCTION_CONCURRENCY', 'FUNCTION_MAX_INSTANCES',
    'FUNCTION_MIN_INSTANCES', 'FUNCTION_TIMEOUT_SECONDS', 'FUNCTION_SECRETS', 'ACK_DEADLINE_SECONDS',
    'MAX_DELIVERY_ATTEMPTS', 'INTENT_DEADLINE_SECONDS', 'IB_CLIENT_ID_RANGE', 'IB_ACCOUNT', 'TRADING_MODE',
    'ALLOW_LIVE_TRADING', 'STORE_BACKEND', 'FIRESTORE_DATABASE', 'FIRESTORE_LOCATION', 'NETWORK', 'SUBNET',
    'CONNECTOR_RANGE', 'GATEWAY_MACHINE_TYPE', 'GATEWAY_IMAGE', 'GATEWAY_INTERNAL_IP', 'GATEWAY_AUTO_RESTART_TIME',
    'GATEWAY_TWOFA_TIMEOUT_ACTION', 'GATEWAY_RELOGIN_AFTER_TWOFA_TIMEOUT', 'GATEWAY_EXISTING_SESSION_ACTION',
    'GATEWAY_READ_ONLY_API', 'GATEWAY_TIME_ZONE', 'IB_USERNAME_SECRET', 'IB_PASSWORD_SECRET', 'SCHEDULES_FILE',
    'BIGQUERY_TABLE', 'ALERT_NOTIFICATION_CHANNELS', 'NOTIFY_SINKS', 'NOTIFY_STATUSES', 'NOTIFY_INTENTS',
    'NOTIFY_TELEGRAM_CHAT_ID', *SECRET_VALUE_NAMES,
})
