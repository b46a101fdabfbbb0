"""Concurrent invocations on ONE functions-framework process (THREADS=30): throughput, p95, failures,
peak memory and CPU, for the per-invocation runtime and for the persistent-connection baseline.

    .venv/bin/python -m bench.concurrency [--levels 1,8,30] [--latencies 0,5] [--seconds 4]

Each of N client threads POSTs Pub/Sub push bodies (as the emulator sends them) straight to the
server, one after another, for the given time. The gateway is the simulator in its own process.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import REPO, RunStart, median, percentile, push_body, table, write_report
from bench.gateway import GatewayProcess
from tests.emulators import Process, free_port, spawn

THREADS = 30
DESIGNS = {
    'handler': ('per-invocation handler (main.py)', ['--source', 'main.py', '--target', 'run_intent']),
    'baseline': ('baseline (persistent connection)', ['--source', 'bench/baseline_function.py',
                                                      '--target', 'run_summary']),
}
PUSH_PATH = '/projects/bench/topics/intents'
CLOCK_TICKS = os.sysconf('SC_CLK_TCK')


@dataclass
class Cell:
    """One design at one latency and concurrency level."""

    design: str
    latency_ms: float
    concurrency: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    http_failures: int = 0
    result_statuses: dict[str, int] = field(default_factory=dict)
    peak_rss_mb: float = float('nan')
    server_cpu_ms: float = 0.0
    gateway_cpu_ms: float = 0.0

    @property
    def completed(self) -> int:
        return len(self.latencies)

    @property
    def failures(self) -> int:
        return self.http_failures + sum(n for status, n in self.result_statuses.items() if status != 'ok')

    @property
    def throughput(self) -> float:
        return self.completed / self.seconds if self.seconds else float('nan')


class Server:
    """functions-framework serving one design on 127.0.0.1, with its log and process tree at hand."""

    def __init__(self, design: str, gateway: GatewayProcess, log_dir: Path,
                 extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'PYTHONPATH': str(REPO), 'THREADS': str(THREADS),
               'IB_GATEWAY_HOST': gateway.host, 'IB_GATEWAY_PORT': str(gateway.port),
               'IB_CONNECT_TIMEOUT': '10', 'INTENT_DEADLINE_SECONDS': '60'}
        for name in ('RESULTS_TOPIC', 'GOOGLE_CLOUD_PROJECT', 'LOG_LEVEL'):
            env.pop(name, None)   # results go to stdout, logs at the default level
        env.update(extra_env or {})
        executable = str(Path(sys.executable).parent / 'functions-framework')
        command = [executable, *DESIGNS[design][1], '--host', '127.0.0.1', '--port', str(self.port)]
        self.process: Process = spawn(command, env=env, log_dir=log_dir, name=f'{design}-{self.port}')
        self.process.wait_until(f'http://127.0.0.1:{self.port}/', lambda status, body: status == 405, 30,
                                'functions-framework')
        self._log_offset = 0

    def pids(self) -> list[int]:
        """The arbiter and its workers."""
        root = self.process.process.pid
        return [root, *_children(root)]

    def peak_rss_mb(self) -> float:
        """Sum of the high-water RSS (VmHWM) of the arbiter and its workers."""
        return sum(_status_kb(pid, 'VmHWM') for pid in self.pids()) / 1024

    def cpu_seconds(self) -> float:
        return sum(_cpu_seconds(pid) for pid in self.pids())

    def new_result_statuses(self) -> dict[str, int]:
        """Statuses of the result lines printed since the last call."""
        text = self.process.output()
        fresh, self._log_offset = text[self._log_offset:], len(text)
        statuses: dict[str, int] = {}
        for line in fresh.splitlines():
            if not line.startswith('{'):
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue
            if str(doc.get('schema', '')).endswith('-result/v1'):
                statuses[doc['status']] = statuses.get(doc['status'], 0) + 1
        return statuses

    def stop(self) -> None:
        self.process.stop()


def load(port: int, concurrency: int, seconds: float, intent: str = 'summary') -> tuple[list[float], int, float]:
    """`concurrency` closed-loop clients for `seconds`: request latencies (ms), failures, elapsed seconds."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    start = threading.Barrier(concurrency + 1)
    stop_at = [0.0]

    def client() -> None:
        connection = http.client.HTTPConnection('127.0.0.1', port, timeout=120)
        start.wait()
        while time.perf_counter() < stop_at[0]:
            body = json.dumps(push_body({'intent': intent}))
            began = time.perf_counter()
            try:
                connection.request('POST', PUSH_PATH, body, {'Content-Type': 'application/json'})
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                connection.close()
                connection = http.client.HTTPConnection('127.0.0.1', port, timeout=120)
            elapsed = (time.perf_counter() - began) * 1000
            with lock:
                if ok:
                    latencies.append(elapsed)
                else:
                    failures[0] += 1
        connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    start.wait()
    for thread in threads:
        thread.join()
    return latencies, failures[0], time.perf_counter() - began


def measure(design: str, latency: float, levels: list[int], seconds: float, gateway: GatewayProcess,
            log_dir: Path, extra_env: dict[str, str] | None = None, intent: str = 'summary') -> list[Cell]:
    """One fresh server for the design; the levels in increasing order, so VmHWM is each level's peak."""
    gateway.set_latency(latency)
    server = Server(design, gateway, log_dir, extra_env)
    cells = []
    try:
        load(server.port, 2, 1.0, intent)   # warm up: imports, the publisher/persistent connection, first-run caches
        server.new_result_statuses()
        for level in levels:
            cell = Cell(design, latency, level)
            cpu_before, gateway_before = server.cpu_seconds(), _cpu_seconds(gateway.pid)
            cell.latencies, cell.http_failures, cell.seconds = load(server.port, level, seconds, intent)
            time.sleep(0.2)   # let the last result lines reach the log
            cell.result_statuses = server.new_result_statuses()
            cell.peak_rss_mb = server.peak_rss_mb()
            done = max(cell.completed, 1)
            cell.server_cpu_ms = (server.cpu_seconds() - cpu_before) * 1000 / done
            cell.gateway_cpu_ms = (_cpu_seconds(gateway.pid) - gateway_before) * 1000 / done
            cells.append(cell)
            print(table(HEADERS, [_row(cell)]).splitlines()[-1], flush=True)
    finally:
        server.stop()
    return cells


HEADERS = ['design', 'latency ms', 'concurrent', 'completed', 'throughput /s', 'p50 ms', 'p95 ms', 'failures',
           'peak RSS MB', 'server CPU ms/inv', 'gateway CPU ms/inv']


def _row(c: Cell) -> list:
    return [DESIGNS[c.design][0], f'{c.latency_ms:g}', c.concurrency, c.completed, c.throughput,
            median(c.latencies), percentile(c.latencies, 0.95), c.failures, c.peak_rss_mb, c.server_cpu_ms,
            c.gateway_cpu_ms]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    start = RunStart.now()
    levels = [int(x) for x in args.levels.split(',')]
    latencies = [float(x) for x in args.latencies.split(',')]
    log_dir = Path(tempfile.mkdtemp(prefix='bench-concurrency-'))
    extra_env = dict(item.split('=', 1) for item in args.server_env)
    cells: list[Cell] = []
    print(table(HEADERS, []))
    with GatewayProcess() as gateway:
        for latency in latencies:
            for design in args.designs.split(','):
                cells += measure(design, latency, levels, args.seconds, gateway, log_dir, extra_env, args.intent)
    title = 'Concurrency: one functions-framework process, THREADS=30' + (
        f' ({", ".join(args.server_env)})' if args.server_env else '') + (
        f', handler running {args.intent}' if args.intent != 'summary' else '')
    path = write_report(args.report, title,
                        _report(cells, args), start=start)
    print(f'\nwrote {path}; server logs are in {log_dir}')
    return 0


def _report(cells: list[Cell], args: argparse.Namespace) -> list[str]:
    ratios = []
    for latency in sorted({c.latency_ms for c in cells}):
        for level in sorted({c.concurrency for c in cells}):
            pair = {c.design: c for c in cells if c.latency_ms == latency and c.concurrency == level}
            if len(pair) == 2 and pair['baseline'].throughput:
                ratios.append([f'{latency:g}', level, pair['handler'].throughput, pair['baseline'].throughput,
                               f"{pair['handler'].throughput / pair['baseline'].throughput:.1f}×"])
    failures = [f"- {DESIGNS[c.design][0]}, {c.latency_ms:g} ms, {c.concurrency} concurrent: {c.http_failures} HTTP "
                f"failures, result statuses {c.result_statuses}" for c in cells if c.failures]
    comparison = ['## Throughput, handler vs baseline\n\n' + table(
        ['latency ms', 'concurrent', 'handler /s', 'baseline /s', 'ratio'], ratios)] if ratios else []
    return [
        '## Results\n\n' + table(HEADERS, [_row(c) for c in cells]),
        *comparison,
        '## Failures\n\n' + ('\n'.join(failures) or 'None: every request got HTTP 200 and every result was `ok`.'),
        '## Method\n\n'
        f'- One `functions-framework` process per design and latency (gunicorn, 1 worker, THREADS={THREADS}), '
        'started fresh; 1 s of warm-up at 2 concurrent, then each level for '
        f'{args.seconds:g} s with N closed-loop clients (threads in the benchmark process, one keep-alive HTTP '
        f'connection each) POSTing push bodies to `{PUSH_PATH}`.\n'
        '- **failures** = non-200 answers or transport errors, plus results whose status is not `ok` (the handler '
        'prints each result document on stdout when no RESULTS_TOPIC is set; the baseline prints one line per job). '
        'Nothing is published to Pub/Sub here.\n'
        '- **peak RSS** = VmHWM of the arbiter plus the worker, read after each level (levels run in increasing '
        'order on one server, so it is the peak up to and including that level).\n'
        '- **CPU ms/inv** = user+system CPU of the server processes (and of the simulator process) over the level, '
        'divided by the completed invocations.\n'
        '- The simulator, the server and the load generator share the machine\'s CPUs; the gateway would be '
        'elsewhere in production. The baseline keeps ib_insync\'s request throttle (45 requests/s per connection, '
        "IB's pacing limit), which caps one connection at 15 `summary` jobs/s.\n"
        f'- Extra server environment: {", ".join(args.server_env) or "none"}.',
    ]


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f'/proc/{pid}/task/{pid}/children').read_text().split()]
    except OSError:
        return []


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f'/proc/{pid}/status').read_text().splitlines():
            if line.startswith(key + ':'):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_seconds(pid: int | None) -> float:
    try:
        fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS   # utime, stime


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m bench.concurrency', description=__doc__.split('\n')[0])
    parser.add_argument('--levels', default='1,8,30', help='concurrent invocations, comma-separated')
    parser.add_argument('--latencies', default='0,5', help='simulated reply latencies in ms, comma-separated')
    parser.add_argument('--seconds', type=float, default=4.0, help='duration of each level')
    parser.add_argument('--designs', default='handler,baseline', help='which designs to run')
    parser.add_argument('--server-env', action='append', default=[], metavar='NAME=VALUE',
                        help='extra environment for the servers (e.g. LOG_LEVEL=WARNING, WORKERS=2); repeatable')
    parser.add_argument('--report', default='concurrency', help='name of the report under docs/bench/')
    parser.add_argument('--intent', default='summary',
                        help='intent the handler design runs (the baseline always runs summary)')
    return parser


if __name__ == '__main__':
    sys.exit(main())
