"""Where a run's blocking calls (the store, `asyncio.to_thread`) run: one thread pool for the process.

Each run has its own event loop, and a loop's default executor is a new ThreadPoolExecutor: its
first `to_thread` starts a thread, and closing the loop joins it, so every run paid for starting and
joining a thread (about 0.6 ms of CPU and 1-2 ms of wall time; bench/invocation_cpu.py measures it).
A run's loop gets a RunExecutor instead: the calls go to the process's pool, whose threads stay,
and shutting the RunExecutor down waits for that run's own calls only, so a run is still over only
when its blocking calls are.
"""
from __future__ import annotations

import concurrent.futures
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

# Enough for 30 concurrent runs (functions-framework's THREADS) each with a few store calls at once.
MAX_WORKERS = 64
THREAD_NAME_PREFIX = 'blocking'    # the pool's threads: the process's, reused, at most MAX_WORKERS

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def shared_pool() -> ThreadPoolExecutor:
    """The process's pool, created on first use (no threads at import)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix=THREAD_NAME_PREFIX)
        return _pool


class RunExecutor(ThreadPoolExecutor):
    """One run's view of the shared pool, for `loop.set_default_executor`.

    It never starts a thread of its own; `shutdown(wait=True)` waits for the calls submitted through it
    and leaves the shared pool running (a loop's close calls shutdown(wait=False)).
    """

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self._calls: set[Future] = set()
        self._calls_lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future = shared_pool().submit(fn, *args, **kwargs)
        with self._calls_lock:
            self._calls.add(future)
        future.add_done_callback(self._forget)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if wait:
            with self._calls_lock:
                calls = list(self._calls)
            concurrent.futures.wait(calls)

    def _forget(self, future: Future) -> None:
        with self._calls_lock:
            self._calls.discard(future)
