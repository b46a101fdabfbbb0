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
from trading.session_window import ContractHours, SessionWindow, judge
from simulator.universe import Universe
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
        if 'approval' in job.request:      # the function refuses it elsewhere (InvalidRequest)
            assert get_intent(job.request['intent']).plannable, f'{job.name}: approval on {job.request["intent"]}'


def test_a_job_can_require_approval_and_its_message_carries_it(tmp_path: Path):
    path = tmp_path / 'schedules.yaml'
    path.write_text('jobs:\n  - {name: plan-close, schedule: "0 15 * * MON-FRI", '
                    'request: {intent: allocation, approval: required, maxAgeSeconds: 300}}\n')
    [job] = load_jobs(path)
    [message] = json.loads(job.publish_body())['messages']
    assert json.loads(base64.b64decode(message['data']))['approval'] == 'required'


def test_health_runs_every_15_minutes_through_the_trading_day_on_weekdays_only(jobs):
    monday = datetime(2026, 11, 23)          # a Monday
    week = runs(jobs['health'].schedule, monday, 7)
    assert {moment.weekday() for moment in week} == {0, 1, 2, 3, 4}
    tuesday = [moment.time().strftime('%H:%M') for moment in week if moment.weekday() == 1]
    assert {'09:30', '12:00', '15:45', '16:00'} <= set(tuesday)
    assert all('09:00' <= t <= '16:45' for t in tuesday) and len(tuesday) == 32


def test_allocation_runs_before_the_close_and_the_reports_after_it(jobs):
    monday = datetime(2026, 11, 23)
    allocation = [moment for name in ('allocation-1', 'allocation-2') for moment in runs(jobs[name].schedule, monday, 7)]
    assert len(allocation) == 10 and all(moment.strftime('%H:%M') < '16:00' for moment in allocation)
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
    ('{name: a-job, schedule: "0 9 * * *", request: {intent: allocation, approval: maybe}}',
     'not a valid intent request: approval'),
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


# --- session-relative jobs ---------------------------------------------------------------------

SCHEDULER_DELAY = timedelta(seconds=5)      # Cloud Scheduler publishes a few seconds after its minute
UTC = zoneinfo.ZoneInfo('UTC')


def ran(jobs: list, day, universe: Universe) -> list[str]:
    """The jobs that fire on `day` (New York) and whose window the runtime judges open, as the function
    would: the gateway's clock against the liquid hours the simulated gateway reports for SPY."""
    spy = next(i for i in universe.all() if i.symbol == 'SPY' and i.secType == 'STK')
    inside = []
    for job in jobs:
        window = SessionWindow(before_close=job.request['window'].get('beforeClose'),
                               after_open=job.request['window'].get('afterOpen'))
        for moment in runs(job.schedule, datetime.combine(day, datetime.min.time()), 1):
            now = (moment.replace(tzinfo=NEW_YORK) + SCHEDULER_DELAY).astimezone(UTC)
            _, liquid = universe.hours(spy, now)
            if judge(window, [ContractHours('SPY', liquid, spy.timeZoneId)], now).inside:
                inside.append(f'{job.name} {moment:%H:%M}')
    return inside


@pytest.mark.parametrize('start', ['2026-12-03', '2027-06-15', '2028-02-01'])
def test_the_session_relative_allocation_runs_exactly_once_on_every_trading_day_of_the_coming_year(start):
    from trading.exchange_calendar import is_trading_day, regular_session

    today = datetime.fromisoformat(start).date()
    expanded = [job for job in load_jobs(SCHEDULES, today=today) if job.name.startswith('allocation-')]
    assert [job.name for job in expanded] == ['allocation-1', 'allocation-2']
    universe = Universe(today)
    closes_seen = set()
    for offset in range(366):
        day = today + timedelta(days=offset)
        inside = ran(expanded, day, universe)
        if not is_trading_day(day):
            assert inside == [], f'{day}: runs on a closed day: {inside}'
            continue
        assert len(inside) == 1, f'{day}: {len(inside)} runs: {inside}'
        close = regular_session(day)[1]
        closes_seen.add(close)
        assert inside[0].endswith(f'{close.hour - 1:02d}:45'), (day, inside)
    assert {c.strftime('%H:%M') for c in closes_seen} == {'13:00', '16:00'}


def test_a_session_job_expands_to_one_cron_per_close_time_each_with_its_window(jobs):
    assert 'allocation' not in jobs
    first, second = jobs['allocation-1'], jobs['allocation-2']
    assert (first.schedule, second.schedule) == ('45 12 * * MON-FRI', '45 15 * * MON-FRI')
    for job in (first, second):
        assert job.request['window'] == {'beforeClose': 960.0}     # 15 minutes and a minute's grace
        assert job.request['intent'] == 'allocation' and job.request['maxAgeSeconds'] == 300
        jsonschema.validate(job.request, REQUEST_SCHEMA)


def write_jobs(tmp_path: Path, job: str) -> Path:
    path = tmp_path / 'schedules.yaml'
    path.write_text(f'jobs:\n  - {job}\n')
    return path


def test_after_open_fires_a_minute_after_the_open(tmp_path: Path):
    [job] = load_jobs(write_jobs(tmp_path, '{name: opener, session: {afterOpen: 10m}, request: {intent: health}}'))
    assert job.name == 'opener-1' and job.schedule == '31 9 * * MON-FRI'
    assert job.request['window'] == {'afterOpen': 660.0}


@pytest.mark.parametrize(('job', 'message'), [
    ('{name: j, session: {beforeClose: 15m, afterOpen: 5m}, request: {intent: health}}', 'exactly one key'),
    ('{name: j, session: {beforeclose: 15m}, request: {intent: health}}', 'exactly one key'),
    ('{name: j, session: {beforeClose: 0m}, request: {intent: health}}', 'at least 60 s'),
    ('{name: j, session: {beforeClose: 15 minutes}, request: {intent: health}}', 'not a duration'),
    ('{name: j, session: {beforeClose: true}, request: {intent: health}}', 'not a duration'),
    ('{name: j, session: {beforeClose: 195m}, request: {intent: health}}', 'would run 2 times'),
    ('{name: j, session: {beforeClose: 8h}, request: {intent: health}}', 'would run 0 times'),
    ('{name: j, session: {beforeClose: 15m}, schedule: "0 9 * * *", request: {intent: health}}', 'not both'),
    ('{name: j, session: {beforeClose: 15m}, request: {intent: health, window: {beforeClose: 60}}}',
     'remove request.window'),
    ('{name: j, session: {beforeClose: 15m}, timeZone: Europe/Berlin, request: {intent: health}}',
     'America/New_York'),
    ('{name: j, session: {beforeClose: 15m}, request: {intent: health, dryrun: true}}', 'not a valid intent request'),
])
def test_bad_session_jobs_are_refused_naming_the_job_and_the_problem(tmp_path: Path, job, message):
    with pytest.raises(ScheduleError, match=message) as raised:
        load_jobs(write_jobs(tmp_path, job), today=datetime(2026, 12, 3).date())
    assert "job 'j" in str(raised.value)
