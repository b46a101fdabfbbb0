"""The simulated gateway in a child process, so it never competes with the measured code for the GIL.

The child serves `simulator.Simulator` and answers commands over a pipe: set the reply latency,
read or reset the per-connection counters, fill the account with activity, move its clock, stop.
`code` runs the simulator of another source tree (bench.common.source_tree: a commit's), so a bench can
measure the simulator before a change beside the one after it, in one run.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from multiprocessing.connection import Connection


def _serve(pipe: Connection, options: dict, code: str | None) -> None:
    if code:
        if 'simulator' in sys.modules:
            raise RuntimeError('the simulator was imported before its source tree was chosen')
        sys.path.insert(0, code)
    import simulator
    from simulator import Simulator

    if code and not simulator.__file__.startswith(code):
        raise RuntimeError(f'{simulator.__file__} is not the simulator of {code}')

    with Simulator(**options) as sim:
        pipe.send((sim.host, sim.port, os.getpid()))
        while True:
            command, arg = pipe.recv()
            if command == 'latency':
                sim.faults.latency_ms = arg
                pipe.send(None)
            elif command == 'counters':
                pipe.send(sim.counters())
            elif command == 'reset':
                sim.reset_counters()
                pipe.send(None)
            elif command == 'fill':
                from bench.activity import fill_activity
                pipe.send(fill_activity(sim, arg))
            elif command == 'advance':
                sim.clock.advance(arg)
                pipe.send(None)
            elif command == 'stop':
                pipe.send(None)
                return


class GatewayProcess:
    """A simulator serving on 127.0.0.1 in its own process; use as a context manager."""

    def __init__(self, code: str | None = None, **options) -> None:
        self.options = options
        self.code = code
        self.host: str | None = None
        self.port: int | None = None
        self.pid: int | None = None
        self._pipe: Connection | None = None
        self._process: multiprocessing.Process | None = None

    def __enter__(self) -> GatewayProcess:
        context = multiprocessing.get_context('spawn')
        self._pipe, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, self.options, self.code), name='bench-gateway',
                                        daemon=True)
        self._process.start()
        self.host, self.port, self.pid = self._pipe.recv()
        return self

    def __exit__(self, *exc) -> None:
        if self._process is None:
            return
        if self._process.is_alive():
            self._call('stop')
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
        self._process = None

    def set_latency(self, latency_ms: float) -> None:
        """Delay every reply by latency_ms from now on."""
        self._call('latency', latency_ms)

    def counters(self) -> list[dict]:
        """Per-connection traffic, oldest first, as Simulator.counters() returns it."""
        return self._call('counters')

    def reset_counters(self) -> None:
        """Forget the counters of connections already closed."""
        self._call('reset')

    def fill(self, executions: int) -> int:
        """Add that many executions of another client id (bench/activity.py); returns the account's total."""
        return self._call('fill', executions)

    def advance(self, seconds: float) -> None:
        """Move the simulated clock `seconds` forward (the gateway's day goes on; prices move with it)."""
        self._call('advance', seconds)

    def _call(self, command: str, arg=None):
        self._pipe.send((command, arg))
        return self._pipe.recv()
