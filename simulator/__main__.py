"""python -m simulator: serve a paper IB Gateway until SIGINT/SIGTERM."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from .faults import HIST_ERRORS
from .limits import Limits
from .server import Simulator


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog='python -m simulator', description=__doc__)
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, default=4002, help='0 picks a free port (printed when ready)')
    p.add_argument('--accounts', default='DU1234567', help='comma-separated account ids')
    p.add_argument('--base-currency', default='USD')
    p.add_argument('--cash', type=float, default=1_000_000.0)
    p.add_argument('--seed', type=int, default=1, help='price model seed: same seed, same bars')
    p.add_argument('--latency-ms', type=float, default=0.0, help='delay added to every reply')
    p.add_argument('--jitter-ms', type=float, default=0.0, help='random extra delay per reply')
    p.add_argument('--state', help='JSON file holding accounts, orders and executions across restarts')
    p.add_argument('--contracts', help='JSON file with extra contracts for the universe')
    p.add_argument('--master-client-id', type=int)
    p.add_argument('--time', type=_instant, help='simulated clock start, ISO 8601 (default: now)')
    p.add_argument('--refuse-connections', action='store_true', help='fault: refuse every connection')
    p.add_argument('--drop-after', type=int, help='fault: close a connection after N messages')
    p.add_argument('--stall', default='', help='fault: comma-separated request ids never answered')
    p.add_argument('--reject-orders', action='store_true', help='fault: reject every order (error 201)')
    p.add_argument('--partial-fill', type=float, help='fault: fraction of each order filled at once')
    p.add_argument('--hist-outage', action='store_true', help='fault: historical data errors (162)')
    p.add_argument('--hist-error', choices=sorted(HIST_ERRORS),
                   help="fault: every historical data request gets error 162 with this kind's text")
    p.add_argument('--connectivity-lost', action='store_true',
                   help='fault: the gateway has lost IB (1100/2110 to every client; the API socket stays up)')
    limits = p.add_argument_group("a real gateway's limits (on by default, with IB's numbers)")
    limits.add_argument('--message-rate', type=int, default=50, metavar='N',
                        help='client messages per second before error 100 and, sustained, a close; 0: no limit')
    limits.add_argument('--no-hist-pacing', action='store_true',
                        help='serve small bars (30 secs or less) without the pacing rules (error 162)')
    limits.add_argument('--hist-open-requests', type=int, default=50, metavar='N',
                        help='simultaneous open historical data requests; 0: no limit')
    limits.add_argument('--market-data-lines', type=int, default=100, metavar='N',
                        help='streaming market-data subscriptions before error 101; 0: no limit')
    limits.add_argument('--all-executions', action='store_true',
                        help="reqExecutions returns every past execution, not only the current day's")
    p.add_argument('--time-zone', default='America/New_York', metavar='ZONE',
                   help="the TWS login's time zone, in which a request's date-time without a zone is read "
                        '(ExecutionFilter.time, endDateTime); default %(default)s')
    p.add_argument('--log-level', default='WARNING')
    args = p.parse_args(argv)
    args.accounts = [a for a in args.accounts.split(',') if a]
    if not args.accounts:
        p.error('--accounts needs at least one account id')
    try:
        ZoneInfo(args.time_zone)
    except (KeyError, ValueError):
        p.error(f'--time-zone: unknown time zone {args.time_zone!r}')
    try:
        args.stall = {int(x) for x in args.stall.split(',') if x}
    except ValueError:
        p.error('--stall takes comma-separated message ids, e.g. 49,20')
    return args


def limits_of(args: argparse.Namespace) -> Limits:
    """The gateway limits the command line asks for (0 switches a numeric limit off)."""
    return Limits(message_rate=args.message_rate or None, hist_pacing=not args.no_hist_pacing,
                  hist_open_requests=args.hist_open_requests or None,
                  market_data_lines=args.market_data_lines or None, executions_current_day=not args.all_executions)


def _instant(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not an ISO 8601 time: {text!r}') from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


async def serve(args: argparse.Namespace) -> None:
    sim = Simulator(accounts=args.accounts, base_currency=args.base_currency, cash=args.cash,
                    seed=args.seed, latency_ms=args.latency_ms, time=args.time,
                    master_client_id=args.master_client_id, state_file=args.state,
                    contracts_file=args.contracts, host=args.host, port=args.port, limits=limits_of(args),
                    time_zone=args.time_zone)
    f = sim.faults
    f.jitter_ms, f.drop_after, f.stall = args.jitter_ms, args.drop_after, args.stall
    f.reject_orders, f.partial_fill, f.hist_outage = args.reject_orders, args.partial_fill, args.hist_outage
    f.refuse_connections = args.refuse_connections
    f.hist_error, f.connectivity_lost = args.hist_error or '', args.connectivity_lost
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, sim.stop)
    await sim.serve(on_ready=lambda: print(f'listening on {sim.host}:{sim.port}', flush=True))


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    try:
        asyncio.run(serve(args))
    except OSError as e:
        print(f'simulator: cannot listen on {args.host}:{args.port}: {e.strerror or e}', file=sys.stderr)
        return 1
    except ValueError as e:
        print(f'simulator: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
