"""Cold start: process start to first result, and where import time goes per top-level package.

    .venv/bin/python -m bench.cold_start [--runs 5]

Three measurements against a simulated gateway in its own process:
- `python -m functions run summary --json`: spawn → result line on stdout, and → exit;
- `functions-framework --source main.py`: spawn → port accepting, and → first push POST answered;
- `python -X importtime -c "import main"`: self time of every imported module, summed per top-level package.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field

from bench.common import REPO, RunStart, median, push_body, table, write_report
from bench.gateway import GatewayProcess
from tests.emulators import free_port

IMPORTTIME_LINE = re.compile(r'^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)')
PUSH_PATH = '/projects/bench/topics/intents'
TOP_PACKAGES_SHOWN = 15


def runtime_env(gateway: GatewayProcess, bytecode_cache: str | None) -> dict[str, str]:
    """The environment of the measured processes; with bytecode_cache, .pyc files are kept in that folder."""
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'IB_GATEWAY_HOST': gateway.host,
           'IB_GATEWAY_PORT': str(gateway.port), 'PYTHONUNBUFFERED': '1'}
    for name in ('RESULTS_TOPIC', 'GOOGLE_CLOUD_PROJECT', 'PUBSUB_EMULATOR_HOST'):
        env.pop(name, None)
    if bytecode_cache:
        env.pop('PYTHONDONTWRITEBYTECODE', None)
        env['PYTHONPYCACHEPREFIX'] = bytecode_cache   # outside the work tree
        subprocess.run([sys.executable, '-c', 'import main, functions.__main__'], cwd=REPO, env=env, check=True)
    return env


def cli_run(env: dict[str, str]) -> tuple[float, float]:
    """Seconds from spawning `python -m functions run summary --json` to its result line, and to its exit."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, '-m', 'functions', 'run', 'summary', '--json'], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    line = process.stdout.readline()
    first_result = time.perf_counter() - started
    process.stdout.read()
    process.wait(60)
    exited = time.perf_counter() - started
    if process.returncode != 0 or json.loads(line)['status'] != 'ok':
        raise RuntimeError(f'the CLI failed ({process.returncode}): {line[:500]!r}')
    return first_result, exited


def server_start(env: dict[str, str]) -> tuple[float, float]:
    """Seconds from spawning functions-framework to its port accepting, and to the first POST answered."""
    port = free_port()
    executable = os.path.join(os.path.dirname(sys.executable), 'functions-framework')
    body = json.dumps(push_body({'intent': 'summary'}))
    started = time.perf_counter()
    process = subprocess.Popen([executable, '--source', 'main.py', '--target', 'run_intent', '--host', '127.0.0.1',
                                '--port', str(port)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True)
    listening = None
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f'functions-framework exited with {process.returncode}')
            connection = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
            try:
                connection.connect()
            except ConnectionRefusedError:
                time.sleep(0.002)
                continue
            listening = listening or time.perf_counter() - started
            try:
                connection.request('POST', PUSH_PATH, body, {'Content-Type': 'application/json'})
                response = connection.getresponse()
                response.read()
            except (ConnectionError, http.client.HTTPException):
                time.sleep(0.002)   # accepted by the arbiter's socket before a worker serves it
                continue
            finally:
                connection.close()
            if response.status != 200:
                raise RuntimeError(f'first POST answered {response.status}')
            return listening, time.perf_counter() - started
    finally:
        os.killpg(process.pid, 15)
        process.wait(10)


def import_times(module: str, env: dict[str, str]) -> dict[str, float]:
    """Self import time (ms) of `import module` in a fresh interpreter, summed per top-level package."""
    result = subprocess.run([sys.executable, '-X', 'importtime', '-c', f'import {module}'], cwd=REPO,
                            env=env, capture_output=True, text=True, check=True)
    totals: dict[str, float] = defaultdict(float)
    for line in result.stderr.splitlines():
        match = IMPORTTIME_LINE.match(line)
        if match:
            totals[match.group(4).split('.')[0]] += int(match.group(1)) / 1000
    return dict(totals)


def import_seconds(module: str, env: dict[str, str]) -> float:
    """Seconds `import module` takes in a fresh interpreter, timed inside it (startup and exit excluded)."""
    code = f'import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)'
    result = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True, text=True,
                            check=True)
    return float(result.stdout)


def interpreter_start() -> float:
    """Seconds for `python -c pass` to start and exit: the floor under every cold start."""
    started = time.perf_counter()
    subprocess.run([sys.executable, '-c', 'pass'], check=True)
    return time.perf_counter() - started


@dataclass
class Variant:
    """All measurements under one environment."""

    name: str
    env: dict[str, str]
    imports_wall: list[float] = field(default_factory=list)
    cli: list[tuple[float, float]] = field(default_factory=list)
    server: list[tuple[float, float]] = field(default_factory=list)
    import_runs: list[dict[str, float]] = field(default_factory=list)

    def measure_once(self) -> None:
        self.imports_wall.append(import_seconds('main', self.env))
        self.cli.append(cli_run(self.env))
        self.server.append(server_start(self.env))
        self.import_runs.append(import_times('main', self.env))

    @property
    def imports(self) -> dict[str, float]:
        """Median self import ms per top-level package."""
        names = {name for run in self.import_runs for name in run}
        return {name: median([run.get(name, 0.0) for run in self.import_runs]) for name in names}

    @property
    def import_total(self) -> float:
        return median([sum(run.values()) for run in self.import_runs])


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    start = RunStart.now()
    configured = ('as configured here' if os.environ.get('PYTHONDONTWRITEBYTECODE') else 'as configured here '
                  '(bytecode cache on)')
    with GatewayProcess() as gateway, tempfile.TemporaryDirectory(prefix='bench-pycache-') as cache:
        variants = [Variant(configured, runtime_env(gateway, None)),
                    Variant('bytecode cached', runtime_env(gateway, cache))]
        for _ in range(args.runs):   # alternate, so drift in the machine's load hits both alike
            for variant in variants:
                variant.measure_once()
    bare = median([interpreter_start() for _ in range(args.runs)])
    start_rows = _start_rows(variants, bare)
    import_rows = _import_rows(variants)
    headers = ['measurement', *[f'{v.name}, median ms' for v in variants]]
    import_headers = ['top-level package', *[f'{v.name}, ms' for v in variants]]
    print(table(headers, start_rows))
    print(table(import_headers, import_rows))
    dont_write = os.environ.get('PYTHONDONTWRITEBYTECODE')
    path = write_report('cold_start', 'Cold start', [
        '## Process start to first result\n\n' + table(headers, start_rows),
        f'Median of {args.runs} runs each. The gateway (simulator) runs in its own process and is already up; '
        'nothing is published (no RESULTS_TOPIC: the result is printed). The server is polled with the POST '
        'every 2 ms until it answers, so its figure includes worker boot and the first invocation.',
        f'"{variants[0].name}": the environment this ran in' + (
            f' has PYTHONDONTWRITEBYTECODE={dont_write}, so the project\'s own modules (which ship without '
            '`__pycache__`) are compiled on every start, while installed packages use the .pyc files pip wrote.'
            if dont_write else '.') +
        ' "bytecode cached": PYTHONPYCACHEPREFIX points at a warm cache, so nothing is compiled.',
        '## Import time of `main` (what Cloud Functions loads) per top-level package\n\n' + table(
            import_headers, import_rows),
        f'`python -X importtime -c "import main"`, median of {args.runs} runs per package. Each module\'s *self* '
        'time is added to its top-level package (`google.cloud.pubsub_v1.x` → `google`), so the rows add up to '
        'the total. numpy is imported by eventkit, which ib_insync needs.',
    ], start=start)
    print(f'\nwrote {path}')
    return 0


def _start_rows(variants: list[Variant], bare: float) -> list[list]:
    return [
        ['`python -c pass` (interpreter alone)', *[bare * 1000 for _ in variants]],
        ['`import main` (what the function loads), timed inside a fresh interpreter',
         *[median(v.imports_wall) * 1000 for v in variants]],
        ['`python -m functions run summary --json`: spawn → result line',
         *[median([c[0] for c in v.cli]) * 1000 for v in variants]],
        ['… → process exit', *[median([c[1] for c in v.cli]) * 1000 for v in variants]],
        ['`functions-framework --source main.py`: spawn → port accepts',
         *[median([s[0] for s in v.server]) * 1000 for v in variants]],
        ['… → first push POST answered (summary ran)',
         *[median([s[1] for s in v.server]) * 1000 for v in variants]],
    ]


def _import_rows(variants: list[Variant]) -> list[list]:
    first = variants[0]
    ranked = sorted(first.imports, key=first.imports.get, reverse=True)
    shown, rest = ranked[:TOP_PACKAGES_SHOWN], ranked[TOP_PACKAGES_SHOWN:]
    rows = [[name, *[v.imports.get(name, 0.0) for v in variants]] for name in shown]
    rows.append([f'{len(rest)} others', *[sum(v.imports.get(n, 0.0) for n in v.imports if n not in shown)
                                          for v in variants]])
    rows.append(['**total**', *[v.import_total for v in variants]])
    return rows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m bench.cold_start', description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=int, default=5, help='repetitions of each measurement')
    return parser


if __name__ == '__main__':
    sys.exit(main())
