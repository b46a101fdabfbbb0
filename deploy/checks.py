"""What `python -m deploy check` validates beyond the deploy config: everything the deploy ships.

A typo that passes here fails every day in the cloud, as a `rejected` result at 15:45. So the check
runs the function's own validation on what it will receive: the trading config file (syntax, shares,
strategies known and constructible, the allowlist covering every strategy's universe) and every
scheduled request (the request model and the intent's params model, unknown keys named with the
accepted ones). It also lists each job's next fire times, marking those the market calendar skips.
"""
from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from pydantic import ValidationError

from deploy.cron import parse_cron
from deploy.schedules import Job
from functions.contract import IntentRequest, describe_validation_error
from intents.registry import UnknownIntent, get_intent
from intents.trading import build_strategy
from lib.config import ConfigError
from trading.exchange_calendar import nyse_holidays, regular_session
from trading.session_window import ContractHours, SessionWindow, judge
from trading.trading_config import load_trading_config
from strategies.registry import strategy_names

NEW_YORK = zoneinfo.ZoneInfo('America/New_York')
# Intents whose work needs an open market: on a closed day they answer `skipped`.
MARKET_BOUND = ('allocation', 'close-all', 'cash-balancer')


class _FileOnly:
    """The deploy ships the file; the store's dynamic settings live in the cloud and are not checked here."""

    def get_settings(self) -> dict:
        return {}


def trading_config_problems(path: Path, trading_mode: str, today: date) -> list[str]:
    """Every problem of the trading config file the function would load, each naming the key."""
    try:
        config = load_trading_config(_FileOnly(), trading_mode=trading_mode, env={}, path=path)
    except ConfigError as exc:
        return [str(exc)]
    problems = []
    for name in sorted({*config.exposures, *config.strategies}):
        if name not in strategy_names():
            problems.append(f'{path}: strategy {name!r} is not registered; known strategies: '
                            f'{", ".join(strategy_names())}')
            continue
        try:
            strategy = build_strategy(name, config)
        except ValueError as exc:
            problems.append(f'{path}: [strategies.{name}]: {exc}')
            continue
        if name not in config.exposures:
            continue
        for spec in strategy.instruments(today):
            symbol = f'{spec.symbol}.{spec.currency}' if spec.sec_type == 'CASH' else spec.symbol
            if not config.limits.allows(symbol):
                problems.append(f'{path}: limits.allowlist does not admit {symbol}, which strategy {name!r} trades; '
                                f'its orders would be rejected')
    return problems


def schedule_problems(jobs: list[Job]) -> list[str]:
    """Every scheduled request the function would refuse, naming the job and the key."""
    problems = []
    for job in jobs:
        try:
            request = IntentRequest.model_validate(job.request)
        except ValidationError as exc:
            problems.append(f'job {job.name!r}: request: {describe_validation_error(exc, model=IntentRequest)}')
            continue
        try:
            intent = get_intent(request.intent)
        except UnknownIntent as exc:
            problems.append(f'job {job.name!r}: {exc}')
            continue
        try:
            intent.Params.model_validate(request.params)
        except ValidationError as exc:
            problems.append(f'job {job.name!r}: '
                            f'{describe_validation_error(exc, prefix="params", model=intent.Params)}')
    return problems


@dataclass(frozen=True)
class Firing:
    """One scheduled run and whether the market calendar lets it do its work."""

    job: str
    at: datetime          # in New York
    skipped: str | None   # why the run will answer skipped, or None


def next_firings(jobs: list[Job], start: datetime, days: int = 7) -> list[Firing]:
    """Every run of `jobs` in the `days` from `start` (New York), in time order."""
    start = start.astimezone(NEW_YORK).replace(second=0, microsecond=0)
    firings = []
    for job in jobs:
        schedule, zone = parse_cron(job.schedule), zoneinfo.ZoneInfo(job.time_zone)
        local = start.astimezone(zone)
        for minute in range(days * 24 * 60):
            moment = local + timedelta(minutes=minute)
            if schedule.matches(moment):
                firings.append(Firing(job.name, moment.astimezone(NEW_YORK), _skip_reason(job, moment)))
    return sorted(firings, key=lambda f: (f.at, f.job))


def _skip_reason(job: Job, moment: datetime) -> str | None:
    day = moment.astimezone(NEW_YORK).date()
    window = job.request.get('window') if isinstance(job.request, dict) else None
    market_bound = job.request.get('intent') in MARKET_BOUND or window is not None
    if not market_bound:
        return None
    session = regular_session(day)
    if session is None:
        return nyse_holidays(day.year).get(day) or 'market closed (weekend)'
    if window:
        opening, close = (datetime.combine(day, t, tzinfo=NEW_YORK) for t in session)
        hours = _hours_text(opening, close)
        verdict = judge(SessionWindow(window.get('beforeClose'), window.get('afterOpen')),
                        [ContractHours('NYSE', hours, 'America/New_York')], moment.astimezone(timezone.utc))
        return None if verdict.inside else verdict.reason
    opening, close = (datetime.combine(day, t, tzinfo=NEW_YORK) for t in session)
    if not opening <= moment < close:
        return f'outside the {session[0]:%H:%M}-{session[1]:%H:%M} session'
    return None


def _hours_text(opening: datetime, close: datetime) -> str:
    """One day's session in IB's liquidHours format, as the gateway reports it."""
    return f'{opening:%Y%m%d}:{opening:%H%M}-{close:%Y%m%d}:{close:%H%M}'


def describe_firings(firings: list[Firing], *, group_above: int = 3) -> list[str]:
    """Lines a person scans: a heading per day; a job firing more than `group_above` times that day in one
    line (first-last, count), every other run on a line of its own, skipped runs saying why."""
    lines: list[str] = []
    by_day: dict[date, list[Firing]] = {}
    for firing in firings:
        by_day.setdefault(firing.at.date(), []).append(firing)
    for day, today in by_day.items():
        lines.append(f'{day:%a %Y-%m-%d}')
        counts: dict[str, int] = {}
        for firing in today:
            counts[firing.job] = counts.get(firing.job, 0) + 1
        grouped: set[str] = set()
        for firing in today:
            if counts[firing.job] > group_above:
                if firing.job in grouped:
                    continue
                grouped.add(firing.job)
                runs = [f for f in today if f.job == firing.job]
                first, last = runs[0].at, runs[-1].at
                span = f'{first:%H:%M}-{last:%H:%M %Z} ({first.astimezone(timezone.utc):%H:%M}-' \
                       f'{last.astimezone(timezone.utc):%H:%M} UTC)'
                skipped = sum(1 for f in runs if f.skipped)
                note = f', {skipped} skipped' if skipped else ''
                lines.append(f'  {span}  {firing.job}, {len(runs)} runs{note}')
            else:
                utc = firing.at.astimezone(timezone.utc)
                line = f'  {firing.at:%H:%M %Z} ({utc:%H:%M} UTC)  {firing.job}'
                lines.append(f'{line}  -- skipped: {firing.skipped}' if firing.skipped else line)
    return lines
