"""The Cloud Function (2nd gen): Pub/Sub-triggered, private, sized for the gateway's client limit.

`gcloud functions deploy` creates or updates, so it runs on every deploy. Its source is a fresh copy
of exactly the function's files (SOURCE_FILES), staged in the work directory: gcloud uploads a
directory as it is, so nothing else (tests, the simulator, local settings) can ride along.
"""
from __future__ import annotations

from pathlib import Path

from deploy.config import REPO, DeployConfig
from deploy.steps import Always, Ref, Remove, StageFiles, Step, gcloud

RUNTIME = 'python312'
ENTRY_POINT = 'run_intent'
# What the function needs at run time: its entry point, requirements, packages, trading config, schemas.
SOURCE_FILES = ('main.py', 'requirements.txt', 'functions', 'intents', 'trading', 'lib', 'strategies', 'config', 'schemas')


def source_dir(work_dir: Path) -> Path:
    """Where the function's source is staged for the upload."""
    return work_dir / 'function-source'


def environment(cfg: DeployConfig) -> dict[str, str]:
    """The function's environment variables, except IB_GATEWAY_HOST (the reserved address, known at run time)."""
    low, high = cfg.client_id_range
    env = {
        'IB_GATEWAY_PORT': str(cfg.gateway_port),
        'IB_CLIENT_ID_RANGE': f'{low}-{high}',
        'TRADING_MODE': cfg.trading_mode,
        'ALLOW_LIVE_TRADING': 'true' if cfg.allow_live_trading else 'false',
        'INTENT_DEADLINE_SECONDS': str(cfg.intent_deadline_seconds),
        'RESULTS_TOPIC': cfg.results_topic,
        'INTENTS_TOPIC': cfg.intents_topic,   # a plan's approve command publishes there
        'GOOGLE_CLOUD_PROJECT': cfg.project,
        'STORE_BACKEND': 'firestore',
        'FIRESTORE_DATABASE': cfg.firestore_database,
        # functions-framework serves this many requests at once per instance; it must equal --concurrency
        'THREADS': str(cfg.function_concurrency),
    }
    if cfg.ib_account:
        env['IB_ACCOUNT'] = cfg.ib_account
    return env


def env_list(env: dict[str, str]) -> tuple[str, str]:
    """(escape, KEY=VALUE list) for --set-env-vars: gcloud's `^|^` escape picks another delimiter when a value
    holds a comma (`gcloud topic escaping`)."""
    delimiter = ',' if not any(',' in value for value in env.values()) else '|'
    escape = '' if delimiter == ',' else f'^{delimiter}^'
    return escape, delimiter.join(f'{key}={value}' for key, value in env.items())


def _env_flag(cfg: DeployConfig) -> Ref:
    escape, rest = env_list(environment(cfg))
    delimiter = '|' if escape else ','
    return Ref('GATEWAY_IP', prefix=f'--set-env-vars={escape}IB_GATEWAY_HOST=', suffix=f'{delimiter}{rest}')


def deploy_function(cfg: DeployConfig, work_dir: Path) -> list[Step]:
    """Stage the source, then `gcloud functions deploy` with every setting explicit, so a re-run resets
    anything changed by hand.
    """
    secrets = ('--set-secrets=' + ','.join(f'{s.env}={s.secret}:{s.version}' for s in cfg.function_secrets)
                    if cfg.function_secrets else '--clear-secrets')
    source = source_dir(work_dir)
    build_account = f'projects/{cfg.project}/serviceAccounts/{cfg.service_account("build")}'
    return [StageFiles('function source', REPO, SOURCE_FILES, source),
            Always(f'function {cfg.function_name}', (gcloud(
        cfg.project, 'functions', 'deploy', cfg.function_name, '--gen2',
        f'--region={cfg.region}', f'--runtime={RUNTIME}', f'--source={source}',
        f'--entry-point={ENTRY_POINT}', f'--trigger-topic={cfg.intents_topic}', '--retry',
        f'--timeout={cfg.function_timeout_seconds}s', f'--memory={cfg.function_memory}',
        f'--cpu={cfg.function_cpu:g}', f'--concurrency={cfg.function_concurrency}',
        f'--max-instances={cfg.function_max_instances}', f'--min-instances={cfg.function_min_instances}',
        '--ingress-settings=internal-only', '--no-allow-unauthenticated',
        f'--vpc-connector={cfg.connector_path}', '--egress-settings=private-ranges-only',
        f'--service-account={cfg.service_account("runtime")}',
        f'--trigger-service-account={cfg.service_account("trigger")}',
        f'--build-service-account={build_account}',
        _env_flag(cfg), secrets),))]


def remove_function(cfg: DeployConfig) -> list[Step]:
    """Delete the function (its Eventarc trigger and trigger subscription go with it)."""
    region = f'--region={cfg.region}'
    return [Remove(f'function {cfg.function_name}',
                   probe=gcloud(cfg.project, 'functions', 'describe', cfg.function_name, region),
                   delete=(gcloud(cfg.project, 'functions', 'delete', cfg.function_name, region),))]
