"""What booking executions costs an allocation as the day gets busier: incremental booking against the whole day's.

    .venv/bin/python -m bench.booking_cost [--levels 0,1000,3000] [-n 6] [--intents allocation,close-all]
                                           [--bookings incremental,ledger-read,whole-day] [--simulators current,REV]

Allocation and close-all book the account's executions into the fills ledger before sizing
(trading/ledger.book_executions). Booking is incremental: it fetches only the executions since the account's
booking cursor, then reads the account's running holdings from the store (Store.holdings, one small read).
Two earlier versions are swapped in beside it: `ledger-read` books incrementally but then reads the whole
fills ledger and sums it (`store.fills()` into `trading.ledger.holdings`, as before the running holdings), and
`whole-day` also fetches all of the day's executions every time (`book_executions(..., incremental=False)`).
`--simulators` adds gateways running the simulator of a commit (e.g. the one before a simulator change) beside
this tree's, for every level and booking. Each gateway's account has its own SQLite store, so its ledger holds
that level's executions. One simulated gateway per level, booking and simulator (a process each) gets one
warm-up run of each intent, then the level's activity (bench/activity.py: another client id's 1-share market
orders, some 200 a second), then its clock moves 10 minutes on (scheduled runs are minutes apart; the activity
is not all inside the booking's 60 s overlap), then one untimed run (the first booking after the activity
fetches it, once, in either booking), then n timed runs per intent, going round the levels in turn.
Reported per intent, level, booking and simulator: p50 wall time, CPU of this process and of the gateway per
run, and what the gateway sent the run's connection: messages, bytes and execution reports (execDetails).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import sys
from unittest import mock

import lib.ibapi  # noqa: F401  (main thread import, see lib/ibapi.py)
from bench.common import (CURRENT, RunStart, bench_parser, finish, market_gateways, median, quiet_logs,
                          trading_environment)
from bench.concurrency import _cpu_seconds
from bench.connect_cost import check, run_once
from trading import ledger

BOOKINGS = ('incremental', 'ledger-read', 'whole-day')
EXEC_DETAILS = 11
LATER_SECONDS = 600.0
HEADERS = ['intent', 'executions', 'booking', 'simulator', 'p50 ms', 'p50 / lowest level', 'CPU ms',
           'gateway CPU ms', 'messages received', 'bytes received', 'execution reports received']


def booking(kind: str) -> contextlib.ExitStack:
    """The code under test: `incremental` (as it is), `ledger-read` (reading the whole ledger, as before the
    running holdings), `whole-day` (that, and booking all of the day's executions each time)."""
    stack = contextlib.ExitStack()
    if kind in ('ledger-read', 'whole-day'):
        stack.enter_context(mock.patch('intents.trading.stored_holdings', _ledger_sum))
    if kind == 'whole-day':
        stack.enter_context(mock.patch('intents.trading.book_executions',
                                       functools.partial(ledger.book_executions, incremental=False)))
    return stack


def _ledger_sum(store, account: str) -> dict:
    """How allocation and close-all read holdings before the store kept them: the whole ledger, summed."""
    return ledger.holdings(store.fills(), account)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    start = RunStart.now()
    levels = [int(x) for x in args.levels.split(',')]
    intents, bookings, simulators = args.intents.split(','), args.bookings.split(','), args.simulators.split(',')
    quiet_logs('WARNING')
    samples: dict[tuple, list[tuple]] = {}
    with contextlib.ExitStack() as stack:
        trading_environment(stack)
        gateways, settings = market_gateways(stack, [(level, kind, sim) for level in levels for kind in bookings
                                                     for sim in simulators], simulator_of=lambda key: key[2])
        for (level, kind, sim), gateway in gateways.items():
            with booking(kind):
                for intent in intents:
                    check(intent, run_once(intent, settings[level, kind, sim], 'lean'))
                filled = gateway.fill(level) if level else 0
                gateway.advance(LATER_SECONDS)   # the runs come later in the day than the activity, as scheduled
                for intent in intents:   # the first booking after the activity fetches it, in either booking
                    check(intent, run_once(intent, settings[level, kind, sim], 'lean'))
            print(f'{kind}, simulator {sim}: {filled} executions', file=sys.stderr, flush=True)
        for _ in range(args.n):
            for kind in bookings:
                with booking(kind):
                    for level in levels:
                        for sim in simulators:
                            for intent in intents:
                                gc.collect()
                                gateway = gateways[level, kind, sim]
                                gateway_cpu = _cpu_seconds(gateway.pid)
                                wall, cpu, _ = check(intent, run_once(intent, settings[level, kind, sim], 'lean'))
                                gateway_ms = (_cpu_seconds(gateway.pid) - gateway_cpu) * 1000
                                sent = next(c for c in reversed(gateway.counters()) if not c['open'])
                                samples.setdefault((intent, level, kind, sim), []).append(
                                    (wall, cpu, gateway_ms, sent['messagesOut'], sent['bytesOut'],
                                     sent['out'].get(EXEC_DETAILS, 0)))
    rows = []
    for intent in intents:
        for level in levels:
            for kind in bookings:
                for sim in simulators:
                    cell = samples[intent, level, kind, sim]
                    wall, cpu, _, *sent = (median([s[i] for s in cell]) for i in range(6))
                    gateway_ms = sum(s[2] for s in cell) / len(cell)
                    lowest = median([s[0] for s in samples[intent, levels[0], kind, sim]])
                    rows.append([intent, f'{level:,}', kind, sim, wall, f'{wall / lowest:.2f}×', cpu, gateway_ms,
                                 *sent])
    return finish(args.report, 'Booking executions and reading holdings against account activity', HEADERS, rows, [
        f'{args.n} timed runs per cell (medians). Each level, booking and simulator has its own simulated gateway. '
        'Each intent ran once before the activity and once after it, untimed (that run fetches the activity, in '
        'every version). "booking": incremental is the code as it is (running holdings); ledger-read reads and '
        'sums the whole fills ledger instead (before the running holdings); whole-day also fetches all of the '
        'day\'s executions (before incremental booking). "simulator": the gateway\'s code, this work tree\'s '
        f'({CURRENT}) or a commit\'s. "executions" are today\'s executions on the account '
        '(and the length of its fills ledger), from 1-share market orders of client id 7. "CPU" is this process\'s '
        'CPU time per run (median); "gateway CPU" the simulator process\'s per run (mean; /proc resolution '
        '10 ms, summed over the runs); the "received" columns are what the simulator '
        'sent the run\'s connection (its counters), handshake included.'], start)


def _parser() -> argparse.ArgumentParser:
    parser = bench_parser('booking_cost', __doc__)
    parser.add_argument('--levels', default='0,1000,3000', help="today's executions, ascending, comma-separated")
    parser.add_argument('-n', type=int, default=6, help='timed runs per intent, level and booking')
    parser.add_argument('--intents', default='allocation,close-all', help='intents to run, comma-separated')
    parser.add_argument('--bookings', default=','.join(BOOKINGS), help='versions of the code to run, comma-separated')
    parser.add_argument('--simulators', default=CURRENT,
                        help=f'simulators to run, comma-separated: {CURRENT} (this work tree) or a git commit')
    return parser


if __name__ == '__main__':
    sys.exit(main())
