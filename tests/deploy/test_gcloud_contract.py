"""The whole deploy through the real gcloud: every command of apply (create and update branches) and of
teardown, with Google's APIs replaced by a local stub that records the request bodies gcloud sends.

What is asserted is what Google would receive, so a flag that gcloud maps differently than we think, a
command that never reaches its API, or a missing setting fails here. New deploy steps pass through this
test automatically; add assertions on their bodies below. See tests/deploy/google_stub.py.
"""
from __future__ import annotations

import base64
import json
from typing import Any

import jsonschema
import pytest

from deploy.alerts import POLICY_FILES, health_filter, render_policy
from deploy.config import config_from_values
from deploy.schedules import job_id, load_jobs
from tests.deploy.conftest import CONTRACT_NOTIFY, CONTRACT_PROJECT as P, REPO
from tests.deploy.google_stub import PROJECT_NUMBER, Recorded, is_collection

REGION = 'us-central1'
LOCATION = f'projects/{P}/locations/{REGION}'
REQUEST_SCHEMA = json.loads((REPO / 'schemas' / 'intent-request.schema.json').read_text())
RESULT_SCHEMA = json.loads((REPO / 'schemas' / 'intent-result.schema.json').read_text())
PUBSUB_AGENT = f'serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com'
INTENTS_TRIGGER_SUB = 'eventarc-us-central1-ib-jobs-intents-t1-sub-001'
NOTIFY_TRIGGER_SUB = 'eventarc-us-central1-ib-jobs-notify-t1-sub-001'
NOTIFY_SECRETS = {'ib-jobs-notify-webhook-url': CONTRACT_NOTIFY['NOTIFY_WEBHOOK_URL'],
                  'ib-jobs-notify-slack-webhook-url': CONTRACT_NOTIFY['NOTIFY_SLACK_WEBHOOK_URL'],
                  'ib-jobs-notify-telegram-bot-token': CONTRACT_NOTIFY['NOTIFY_TELEGRAM_BOT_TOKEN']}


def job_names() -> list[str]:
    """The scheduler jobs deploy/schedules.yaml asks for."""
    cfg = config_from_values({'PROJECT': P}, environ={})
    return sorted(job_id(cfg, job) for job in load_jobs(cfg.schedules_file))


def sa(role: str) -> str:
    return f'ib-jobs-{role}@{P}.iam.gserviceaccount.com'


def final_bindings(stub: Recorded) -> dict[str, set[tuple[str, str, str | None]]]:
    """member -> {(resource, role, condition expression)} as the last setIamPolicy of each resource left it."""
    policies: dict[str, dict[str, Any]] = {}
    for request in stub.requests:
        if request.path.endswith(':setIamPolicy'):
            policies[request.path.removesuffix(':setIamPolicy')] = request.body['policy']
    by_member: dict[str, set] = {}
    for resource, policy in policies.items():
        for binding in policy.get('bindings', []):
            condition = (binding.get('condition') or {}).get('expression')
            for who in binding['members']:
                by_member.setdefault(who, set()).add((resource.split('/', 2)[2], binding['role'], condition))
    return by_member


# --- create branch ------------------------------------------------------------------------------

def test_function_create_body(gcloud_contract):
    stub = gcloud_contract.created.stub
    # the first attempt met the Eventarc agent not being ready (tested below); the second went through
    first, create = [r for r in stub.sent('cloudfunctions', 'POST', r'/functions$')
                     if r.query['functionId'] == 'ib-jobs-intents']
    assert first.body == create.body
    function = create.body
    build, trigger, service = function['buildConfig'], function['eventTrigger'], function['serviceConfig']
    assert (build['runtime'], build['entryPoint']) == ('python312', 'run_intent')
    assert build['serviceAccount'] == f'projects/{P}/serviceAccounts/{sa("build")}'
    assert build['source']['storageSource']['object'] == 'function-source.zip'   # what was uploaded
    assert trigger['eventType'] == 'google.cloud.pubsub.topic.v1.messagePublished'
    assert trigger['pubsubTopic'] == f'projects/{P}/topics/ib-jobs-intents'
    assert trigger['retryPolicy'] == 'RETRY_POLICY_RETRY'
    assert trigger['serviceAccountEmail'] == sa('trigger')
    assert service['ingressSettings'] == 'ALLOW_INTERNAL_ONLY'
    assert service['vpcConnector'] == f'{LOCATION}/connectors/ib-jobs-conn'
    assert service['vpcConnectorEgressSettings'] == 'PRIVATE_RANGES_ONLY'
    assert service['serviceAccountEmail'] == sa('runtime')
    concurrency, instances = service['maxInstanceRequestConcurrency'], service['maxInstanceCount']
    assert concurrency * instances < 32
    env = service['environmentVariables']
    assert env['THREADS'] == str(concurrency) and env['IB_GATEWAY_HOST'] == '10.128.0.9'
    assert env['IB_GATEWAY_PORT'] == '4004' and env['STORE_BACKEND'] == 'firestore'
    assert int(service['timeoutSeconds']) > int(env['INTENT_DEADLINE_SECONDS'])
    assert list(stub.uploads) == ['function-source.zip']


def test_notify_function_create_body(gcloud_contract):
    stub = gcloud_contract.created.stub
    [create] = [r for r in stub.sent('cloudfunctions', 'POST', r'/functions$') if r.query['functionId'] == 'ib-jobs-notify']
    build, trigger, service = create.body['buildConfig'], create.body['eventTrigger'], create.body['serviceConfig']
    assert (build['runtime'], build['entryPoint']) == ('python312', 'notify_result')
    assert build['serviceAccount'] == f'projects/{P}/serviceAccounts/{sa("build")}'
    assert trigger['eventType'] == 'google.cloud.pubsub.topic.v1.messagePublished'
    assert trigger['pubsubTopic'] == f'projects/{P}/topics/ib-jobs-results'
    assert trigger['retryPolicy'] == 'RETRY_POLICY_RETRY'
    assert trigger['serviceAccountEmail'] == sa('trigger')
    assert service['serviceAccountEmail'] == sa('notify')
    assert service['ingressSettings'] == 'ALLOW_INTERNAL_ONLY'
    assert 'vpcConnector' not in service          # the sinks are on the internet
    env = service['environmentVariables']
    assert env['NOTIFY_STATUSES'] == 'error,rejected,orders'     # a comma inside a value survives gcloud's parsing
    assert env['NOTIFY_TELEGRAM_CHAT_ID'] == '-1001234567' and env['NOTIFY_MAX_ATTEMPTS'] == '10'
    assert (env['STORE_BACKEND'], env['FIRESTORE_DATABASE']) == ('firestore', 'ib-jobs')
    secrets = {s['key']: (s['secret'], s['version']) for s in service['secretEnvironmentVariables']}
    assert secrets == {'NOTIFY_WEBHOOK_URL': ('ib-jobs-notify-webhook-url', 'latest'),
                       'NOTIFY_SLACK_WEBHOOK_URL': ('ib-jobs-notify-slack-webhook-url', 'latest'),
                       'NOTIFY_TELEGRAM_BOT_TOKEN': ('ib-jobs-notify-telegram-bot-token', 'latest')}
    assert not any(value in json.dumps(create.body) for value in NOTIFY_SECRETS.values())


def test_first_deploy_propagation_errors_are_waited_out(gcloud_contract):
    output = gcloud_contract.created.output
    assert 'not ready yet: waiting 0.2 s for the Eventarc service agent to receive its permissions' in output
    assert 'not ready yet: waiting 0.2 s for a Google service agent to be created' in output
    stub = gcloud_contract.created.stub
    assert len(stub.sent('pubsub', 'POST', r'/topics/ib-jobs-intents-dead-letter:setIamPolicy$')) == 2


def test_firewall_rules_admit_the_connector_and_deny_everyone_else(gcloud_contract):
    sent = gcloud_contract.created.stub.sent('compute', 'POST', r'/global/firewalls$')
    rules = {r.body['name']: r.body for r in sent}
    allow, deny = rules['ib-jobs-gateway-api'], rules['ib-jobs-gateway-api-deny']
    assert allow['allowed'] == [{'IPProtocol': 'tcp', 'ports': ['4004']}]
    assert allow['sourceRanges'] == ['10.8.0.0/28'] and allow['targetTags'] == ['ib-jobs-gateway']
    assert deny['denied'] == [{'IPProtocol': 'tcp', 'ports': ['4001-4004']}]
    assert deny['sourceRanges'] == ['0.0.0.0/0'] and deny['targetTags'] == ['ib-jobs-gateway']
    assert allow['priority'] < deny['priority'] < 65534


def test_iam_grants_are_exactly_the_documented_ones(gcloud_contract):
    by_member = final_bindings(gcloud_contract.created.stub)
    database_only = f'resource.name=="projects/{P}/databases/ib-jobs"'
    project = f'projects/{P}'
    assert by_member.pop(f'serviceAccount:{sa("runtime")}') == {
        (f'{project}/topics/ib-jobs-results', 'roles/pubsub.publisher', None),
        (project, 'roles/datastore.user', database_only)}
    assert by_member.pop(f'serviceAccount:{sa("scheduler")}') == {
        (f'{project}/topics/ib-jobs-intents', 'roles/pubsub.publisher', None)}
    assert by_member.pop(f'serviceAccount:{sa("gateway")}') == {
        (f'{project}/secrets/ib-jobs-ib-username', 'roles/secretmanager.secretAccessor', None),
        (f'{project}/secrets/ib-jobs-ib-password', 'roles/secretmanager.secretAccessor', None),
        (project, 'roles/logging.logWriter', None), (project, 'roles/monitoring.metricWriter', None)}
    assert by_member.pop(f'serviceAccount:{sa("notify")}') == {
        *((f'{project}/secrets/{secret}', 'roles/secretmanager.secretAccessor', None) for secret in NOTIFY_SECRETS),
        (project, 'roles/datastore.user', database_only)}
    assert by_member.pop(f'serviceAccount:{sa("build")}') == {
        (project, role, None) for role in
        ('roles/logging.logWriter', 'roles/artifactregistry.writer', 'roles/storage.objectViewer')}
    invokers = by_member.pop(f'serviceAccount:{sa("trigger")}')
    assert {(resource.rsplit('/', 1)[1], role) for resource, role, _ in invokers} == {
        ('ib-jobs-intents', 'roles/run.invoker'), ('ib-jobs-notify', 'roles/run.invoker')}
    agent = by_member.pop(PUBSUB_AGENT)
    assert {(resource.rsplit('/', 1)[-1], role) for resource, role, _ in agent} == {
        ('results', 'roles/bigquery.dataEditor'),                # the BigQuery table, only with BIGQUERY_TABLE
        ('ib-jobs-intents-dead-letter', 'roles/pubsub.publisher'),
        (INTENTS_TRIGGER_SUB, 'roles/pubsub.subscriber'),
        ('ib-jobs-results-dead-letter', 'roles/pubsub.publisher'),
        (NOTIFY_TRIGGER_SUB, 'roles/pubsub.subscriber'),
        (sa('trigger'), 'roles/iam.serviceAccountTokenCreator')}
    assert by_member == {}, f'grants nobody asked for: {by_member}'


@pytest.mark.parametrize('subscription, dead_letters', [(INTENTS_TRIGGER_SUB, 'ib-jobs-intents-dead-letter'),
                                                        (NOTIFY_TRIGGER_SUB, 'ib-jobs-results-dead-letter')])
def test_trigger_subscription_patch(gcloud_contract, subscription, dead_letters):
    patch = gcloud_contract.created.stub.body_of('pubsub', 'PATCH', f'/subscriptions/{subscription}$')
    subscription = patch['subscription']
    assert subscription['ackDeadlineSeconds'] == 600
    assert subscription['deadLetterPolicy'] == {'deadLetterTopic': f'projects/{P}/topics/{dead_letters}',
                                                'maxDeliveryAttempts': 10}
    assert subscription['retryPolicy'] == {'minimumBackoff': '10s', 'maximumBackoff': '600s'}
    assert set(patch['updateMask'].split(',')) == {'ackDeadlineSeconds', 'deadLetterPolicy', 'retryPolicy'}


def test_scheduler_jobs_publish_valid_requests_as_the_scheduler_account(gcloud_contract):
    jobs = [r.body for r in gcloud_contract.created.stub.sent('cloudscheduler', 'POST', r'/jobs$')]
    assert sorted(job['name'].rsplit('/', 1)[1] for job in jobs) == job_names()
    for job in jobs:
        target = job['httpTarget']
        assert job['timeZone'] == 'America/New_York'
        assert target['uri'] == f'https://pubsub.googleapis.com/v1/projects/{P}/topics/ib-jobs-intents:publish'
        assert target['httpMethod'] == 'POST'
        assert target['oauthToken']['serviceAccountEmail'] == sa('scheduler')
        [message] = json.loads(base64.b64decode(target['body']))['messages']
        jsonschema.validate(json.loads(base64.b64decode(message['data'])), REQUEST_SCHEMA)
        assert job['retryConfig']['retryCount'] == 3


def test_alert_policies_and_their_metric(gcloud_contract):
    stub = gcloud_contract.created.stub
    cfg = config_from_values({'PROJECT': P}, environ={})
    policies = {r.body['displayName']: r.body for r in stub.sent('monitoring', 'POST', r'/alertPolicies$')}
    rendered = {policy['displayName']: policy for policy in (render_policy(cfg, name) for name in POLICY_FILES)}
    assert set(policies) == set(rendered)
    for name, policy in policies.items():   # what Google receives is what deploy/alerts says, condition by condition
        assert policy['conditions'] == rendered[name]['conditions'], name
        assert policy['alertStrategy'] == rendered[name]['alertStrategy'], name
    metric = stub.body_of('logging', 'POST', r'/metrics$')
    assert metric['name'] == 'ib_jobs_health_ok' and metric['filter'] == health_filter(cfg)


def test_run_history_expires_by_a_firestore_ttl_policy(gcloud_contract):
    created = gcloud_contract.created.stub
    database = f'/v1/projects/{P}/databases/ib-jobs'
    for stub in (created, gcloud_contract.updated.stub):
        patches = stub.sent('firestore', 'PATCH', r'/fields/')
        assert [patch.path for patch in patches] == [             # what lib/store writes
            f'{database}/collectionGroups/{group}/fields/expireAt' for group in ('history', 'deliveries', 'plans')]
        for patch in patches:
            assert patch.query['updateMask'] == 'ttlConfig' and patch.body['ttlConfig'] == {}
    [create] = created.sent('firestore', 'POST', r'/databases$')
    assert created.requests.index(create) < created.requests.index(created.sent('firestore', 'PATCH', '')[0])


def test_bigquery_dataset_table_grant_and_subscription_through_bq_and_gcloud(gcloud_contract):
    stub = gcloud_contract.created.stub
    assert stub.sent('$discovery', 'GET', r'^/rest$'), 'bq did not load its discovery document from the stub'
    dataset = stub.body_of('bigquery', 'POST', r'/projects/[^/]+/datasets$')
    assert dataset['datasetReference'] == {'projectId': P, 'datasetId': 'trading'}
    assert dataset['location'] == REGION
    table = stub.body_of('bigquery', 'POST', r'/datasets/trading/tables$')
    assert table['tableReference'] == {'projectId': P, 'datasetId': 'trading', 'tableId': 'results'}
    assert table['timePartitioning']['field'] == 'startedAt'
    columns = {field['name']: field['type'] for field in table['schema']['fields']}
    assert columns['result'] == 'JSON' and columns['startedAt'] == 'TIMESTAMP'
    assert set(RESULT_SCHEMA['properties']) <= set(columns)
    subscription = stub.body_of('pubsub', 'PUT', r'/subscriptions/ib-jobs-results-bigquery$')
    assert subscription['topic'] == f'projects/{P}/topics/ib-jobs-results'
    # the form gcloud's --bigquery-table documents and passes on as it is
    assert subscription['bigqueryConfig'] == {'table': f'{P}:trading.results', 'useTableSchema': True,
                                              'writeMetadata': True}
    assert stub.sent('bigquery', 'PATCH', '') == []
    updated = gcloud_contract.updated.stub
    assert updated.sent('bigquery', 'POST', r'/(datasets|tables)$') == []
    assert len(updated.sent('bigquery', 'PATCH', r'/datasets/trading/tables/results$')
               + updated.sent('bigquery', 'PUT', r'/datasets/trading/tables/results$')) == 1


def test_secrets_go_in_request_bodies_only(gcloud_contract):
    stub = gcloud_contract.created.stub
    added = {r.path.split('/secrets/')[1].split(':')[0]: base64.b64decode(r.body['payload']['data']).decode()
             for r in stub.sent('secretmanager', 'POST', r':addVersion$')}
    assert added == {'ib-jobs-ib-username': 'ib-user-8f3k', 'ib-jobs-ib-password': 'pw-Zq9!x7#secret',
                     **NOTIFY_SECRETS}
    for value in ('pw-Zq9!x7#secret', *NOTIFY_SECRETS.values()):
        assert value not in gcloud_contract.created.output


def test_gateway_vm_body(gcloud_contract):
    vm = gcloud_contract.created.stub.body_of('compute', 'POST', r'/instances$')
    [interface] = vm['networkInterfaces']
    assert 'accessConfigs' not in interface or interface['accessConfigs'] == []
    assert interface['networkIP'] == '10.128.0.9'
    assert vm['tags']['items'] == ['ib-jobs-gateway']
    metadata = {item['key']: item['value'] for item in vm['metadata']['items']}
    assert metadata['ib-gateway-api-source-range'] == '10.8.0.0/28'
    assert metadata['user-data'].startswith('#cloud-config')
    assert not any(secret in json.dumps(vm) for secret in ('ib-user-8f3k', 'pw-Zq9!x7#secret'))


# --- update branch ----------------------------------------------------------------------------

def test_the_update_branch_changes_what_exists_and_creates_nothing(gcloud_contract):
    stub = gcloud_contract.updated.stub
    created = [str(r) for r in stub.requests
               if (r.method == 'POST' and is_collection(r.path)) or (r.api == 'pubsub' and r.method == 'PUT')]
    assert created == [], 'the update pass created resources'
    function = stub.body_of('cloudfunctions', 'PATCH', r'/functions/ib-jobs-intents$')
    assert function['buildConfig']['serviceAccount'] == f'projects/{P}/serviceAccounts/{sa("build")}'
    assert function['serviceConfig']['ingressSettings'] == 'ALLOW_INTERNAL_ONLY'
    assert len(stub.sent('cloudscheduler', 'PATCH', r'/jobs/ib-jobs-')) == len(job_names())
    assert [r.path.rsplit('/', 1)[1] for r in stub.sent('cloudscheduler', 'DELETE', '')] == ['ib-jobs-retired-job']
    patched = {r.path.rsplit('/', 1)[1]: r.body for r in stub.sent('compute', 'PATCH', r'/firewalls/')}
    assert patched['ib-jobs-gateway-api']['sourceRanges'] == ['10.8.0.0/28']
    assert patched['ib-jobs-gateway-api-deny']['priority'] == 2000
    assert len(stub.sent('monitoring', 'PATCH', r'/alertPolicies/')) == len(POLICY_FILES)
    assert stub.sent('compute', 'POST', r'/instances/ib-jobs-gateway/setMetadata$')


# --- teardown ---------------------------------------------------------------------------------

def test_teardown_deletes_everything_apply_created(gcloud_contract):
    stub = gcloud_contract.torn_down.stub
    deleted = {r.path.split('/', 2)[2] if r.path.startswith('/v') else r.path.lstrip('/')
               for r in stub.requests if r.method == 'DELETE'}
    expected = {
        f'{LOCATION}/functions/ib-jobs-intents', f'{LOCATION}/functions/ib-jobs-notify',
        f'projects/{P}/topics/ib-jobs-results-dead-letter', f'projects/{P}/subscriptions/ib-jobs-results-dead-letter-pull',
        *(f'projects/{P}/secrets/{secret}' for secret in NOTIFY_SECRETS),
        f'projects/{P}/zones/us-central1-a/instances/ib-jobs-gateway',
        f'projects/{P}/global/firewalls/ib-jobs-gateway-api', f'projects/{P}/global/firewalls/ib-jobs-gateway-api-deny',
        f'projects/{P}/regions/{REGION}/addresses/ib-jobs-gateway-ip',
        f'projects/{P}/regions/{REGION}/routers/ib-jobs-router', f'{LOCATION}/connectors/ib-jobs-conn',
        f'projects/{P}/databases/ib-jobs', f'projects/{P}/metrics/ib_jobs_health_ok',
        *(f'projects/{P}/topics/{t}' for t in ('ib-jobs-intents', 'ib-jobs-results', 'ib-jobs-intents-dead-letter')),
        *(f'projects/{P}/subscriptions/{s}' for s in ('ib-jobs-results-pull', 'ib-jobs-intents-dead-letter-pull',
                                                      'ib-jobs-results-bigquery')),
        *(f'projects/{P}/secrets/ib-jobs-{s}' for s in ('ib-username', 'ib-password')),

        *(f'{LOCATION}/jobs/{name}' for name in job_names()),
    }
    assert expected - deleted == set()
    accounts = {path.rsplit('/', 1)[1] for path in deleted if '/serviceAccounts/' in path}
    assert accounts == {sa(role) for role in ('runtime', 'trigger', 'scheduler', 'gateway', 'build', 'notify')}
    policies_deleted = [r for r in stub.requests if r.method == 'DELETE' and '/alertPolicies/' in r.path]
    assert len(policies_deleted) == len(POLICY_FILES)
    project_policy = [r.body['policy'] for r in stub.requests if r.path == f'/v1/projects/{P}:setIamPolicy'][-1]
    assert project_policy.get('bindings', []) == [], 'project-level grants left behind'


@pytest.mark.parametrize('text', ['ERROR:', 'Traceback'])
def test_no_command_reported_an_error_it_survived(gcloud_contract, text):
    for run in (gcloud_contract.created, gcloud_contract.updated):
        assert text not in run.output
