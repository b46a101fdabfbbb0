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
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from deploy.config import REPO, DeployConfig
from deploy.cron import CronError, CronSchedule, parse_cron
from deploy.session_schedule import CALENDAR_ZONE, SessionScheduleError, expand, zone_ok
from deploy.steps import Command, Ensure, Prune, Ref, Step, gcloud

REQUEST_SCHEMA = REPO / 'schemas' / 'intent-request.schema.json'
PUBSUB_SCOPE = 'https://www.googleapis.com/auth/pubsub'
_JOB_NAME = re.compile(r'^[a-z][a-z0-9-]{0,40}[a-z0-9]$')
_JOB_KEYS = {'name', 'description', 'schedule', 'session', 'timeZone', 'request', 'attributes'}


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


def load_jobs(path: Path, today: date | None = None) -> list[Job]:
    """Read and validate every job: name, cron, time zone, and a request the request schema accepts.

    A job with `session` instead of `schedule` becomes `<name>-1`, `<name>-2`, ... (deploy/session_schedule.py),
    expanded over the NYSE calendar of the year from `today` (default: today in New York).
    """
    today = today or datetime.now(timezone.utc).astimezone(zoneinfo.ZoneInfo(CALENDAR_ZONE)).date()
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ScheduleError(f'cannot read {path}: {exc}') from None
    if not isinstance(document, dict) or not isinstance(document.get('jobs'), list):
        raise ScheduleError(f'{path}: expected a mapping with a `jobs` list')
    default_zone = document.get('timeZone', 'America/New_York')
    validator = jsonschema.Draft202012Validator(json.loads(REQUEST_SCHEMA.read_text()))
    jobs = [job for index, entry in enumerate(document['jobs'])
            for job in _jobs(entry, default_zone, validator, index, today)]
    names = [job.name for job in jobs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ScheduleError(f'{path}: job names must be unique: {", ".join(duplicates)}')
    return jobs


def _jobs(entry: Any, default_zone: str, validator: jsonschema.Draft202012Validator, index: int,
          today: date) -> list[Job]:
    """The job an entry describes, or the jobs a session-relative entry expands into."""
    if not isinstance(entry, dict) or 'session' not in entry:
        return [_job(entry, default_zone, validator, index)]
    label = f'job {entry.get("name")!r}' if entry.get('name') else f'job #{index + 1}'
    if 'schedule' in entry:
        raise ScheduleError(f'{label}: give either schedule (cron) or session, not both')
    request = entry.get('request')
    if isinstance(request, dict) and 'window' in request:
        raise ScheduleError(f'{label}: a session job sets its request\'s window itself; remove request.window')
    zone = entry.get('timeZone', default_zone)
    if not isinstance(zone, str) or not zone_ok(zone):
        raise ScheduleError(f'{label}: session jobs follow the NYSE calendar, so timeZone must be {CALENDAR_ZONE}')
    try:
        entries = expand(entry['session'], today=today)
    except SessionScheduleError as exc:
        raise ScheduleError(f'{label}: session: {exc}') from None
    base = {key: value for key, value in entry.items() if key != 'session'}
    return [_job({**base, 'name': f'{entry.get("name")}-{number}', 'schedule': item.schedule,
                  'request': {**request, 'window': item.window} if isinstance(request, dict) else request},
                 default_zone, validator, index)
            for number, item in enumerate(entries, start=1)]


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
