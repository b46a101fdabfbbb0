"""Connecting one invocation's IB() to the gateway: client id, error 326 fail-fast, retries, account rules.

The connect is lean: the client library's API connection (handshake, startApi), then only the parts of
the account state the intent declared (`Intent.account_state`), requested concurrently, each awaited to
its end message. `IB.connectAsync` would download positions, orders, account updates and all of today's
executions on every connect, so an invocation's cost would grow with the account's activity.
"""
from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Collection

from lib.client_ids import CLIENT_IDS, ClientIdAllocator, ClientIdsExhausted
from lib.config import ConfigError, Settings
from lib.ibapi import IB, ExecutionFilter

__all__ = [
    'AccountNotManaged', 'AccountState', 'ClientIdsExhausted', 'GatewayUnavailable', 'OtherClientUnavailable',
    'Session', 'SessionError', 'SessionRejected', 'TradingModeViolation', 'connect_client', 'fetch_account_state',
    'open_session', 'other_client',
]

log = logging.getLogger(__name__)

CLIENT_ID_IN_USE = 326
MAX_CLIENT_ID_CLASHES = 5
BACKOFF_SECONDS = (0.25, 0.5, 1.0, 2.0)


class AccountState(enum.Enum):
    """A part of the gateway's account state the connect can download into the IB object's caches."""

    POSITIONS = 'positions'                 # every account's positions: ib.positions()
    OPEN_ORDERS = 'open orders'             # every client id's open orders: ib.openTrades(), ib.trades()
    COMPLETED_ORDERS = 'completed orders'   # filled and cancelled orders: ib.trades()
    ACCOUNT_UPDATES = 'account updates'     # the session account's values and portfolio: ib.accountValues()
    EXECUTIONS = 'executions'               # today's executions of the session account: ib.fills()


class SessionError(Exception):
    """A session could not be opened."""


class GatewayUnavailable(SessionError):
    """The gateway refused, timed out or dropped the connection on every attempt."""


class SessionRejected(SessionError):
    """The gateway is fine but the configuration forbids this session; retrying cannot help."""


class AccountNotManaged(SessionRejected):
    """The configured account is not among the gateway's managed accounts (or none was chosen)."""


class TradingModeViolation(SessionRejected):
    """The account or settings contradict TRADING_MODE (paper vs live)."""


class _ClientIdInUse(Exception):
    """The gateway answered error 326 for the client id just tried."""


@dataclass
class Session:
    """A connected IB() plus what was learned while connecting."""

    ib: IB
    host: str
    port: int
    client_id: int
    server_version: int
    account: str
    managed_accounts: list[str]
    notices: list[dict] = field(default_factory=list)
    connect_ms: float = 0.0
    attempts: int = 1

    def gateway(self) -> dict:
        """Where this session is connected, in the shape of the result document's `gateway`."""
        return {'host': self.host, 'port': self.port, 'clientId': self.client_id,
                'serverVersion': self.server_version}


def check_account(managed: list[str], settings: Settings) -> str:
    """Pick the account to act on and enforce the paper/live rules; raise a SessionRejected if not allowed."""
    if settings.account is not None:
        if settings.account not in managed:
            raise AccountNotManaged(
                f'IB_ACCOUNT {settings.account} is not managed by this gateway (managed: {", ".join(managed)})')
        account = settings.account
    elif len(managed) == 1:
        account = managed[0]
    else:
        raise AccountNotManaged(f'the gateway manages several accounts ({", ".join(managed)}); set IB_ACCOUNT')
    is_paper = account.startswith('D')
    if settings.trading_mode == 'paper' and not is_paper:
        raise TradingModeViolation(f'TRADING_MODE=paper but {account} is a live account (paper ids start with D)')
    if settings.trading_mode == 'live' and is_paper:
        raise TradingModeViolation(f'TRADING_MODE=live but {account} is a paper account')
    return account


async def open_session(ib: IB, settings: Settings, *, deadline: float | None = None,
                       allocator: ClientIdAllocator = CLIENT_IDS,
                       account_state: Collection[AccountState] = ()) -> Session:
    """Connect `ib` with a fresh client id and return the Session; the caller closes it with close_session.

    Only the `account_state` parts are downloaded (see AccountState).

    `deadline` is a loop.time() by which connecting must be over: attempts shrink to fit and no retry
    starts that cannot finish. A client id clash (error 326) is noticed as it arrives and retried at
    once with another id; refused or timed-out connects are retried with backoff up to
    settings.connect_attempts times.
    """
    if settings.trading_mode == 'live' and not settings.allow_live:
        raise TradingModeViolation('TRADING_MODE=live requires ALLOW_LIVE_TRADING=true')
    if not settings.gateway_host:
        raise ConfigError('IB_GATEWAY_HOST is not set')
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    refused_ids: set[int] = set()
    failures = 0
    attempts = 0
    while True:
        try:
            client_id = allocator.acquire(settings.client_id_min, settings.client_id_max, avoid=refused_ids)
        except ClientIdsExhausted as exc:
            if refused_ids:
                raise ClientIdsExhausted(f'{exc}; in use at the gateway: {sorted(refused_ids)}') from None
            raise
        attempts += 1
        timeout = settings.connect_timeout
        if deadline is not None:
            timeout = min(timeout, deadline - loop.time())
        try:
            if timeout <= 0:
                raise TimeoutError('no time left before the deadline')
            account, notices = await _connect_once(ib, settings, client_id, frozenset(account_state), timeout)
        except _ClientIdInUse:
            allocator.release(client_id)
            refused_ids.add(client_id)
            log.warning('client id %s is in use at the gateway; retrying with another', client_id)
            if len(refused_ids) >= MAX_CLIENT_ID_CLASHES:
                raise ClientIdsExhausted(
                    f'{len(refused_ids)} client ids in a row were in use: {sorted(refused_ids)}') from None
            continue
        except SessionRejected:
            allocator.release(client_id)
            raise
        except (OSError, TimeoutError) as exc:
            allocator.release(client_id)
            failures += 1
            reason = _describe(exc)
            backoff = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS)) - 1]
            out_of_time = deadline is not None and loop.time() + backoff >= deadline
            if failures >= settings.connect_attempts or out_of_time:
                raise GatewayUnavailable(
                    f'gateway {settings.gateway_host}:{settings.gateway_port} unavailable after '
                    f'{failures} attempt(s): {reason}') from None
            log.warning('connect attempt %s to %s:%s failed (%s); retrying in %.2fs', failures,
                        settings.gateway_host, settings.gateway_port, reason, backoff)
            await asyncio.sleep(backoff)
            continue
        except BaseException:
            allocator.release(client_id)
            raise
        return Session(
            ib=ib, host=settings.gateway_host, port=settings.gateway_port, client_id=client_id,
            server_version=ib.client.serverVersion(), account=account, managed_accounts=ib.managedAccounts(),
            notices=notices, connect_ms=(time.perf_counter() - started) * 1000, attempts=attempts)


def close_session(session: Session, allocator: ClientIdAllocator = CLIENT_IDS) -> None:
    """Disconnect and give the client id back."""
    disconnect(session.ib)
    allocator.release(session.client_id)


def disconnect(ib: IB) -> None:
    """Close the connection whatever state it is in (IB.disconnect skips a half-open handshake)."""
    ib.disconnect()
    ib.client.disconnect()


async def connect_client(ib: IB, host: str, port: int, client_id: int, timeout: float) -> None:
    """Open the API connection only (handshake and startApi): no account download.

    Sets what `IB.connectAsync` would have set for the order bookkeeping: placeOrder keys new trades
    by the wrapper's client id, and order errors find their trade by it.
    """
    ib.wrapper.clientId = client_id
    await ib.client.connectAsync(host, port, client_id, timeout)
    if client_id == 0:
        ib.reqAutoOpenOrders(True)   # as IB.connectAsync: client 0 binds manual orders


class OtherClientUnavailable(SessionError):
    """A connection as another client id could not be opened: in use elsewhere (326), refused or too slow."""


@contextlib.asynccontextmanager
async def other_client(host: str, port: int, client_id: int, timeout: float) -> AsyncIterator[IB]:
    """A second connection, in this thread's loop, as `client_id`: that id's open orders and nothing more.

    IB lets only the client id that placed an order cancel it. Error 326 (the id is connected elsewhere)
    is the answer at once, not a wait for `timeout`. Disconnected on every path.
    """
    ib = IB()
    try:
        try:
            await _connect_as(ib, host, port, client_id, timeout)
        except Exception as exc:
            raise OtherClientUnavailable(f'{type(exc).__name__}: {exc}') from exc
        yield ib
    finally:
        disconnect(ib)


async def _connect_as(ib: IB, host: str, port: int, client_id: int, timeout: float) -> None:
    """Connect with `client_id`, failing at once on error 326 (that id is connected elsewhere)."""
    loop = asyncio.get_running_loop()
    in_use: asyncio.Future = loop.create_future()

    def on_error(req_id, code, message, contract) -> None:
        if code == CLIENT_ID_IN_USE and not in_use.done():
            in_use.set_result(message)

    ib.errorEvent += on_error
    async def connect_lean() -> None:   # the API connection and that client id's open orders, nothing more
        await connect_client(ib, host, port, client_id, timeout)
        await ib.reqOpenOrdersAsync()

    connect = asyncio.ensure_future(connect_lean())
    try:
        done, _ = await asyncio.wait({connect, in_use}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if connect in done:
            connect.result()
            return
        if in_use in done:
            raise ConnectionRefusedError(f'client id {client_id} is in use (error 326: {in_use.result()})')
        raise TimeoutError(f'no connection within {timeout:g} s')
    finally:
        ib.errorEvent -= on_error
        if not connect.done():
            connect.cancel()
            await asyncio.gather(connect, return_exceptions=True)


async def fetch_account_state(ib: IB, account: str, parts: Collection[AccountState]) -> None:
    """Download `parts` of `account`'s state concurrently, each to its end message.

    Executions come last, once the orders are in, so their fills attach to the trades (as in
    IB.connectAsync); they are filtered to the account.
    """
    requests = {
        AccountState.POSITIONS: ib.reqPositionsAsync,
        AccountState.OPEN_ORDERS: ib.reqAllOpenOrdersAsync,
        AccountState.COMPLETED_ORDERS: lambda: ib.reqCompletedOrdersAsync(False),
        AccountState.ACCOUNT_UPDATES: lambda: ib.reqAccountUpdatesAsync(account),
    }
    pending = [request() for part, request in requests.items() if part in parts]
    if pending:
        await asyncio.gather(*pending)
    if AccountState.EXECUTIONS in parts:
        await ib.reqExecutionsAsync(ExecutionFilter(acctCode=account))


async def _connect_once(ib: IB, settings: Settings, client_id: int, account_state: frozenset[AccountState],
                        timeout: float) -> tuple[str, list[dict]]:
    """One connect attempt, all within `timeout`; returns the account to use and the notices list,
    which goes on collecting the gateway's status notices for the session's life.

    The client library only notices a refused client id when its connect timeout expires, so this
    races the connect against error 326, a dropped socket and the account check made as soon as the
    API is up.
    """
    loop = asyncio.get_running_loop()
    aborted: asyncio.Future[BaseException] = loop.create_future()
    notices: list[dict] = []

    def abort(exc: BaseException) -> None:
        if not aborted.done():
            aborted.set_result(exc)

    def on_error(req_id, code, message, contract) -> None:
        if code == CLIENT_ID_IN_USE:
            abort(_ClientIdInUse(message))

    def on_notice(req_id, code, message, contract) -> None:
        if req_id == -1 and _is_status_notice(code):
            notices.append({'code': code, 'message': message})

    def on_api_error(message: str) -> None:
        abort(ConnectionError(message))

    def on_api_start() -> None:
        try:
            check_account(ib.client.getAccounts(), settings)
        except SessionRejected as exc:
            abort(exc)

    async def connect() -> str:
        until = loop.time() + timeout
        await connect_client(ib, settings.gateway_host, settings.gateway_port, client_id, timeout)
        account = check_account(ib.managedAccounts(), settings)
        if account_state:
            await asyncio.wait_for(fetch_account_state(ib, account, account_state), until - loop.time())
        return account

    ib.errorEvent += on_error
    # kept for the session's life: the gateway sends its farm notices right after startApi, and a
    # lean connect may be done before they arrive (they are in by the reply to the first request)
    ib.errorEvent += on_notice
    ib.client.apiError += on_api_error
    ib.client.apiStart += on_api_start
    # With a foreign account the client would wait out its timeout; on_api_start aborts before that.
    connecting = asyncio.ensure_future(connect())
    connected = False
    try:
        await asyncio.wait({connecting, aborted}, return_when=asyncio.FIRST_COMPLETED)
        if aborted.done() and isinstance(aborted.result(), (_ClientIdInUse, SessionRejected)):
            raise aborted.result()
        if not connecting.done():
            raise aborted.result()
        account = connecting.result()
        if not ib.client.isReady():
            raise ConnectionError('Socket connection broken while connecting')
        connected = True
        return account, notices
    finally:
        ib.errorEvent -= on_error
        ib.client.apiError -= on_api_error
        ib.client.apiStart -= on_api_start
        if not connecting.done():
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
        if not connected:
            ib.errorEvent -= on_notice
            disconnect(ib)


def _is_status_notice(code: int) -> bool:
    """Connectivity (1100-1102) and farm-status (21xx) messages the gateway sends unasked."""
    return 1100 <= code <= 1102 or 2100 <= code < 2200


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return 'timed out'
    return str(exc) or type(exc).__name__
