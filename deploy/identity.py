"""Service accounts and every IAM grant the deploy makes, in one place to review.

| account | may |
|---|---|
| runtime (the function) | publish to the results topic; read the function's secrets; use the store's database |
| trigger (Eventarc) | invoke the intents function (and the notify function, when deployed) |
| notify (the notify function, with NOTIFY_SINKS) | read its sinks' secrets; use the store's database (deploy/notify.py) |
| scheduler (Cloud Scheduler) | publish to the intents topic |
| gateway (the VM) | read the two IB credential secrets; write logs and metrics |
| build (Cloud Build, building the function) | write build logs; push the image; read the uploaded source |
| Pub/Sub service agent | forward dead letters; write the BigQuery table; sign the trigger's push tokens |

Grants are on the resource itself wherever IAM allows it; the only project-level grants are the
gateway's log and metric writers, the build account's three roles (the ones Google's "Custom Service
Account for Cloud Build" page lists), and the runtime's datastore.user, which a condition limits to
the store's database.
"""
from __future__ import annotations

from deploy.config import DeployConfig
from deploy.steps import Always, Command, Ensure, Ref, Remove, Step, gcloud

ROLES = ('runtime', 'trigger', 'scheduler', 'gateway', 'build', 'notify')
_DESCRIPTIONS = {
    'runtime': 'runs the intent function',
    'trigger': 'invokes the intent function for Pub/Sub messages',
    'scheduler': 'publishes scheduled intents',
    'gateway': 'runs the IB Gateway VM',
    'build': 'builds the intent function (Cloud Build)',
    'notify': 'runs the notify function (results to webhooks, Slack, Telegram)',
}
GATEWAY_PROJECT_ROLES = ('roles/logging.logWriter', 'roles/monitoring.metricWriter')
# https://cloud.google.com/functions/docs/securing/build-custom-sa: build logs, the function's image,
# the uploaded source archive.
BUILD_PROJECT_ROLES = ('roles/logging.logWriter', 'roles/artifactregistry.writer', 'roles/storage.objectViewer')


def member(email: str) -> str:
    return f'serviceAccount:{email}'


def pubsub_agent_member() -> Ref:
    """`--member=` the Pub/Sub service agent, which forwards dead letters and writes BigQuery subscriptions."""
    return Ref('PROJECT_NUMBER', prefix='--member=serviceAccount:service-',
               suffix='@gcp-sa-pubsub.iam.gserviceaccount.com')


def service_accounts(cfg: DeployConfig) -> list[Step]:
    """One service account per role, created when missing."""
    steps: list[Step] = []
    for role in ROLES:
        email = cfg.service_account(role)
        steps.append(Ensure(
            f'service account {email}',
            probe=gcloud(cfg.project, 'iam', 'service-accounts', 'describe', email),
            create=(gcloud(cfg.project, 'iam', 'service-accounts', 'create', f'{cfg.name_prefix}-{role}',
                           f'--display-name={cfg.name_prefix} {role}',
                           f'--description={_DESCRIPTIONS[role]}'),),
        ))
    return steps


def remove_service_accounts(cfg: DeployConfig) -> list[Step]:
    """Delete the service accounts (after their project-level grants are gone)."""
    return [Remove(f'service account {cfg.service_account(role)}',
                   probe=gcloud(cfg.project, 'iam', 'service-accounts', 'describe', cfg.service_account(role)),
                   delete=(gcloud(cfg.project, 'iam', 'service-accounts', 'delete', cfg.service_account(role)),))
            for role in ROLES]


def store_condition(cfg: DeployConfig) -> str:
    """gcloud's --condition value limiting a project grant to the store's Firestore database."""
    database = f'projects/{cfg.project}/databases/{cfg.firestore_database}'
    return f'expression=resource.name=="{database}",title={cfg.name_prefix}-store-only'


def project_grants(cfg: DeployConfig, *, removing: bool = False) -> list[tuple[str, str, str | None]]:
    """(member, role, condition) of every project-level grant (`removing`: also those of a notify function the
    config no longer asks for)."""
    from deploy import notify

    grants: list[tuple[str, str, str | None]] = [
        (member(cfg.service_account('gateway')), role, None) for role in GATEWAY_PROJECT_ROLES]
    grants += [(member(cfg.service_account('build')), role, None) for role in BUILD_PROJECT_ROLES]
    grants.append((member(cfg.service_account('runtime')), 'roles/datastore.user', store_condition(cfg)))
    if cfg.notify_sinks or removing:
        grants += notify.project_grants(cfg)
    return grants


def grants(cfg: DeployConfig) -> list[Step]:
    """Every grant to the accounts, run after the resources they name exist (adding a binding is idempotent)."""
    runtime, scheduler, gateway = (member(cfg.service_account(r)) for r in ('runtime', 'scheduler', 'gateway'))
    commands: list[Command] = [
        gcloud(cfg.project, 'pubsub', 'topics', 'add-iam-policy-binding', cfg.results_topic,
               f'--member={runtime}', '--role=roles/pubsub.publisher'),
        gcloud(cfg.project, 'pubsub', 'topics', 'add-iam-policy-binding', cfg.intents_topic,
               f'--member={scheduler}', '--role=roles/pubsub.publisher'),
    ]
    commands += [gcloud(cfg.project, 'secrets', 'add-iam-policy-binding', secret.secret,
                        f'--member={runtime}', '--role=roles/secretmanager.secretAccessor')
                 for secret in cfg.function_secrets]
    commands += [gcloud(cfg.project, 'secrets', 'add-iam-policy-binding', secret,
                        f'--member={gateway}', '--role=roles/secretmanager.secretAccessor')
                 for secret in (cfg.ib_username_secret, cfg.ib_password_secret)]
    for who, role, condition in project_grants(cfg):
        commands.append(gcloud(cfg.project, 'projects', 'add-iam-policy-binding', cfg.project,
                               f'--member={who}', f'--role={role}', f'--condition={condition or "None"}'))
    commands.append(gcloud(cfg.project, 'pubsub', 'topics', 'add-iam-policy-binding', cfg.dead_letter_topic,
                           pubsub_agent_member(), '--role=roles/pubsub.publisher'))
    # Pub/Sub pushes to the function with an OIDC token of the trigger account; projects that enabled
    # Pub/Sub on or before 2021-04-08 need this grant for that, newer ones have it built in. On the one
    # account only, so it is harmless where it is not needed.
    commands.append(gcloud(cfg.project, 'iam', 'service-accounts', 'add-iam-policy-binding',
                           cfg.service_account('trigger'), pubsub_agent_member(),
                           '--role=roles/iam.serviceAccountTokenCreator'))
    return [Always('grants to the service accounts', tuple(commands))]


def trigger_grants(cfg: DeployConfig) -> list[Step]:
    """Grants that name the deployed function or its trigger subscription."""
    return [Always('the trigger may invoke the function; dead letters may leave its subscription', (
        gcloud(cfg.project, 'functions', 'add-invoker-policy-binding', cfg.function_name,
               f'--region={cfg.region}', f'--member={member(cfg.service_account("trigger"))}'),
        gcloud(cfg.project, 'pubsub', 'subscriptions', 'add-iam-policy-binding', Ref('TRIGGER_SUBSCRIPTION'),
               pubsub_agent_member(), '--role=roles/pubsub.subscriber'),
    ))]


def remove_project_grants(cfg: DeployConfig) -> list[Step]:
    """Remove the project-level grants; a grant already gone is not an error."""
    commands = tuple(
        gcloud(cfg.project, 'projects', 'remove-iam-policy-binding', cfg.project, f'--member={who}',
               f'--role={role}', f'--condition={condition or "None"}', tolerate_failure=True)
        for who, role, condition in project_grants(cfg, removing=True))
    return [Always('project-level grants', commands)]
