"""Alert policies and the BigQuery table follow the function's real log lines and result contract."""
from __future__ import annotations

import json

from deploy.alerts import POLICY_FILES, health_filter, health_metric, render_policy
from deploy.bigquery import METADATA_COLUMNS, table_schema
from deploy.config import config_from_values
from tests.deploy.conftest import REPO

CFG = config_from_values({'PROJECT': 'demo-proj-123',
                          'ALERT_NOTIFICATION_CHANNELS': 'projects/demo-proj-123/notificationChannels/42'}, environ={})
RESULT_SCHEMA = json.loads((REPO / 'schemas' / 'intent-result.schema.json').read_text())


def test_policies_render_for_this_deploy():
    names = set()
    for file_name in POLICY_FILES:
        policy = render_policy(CFG, file_name)
        names.add(policy['displayName'])
        assert policy['notificationChannels'] == ['projects/demo-proj-123/notificationChannels/42']
        assert policy['displayName'].startswith('ib-jobs: ') and policy['conditions']
        assert 'ib-jobs-intents' in policy['documentation']['content']
    assert len(names) == len(POLICY_FILES), 'display names identify the policies, so they must differ'


def test_error_alert_matches_the_line_the_function_logs_for_an_error_result():
    [condition] = render_policy(CFG, 'error-result.json')['conditions']
    log_filter = condition['conditionMatchedLog']['filter']
    # functions/handler.py logs one line per run with the result status as a payload field.
    assert 'resource.labels.service_name="ib-jobs-intents"' in log_filter
    assert 'jsonPayload.status="error"' in log_filter


def test_missing_health_alert_reads_the_metric_the_deploy_creates_during_market_hours_only():
    [condition] = render_policy(CFG, 'missing-health.json')['conditions']
    query = condition['conditionPrometheusQueryLanguage']['query']
    assert f'logging_googleapis_com:user_{health_metric(CFG)}' in query
    assert 'absent_over_time' in query
    # 15:00-20:00 UTC lies inside 9:30-16:00 New York time in winter (14:30-21:00 UTC) and summer (13:30-20:00).
    assert 'hour() >= 15 and hour() < 20' in query and 'day_of_week() >= 1 and day_of_week() <= 5' in query
    assert 'labels.intent="health"' in health_filter(CFG) and 'jsonPayload.status="ok"' in health_filter(CFG)


def test_bigquery_columns_follow_the_result_contract():
    columns = {column['name']: column for column in table_schema(RESULT_SCHEMA)}
    assert set(columns) == set(RESULT_SCHEMA['properties']) | {column['name'] for column in METADATA_COLUMNS}
    assert columns['startedAt']['type'] == 'TIMESTAMP' and columns['durationMs']['type'] == 'FLOAT'
    assert columns['dryRun']['type'] == 'BOOLEAN' and columns['result']['type'] == 'JSON'
    assert columns['status']['type'] == 'STRING'
    timings = {field['name']: field['type'] for field in columns['timings']['fields']}
    assert timings == {'queueMs': 'FLOAT', 'connectMs': 'FLOAT', 'intentMs': 'FLOAT'}
    gateway = {field['name']: field['type'] for field in columns['gateway']['fields']}
    assert gateway['port'] == 'INTEGER' and gateway['host'] == 'STRING'
    assert {field['name'] for field in columns['error']['fields']} == {'type', 'message', 'retryable'}
