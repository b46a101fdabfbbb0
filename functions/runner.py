"""The isolation a run gets: a fresh thread that owns a new event loop, closed whatever happens.

`in_fresh_loop` runs one coroutine there and hands back its value; nothing survives the call: the loop,
its tasks, its blocking calls and the thread all end before it returns, so no state leaks from one
invocation into the next. (Blocking calls run on the process's thread pool, functions/blocking.py, whose
idle threads do outlive the run.) `until_disconnected` is how a run notices the gateway dropping it.
"""
from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Awaitable, Callable, TypeVar

from functions.blocking import RunExecutor
from lib.ibapi import IB
from lib.log import get_logger

log = get_logger(__name__)

T = TypeVar('T')

# How long past the deadline to wait for the thread before giving up on it (it can only be stuck in
# synchronous code, which the loop's deadline cannot interrupt).
JOIN_GRACE_SECONDS = 5.0


class Abandoned(RuntimeError):
    """The thread was still running JOIN_GRACE_SECONDS after the deadline; it was left behind."""


class GatewayDisconnected(ConnectionError):
    """The gateway closed the connection while the intent was running."""


def in_fresh_loop(work: Callable[[], Awaitable[T]], *, deadline_seconds: float, name: str,
                  on_crash: Callable[[BaseException], T]) -> T:
    """`work()` run to completion in a new thread with its own event loop; `on_crash(exc)` is the value when
    it raises anyway (SystemExit included). Raises Abandoned when the thread outlives the deadline plus grace.

    The contextvars of the caller (log labels) are copied into the thread.
    """
    box: list[T] = []
    thread = threading.Thread(target=contextvars.copy_context().run, args=(_run_loop, work, on_crash, box),
                              name=name, daemon=True)
    thread.start()
    thread.join(deadline_seconds + JOIN_GRACE_SECONDS)
    if thread.is_alive():
        log.error('intent thread %s still running %.0fs after its deadline; abandoning it', name, JOIN_GRACE_SECONDS)
        raise Abandoned('intent blocked its event loop past the deadline')
    return box[0]


def _run_loop(work: Callable[[], Awaitable[T]], on_crash: Callable[[BaseException], T], box: list[T]) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)   # ib_insync looks the loop up through the policy, not the running loop
    blocking = RunExecutor()       # to_thread on the process's pool: no thread started and joined per run
    loop.set_default_executor(blocking)
    try:
        box.append(loop.run_until_complete(work()))
    except BaseException as exc:   # SystemExit from an intent, or a bug: still hand back a value
        log.exception('intent runner failed')
        box.append(on_crash(exc))
    finally:
        _cancel_leftovers(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        blocking.shutdown(wait=True)   # the run's blocking calls are over before the run is
        asyncio.set_event_loop(None)
        loop.close()


async def until_disconnected(ib: IB, work: Awaitable[T]) -> T:
    """Await `work`, but fail at once (GatewayDisconnected) if the gateway drops the connection meanwhile."""
    task = asyncio.ensure_future(work)
    dropped = asyncio.get_running_loop().create_future()

    def on_disconnect() -> None:
        if not dropped.done():
            dropped.set_result(None)

    ib.disconnectedEvent += on_disconnect
    try:
        await asyncio.wait({task, dropped}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            try:
                return task.result()
            except ConnectionError as exc:   # a request cut off by the drop says 'Socket disconnect'
                if ib.isConnected():
                    raise
                raise GatewayDisconnected('the gateway closed the connection during the intent') from exc
        raise GatewayDisconnected('the gateway closed the connection during the intent')
    finally:
        ib.disconnectedEvent -= on_disconnect
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
