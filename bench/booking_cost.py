"""What booking executions costs an allocation as the day gets busier: incremental booking against the whole day's.

    .venv/bin/python -m bench.booking_cost [--levels 0,1000,3000] [-n 6] [--intents allocation,close-all]
                                           [--bookings incremental,ledger-read,whole-day]

Allocation and close-all book the account's executions into the fills ledger before sizing
(trading/ledger.book_executions). Booking is incremental: it fetches only the executions since the account's
booking cursor, then read the account's running holdings from the store (Store.holdings, one small read).
Two earlier versions are swapped in beside it: `ledger-read` books incrementally but then reads the whole
fills ledger and sums it (`store.fills()` into `trading.ledger.holdings`, as before the running holdings), and
`whole-day` also fetches all of the day's executions every time (`book_executions(..., incremental=False)`).
Each gateway's account has its own SQLite store, so its ledger holds that level's executions. One simulated gateway per level and
booking (a process each) gets one warm-up run of each intent, then the level's activity (bench/activity.py:
another client id's 1-share market orders, some 200 a second), then its clock moves 10 minutes on (scheduled
runs are minutes apart; the activity is not all inside the booking's 60 s overlap), then one untimed run (the first booking after the activity
fetches it, once, in either booking), then n timed runs per intent, going round the levels in turn.
Reported per intent, level and booking: p50 wall time and CPU of this process per run, and what the
gateway sent the run's connection: messages, bytes and execution reports (execDetails).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import os
import sys
import tempfile
from pathlib import Path
from unittest import mock

import lib.ibapi  # noqa: F401  (main thread import, see lib/ibapi.py)
from bench.common import RunStart, median, table, write_report
from bench.connect_cost import ACCOUNT, MARKET_OPEN, _check, _environment, run_once
from bench.gateway import GatewayProcess
from lib import log
from lib.config import Settings
from trading import ledger

BOOKINGS = ('incremental', 'ledger-read', 'whole-day')
EXEC_DETAILS = 11
LATER_SECONDS = 600.0
HEADERS = ['intent', 'executions', 'booking', 'p50 ms', 'CPU ms', 'messages received', 'bytes received',
           'execution reports received']


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
    intents = args.intents.split(',')
    bookings = args.bookings.split(',')
    os.environ['LOG_LEVEL'] = 'WARNING'
    log.configure(stream=open(os.devnull, 'w'), level='WARNING', json=True)
    samples: dict[tuple, list[tuple]] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(_environment(Path(stack.enter_context(tempfile.TemporaryDirectory()))))
        gateways = {(level, kind): stack.enter_context(GatewayProcess(accounts=[ACCOUNT], time=MARKET_OPEN))
                    for level in levels for kind in bookings}
        settings = {key: Settings(gateway_host=g.host, gateway_port=g.port, connect_timeout=30, deadline_seconds=120)
                    for key, g in gateways.items()}
        for (level, kind), gateway in gateways.items():
            with booking(kind):
                for intent in intents:
                    _check(intent, run_once(intent, settings[level, kind], 'lean'))
                filled = gateway.fill(level) if level else 0
                gateway.advance(LATER_SECONDS)   # the runs come later in the day than the activity, as scheduled
                for intent in intents:   # the first booking after the activity fetches it, in either booking
                    _check(intent, run_once(intent, settings[level, kind], 'lean'))
            print(f'{kind}: {filled} executions', file=sys.stderr, flush=True)
        for _ in range(args.n):
            for kind in bookings:
                with booking(kind):
                    for level in levels:
                        for intent in intents:
                            gc.collect()
                            gateway = gateways[level, kind]
                            wall, cpu, _ = _check(intent, run_once(intent, settings[level, kind], 'lean'))
                            sent = next(c for c in reversed(gateway.counters()) if not c['open'])
                            samples.setdefault((intent, level, kind), []).append(
                                (wall, cpu, sent['messagesOut'], sent['bytesOut'], sent['out'].get(EXEC_DETAILS, 0)))
    rows = [[intent, f'{level:,}', kind, *(median([s[i] for s in samples[intent, level, kind]]) for i in range(5))]
            for intent in intents for level in levels for kind in bookings]
    print(table(HEADERS, rows))
    path = write_report(args.report, 'Booking executions and reading holdings against account activity', [
        '## Results\n\n' + table(HEADERS, rows),
        f'{args.n} timed runs per cell (medians). Each level and booking has its own simulated gateway. Each '
        'intent ran once before the activity and once after it, untimed (that run fetches the activity, in '
        'every version). "booking": incremental is the code as it is (running holdings); ledger-read reads and '
        'sums the whole fills ledger instead (before the running holdings); whole-day also fetches all of the '
        'day\'s executions (before incremental booking). "executions" are today\'s executions on the account '
        '(and the length of its fills ledger), from 1-share market orders of '
        'client id 7. "CPU" is this process\'s CPU time per run; the "received" columns are what the simulator '
        'sent the run\'s connection (its counters), handshake included.'], start=start)
    print(f'\nwrote {path}')
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m bench.booking_cost', description=__doc__.split('\n')[0])
    parser.add_argument('--levels', default='0,1000,3000', help="today's executions, ascending, comma-separated")
    parser.add_argument('-n', type=int, default=6, help='timed runs per intent, level and booking')
    parser.add_argument('--intents', default='allocation,close-all', help='intents to run, comma-separated')
    parser.add_argument('--bookings', default=','.join(BOOKINGS), help='versions of the code to run, comma-separated')
    parser.add_argument('--report', default='booking_cost', help='name of the report under docs/bench/')
    return parser


if __name__ == '__main__':
    sys.exit(main())
