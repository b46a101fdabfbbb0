"""Deploy settings: defaults, and the limits that keep the function within the gateway's reach."""
from __future__ import annotations

import pytest

from deploy.config import ConfigError, config_from_values, parse_env_file
from tests.deploy.conftest import EXAMPLE_CONFIG


def config(**values: str):
    return config_from_values({'PROJECT': 'demo-proj-123', **values}, environ={})


def test_the_example_config_with_a_project_is_valid_and_leaves_room_on_the_gateway():
    values = parse_env_file(EXAMPLE_CONFIG.read_text())
    cfg = config_from_values({**values, 'PROJECT': 'demo-proj-123'}, environ={})
    assert cfg.client_slots < 32
    assert cfg.function_timeout_seconds > cfg.intent_deadline_seconds
    assert cfg.function_timeout_seconds < cfg.ack_deadline_seconds <= 600
    assert cfg.function_name == 'ib-jobs-intents' and cfg.ib_password_secret == 'ib-jobs-ib-password'
    assert cfg.gateway_port == 4004


def test_env_file_syntax():
    assert parse_env_file('# comment\n\nexport A=1\nB="two words"\nC=\'x=y\'\nD=\n') == {
        'A': '1', 'B': 'two words', 'C': 'x=y', 'D': ''}
    with pytest.raises(ConfigError, match='line 1'):
        parse_env_file('not a setting\n')


@pytest.mark.parametrize(('values', 'message'), [
    ({'FUNCTION_CONCURRENCY': '8', 'FUNCTION_MAX_INSTANCES': '4'}, r'= 32: it must stay below'),
    ({'FUNCTION_CONCURRENCY': '4', 'IB_CLIENT_ID_RANGE': '100-110'}, 'holds 11 ids, fewer than the 20'),
    ({'FUNCTION_CONCURRENCY': '2', 'FUNCTION_CPU': '0.5'}, 'needs FUNCTION_CPU of at least 1'),
    ({'FUNCTION_TIMEOUT_SECONDS': '80'}, r'between INTENT_DEADLINE_SECONDS \+ 30 \(90\) and 540'),
    ({'FUNCTION_TIMEOUT_SECONDS': '600'}, 'and 540'),
    ({'ACK_DEADLINE_SECONDS': '120'}, 'must be above FUNCTION_TIMEOUT_SECONDS'),
    ({'MAX_DELIVERY_ATTEMPTS': '3'}, 'at least 5'),
    ({'GATEWAY_IMAGE': 'ghcr.io/gnzsnz/ib-gateway:stable'}, 'fixed version'),
    ({'GATEWAY_IMAGE': 'ghcr.io/gnzsnz/ib-gateway'}, 'fixed version'),
    ({'STORE_BACKEND': 'sqlite'}, 'must be firestore'),
    ({'TRADING_MODE': 'both'}, 'one of paper, live'),
    ({'GATEWAY_AUTO_RESTART_TIME': '23:59'}, 'hh:mm AM'),
    ({'GATEWAY_TIME_ZONE': 'Mars/Olympus'}, 'not an IANA time zone'),
    ({'CONNECTOR_RANGE': '10.8.0.0/24'}, '/28'),
    ({'FUNCTION_SECRETS': 'IB_TOKEN=token'}, 'ENV_NAME=SECRET_NAME:VERSION'),
    ({'PROJCT': 'typo'}, 'unknown setting'),
    ({'NOTIFY_SINKS': 'email'}, 'NOTIFY_SINKS: email unknown'),
    ({'NOTIFY_SINKS': 'telegram'}, 'set NOTIFY_TELEGRAM_CHAT_ID too'),
    ({'NOTIFY_TELEGRAM_CHAT_ID': 'my chat'}, 'numeric chat id'),
    ({'NOTIFY_STATUSES': 'error,placed'}, 'NOTIFY_STATUSES.*unknown placed'),
    ({'PROJECT': 'X'}, 'not a Google Cloud project id'),
])
def test_unusable_settings_are_refused_with_the_reason(values, message):
    with pytest.raises(ConfigError, match=message):
        config(**values)


def test_live_mode_uses_the_live_api_port_and_secrets_come_from_the_environment_first():
    cfg = config_from_values({'PROJECT': 'demo-proj-123', 'TRADING_MODE': 'live', 'IB_PASSWORD': 'from-file'},
                             environ={'IB_PASSWORD': 'from-env', 'IB_USERNAME': 'someone'})
    assert cfg.gateway_port == 4003
    assert cfg.secret_values == {'IB_PASSWORD': 'from-env', 'IB_USERNAME': 'someone'}
    assert 'from-env' not in repr(cfg)


def test_function_secrets_are_parsed():
    cfg = config(FUNCTION_SECRETS='ALERT_TOKEN=alert-token:3, OTHER=other:latest')
    assert [(s.env, s.secret, s.version) for s in cfg.function_secrets] == [
        ('ALERT_TOKEN', 'alert-token', '3'), ('OTHER', 'other', 'latest')]


def test_notify_sinks_name_their_secrets_and_take_their_values_from_the_environment_first():
    cfg = config_from_values({'PROJECT': 'demo-proj-123', 'NOTIFY_SINKS': 'slack, webhook',
                              'NOTIFY_WEBHOOK_URL': 'https://example.com/from-file'},
                             environ={'NOTIFY_SLACK_WEBHOOK_URL': 'https://hooks.slack.com/services/env'})
    assert cfg.notify_sinks == ('slack', 'webhook')
    assert [cfg.notify_secret(sink) for sink in cfg.notify_sinks] == ['ib-jobs-notify-slack-webhook-url',
                                                                     'ib-jobs-notify-webhook-url']
    assert cfg.secret_values == {'NOTIFY_SLACK_WEBHOOK_URL': 'https://hooks.slack.com/services/env',
                                 'NOTIFY_WEBHOOK_URL': 'https://example.com/from-file'}
    assert 'hooks.slack' not in repr(cfg) and config().notify_sinks == ()
