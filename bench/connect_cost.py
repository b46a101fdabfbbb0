"""What an invocation costs as the account gets busier: the lean connect against the full one, in one run.

    .venv/bin/python -m bench.connect_cost [--levels 0,200,1000,3000] [-n 8] [--intents health,summary,...]

One simulated gateway per level and connect (each its own process) is filled with another client id's activity
(bench/activity.py: 1-share market orders over the universe's stocks, so N executions are also N
completed orders, and the account holds positions across the universe). At each level every intent
runs through `functions.handler.handle` in this process (LOG_LEVEL=WARNING, as measured in issue 11),
n times with the lean connect (lib/session.py), then n times with the full `IB.connectAsync` the
runtime used before (`full_connect` below). Reported per intent, level and connect: p50 and p95
wall time, the CPU time of this process per run (all threads: what Cloud Functions bills; the
gateway's CPU is not in it) and the simulator's CPU per run. Round trips per connect are read from the
simulator's counters at 20 ms reply latency, where they cannot split.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import lib.ibapi  # noqa: F401  (main thread import, see lib/ibapi.py)
from bench.common import (RunStart, bench_parser, finish, market_gateways, median, percentile, quiet_logs, table,
                          trading_environment)
from bench.concurrency import _cpu_seconds
from bench.gateway import GatewayProcess
from functions.__main__ import pubsub_push_event
from functions.handler import TransientFailure, handle
from intents.registry import get_intent
from lib import session
from lib.config import Settings

INTENTS = ('health', 'summary', 'allocation', 'cash-balancer', 'trade-reconciliation', 'collect-market-data')
PARAMS = {'allocation': {'strategies': ['dummy']},
          'collect-market-data': {'instruments': [{'symbol': 'SPY'}], 'duration': '5 D'}}
CONNECTS = ('lean', 'full')
ROUND_TRIP_LATENCY_MS = 20


@dataclass
class Cell:
    """One intent, one activity level, one connect."""

    intent: str
    executions: int
    connect: str
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    gateway_cpu_ms: float = 0.0          # the simulator's, summed over the runs


@contextlib.contextmanager
def full_connect(readonly: bool):
    """Connect as the runtime did before the lean connect: IB.connectAsync, which downloads positions,
    open and completed orders (unless readonly), account updates (single and multi) and all of today's
    executions, whatever the intent needs."""
    async def connect_client(ib, host, port, client_id, timeout):
        await ib.connectAsync(host, port, client_id, timeout, readonly)

    async def nothing_more(ib, account, parts):
        return None

    with mock.patch.object(session, 'connect_client', connect_client), \
            mock.patch.object(session, 'fetch_account_state', nothing_more):
        yield


def run_once(intent: str, settings: Settings, connect: str) -> tuple[float, float, str]:
    """(wall ms, CPU ms of this process, status) of one invocation through the handler."""
    # each gateway's account has its own store: the fills ledger trade-reconciliation reads is per account
    os.environ['SQLITE_PATH'] = str(Path(os.environ['SQLITE_PATH']).with_name(f'state-{settings.gateway_port}.db'))
    request = {'intent': intent, 'params': PARAMS.get(intent, {}), 'idempotencyKey': uuid.uuid4().hex}
    event = pubsub_push_event(request, project='bench')
    context = full_connect(not get_intent(intent).places_orders) if connect == 'full' else contextlib.nullcontext()
    deployed = settings.with_parts_from_env()   # the store of this gateway's account, set above
    with context:
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            status = handle(event, deployed, publish=lambda result, run_settings: None).status
        except TransientFailure as exc:
            status = f'{exc.result.status}: {exc.result.error.type}'
        return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000, status


def round_trips(gateway: GatewayProcess, settings: Settings, intent: str, connect: str) -> int:
    """Round trips of one invocation's connection, at a latency where replies cannot overtake requests."""
    gateway.set_latency(ROUND_TRIP_LATENCY_MS)
    try:
        gateway.reset_counters()
        run_once(intent, settings, connect)
        return next(c['roundTrips'] for c in reversed(gateway.counters()) if not c['open'])
    finally:
        gateway.set_latency(0)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    start = RunStart.now()
    levels = [int(x) for x in args.levels.split(',')]
    intents, connects = args.intents.split(','), args.connects.split(',')
    quiet_logs('WARNING')
    cells: dict[tuple[str, int, str], Cell] = {}
    trips: dict[tuple[str, str], int] = {}
    with contextlib.ExitStack() as stack:
        trading_environment(stack)
        # a gateway per level and connect: the levels are measured in turn, so drift on the machine hits all
        # alike, and a lean run never follows a full one on the same gateway (which then lags for a while)
        gateways, settings = market_gateways(stack, [(level, connect) for level in levels for connect in connects])
        for (level, connect), gateway in gateways.items():
            for intent in intents:   # warm up, and let allocation reach its targets before anything is timed
                check(intent, run_once(intent, settings[level, connect], connect))
            print(f'{connect}: {gateway.fill(level) if level else 0} executions', file=sys.stderr, flush=True)
        for intent in ('health', 'summary'):
            for connect in connects:
                trips[intent, connect] = round_trips(gateways[levels[0], connect], settings[levels[0], connect],
                                                     intent, connect)
        # each connect in its own phase: right after a full connect's download its gateway goes on using the
        # CPU for a while, which would land on whatever runs next
        for connect in connects:
            for _ in range(args.n):
                for level in levels:
                    for intent in intents:
                        gc.collect()   # a full connect's garbage is not collected on a lean run's time, nor the reverse
                        gateway = gateways[level, connect]
                        gateway_cpu = _cpu_seconds(gateway.pid)
                        wall, cpu, status = check(intent, run_once(intent, settings[level, connect], connect))
                        cell = cells.setdefault((intent, level, connect), Cell(intent, level, connect))
                        cell.wall_ms.append(wall)
                        cell.cpu_ms.append(cpu)
                        cell.gateway_cpu_ms += (_cpu_seconds(gateway.pid) - gateway_cpu) * 1000
    rows = [_row(cells, intent, level) for intent in intents for level in levels]
    return finish(args.report, 'Connect cost against account activity: lean vs full connect', HEADERS, rows,
                  _notes(trips, args), start)


def check(intent: str, measured: tuple[float, float, str]) -> tuple[float, float, str]:
    """`measured` (run_once's answer), or RuntimeError when the run did not end ok or skipped."""
    if measured[2] not in ('ok', 'skipped'):
        raise RuntimeError(f'{intent} ended {measured[2]}')
    return measured


HEADERS = ['intent', 'executions', 'full p50 ms', 'full p95 ms', 'full CPU ms', 'lean p50 ms', 'lean p95 ms',
           'lean CPU ms', 'lean gateway CPU ms', 'lean p50 / empty']


def _row(cells: dict, intent: str, level: int) -> list:
    missing = Cell(intent, level, '')
    full, lean = cells.get((intent, level, 'full'), missing), cells.get((intent, level, 'lean'), missing)
    empty = median(cells.get((intent, min(lvl for (i, lvl, c) in cells if i == intent), 'lean'), missing).wall_ms)
    return [intent, f'{level:,}', median(full.wall_ms), percentile(full.wall_ms, 0.95), median(full.cpu_ms),
            median(lean.wall_ms), percentile(lean.wall_ms, 0.95), median(lean.cpu_ms),
            lean.gateway_cpu_ms / max(len(lean.wall_ms), 1), f'{median(lean.wall_ms) / empty:.2f}×']


def _notes(trips: dict, args: argparse.Namespace) -> list[str]:
    trip_rows = [[intent, trips.get((intent, 'full'), '–'), trips.get((intent, 'lean'), '–')]
                 for intent in ('health', 'summary')]
    return [
        f'{args.n} timed runs per cell. Each level and connect has its own simulated gateway (a process each), '
        'and the runs go round the levels and intents in turn, so load drift on the machine hits every level alike; '
        'all lean runs come first, then all full ones (a gateway that has just sent a full connect thousands of '
        'executions goes on using the CPU for a while, which would land on the next run). '
        'Before timing, each intent ran once on each gateway '
        '(the first allocation buys its target: '
        'one more execution than the level says; later allocations find nothing to trade). '
        '"executions" are today\'s executions on the account, each from a 1-share market order of client id 7, '
        'so there are as many completed orders, and the account holds positions in all 7 stocks of the universe. '
        '"CPU" is this process\'s CPU time per run, all threads (median); "lean gateway CPU" is the simulator '
        'process\'s, per run (mean; /proc resolution 10 ms, summed over the runs). '
        '"lean p50 / empty" is the lean p50 over the lean p50 at the lowest level.',
        '## Round trips per invocation\n\n' + table(['intent', 'full connect', 'lean connect'], trip_rows) +
        f'\n\nFrom the simulator\'s counters at {ROUND_TRIP_LATENCY_MS} ms reply latency, on the empty account, '
        'the intent\'s own requests included (health: one reqCurrentTime; summary: one concurrent batch).',
    ]


def _parser() -> argparse.ArgumentParser:
    parser = bench_parser('connect_cost', __doc__)
    parser.add_argument('--levels', default='0,200,1000,3000', help="today's executions, ascending, comma-separated")
    parser.add_argument('-n', type=int, default=8, help='timed runs per intent, level and connect')
    parser.add_argument('--intents', default=','.join(INTENTS), help='intents to run, comma-separated')
    parser.add_argument('--connects', default=','.join(CONNECTS), help='full, lean or both, comma-separated')
    return parser


if __name__ == '__main__':
    sys.exit(main())
