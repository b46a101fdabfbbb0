"""The persistent-connection baseline, as the design note this project grew out of describes it.

One background thread owns its own asyncio loop and one IB() connected once at start. Callers put
jobs on a thread-safe queue.Queue; the thread takes them with a blocking get(), runs each to
completion on its loop, and stores the outcome in a shared results dict that callers wait on.
Jobs therefore run one at a time on one connection, which is the design being compared.
The note's callers poll the results dict; here they wait on a Condition over the same dict, which is
polling with no delay, the reading most favourable to the baseline. ib_insync's request throttle (at
most 45 requests a second on a connection, to respect IB's pacing limit) stays on, as in the note's service.
"""
from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from intents.summary import Summary, SummaryParams
from lib.config import Settings
from lib.ibapi import IB
from lib.session import Session, check_account

Work = Callable[[Session], Awaitable[Any]]
BASELINE_CLIENT_ID = 1   # outside the runtime's default range 100-999, so both can share a gateway


@dataclass
class _Failure:
    error: BaseException


class PersistentGateway:
    """One long-lived IB connection serving jobs from a queue on a background thread."""

    def __init__(self, host: str, port: int, client_id: int = BASELINE_CLIENT_ID,
                 settings: Settings | None = None) -> None:
        self.host, self.port, self.client_id = host, port, client_id
        self.settings = settings or Settings(gateway_host=host, gateway_port=port)
        self._jobs: queue.Queue = queue.Queue()
        self._results: dict[int, Any] = {}
        self._results_changed = threading.Condition()
        self._ids = itertools.count()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.throttled = 0   # times ib_insync held requests back to stay under IB's pacing limit

    def start(self, timeout: float = 10.0) -> PersistentGateway:
        """Start the thread, connect once, and return when the connection is up."""
        self._thread = threading.Thread(target=self._serve, name='persistent-ib', daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError('the persistent connection did not come up')
        if self._startup_error is not None:
            raise self._startup_error
        return self

    def stop(self) -> None:
        """Let the thread finish its queue, disconnect and end."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> PersistentGateway:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def submit(self, work: Work) -> int:
        """Queue a job; returns its id for `result`."""
        job_id = next(self._ids)
        self._jobs.put((job_id, work))
        return job_id

    def result(self, job_id: int, timeout: float = 60.0) -> Any:
        """Block until the job's outcome is in the results dict; re-raise its exception, if any."""
        with self._results_changed:
            if not self._results_changed.wait_for(lambda: job_id in self._results, timeout):
                raise TimeoutError(f'job {job_id} did not finish within {timeout:g}s')
            outcome = self._results.pop(job_id)
        if isinstance(outcome, _Failure):
            raise outcome.error
        return outcome

    def run(self, work: Work, timeout: float = 60.0) -> Any:
        """Submit a job and wait for its outcome."""
        return self.result(self.submit(work), timeout)

    def summary(self, timeout: float = 60.0) -> dict:
        """The `summary` intent's output, computed on the persistent connection."""
        return self.run(_summary, timeout)

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        ib = IB()
        ib.client.throttleStart += self._count_throttle
        try:
            loop.run_until_complete(ib.connectAsync(self.host, self.port, self.client_id, timeout=5))
            managed = ib.managedAccounts()
            session = Session(ib=ib, host=self.host, port=self.port, client_id=self.client_id,
                              server_version=ib.client.serverVersion(), account=check_account(managed, self.settings),
                              managed_accounts=managed)
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            while (job := self._jobs.get()) is not None:
                job_id, work = job
                try:
                    outcome = loop.run_until_complete(work(session))
                except Exception as exc:
                    outcome = _Failure(exc)
                with self._results_changed:
                    self._results[job_id] = outcome
                    self._results_changed.notify_all()
        finally:
            ib.disconnect()
            loop.run_until_complete(asyncio.sleep(0))
            asyncio.set_event_loop(None)
            loop.close()

    def _count_throttle(self) -> None:
        self.throttled += 1


async def _summary(session: Session) -> dict:
    output = await Summary(session, SummaryParams(), dry_run=False).run()
    return output.result
