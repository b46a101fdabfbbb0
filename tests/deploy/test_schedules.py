"""deploy/schedules.yaml and the cron parser: every job runs when it should, with a valid request."""
from __future__ import annotations

import base64
import json
import zoneinfo
from datetime import datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from deploy.cron import CronError, parse_cron
from deploy.schedules import ScheduleError, load_jobs
from intents.registry import get_intent, intent_names
from tests.deploy.conftest import REPO

NEW_YORK = zoneinfo.ZoneInfo('America/New_York')
SCHEDULES = REPO / 'deploy' / 'schedules.yaml'
REQUEST_SCHEMA = json.loads((REPO / 'schemas' / 'intent-request.schema.json').read_text())


def runs(expression: str, start: datetime, days: int) -> list[datetime]:
    """Every minute in [start, start + days) at which the schedule fires."""
    schedule = parse_cron(expression)
    minutes = (start + timedelta(minutes=m) for m in range(days * 24 * 60))
    return [moment for moment in minutes if schedule.matches(moment)]


@pytest.fixture(scope='module')
def jobs():
    return {job.name: job for job in load_jobs(SCHEDULES)}


def test_every_job_has_a_valid_cron_zone_and_request(jobs):
    assert jobs, 'no jobs in schedules.yaml'
    for job in jobs.values():
        parse_cron(job.schedule)
        zoneinfo.ZoneInfo(job.time_zone)
        assert job.time_zone == 'America/New_York'
        jsonschema.validate(job.request, REQUEST_SCHEMA)
        assert job.request.get('maxAgeSeconds'), f'{job.name}: a scheduled request should expire'
        [message] = json.loads(job.publish_body())['messages']
        assert json.loads(base64.b64decode(message['data'])) == job.request


def test_every_job_names_a_registered_intent_with_params_it_accepts(jobs):
    for job in jobs.values():
        assert job.request['intent'] in intent_names(), f'{job.name}: no intent {job.request["intent"]!r}'
        get_intent(job.request['intent']).Params.model_validate(job.request.get('params', {}))


def test_health_runs_every_15_minutes_through_the_trading_day_on_weekdays_only(jobs):
    monday = datetime(2026, 11, 23)          # a Monday
    week = runs(jobs['health'].schedule, monday, 7)
    assert {moment.weekday() for moment in week} == {0, 1, 2, 3, 4}
    tuesday = [moment.time().strftime('%H:%M') for moment in week if moment.weekday() == 1]
    assert {'09:30', '12:00', '15:45', '16:00'} <= set(tuesday)
    assert all('09:00' <= t <= '16:45' for t in tuesday) and len(tuesday) == 32


def test_allocation_runs_before_the_close_and_the_reports_after_it(jobs):
    monday = datetime(2026, 11, 23)
    allocation = runs(jobs['allocation'].schedule, monday, 7)
    assert len(allocation) == 5 and all(moment.strftime('%H:%M') < '16:00' for moment in allocation)
    for name in ('summary', 'trade-reconciliation'):
        after = runs(jobs[name].schedule, monday, 7)
        assert len(after) == 5 and all(moment.strftime('%H:%M') > '16:00' for moment in after)
    assert len(runs(jobs['cash-balancer'].schedule, monday, 14)) == 2
    nightly = runs(jobs['collect-market-data'].schedule, monday, 7)
    assert len(nightly) == 5 and all(moment.hour < 9 for moment in nightly)


@pytest.mark.parametrize(('expression', 'minute'), [
    ('*/15 9-16 * * MON-FRI', datetime(2026, 11, 24, 9, 45)),
    ('0 0 1,15 * *', datetime(2026, 12, 15, 0, 0)),
    ('30 4 * JAN-MAR,DEC 7', datetime(2026, 12, 6, 4, 30)),           # 7 is Sunday
    ('5-20/5 * * * *', datetime(2026, 1, 1, 3, 15)),
    ('0 12 13 * FRI', datetime(2026, 11, 20, 12, 0)),                  # a Friday, not the 13th: either matches
])
def test_valid_expressions_match_the_expected_minute(expression, minute):
    assert parse_cron(expression).matches(minute)
    assert not parse_cron(expression).matches(minute + timedelta(minutes=1))


@pytest.mark.parametrize(('expression', 'message'), [
    ('* * * *', 'expected 5 fields'),
    ('60 * * * *', 'minute: 60 is outside 0-59'),
    ('0 24 * * *', 'hour: 24 is outside 0-23'),
    ('0 0 0 * *', 'day of month: 0 is outside 1-31'),
    ('0 0 * 13 *', 'month: 13 is outside 1-12'),
    ('0 0 * * 8', 'day of week: 8 is outside 0-7'),
    ('0 0 * * FUN', "'FUN' is not a number or one of SUN"),
    ('0 17-9 * * *', 'runs backwards'),
    ('*/0 * * * *', 'at least 1'),
    ('5/10 * * * *', r'a step needs \* or a range'),
    ('0 9,,10 * * *', 'is not a value, range or step'),
])
def test_invalid_expressions_are_refused_with_the_field_named(expression, message):
    with pytest.raises(CronError, match=message):
        parse_cron(expression)


@pytest.mark.parametrize(('job', 'message'), [
    ('{name: a-job, schedule: "61 * * * *", request: {intent: health}}', 'minute: 61'),
    ('{name: a-job, schedule: "0 9 * * *", timeZone: Europe/Atlantis, request: {intent: health}}',
     'not an IANA time zone'),
    ('{name: a-job, schedule: "0 9 * * *", request: {intent: health, dryrun: true}}', 'not a valid intent request'),
    ('{name: a-job, schedule: "0 9 * * *", request: {intent: Health}}', 'not a valid intent request'),
    ('{name: a-job, schedule: "0 9 * * *"}', 'not a valid intent request'),
    ('{name: A_Job, schedule: "0 9 * * *", request: {intent: health}}', 'lowercase'),
    ('{name: a-job, schedule: "0 9 * * *", request: {intent: health}, retries: 3}', 'unknown key'),
])
def test_bad_jobs_are_refused_naming_the_job(tmp_path: Path, job, message):
    path = tmp_path / 'schedules.yaml'
    path.write_text(f'jobs:\n  - {job}\n')
    with pytest.raises(ScheduleError, match=message):
        load_jobs(path)


def test_duplicate_job_names_are_refused(tmp_path: Path):
    path = tmp_path / 'schedules.yaml'
    path.write_text('jobs:\n' + '  - {name: twice, schedule: "0 9 * * *", request: {intent: health}}\n' * 2)
    with pytest.raises(ScheduleError, match='unique: twice'):
        load_jobs(path)
