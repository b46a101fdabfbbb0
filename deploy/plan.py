"""The whole deploy and the whole teardown, as ordered lists of steps."""
from __future__ import annotations

from pathlib import Path

from deploy import alerts, bigquery, function, gateway, identity, messaging, network, notify, schedules, store
from deploy.config import DeployConfig
from deploy.steps import Always, Step, gcloud

SERVICES = ('cloudfunctions.googleapis.com', 'run.googleapis.com', 'cloudbuild.googleapis.com',
            'artifactregistry.googleapis.com', 'eventarc.googleapis.com', 'pubsub.googleapis.com',
            'cloudscheduler.googleapis.com', 'secretmanager.googleapis.com', 'compute.googleapis.com',
            'vpcaccess.googleapis.com', 'firestore.googleapis.com', 'logging.googleapis.com',
            'monitoring.googleapis.com', 'iam.googleapis.com', 'cloudresourcemanager.googleapis.com')


def apply_plan(cfg: DeployConfig, jobs: list[schedules.Job], work_dir: Path) -> list[Step]:
    """Everything, in dependency order; every step is safe to run again."""
    services = SERVICES + (('bigquery.googleapis.com',) if cfg.bigquery_table else ())
    return [
        Always('enable the APIs', (gcloud(cfg.project, 'services', 'enable', *services),)),
        *messaging.project_number(cfg),
        *identity.service_accounts(cfg),
        *gateway.secret_steps(cfg),
        *notify.secret_steps(cfg),
        *messaging.topics(cfg),
        *messaging.pull_subscriptions(cfg),
        *notify.topic_steps(cfg),
        *store.store_steps(cfg),
        *network.network_steps(cfg),
        *identity.grants(cfg),
        *notify.grants(cfg),
        *gateway.vm_steps(cfg, work_dir),
        *function.deploy_function(cfg, work_dir),
        *messaging.find_trigger_subscription(cfg),
        *messaging.configure_trigger_subscription(cfg),
        *identity.trigger_grants(cfg),
        *notify.function_steps(cfg, work_dir),
        *bigquery.bigquery_steps(cfg, work_dir),
        *schedules.scheduler_steps(cfg, jobs),
        *alerts.alert_steps(cfg, work_dir),
    ]


def teardown_plan(cfg: DeployConfig, delete_data: bool) -> list[Step]:
    """Remove what apply made, dependants first. The Firestore database and the credential secrets
    are kept unless `delete_data`; the APIs stay enabled (other things may use them); a BigQuery
    table keeps its rows.
    """
    steps: list[Step] = [
        *schedules.remove_jobs(cfg),
        *alerts.remove_alerts(cfg),
        *bigquery.remove_bigquery(cfg),
        *function.remove_function(cfg),
        *notify.remove_notify(cfg, delete_data),
        *gateway.remove_vm(cfg),
        *messaging.remove_messaging(cfg),
        *network.remove_network(cfg),
        *identity.remove_project_grants(cfg),
        *identity.remove_service_accounts(cfg),
    ]
    if delete_data:
        steps += [*store.remove_store(cfg), *gateway.remove_secrets(cfg)]
    return steps
