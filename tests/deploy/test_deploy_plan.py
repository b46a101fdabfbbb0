"""`python -m deploy` against a fake gcloud: the whole plan, its flags, secrets, idempotency, teardown."""
from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from deploy.cron import parse_cron
from tests.deploy.conftest import REPO, FakeCloud, make_fake_cloud, write_config

USERNAME = 'ib-user-8f3k'
PASSWORD = 'pw-Zq9!x7#secret'
PROJECT = 'demo-proj-123'
REQUEST_SCHEMA = json.loads((REPO / 'schemas' / 'intent-request.schema.json').read_text())


def sa(role: str) -> str:
    return f'serviceAccount:ib-jobs-{role}@{PROJECT}.iam.gserviceaccount.com'


def flag(argv: list[str], name: str) -> str:
    values = [arg.split('=', 1)[1] for arg in argv if arg.startswith(f'--{name}=')]
    assert len(values) == 1, f'--{name} given {len(values)} times in {argv}'
    return values[0]


@pytest.fixture(scope='module')
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The password sits in the config file, the user name comes from the environment.
    return write_config(tmp_path_factory.mktemp('config') / 'config.env', IB_PASSWORD=PASSWORD,
                        IB_ACCOUNT='DU1234567')


@pytest.fixture(scope='module')
def first_apply(tmp_path_factory: pytest.TempPathFactory, config: Path) -> tuple[FakeCloud, str]:
    """One apply into an empty project, shared by the tests that only read what it did."""
    cloud = make_fake_cloud(tmp_path_factory.mktemp('first-apply'))
    result = cloud.deploy('apply', '--config', str(config), env={'IB_USERNAME': USERNAME})
    assert result.returncode == 0, result.stderr + result.stdout
    return cloud, result.stdout + result.stderr


@pytest.fixture(scope='module')
def deployed(first_apply) -> FakeCloud:
    return first_apply[0]


@pytest.fixture
def deployed_copy(fake_cloud: FakeCloud, deployed: FakeCloud) -> FakeCloud:
    """A project in the state the first apply left, for a test to change."""
    shutil.copy(deployed.root / 'state.json', fake_cloud.root / 'state.json')
    return fake_cloud


def test_function_is_gen2_pubsub_triggered_private_and_sized_for_the_gateway(deployed):
    [deploy] = deployed.commands('functions', 'deploy')
    assert '--gen2' in deploy and '--retry' in deploy
    assert flag(deploy, 'runtime') == 'python312'
    assert flag(deploy, 'trigger-topic') == 'ib-jobs-intents'
    assert flag(deploy, 'entry-point') == 'run_intent'
    env = dict(pair.split('=', 1) for pair in flag(deploy, 'set-env-vars').split(','))
    timeout = int(flag(deploy, 'timeout').rstrip('s'))
    assert timeout > int(env['INTENT_DEADLINE_SECONDS'])
    concurrency, max_instances = int(flag(deploy, 'concurrency')), int(flag(deploy, 'max-instances'))
    assert concurrency * max_instances < 32
    assert env['THREADS'] == str(concurrency)
    low, high = map(int, env['IB_CLIENT_ID_RANGE'].split('-'))
    assert high - low + 1 >= concurrency * max_instances
    assert env['IB_GATEWAY_HOST'] == '10.128.0.9'            # the reserved internal address
    assert env['IB_GATEWAY_PORT'] == '4004' and env['TRADING_MODE'] == 'paper'
    assert env['RESULTS_TOPIC'] == 'ib-jobs-results' and env['GOOGLE_CLOUD_PROJECT'] == PROJECT
    assert env['STORE_BACKEND'] == 'firestore' and env['IB_ACCOUNT'] == 'DU1234567'
    assert flag(deploy, 'ingress-settings') == 'internal-only'
    assert '--no-allow-unauthenticated' in deploy and '--allow-unauthenticated' not in deploy
    assert flag(deploy, 'vpc-connector') == f'projects/{PROJECT}/locations/us-central1/connectors/ib-jobs-conn'
    assert flag(deploy, 'egress-settings') == 'private-ranges-only'
    assert 'serviceAccount:' + flag(deploy, 'service-account') == sa('runtime')
    assert 'serviceAccount:' + flag(deploy, 'trigger-service-account') == sa('trigger')
    build = flag(deploy, 'build-service-account')
    assert build == f'projects/{PROJECT}/serviceAccounts/' + sa('build').split(':')[1]
    assert '--ignore-file' not in ' '.join(deploy)
    assert Path(flag(deploy, 'source')) == deployed.work_dir / 'function-source'


def test_trigger_subscription_outlasts_the_function_and_dead_letters(deployed):
    [deploy] = deployed.commands('functions', 'deploy')
    timeout = int(flag(deploy, 'timeout').rstrip('s'))
    [update] = [argv for argv in deployed.commands('pubsub', 'subscriptions', 'update') if 'eventarc' in argv[3]]
    assert update[3] == 'projects/p/subscriptions/eventarc-ib-jobs-intents-sub-001'
    assert timeout < int(flag(update, 'ack-deadline')) <= 600
    assert flag(update, 'dead-letter-topic') == f'projects/{PROJECT}/topics/ib-jobs-intents-dead-letter'
    assert 5 <= int(flag(update, 'max-delivery-attempts')) <= 100
    state = deployed.state()
    assert 'pubsub subscriptions/ib-jobs-intents-dead-letter-pull' in state['resources']
    agent = 'serviceAccount:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com'
    agent_roles = {(b['resource'], b['role']) for b in state['bindings'] if b['member'] == agent}
    assert agent_roles == {('pubsub topics/ib-jobs-intents-dead-letter', 'roles/pubsub.publisher'),
                           ('pubsub subscriptions/' + update[3], 'roles/pubsub.subscriber'),
                           # signs the push tokens of the trigger account (projects from before 2021-04-08)
                           (f'iam service-accounts/{sa("trigger").split(":")[1]}',
                            'roles/iam.serviceAccountTokenCreator')}


def test_service_accounts_get_only_what_they_need(deployed):
    bindings = deployed.state()['bindings']
    by_member: dict[str, set] = {}
    for binding in bindings:
        by_member.setdefault(binding['member'], set()).add((binding['resource'], binding['role'], binding['condition']))
    database_only = f'expression=resource.name=="projects/{PROJECT}/databases/ib-jobs",title=ib-jobs-store-only'
    assert by_member[sa('runtime')] == {('pubsub topics/ib-jobs-results', 'roles/pubsub.publisher', None),
                                       (f'projects/{PROJECT}', 'roles/datastore.user', database_only)}
    assert by_member[sa('trigger')] == {('functions/ib-jobs-intents', 'roles/run.invoker', None)}
    assert by_member[sa('scheduler')] == {('pubsub topics/ib-jobs-intents', 'roles/pubsub.publisher', None)}
    assert by_member[sa('gateway')] == {
        ('secrets/ib-jobs-ib-username', 'roles/secretmanager.secretAccessor', None),
        ('secrets/ib-jobs-ib-password', 'roles/secretmanager.secretAccessor', None),
        (f'projects/{PROJECT}', 'roles/logging.logWriter', None),
        (f'projects/{PROJECT}', 'roles/monitoring.metricWriter', None)}
    assert by_member[sa('build')] == {(f'projects/{PROJECT}', role, None) for role in (
        'roles/logging.logWriter', 'roles/artifactregistry.writer', 'roles/storage.objectViewer')}
    roles = {binding['role'] for binding in bindings}
    assert not roles & {'roles/owner', 'roles/editor', 'roles/iam.serviceAccountUser'}
    for call in deployed.calls():
        command_line = ' '.join(call['argv'])
        assert 'allUsers' not in command_line and 'allAuthenticatedUsers' not in command_line


def test_gateway_is_private_and_only_the_connector_reaches_its_api_port(deployed):
    [create] = deployed.commands('compute', 'instances', 'create')
    assert '--no-address' in create
    assert flag(create, 'image-project') == 'cos-cloud'
    assert flag(create, 'private-network-ip') == '10.128.0.9'
    assert flag(create, 'tags') == 'ib-jobs-gateway'
    assert 'serviceAccount:' + flag(create, 'service-account') == sa('gateway')
    metadata = dict(pair.split('=', 1) for pair in flag(create, 'metadata').split(','))
    assert metadata['ib-gateway-image'] == 'ghcr.io/gnzsnz/ib-gateway:10.37.1n'
    assert metadata['ib-trading-mode'] == 'paper' and metadata['ib-gateway-api-port'] == '4004'
    assert metadata['ib-auto-restart-time'] == '11:59 PM'
    assert metadata['ib-twofa-timeout-action'] == 'restart'
    assert metadata['ib-existing-session-action'] == 'primary'
    user_data = Path(flag(create, 'metadata-from-file').split('=', 1)[1]).read_text()
    assert user_data.startswith('#cloud-config') and 'start-gateway.sh' in user_data
    rule, deny = deployed.commands('compute', 'firewall-rules', 'create')
    assert flag(rule, 'source-ranges') == '10.8.0.0/28'
    assert flag(rule, 'rules') == 'tcp:4004'
    assert flag(rule, 'target-tags') == 'ib-jobs-gateway'
    assert flag(rule, 'direction') == 'INGRESS' and flag(rule, 'action') == 'ALLOW'
    assert flag(deny, 'action') == 'DENY' and flag(deny, 'source-ranges') == '0.0.0.0/0'
    assert int(flag(rule, 'priority')) < int(flag(deny, 'priority')) < 65534
    assert metadata['ib-gateway-api-source-range'] == '10.8.0.0/28'
    [connector] = deployed.commands('compute', 'networks', 'vpc-access', 'connectors', 'create')
    assert flag(connector, 'range') == '10.8.0.0/28'
    assert deployed.commands('compute', 'routers', 'nats', 'create'), 'no NAT: the private VM could not reach IB'


def test_scheduler_jobs_publish_valid_requests_in_new_york_time(deployed):
    jobs = deployed.commands('scheduler', 'jobs', 'create', 'http')
    assert {argv[4] for argv in jobs} == {'ib-jobs-health', 'ib-jobs-allocation-1', 'ib-jobs-allocation-2',
                                          'ib-jobs-summary', 'ib-jobs-trade-reconciliation', 'ib-jobs-cash-balancer',
                                          'ib-jobs-collect-market-data'}
    for argv in jobs:
        assert flag(argv, 'time-zone') == 'America/New_York'
        parse_cron(flag(argv, 'schedule'))
        topic = f'projects/{PROJECT}/topics/ib-jobs-intents'
        assert flag(argv, 'uri') == f'https://pubsub.googleapis.com/v1/{topic}:publish'
        assert 'serviceAccount:' + flag(argv, 'oauth-service-account-email') == sa('scheduler')
        [message] = json.loads(flag(argv, 'message-body'))['messages']
        request = json.loads(base64.b64decode(message['data']))
        jsonschema.validate(request, REQUEST_SCHEMA)
        assert message['attributes'] == {'source': 'scheduler', 'job': argv[4].removeprefix('ib-jobs-')}


def test_no_secret_value_appears_in_any_argument_or_output(first_apply):
    fake_cloud, output = first_apply
    calls = fake_cloud.calls()
    for call in calls:
        for secret in (USERNAME, PASSWORD):
            assert not any(secret in arg for arg in call['argv']), call['argv']
    for secret in (USERNAME, PASSWORD):
        assert secret not in output
        for rendered in fake_cloud.work_dir.rglob('*'):    # rendered files and the staged function source
            assert rendered.is_dir() or secret.encode() not in rendered.read_bytes()
    added = {call['argv'][3]: call['stdin'] for call in calls if call['argv'][:3] == ['secrets', 'versions', 'add']}
    assert added == {'ib-jobs-ib-username': USERNAME, 'ib-jobs-ib-password': PASSWORD}
    assert fake_cloud.state()['secret_versions'] == {'ib-jobs-ib-username': [USERNAME],
                                                    'ib-jobs-ib-password': [PASSWORD]}


def test_rerun_updates_what_exists_and_adds_no_unchanged_secret(deployed_copy, config):
    deployed = deployed_copy
    before = deployed.state()['resources'].keys()
    again = deployed.deploy('apply', '--config', str(config), env={'IB_USERNAME': USERNAME})
    assert again.returncode == 0, again.stderr
    assert deployed.state()['resources'].keys() == before
    created = [call['argv'] for call in deployed.calls() if 'create' in call['argv'][:4] or call['argv'][:1] == ['mk']]
    assert created == []
    assert deployed.commands('functions', 'deploy'), 'the function is redeployed with the current settings'
    assert len(deployed.commands('scheduler', 'jobs', 'update', 'http')) == 7
    assert deployed.commands('compute', 'instances', 'add-metadata')
    assert deployed.commands('alpha', 'monitoring', 'policies', 'update')
    assert not deployed.commands('secrets', 'versions', 'add')

    changed = deployed.deploy('apply', '--config', str(config),
                              env={'IB_USERNAME': USERNAME, 'IB_PASSWORD': 'a-new-password-1'})
    assert changed.returncode == 0, changed.stderr
    assert deployed.state()['secret_versions']['ib-jobs-ib-password'] == [PASSWORD, 'a-new-password-1']
    assert deployed.state()['secret_versions']['ib-jobs-ib-username'] == [USERNAME]


def test_dry_run_prints_every_command_and_runs_none(fake_cloud, config):
    result = fake_cloud.deploy('apply', '--config', str(config), '--dry-run', env={'IB_USERNAME': USERNAME})
    assert result.returncode == 0, result.stderr
    assert fake_cloud.calls() == []
    assert not fake_cloud.work_dir.exists()
    printed = result.stdout
    for expected in ('gcloud services enable', 'gcloud functions deploy ib-jobs-intents',
                     'gcloud compute instances create ib-jobs-gateway', 'gcloud compute firewall-rules create',
                     'gcloud pubsub subscriptions update "${TRIGGER_SUBSCRIPTION}" --ack-deadline=600',
                     'gcloud secrets versions add ib-jobs-ib-password --data-file=-',
                     'gcloud alpha monitoring policies create', 'gcloud firestore databases create'):
        assert expected in printed
    assert printed.count('gcloud scheduler jobs create http') == 7
    assert USERNAME not in printed and PASSWORD not in printed


def test_a_job_removed_from_the_schedules_is_deleted(deployed_copy, tmp_path):
    deployed = deployed_copy
    schedules = tmp_path / 'schedules.yaml'
    schedules.write_text('jobs:\n  - name: health\n    schedule: "*/15 9-16 * * MON-FRI"\n'
                         '    request: {intent: health}\n')
    smaller = write_config(tmp_path / 'smaller.env', SCHEDULES_FILE=schedules)
    result = deployed.deploy('apply', '--config', str(smaller))
    assert result.returncode == 0, result.stderr
    jobs = {key for key in deployed.state()['resources'] if key.startswith('scheduler jobs/')}
    assert jobs == {'scheduler jobs/ib-jobs-health'}


def test_teardown_removes_what_deploy_created(deployed_copy, config):
    deployed = deployed_copy
    assert deployed.deploy('teardown', '--config', str(config)).returncode == 2, 'teardown must ask for --yes'
    result = deployed.deploy('teardown', '--config', str(config), '--yes')
    assert result.returncode == 0, result.stderr
    state = deployed.state()
    assert set(state['resources']) == {'firestore databases/ib-jobs', 'firestore fields ttls/ib-jobs/history/expireAt',
                                       'firestore fields ttls/ib-jobs/deliveries/expireAt',
                                       'firestore fields ttls/ib-jobs/plans/expireAt',
                                       'secrets/ib-jobs-ib-username',
                                       'secrets/ib-jobs-ib-password'}, 'data is kept without --delete-data'
    assert [b for b in state['bindings'] if not b['resource'].startswith('secrets/')] == []
    result = deployed.deploy('teardown', '--config', str(config), '--yes', '--delete-data')
    assert result.returncode == 0, result.stderr
    assert deployed.state()['resources'] == {} and deployed.state()['bindings'] == []


def test_a_failing_command_stops_the_deploy_and_names_it(fake_cloud, config):
    result = fake_cloud.deploy('apply', '--config', str(config), env={'FAKE_GCLOUD_FAIL': 'functions deploy'})
    assert result.returncode == 1
    assert 'gcloud functions deploy ib-jobs-intents' in result.stderr and 'PERMISSION_DENIED' in result.stderr
    assert fake_cloud.commands('scheduler', 'jobs', 'create', 'http') == []
    assert len(fake_cloud.commands('functions', 'deploy')) == 1, 'an ordinary error is not retried'


def test_a_propagation_error_that_never_clears_is_retried_a_bounded_number_of_times(fake_cloud, config):
    eventarc = ('FAILED_PRECONDITION: Permission denied while using the Eventarc Service Agent. If you recently '
                'started to use Eventarc, it may take a few minutes before all necessary permissions are propagated')
    result = fake_cloud.deploy('apply', '--config', str(config), env={
        'FAKE_GCLOUD_FAIL': 'functions deploy', 'FAKE_GCLOUD_FAIL_MESSAGE': eventarc, 'DEPLOY_RETRY_DELAYS': '0,0'})
    assert result.returncode == 1
    assert len(fake_cloud.commands('functions', 'deploy')) == 3
    assert result.stdout.count('not ready yet: waiting 0 s for the Eventarc service agent') == 2
    assert 'still failed after 3 attempts waiting for the Eventarc service agent' in result.stderr
    assert 'run apply again later' in result.stderr


def test_bigquery_subscription_writes_results_to_a_table_matching_the_contract(fake_cloud, tmp_path):
    config = write_config(tmp_path / 'bq.env', BIGQUERY_TABLE='trading.results')
    result = fake_cloud.deploy('apply', '--config', str(config))
    assert result.returncode == 0, result.stderr
    [create] = [argv for argv in fake_cloud.commands('pubsub', 'subscriptions', 'create')
                if 'ib-jobs-results-bigquery' in argv]
    assert flag(create, 'bigquery-table') == f'{PROJECT}:trading.results'
    assert '--use-table-schema' in create and flag(create, 'topic') == 'ib-jobs-results'
    table = [call['argv'] for call in fake_cloud.calls() if call['program'] == 'bq' and '--table' in call['argv']][0]
    columns = {column['name'] for column in json.loads(Path(table[-1]).read_text())}
    result_fields = json.loads((REPO / 'schemas' / 'intent-result.schema.json').read_text())['properties']
    assert set(result_fields) <= columns
    assert 'bigquery.googleapis.com' in fake_cloud.state()['services']


def test_a_short_user_name_found_inside_other_words_does_not_stop_the_deploy(fake_cloud, config):
    # 'u' occurs in cloudfunctions.googleapis.com and in most flags, but is no argument's value
    dry = fake_cloud.deploy('apply', '--config', str(config), '--dry-run', env={'IB_USERNAME': 'u'})
    assert dry.returncode == 0, dry.stderr
    assert 'gcloud secrets versions add ib-jobs-ib-username --data-file=- --project=demo-proj-123 --quiet <<< ' \
           '"$IB_USERNAME"' in dry.stdout
    real = fake_cloud.deploy('apply', '--config', str(config), env={'IB_USERNAME': 'u'})
    assert real.returncode == 0, real.stderr
    assert fake_cloud.state()['secret_versions']['ib-jobs-ib-username'] == ['u']


def test_an_error_stays_readable_and_hides_a_short_user_name(fake_cloud, config):
    result = fake_cloud.deploy('apply', '--config', str(config), env={
        'IB_USERNAME': 'u', 'FAKE_GCLOUD_FAIL': 'functions deploy',
        'FAKE_GCLOUD_FAIL_MESSAGE': 'PERMISSION_DENIED: quota exceeded for user u'})
    assert result.returncode == 1
    assert 'PERMISSION_DENIED: quota exceeded for user <IB_USERNAME>' in result.stderr


@pytest.mark.parametrize('dry_run', [True, False])
def test_a_secret_value_in_an_argument_is_refused(fake_cloud, tmp_path, dry_run):
    # The account id doubles as the password: it would land in the function's --set-env-vars.
    leaky = write_config(tmp_path / 'leaky.env', IB_ACCOUNT='DU7654321x')
    args = ('apply', '--config', str(leaky)) + (('--dry-run',) if dry_run else ())
    result = fake_cloud.deploy(*args, env={'IB_PASSWORD': 'DU7654321x'})
    assert result.returncode == 1
    assert 'refusing to put the value of IB_PASSWORD on a command line' in result.stderr
    assert 'DU7654321x' not in result.stdout + result.stderr
    assert not any('DU7654321x' in arg for call in fake_cloud.calls() for arg in call['argv'])
