"""Where an invocation's CPU goes: cProfile over n in-process runs of one intent, both of its threads.

    .venv/bin/python -m bench.profile_invocation [-n 300] [--intent health] [--top 30]

Runs `functions.handler.handle` against a simulated gateway in its own process (an empty account, a
SQLite store, LOG_LEVEL=INFO, the result published nowhere), after 30 warm-up runs. The handler's thread
(decode, admission, result, history, log line) and the intent's thread (loop, IB(), connect, the intent)
are profiled apart, the intent's with a thread-CPU clock, and printed by own time and by cumulative
time. Profiling slows the code several times over; read the shares, not the milliseconds.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time

import lib.ibapi  # noqa: F401  (main thread import, see lib/ibapi.py)
from bench.gateway import GatewayProcess
from functions import runner
from functions.__main__ import pubsub_push_event
from functions.handler import handle
from lib import log
from lib.config import Settings

ACCOUNT = 'DU1234567'


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    scratch = tempfile.mkdtemp(prefix='bench-profile-')
    os.environ.update({'STORE_BACKEND': 'sqlite', 'SQLITE_PATH': os.path.join(scratch, 'state.db'), 'LOG_LEVEL': 'INFO'})
    log.configure(stream=open(os.devnull, 'w'), level='INFO', json=True)
    intent_profiles: list[cProfile.Profile] = []
    run_loop = runner._run_loop

    def profiled(*call_args, **kwargs):
        profile = cProfile.Profile(time.thread_time)
        profile.enable()
        try:
            return run_loop(*call_args, **kwargs)
        finally:
            profile.disable()
            intent_profiles.append(profile)

    with GatewayProcess(accounts=[ACCOUNT]) as gateway:
        settings = Settings(gateway_host=gateway.host, gateway_port=gateway.port).with_parts_from_env()

        def once() -> None:
            event = pubsub_push_event({'intent': args.intent, 'params': {}}, project='bench')
            status = handle(event, settings, publish=lambda result, run_settings: None).status
            if status != 'ok':
                raise RuntimeError(f'{args.intent} ended {status}')

        for _ in range(30):
            once()
        began = time.process_time()
        for _ in range(args.n):
            once()
        print(f'{args.intent}: {(time.process_time() - began) * 1000 / args.n:.2f} ms CPU per invocation, '
              f'unprofiled, all threads')
        runner._run_loop = profiled
        handler_profile = cProfile.Profile()
        handler_profile.enable()
        try:
            for _ in range(args.n):
                once()
        finally:
            handler_profile.disable()
            runner._run_loop = run_loop
    for title, profiles in (('the handler thread', [handler_profile]), ("the intent's thread", intent_profiles)):
        out = io.StringIO()
        stats = pstats.Stats(profiles[0], stream=out)
        for profile in profiles[1:]:
            stats.add(profile)
        stats.sort_stats('tottime').print_stats(args.top)
        stats.sort_stats('cumulative').print_stats(args.top)
        print(f'==== {title} ({args.n} invocations)\n{out.getvalue()}')
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m bench.profile_invocation', description=__doc__.split('\n')[0])
    parser.add_argument('-n', type=int, default=300, help='invocations profiled')
    parser.add_argument('--intent', default='health', help='a read-only intent without params')
    parser.add_argument('--top', type=int, default=30, help='functions listed per ordering')
    return parser


if __name__ == '__main__':
    sys.exit(main())
