"""Alert policies as code (deploy/alerts/*.json) and the log-based metric one of them reads.

- error-result: any result the function logs with status `error`;
- rejected-result: a result with status `rejected`, except `TradingDisabled` (trading was disabled on purpose);
- degraded-result: a run that finished with `result.degraded` (a strategy or data problem), health runs aside;
- unhealthy-gateway: a `health` run that reached the gateway and found it unhealthy (`healthy: false`);
- missing-health: no healthy `health` result for 35 minutes on a weekday in market hours;
- stuck-claim: `health` logged a stuck claim (an order run still `running` 900 s past its lease).

The filters match the one line functions/handler.py logs per run (`status`, `error.type`, `degraded`,
`healthy` in the JSON payload; the intent as the `intent` label).

The JSON files are Cloud Monitoring AlertPolicy documents with ${...} placeholders filled from the
deploy config. Policies are found again by display name, so a re-run updates them in place.
"""
from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

from deploy.config import DeployConfig
from deploy.steps import Ensure, Ref, Remove, Step, WriteFile, gcloud

ALERTS_DIR = Path(__file__).resolve().parent / 'alerts'
POLICY_FILES = ('error-result.json', 'rejected-result.json', 'degraded-result.json', 'unhealthy-gateway.json',
                'missing-health.json', 'stuck-claim.json')


def health_metric(cfg: DeployConfig) -> str:
    """Name of the log-based metric counting healthy health results (underscores: PromQL reads it)."""
    return f'{cfg.name_prefix.replace("-", "_")}_health_ok'


def health_filter(cfg: DeployConfig) -> str:
    """Cloud Logging filter for the function's `health` results that found the gateway healthy."""
    return (f'resource.type="cloud_run_revision" AND resource.labels.service_name="{cfg.function_name}" '
            'AND labels.intent="health" AND jsonPayload.status="ok" AND jsonPayload.healthy=true')


def render_policy(cfg: DeployConfig, file_name: str) -> dict[str, Any]:
    """The policy document with the config's values in place of its placeholders."""
    template = string.Template((ALERTS_DIR / file_name).read_text())
    text = template.substitute(
        PREFIX=cfg.name_prefix,
        FUNCTION_NAME=cfg.function_name,
        MAX_DELIVERY_ATTEMPTS=cfg.max_delivery_attempts,
        HEALTH_METRIC=health_metric(cfg),
        NOTIFICATION_CHANNELS=json.dumps(list(cfg.alert_notification_channels)),
    )
    return json.loads(text)


def _find_policy(cfg: DeployConfig, display_name: str):
    return gcloud(cfg.project, 'alpha', 'monitoring', 'policies', 'list',
                  f'--filter=displayName="{display_name}"', '--format=value(name)')


def alert_steps(cfg: DeployConfig, work_dir: Path) -> list[Step]:
    """The health metric, then each policy: created, or updated when one with its display name exists."""
    metric = health_metric(cfg)
    description = f'{cfg.function_name}: health intents that found the gateway healthy'
    steps: list[Step] = [Ensure(
        f'log metric {metric}',
        probe=gcloud(cfg.project, 'logging', 'metrics', 'describe', metric),
        create=(gcloud(cfg.project, 'logging', 'metrics', 'create', metric, f'--description={description}',
                       f'--log-filter={health_filter(cfg)}'),),
        update=(gcloud(cfg.project, 'logging', 'metrics', 'update', metric, f'--description={description}',
                       f'--log-filter={health_filter(cfg)}'),),
    )]
    for file_name in POLICY_FILES:
        policy = render_policy(cfg, file_name)
        path = work_dir / f'alert-{file_name}'
        steps.append(WriteFile(f'alert policy {file_name}', path, json.dumps(policy, indent=2) + '\n'))
        steps.append(Ensure(
            f'alert policy "{policy["displayName"]}"',
            probe=_find_policy(cfg, policy['displayName']),
            found_as='POLICY',
            create=(gcloud(cfg.project, 'alpha', 'monitoring', 'policies', 'create', f'--policy-from-file={path}'),),
            update=(gcloud(cfg.project, 'alpha', 'monitoring', 'policies', 'update', Ref('POLICY'),
                           f'--policy-from-file={path}'),),
        ))
    return steps


def remove_alerts(cfg: DeployConfig) -> list[Step]:
    """Delete the policies and the metric."""
    steps: list[Step] = []
    for file_name in POLICY_FILES:
        display_name = render_policy(cfg, file_name)['displayName']
        steps.append(Remove(f'alert policy "{display_name}"', probe=_find_policy(cfg, display_name),
                            found_as='POLICY',
                            delete=(gcloud(cfg.project, 'alpha', 'monitoring', 'policies', 'delete',
                                           Ref('POLICY')),)))
    metric = health_metric(cfg)
    steps.append(Remove(f'log metric {metric}', probe=gcloud(cfg.project, 'logging', 'metrics', 'describe', metric),
                        delete=(gcloud(cfg.project, 'logging', 'metrics', 'delete', metric),)))
    return steps
