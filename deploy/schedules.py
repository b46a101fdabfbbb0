"""Cloud Scheduler jobs from deploy/schedules.yaml.

Each job publishes its `request` to the intents topic through the Pub/Sub REST API, authenticated
as the scheduler service account (which may publish to that one topic and nothing else). Jobs are
named `<NAME_PREFIX>-<name>`; a job with that prefix that is no longer in the file is deleted.
"""
from __future__ import annotations

import base64
import json
import re
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from deploy.config import REPO, DeployConfig
from deploy.cron import CronError, CronSchedule, parse_cron
from deploy.steps import Command, Ensure, Prune, Ref, Step, gcloud

REQUEST_SCHEMA = REPO / 'schemas' / 'intent-request.schema.json'
PUBSUB_SCOPE = 'https://www.googleapis.com/auth/pubsub'
_JOB_NAME = re.compile(r'^[a-z][a-z0-9-]{0,40}[a-z0-9]$')
_JOB_KEYS = {'name', 'description', 'schedule', 'timeZone', 'request', 'attributes'}


class ScheduleError(ValueError):
    """schedules.yaml is not usable; the message names the job and the problem."""


@dataclass(frozen=True)
class Job:
    """One scheduled intent."""

    name: str
    schedule: str
    time_zone: str
    request: dict[str, Any]
    description: str = ''
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def cron(self) -> CronSchedule:
        return parse_cron(self.schedule)

    def publish_body(self) -> str:
        """The JSON body of the Pub/Sub `topics.publish` call the job makes."""
        data = base64.b64encode(json.dumps(self.request, separators=(',', ':')).encode()).decode('ascii')
        attributes = {'source': 'scheduler', 'job': self.name, **self.attributes}
        return json.dumps({'messages': [{'data': data, 'attributes': attributes}]}, separators=(',', ':'))


def load_jobs(path: Path) -> list[Job]:
    """Read and validate every job: name, cron, time zone, and a request the request schema accepts."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ScheduleError(f'cannot read {path}: {exc}') from None
    if not isinstance(document, dict) or not isinstance(document.get('jobs'), list):
        raise ScheduleError(f'{path}: expected a mapping with a `jobs` list')
    default_zone = document.get('timeZone', 'America/New_York')
    validator = jsonschema.Draft202012Validator(json.loads(REQUEST_SCHEMA.read_text()))
    jobs = [_job(entry, default_zone, validator, index) for index, entry in enumerate(document['jobs'])]
    names = [job.name for job in jobs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ScheduleError(f'{path}: job names must be unique: {", ".join(duplicates)}')
    return jobs


def _job(entry: Any, default_zone: str, validator: jsonschema.Draft202012Validator, index: int) -> Job:
    if not isinstance(entry, dict):
        raise ScheduleError(f'job #{index + 1}: expected a mapping')
    name = entry.get('name')
    label = f'job {name!r}' if name else f'job #{index + 1}'
    unknown = sorted(set(entry) - _JOB_KEYS)
    if unknown:
        raise ScheduleError(f'{label}: unknown key(s) {", ".join(unknown)}')
    if not isinstance(name, str) or not _JOB_NAME.match(name):
        raise ScheduleError(f'{label}: name must be lowercase letters, digits and dashes')
    schedule = entry.get('schedule')
    if not isinstance(schedule, str):
        raise ScheduleError(f'{label}: schedule must be a cron string')
    try:
        parse_cron(schedule)
    except CronError as exc:
        raise ScheduleError(f'{label}: {exc}') from None
    zone = entry.get('timeZone', default_zone)
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ScheduleError(f'{label}: {zone!r} is not an IANA time zone') from None
    request = entry.get('request')
    errors = sorted(validator.iter_errors(request), key=lambda error: list(error.path))
    if errors:
        where = '/'.join(str(part) for part in errors[0].path) or '(request)'
        raise ScheduleError(f'{label}: request is not a valid intent request: {where}: {errors[0].message}')
    attributes = entry.get('attributes') or {}
    if not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values()):
        raise ScheduleError(f'{label}: attributes must map names to strings')
    return Job(name, schedule, zone, request, str(entry.get('description', '')), attributes)


def job_id(cfg: DeployConfig, job: Job) -> str:
    return f'{cfg.name_prefix}-{job.name}'


def _target_flags(cfg: DeployConfig, job: Job) -> tuple[str, ...]:
    uri = f'https://pubsub.googleapis.com/v1/{cfg.topic_path(cfg.intents_topic)}:publish'
    return (f'--location={cfg.region}', f'--schedule={job.schedule}', f'--time-zone={job.time_zone}',
            f'--uri={uri}', '--http-method=post', f'--message-body={job.publish_body()}',
            f'--oauth-service-account-email={cfg.service_account("scheduler")}',
            f'--oauth-token-scope={PUBSUB_SCOPE}', f'--description={job.description or job.name}',
            '--attempt-deadline=60s', '--max-retry-attempts=3', '--min-backoff=10s')


def scheduler_steps(cfg: DeployConfig, jobs: list[Job]) -> list[Step]:
    """Create or update each job, then delete the deploy's jobs no longer in the file."""
    steps: list[Step] = []
    for job in jobs:
        name = job_id(cfg, job)
        flags = _target_flags(cfg, job)
        steps.append(Ensure(
            f'scheduler job {name} ({job.schedule} {job.time_zone})',
            probe=gcloud(cfg.project, 'scheduler', 'jobs', 'describe', name, f'--location={cfg.region}'),
            create=(gcloud(cfg.project, 'scheduler', 'jobs', 'create', 'http', name, *flags,
                           '--headers=Content-Type=application/json'),),
            update=(gcloud(cfg.project, 'scheduler', 'jobs', 'update', 'http', name, *flags,
                           '--update-headers=Content-Type=application/json'),),
        ))
    steps.append(_prune(cfg, keep=frozenset(job_id(cfg, job) for job in jobs), what='scheduler jobs no longer in '
                        f'{cfg.schedules_file.name}'))
    return steps


def remove_jobs(cfg: DeployConfig) -> list[Step]:
    """Delete every scheduler job the deploy made (named with NAME_PREFIX)."""
    return [_prune(cfg, keep=frozenset(), what='scheduler jobs')]


def _prune(cfg: DeployConfig, keep: frozenset[str], what: str) -> Prune:
    listing: Command = gcloud(cfg.project, 'scheduler', 'jobs', 'list', f'--location={cfg.region}',
                              f'--filter=name~/jobs/{cfg.name_prefix}-', '--format=value(name.basename())')
    return Prune(what, listing, keep, 'JOB',
                 gcloud(cfg.project, 'scheduler', 'jobs', 'delete', Ref('JOB'), f'--location={cfg.region}'))
