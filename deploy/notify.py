"""The notify function (`<prefix>-notify`, entry point notify_result): results that reach people.

Deployed only when NOTIFY_SINKS names a sink (without one, apply removes an earlier one). It is triggered by the results topic through its own Eventarc
trigger (invoked as `<prefix>-trigger`, like the intents function), runs as `<prefix>-notify`, which may read
only its sinks' secrets and use the store's database (the per-sink delivery records), and reaches the sinks
over the internet (no VPC connector). Its trigger subscription gets the same ack deadline and backoff as
the intents function's, and dead letters after MAX_DELIVERY_ATTEMPTS on `<results topic>-dead-letter`
(pull subscription `…-pull`, kept 7 days); NOTIFY_MAX_ATTEMPTS is set to the same number, so a failing sink
is tried at each delivery until the result is dead-lettered. Teardown removes all of it whatever the config says.
"""
from __future__ import annotations

from pathlib import Path

from deploy.config import NOTIFY_SINK_SECRETS, DeployConfig
from deploy.function import RUNTIME, env_list, source_dir
from deploy.identity import member, pubsub_agent_member, store_condition
from deploy.messaging import RETENTION
from deploy.steps import Always, Ensure, Query, Ref, Remove, Step, gcloud, secret_with_value

ENTRY_POINT = 'notify_result'
# Each sink is sent in turn, each send bounded by NOTIFY_TIMEOUT_SECONDS (10) per step: well within this.
TIMEOUT_SECONDS = 120
MEMORY = '256Mi'
MAX_INSTANCES = 3


def environment(cfg: DeployConfig) -> dict[str, str]:
    """The notify function's plain environment (the sinks' URLs and token come from Secret Manager)."""
    env = {'GOOGLE_CLOUD_PROJECT': cfg.project, 'STORE_BACKEND': 'firestore',
           'FIRESTORE_DATABASE': cfg.firestore_database, 'THREADS': '1',
           'NOTIFY_MAX_ATTEMPTS': str(cfg.max_delivery_attempts)}
    if cfg.notify_statuses:
        env['NOTIFY_STATUSES'] = cfg.notify_statuses
    if cfg.notify_intents:
        env['NOTIFY_INTENTS'] = cfg.notify_intents
    if 'telegram' in cfg.notify_sinks:
        env['NOTIFY_TELEGRAM_CHAT_ID'] = cfg.notify_telegram_chat_id
    return env


def secret_steps(cfg: DeployConfig) -> list[Step]:
    """A secret per sink, and a new version when its value (NOTIFY_WEBHOOK_URL, ...) was given and changed."""
    return [step for sink in cfg.notify_sinks
            for step in secret_with_value(cfg.project, cfg.notify_secret(sink), NOTIFY_SINK_SECRETS[sink])]


def topic_steps(cfg: DeployConfig) -> list[Step]:
    """The dead-letter topic of the notify trigger, and its pull subscription."""
    if not cfg.notify_sinks:
        return []
    topic, subscription = cfg.notify_dead_letter_topic, f'{cfg.notify_dead_letter_topic}-pull'
    settings = (f'--message-retention-duration={RETENTION}', '--expiration-period=never')
    return [Ensure(f'topic {topic}', probe=gcloud(cfg.project, 'pubsub', 'topics', 'describe', topic),
                   create=(gcloud(cfg.project, 'pubsub', 'topics', 'create', topic),)),
            Ensure(f'subscription {subscription}',
                   probe=gcloud(cfg.project, 'pubsub', 'subscriptions', 'describe', subscription),
                   create=(gcloud(cfg.project, 'pubsub', 'subscriptions', 'create', subscription,
                                  f'--topic={topic}', *settings),),
                   update=(gcloud(cfg.project, 'pubsub', 'subscriptions', 'update', subscription, *settings),))]


def grants(cfg: DeployConfig) -> list[Step]:
    """`<prefix>-notify` reads its sinks' secrets; the Pub/Sub agent may forward its dead letters."""
    if not cfg.notify_sinks:
        return []
    notifier = member(cfg.service_account('notify'))
    commands = [gcloud(cfg.project, 'secrets', 'add-iam-policy-binding', cfg.notify_secret(sink),
                       f'--member={notifier}', '--role=roles/secretmanager.secretAccessor')
                for sink in cfg.notify_sinks]
    commands.append(gcloud(cfg.project, 'pubsub', 'topics', 'add-iam-policy-binding', cfg.notify_dead_letter_topic,
                           pubsub_agent_member(), '--role=roles/pubsub.publisher'))
    return [Always('grants of the notify function', tuple(commands))]


def project_grants(cfg: DeployConfig) -> list[tuple[str, str, str | None]]:
    """The notify account's one project-level grant: the store's database only (its delivery records)."""
    return [(member(cfg.service_account('notify')), 'roles/datastore.user', store_condition(cfg))]


def function_steps(cfg: DeployConfig, work_dir: Path) -> list[Step]:
    """Deploy the function from the source the intents function staged, then set up its trigger subscription;
    with no sink configured, remove a notify function an earlier apply deployed (its topic keeps its dead letters)."""
    region = f'--region={cfg.region}'
    if not cfg.notify_sinks:
        return remove_notify(cfg, delete_data=False)[:1]
    escape, env = env_list(environment(cfg))
    secrets = ','.join(f'{NOTIFY_SINK_SECRETS[sink]}={cfg.notify_secret(sink)}:latest' for sink in cfg.notify_sinks)
    build_account = f'projects/{cfg.project}/serviceAccounts/{cfg.service_account("build")}'
    subscription = Ref('NOTIFY_TRIGGER_SUBSCRIPTION')
    return [
        Always(f'function {cfg.notify_function}', (gcloud(
            cfg.project, 'functions', 'deploy', cfg.notify_function, '--gen2', region, f'--runtime={RUNTIME}',
            f'--source={source_dir(work_dir)}', f'--entry-point={ENTRY_POINT}',
            f'--trigger-topic={cfg.results_topic}', '--retry', f'--timeout={TIMEOUT_SECONDS}s',
            f'--memory={MEMORY}', '--cpu=0.167', '--concurrency=1', f'--max-instances={MAX_INSTANCES}', '--min-instances=0',
            '--ingress-settings=internal-only', '--no-allow-unauthenticated',
            f'--service-account={cfg.service_account("notify")}',
            f'--trigger-service-account={cfg.service_account("trigger")}',
            f'--build-service-account={build_account}',
            f'--set-env-vars={escape}{env}', f'--set-secrets={secrets}'),)),
        Query('NOTIFY_TRIGGER', gcloud(cfg.project, 'functions', 'describe', cfg.notify_function, region,
                                       '--format=value(eventTrigger.trigger)')),
        Query('NOTIFY_TRIGGER_SUBSCRIPTION', gcloud(cfg.project, 'eventarc', 'triggers', 'describe',
                                                    Ref('NOTIFY_TRIGGER'), f'--location={cfg.region}',
                                                    '--format=value(transport.pubsub.subscription)')),
        Always('notify trigger subscription: ack deadline, backoff and dead letters; who may invoke and forward', (
            gcloud(cfg.project, 'pubsub', 'subscriptions', 'update', subscription,
                   f'--ack-deadline={cfg.ack_deadline_seconds}', '--min-retry-delay=10s', '--max-retry-delay=600s',
                   f'--dead-letter-topic={cfg.topic_path(cfg.notify_dead_letter_topic)}',
                   f'--max-delivery-attempts={cfg.max_delivery_attempts}'),
            gcloud(cfg.project, 'functions', 'add-invoker-policy-binding', cfg.notify_function, region,
                   f'--member={member(cfg.service_account("trigger"))}'),
            gcloud(cfg.project, 'pubsub', 'subscriptions', 'add-iam-policy-binding', subscription,
                   pubsub_agent_member(), '--role=roles/pubsub.subscriber'),
        )),
    ]


def remove_notify(cfg: DeployConfig, delete_data: bool) -> list[Step]:
    """Delete the function (its trigger goes with it), the dead-letter subscription and topic, and with
    `delete_data` the sinks' secrets; each only if it exists."""
    region = f'--region={cfg.region}'
    topic, subscription = cfg.notify_dead_letter_topic, f'{cfg.notify_dead_letter_topic}-pull'
    steps: list[Step] = [
        Remove(f'function {cfg.notify_function}',
               probe=gcloud(cfg.project, 'functions', 'describe', cfg.notify_function, region),
               delete=(gcloud(cfg.project, 'functions', 'delete', cfg.notify_function, region),)),
        Remove(f'subscription {subscription}',
               probe=gcloud(cfg.project, 'pubsub', 'subscriptions', 'describe', subscription),
               delete=(gcloud(cfg.project, 'pubsub', 'subscriptions', 'delete', subscription),)),
        Remove(f'topic {topic}', probe=gcloud(cfg.project, 'pubsub', 'topics', 'describe', topic),
               delete=(gcloud(cfg.project, 'pubsub', 'topics', 'delete', topic),)),
    ]
    if delete_data:
        steps += [Remove(f'secret {cfg.notify_secret(sink)}',
                         probe=gcloud(cfg.project, 'secrets', 'describe', cfg.notify_secret(sink)),
                         delete=(gcloud(cfg.project, 'secrets', 'delete', cfg.notify_secret(sink)),))
                  for sink in NOTIFY_SINK_SECRETS]
    return steps
