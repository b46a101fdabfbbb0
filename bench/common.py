"""What every benchmark shares: machine and version facts, percentiles, tables and the markdown report; the
simulated gateways, trading config and store of the benches that run intents in process."""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from io import BytesIO
from pathlib import Path
from unittest import mock

from bench.gateway import GatewayProcess
from lib import log
from lib.config import Settings
from tests import pubsub_events

REPO = Path(__file__).resolve().parent.parent
REPORT_DIR = REPO / 'docs' / 'bench'
ACCOUNT = 'DU1234567'
# Tuesday 2026-11-24, 10:30 in New York: the market is open, so activity orders fill.
MARKET_OPEN = datetime(2026, 11, 24, 15, 30, tzinfo=timezone.utc)
CURRENT = 'current'   # the simulator of this work tree, as against a commit's (source_tree)
TRADING_CONFIG = """
[exposure]
overall = 1.0
[exposure.strategies]
dummy = 0.5
[strategies.dummy]
symbol = "SPY"
sec_type = "STK"
exchange = "SMART"
[orderPolicy]
orderType = "market"
tif = "DAY"
[limits]
maxOrderNotional = 2000000.0
maxOrderNlvShare = 1.0
maxRunNlvShare = 2.0
maxOrdersPerRun = 10
allowlist = ["*"]
priceBand = 0.2
"""
LIBRARIES = ('ib_insync', 'ib_async', 'eventkit', 'functions-framework', 'gunicorn', 'flask', 'google-cloud-pubsub',
             'grpcio', 'pydantic', 'cloudevents')


def percentile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of the sorted values lie (linear interpolation)."""
    if not values:
        return float('nan')
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float('nan')


def cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def memory_total_mb() -> int | None:
    try:
        for line in Path('/proc/meminfo').read_text().splitlines():
            if line.startswith('MemTotal:'):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


@dataclass(frozen=True)
class RunStart:
    """What to record when a benchmark starts: the code measured and the machine's load."""

    code: str
    load: tuple[float, float, float]

    @classmethod
    def now(cls) -> RunStart:
        return cls(source_revision(), os.getloadavg())


def machine_facts(start: RunStart) -> list[tuple[str, str]]:
    """(label, value) rows describing the code, the machine, its load, Python and the libraries in use."""
    versions = []
    for name in LIBRARIES:
        try:
            versions.append(f'{name} {metadata.version(name)}')
        except metadata.PackageNotFoundError:
            continue
    return [
        ('date', datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')),
        ('code', start.code),
        ('CPU', f'{os.cpu_count()} × {cpu_model()}'),
        ('memory', f'{memory_total_mb()} MB'),
        ('OS', f'{platform.system()} {platform.release()}'),
        ('load average (1, 5, 15 min)', f'{_load(start.load)} at the start, {_load(os.getloadavg())} at the end '
                                        '(the benchmark\'s own processes count too)'),
        ('Python', f'{platform.python_implementation()} {platform.python_version()}'),
        ('IB client', os.environ.get('IB_CLIENT_LIBRARY') or 'ib_insync'),
        ('libraries', ', '.join(versions)),
    ]


def source_revision() -> str:
    """The commit measured, and whether the work tree differed from it."""
    try:
        commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return 'unknown (not a git checkout)'
    return f'{commit} with uncommitted changes' if dirty else commit


def _load(load: tuple[float, float, float]) -> str:
    return '/'.join(f'{x:.2f}' for x in load)


def table(headers: list[str], rows: list[list]) -> str:
    """A markdown table; floats get one decimal."""
    def cell(value) -> str:
        if isinstance(value, float):
            return '–' if value != value else f'{value:.1f}'
        return str(value)
    lines = ['| ' + ' | '.join(headers) + ' |', '|' + '---|' * len(headers)]
    lines += ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows]
    return '\n'.join(lines)


def command_line() -> str:
    """The command that reruns this benchmark with the same arguments."""
    script = Path(sys.argv[0]).resolve()
    module = script.with_suffix('').relative_to(REPO).as_posix().replace('/', '.')
    return shlex.join(['.venv/bin/python', '-m', module, *sys.argv[1:]])


def write_report(name: str, title: str, sections: list[str], start: RunStart) -> Path:
    """Write docs/bench/<name>.md: title, how to rerun, the machine, then the sections."""
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    facts = table(['', ''], [[label, value] for label, value in machine_facts(start)])
    text = '\n\n'.join([f'# {title}', f'Rerun from the repository root:\n\n    {command_line()}', facts, *sections])
    path = REPORT_DIR / f'{name}.md'
    path.write_text(text + '\n')
    return path


def push_body(request: dict, project: str = 'bench') -> dict:
    """A Pub/Sub push request body as the emulator sends it, carrying `request` as its data."""
    return pubsub_events.push_body(pubsub_events.pubsub_message(pubsub_events.b64(request), snake_case=True),
                                   project=project)


def bench_parser(name: str, doc: str) -> argparse.ArgumentParser:
    """The parser of bench.<name>, described by the first line of its docstring `doc`, with --report (default
    `name`)."""
    parser = argparse.ArgumentParser(prog=f'python -m bench.{name}', description=doc.split('\n')[0])
    parser.add_argument('--report', default=name, help='name of the report under docs/bench/')
    return parser


def quiet_logs(level: str) -> None:
    """Run the handler at LOG_LEVEL `level` with its log lines written nowhere (formatted all the same)."""
    os.environ['LOG_LEVEL'] = level
    log.configure(stream=open(os.devnull, 'w'), level=level, json=True)


def finish(report: str, title: str, headers: list[str], rows: list[list], sections: list[str],
           start: RunStart) -> int:
    """Print the results table, write docs/bench/<report>.md (results first, then `sections`); the exit status."""
    results = table(headers, rows)
    print(results)
    path = write_report(report, title, ['## Results\n\n' + results, *sections], start=start)
    print(f'\nwrote {path}')
    return 0


def trading_environment(stack: contextlib.ExitStack) -> None:
    """For the rest of `stack`: a trading config and a SQLite store of the bench's own, trading enabled, for
    the order-placing intents."""
    scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix='bench-')))
    config = scratch / 'trading.toml'
    config.write_text(TRADING_CONFIG)
    values = {'TRADING_CONFIG_PATH': str(config), 'STORE_BACKEND': 'sqlite', 'SQLITE_PATH': str(scratch / 'state.db'),
              'TRADING_ENABLED': 'true'}
    stack.enter_context(mock.patch.dict(os.environ, values))


def market_gateways(stack: contextlib.ExitStack, keys: list[tuple], simulator_of=lambda key: CURRENT,
                    ) -> tuple[dict[tuple, GatewayProcess], dict[tuple, Settings]]:
    """A simulated gateway process per key for the rest of `stack` (one account, its clock at MARKET_OPEN,
    running the simulator `simulator_of(key)` names: CURRENT or a commit), and the Settings that reach each."""
    trees: dict[str, str | None] = {CURRENT: None}
    for key in keys:
        name = simulator_of(key)
        if name not in trees:
            trees[name] = source_tree(name, Path(stack.enter_context(tempfile.TemporaryDirectory(prefix='bench-'))))
    gateways = {key: stack.enter_context(GatewayProcess(code=trees[simulator_of(key)], accounts=[ACCOUNT],
                                                        time=MARKET_OPEN)) for key in keys}
    settings = {key: Settings(gateway_host=g.host, gateway_port=g.port, connect_timeout=30, deadline_seconds=120)
                for key, g in gateways.items()}
    return gateways, settings


def source_tree(revision: str, into: Path) -> str:
    """The files of commit `revision` (git archive) unpacked in `into`; returns that directory."""
    archive = subprocess.run(['git', 'archive', '--format=tar', revision], cwd=REPO, capture_output=True,
                             check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter='data')
    return str(into)

