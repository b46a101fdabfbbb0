"""CPU per `health` invocation in process, the runner as it is against the runner before, in one run.

    .venv/bin/python -m bench.invocation_cpu [-n 400] [--blocks 8] [--intent health]

Each invocation goes through `functions.handler.handle` against a simulated gateway in its own process
(an empty account, SQLite store, LOG_LEVEL=INFO as deployed, the result published nowhere). The two
variants alternate in blocks of n/blocks runs, so drift in the machine's load hits both alike:

- `shared pool` (now): each run's loop hands its blocking calls (`asyncio.to_thread`: the store) to the
  process's thread pool (functions/blocking.py);
- `per-loop executor` (before): each run's loop made its default ThreadPoolExecutor, started a thread
  on the first `to_thread` and joined it in `loop.shutdown_default_executor()` (`before_runner` below is
  that code, swapped in for the measurement).

Reported: CPU time of this process per invocation (all threads: what Cloud Functions bills; the
gateway's is not in it), p50 and p95 wall time.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import sys
import tempfile
import time
from unittest import mock

import lib.ibapi  # noqa: F401  (main thread import, see lib/ibapi.py)
from bench.common import ACCOUNT, RunStart, bench_parser, finish, median, percentile, quiet_logs
from bench.gateway import GatewayProcess
from functions import runner
from functions.__main__ import pubsub_push_event
from functions.handler import handle
from lib.config import Settings

VARIANTS = ('shared pool', 'per-loop executor')
HEADERS = ['variant', 'invocations', 'CPU ms / invocation', 'p50 ms', 'p95 ms']


def before_runner(work, on_crash, box):
    """functions.runner._run_loop before functions/blocking.py: the loop's own default executor."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        box.append(loop.run_until_complete(work()))
    except BaseException as exc:
        box.append(on_crash(exc))
    finally:
        runner._cancel_leftovers(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        asyncio.set_event_loop(None)
        loop.close()


def variant(name: str):
    if name == 'shared pool':
        return contextlib.nullcontext()
    return mock.patch.object(runner, '_run_loop', before_runner)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    start = RunStart.now()
    scratch = tempfile.mkdtemp(prefix='bench-cpu-')
    os.environ.update({'STORE_BACKEND': 'sqlite', 'SQLITE_PATH': os.path.join(scratch, 'state.db')})
    quiet_logs('INFO')
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with GatewayProcess(accounts=[ACCOUNT]) as gateway:
        settings = Settings(gateway_host=gateway.host, gateway_port=gateway.port).with_parts_from_env()

        def once() -> float:
            event = pubsub_push_event({'intent': args.intent, 'params': {}}, project='bench')
            started = time.perf_counter()
            status = handle(event, settings, publish=lambda result, run_settings: None).status
            if status != 'ok':
                raise RuntimeError(f'{args.intent} ended {status}')
            return (time.perf_counter() - started) * 1000

        for name in VARIANTS:   # warm up both
            with variant(name):
                for _ in range(20):
                    once()
        block = max(1, args.n // args.blocks)
        for _ in range(args.blocks):
            for name in VARIANTS:
                with variant(name):
                    gc.collect()
                    began = time.process_time()
                    wall[name] += [once() for _ in range(block)]
                    cpu[name].append((time.process_time() - began) * 1000 / block)
    rows = [[name, len(wall[name]), median(cpu[name]), median(wall[name]), percentile(wall[name], 0.95)]
            for name in VARIANTS]
    return finish(args.report, f'CPU per {args.intent} invocation in process: shared pool vs per-loop executor',
                  HEADERS, rows, [
        f'{args.blocks} blocks of {block} invocations per variant, alternating; "CPU ms / invocation" is the median '
        'over the blocks of this process\'s CPU time (all threads) per invocation. Through '
        '`functions.handler.handle` in process: no HTTP server, no Pub/Sub publish.'], start)


def _parser() -> argparse.ArgumentParser:
    parser = bench_parser('invocation_cpu', __doc__)
    parser.add_argument('-n', type=int, default=400, help='invocations per variant')
    parser.add_argument('--blocks', type=int, default=8, help='alternating blocks per variant')
    parser.add_argument('--intent', default='health', help='a read-only intent without params')
    return parser


if __name__ == '__main__':
    sys.exit(main())
