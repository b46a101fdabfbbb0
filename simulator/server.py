"""The simulated IB Gateway: a TCP server speaking the TWS API, with an in-process API for tests."""
from __future__ import annotations

import asyncio
import copy
import logging
import threading
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from . import messages as msg
from .broker import Broker
from .clock import SimClock
from .connection import Connection
from .faults import CONNECTIVITY_LOST, CONNECTIVITY_RESTORED, CONNECTIVITY_RESTORED_DATA_LOST, FARM_OK, Faults
from .limits import Limits
from .model import Execution, Order
from .prices import PriceModel
from .universe import Universe

log = logging.getLogger('simulator')

MAX_CLIENTS = 32
TICK_SECONDS = 0.2


class Simulator:
    """A paper IB Gateway.

    `start()` serves in a background thread; `await serve()` serves in the caller's loop.
    State (accounts, orders, executions) lives for the life of the object, across client
    connections, and across restarts when `state_file` is given.
    """

    def __init__(self, accounts=('DU1234567',), base_currency: str = 'USD', cash: float = 1_000_000.0,
                 seed: int = 1, latency_ms: float = 0.0, time: datetime | None = None,
                 master_client_id: int | None = None, state_file: str | Path | None = None,
                 contracts_file: str | Path | None = None, host: str = '127.0.0.1', port: int = 0,
                 limits: Limits | None = None, time_zone: str = 'America/New_York') -> None:
        self.accounts = list(accounts)
        # the TWS login's time zone: a request's date-time without a zone is read in it (see connection.py)
        self.time_zone = ZoneInfo(time_zone)
        if not self.accounts:
            raise ValueError('the simulator needs at least one account')
        self.host, self.port = host, port
        self.master_client_id = master_client_id
        self.state_file = Path(state_file) if state_file else None
        self.clock = SimClock(time)
        self.universe = Universe(self.clock.now().date(), contracts_file)
        self.prices = PriceModel(seed, self.universe)
        if self.state_file and self.state_file.exists():
            self.broker = Broker.load(self.state_file, self.clock, self.universe, self.prices)
            if set(self.broker.accounts) != set(self.accounts):
                log.warning('using the accounts of %s: %s', self.state_file, ','.join(self.broker.accounts))
            self.accounts = list(self.broker.accounts)
        else:
            self.broker = Broker(self.accounts, base_currency, cash, self.clock, self.universe, self.prices)
        self.faults = Faults(latency_ms=latency_ms)
        self.limits = limits if limits is not None else Limits()   # a real gateway's, unless told otherwise
        self.open_hist_requests = 0          # historical data requests not yet answered, all clients together
        self.broker.faults = self.faults
        self.on_place_order = None          # tests: called with each new order (not whatIf) before it is placed
        self.broker.listener = self
        self._connections: set[Connection] = set()
        self._clients: dict[int, Connection] = {}
        self._history: list = []            # Stats of every connection, oldest first
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id: int | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ticker: asyncio.Task | None = None
        self._dirty = False
        self._stopped: asyncio.Event | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> tuple[str, int]:
        """Serve in a background thread; returns (host, port) once listening."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run():
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self._open(ready, failure))
                loop.run_until_complete(self._stopped.wait())
                loop.run_until_complete(self._close())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name='ib-simulator', daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self.host, self.port

    def stop(self) -> None:
        """Stop serving, close every connection, write the state file."""
        if self._loop is None or self._stopped is None:
            return
        if self._thread and threading.current_thread() is not self._thread:
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(10)
            self._thread = None
        else:
            self._stopped.set()

    async def serve(self, on_ready=None) -> None:
        """Serve in the running loop until `stop()` is called; `on_ready()` runs once listening."""
        ready = threading.Event()
        failure: list[BaseException] = []
        await self._open(ready, failure)
        if failure:
            raise failure[0]
        if on_ready:
            on_ready()
        await self._stopped.wait()
        await self._close()

    def __enter__(self) -> 'Simulator':
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _open(self, ready: threading.Event, failure: list) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread_id = threading.get_ident()
        self._stopped = asyncio.Event()
        try:
            await self._listen()
        except OSError as e:
            failure.append(e)
            self._stopped.set()
            ready.set()
            return
        self.faults._on_change = self._fault_changed
        await self._apply_refusal()
        self._ticker = asyncio.create_task(self._tick_forever())
        ready.set()

    async def _listen(self) -> None:
        self._server = await self._loop.create_server(lambda: Connection(self), self.host, self.port,
                                                      reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        self.faults._on_change = None
        if self._ticker:
            self._ticker.cancel()
        if self._server:
            self._server.close()
        for conn in list(self._connections):
            conn.close()
        await asyncio.sleep(0)
        self.save_state()

    def _fault_changed(self, name: str) -> None:
        if self._loop is None or self._loop.is_closed():
            return
        if name == 'connectivity_lost':
            lost = self.faults.connectivity_lost
            self._call_in_loop(lambda: self._announce_connectivity(lost))
            return
        if name != 'refuse_connections':
            return
        if threading.get_ident() == self._loop_thread_id:
            self._loop.create_task(self._apply_refusal())
        else:   # from a test thread: return only once the socket is really closed or listening again
            asyncio.run_coroutine_threadsafe(self._apply_refusal(), self._loop).result(5)

    def _announce_connectivity(self, lost: bool) -> None:
        """1100 + 2110 when the gateway loses IB's servers; 1102 (or 1101, dropping market data) when back."""
        if lost:
            notices = CONNECTIVITY_LOST
        elif self.faults.connectivity_data_lost:
            notices = [CONNECTIVITY_RESTORED_DATA_LOST, *FARM_OK]
        else:
            notices = [CONNECTIVITY_RESTORED, *FARM_OK]
        for conn in list(self._connections):
            if not conn.ready:
                continue
            if not lost and self.faults.connectivity_data_lost:
                conn.drop_market_data()
            for code, text in notices:
                conn.send_error(-1, code, text)

    async def _apply_refusal(self) -> None:
        if self.faults.refuse_connections and self._server is not None:
            self._server.close()
            self._server = None
        elif not self.faults.refuse_connections and self._server is None:
            await self._listen()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                self.broker.tick()
                for conn in list(self._connections):
                    if conn.ready:
                        conn.stream_quotes()
                if self._dirty:
                    self.save_state()
            except Exception:
                log.exception('simulator tick failed')

    def save_state(self) -> None:
        """Write the state file now (atomically), if one is configured."""
        self._dirty = False
        if self.state_file:
            self.broker.save(self.state_file)

    # --- in-process API -------------------------------------------------------------------

    def historical_request_opened(self) -> None:
        """A historical data request is being answered (they count against hist_open_requests)."""
        self.open_hist_requests += 1

    def historical_request_closed(self) -> None:
        """Its answer is out (or its connection closed)."""
        self.open_hist_requests = max(0, self.open_hist_requests - 1)

    def market_data_lines_used(self) -> int:
        """Streaming market-data subscriptions held by every client."""
        return sum(conn.subs.market_data_lines() for conn in list(self._connections))

    def connected_client_ids(self) -> set[int]:
        return set(self._clients)

    def counters(self) -> list[dict]:
        """Traffic per connection, oldest first (closed connections included)."""
        return [stats.as_dict() for stats in list(self._history)]

    def reset_counters(self) -> None:
        """Forget the counters of closed connections."""
        self._history = [c.stats for c in self._connections]

    def disconnect_all(self) -> None:
        """Drop every client at once, as the gateway's nightly restart does."""
        self._call_in_loop(lambda: [conn.close() for conn in list(self._connections)])

    def quote(self, inst):
        return self.prices.quote(inst, self.clock.now())

    def set_price(self, symbol_or_conid, price: float) -> None:
        """Move an instrument's price now (tests use it to make resting orders cross)."""
        inst = (self.universe.get(symbol_or_conid) if isinstance(symbol_or_conid, int)
                else next(i for i in self.universe.all() if i.symbol == symbol_or_conid
                          and i.secType in ('STK', 'CASH')))
        self.prices.set_price(inst.conId, price, self.clock.now())
        self._call_in_loop(self.broker.tick)

    def accounts_matching(self, account: str) -> list[str]:
        return list(self.accounts) if account in ('', 'All') else [a for a in self.accounts if a == account]

    def _call_in_loop(self, fn) -> None:
        if self._loop is None or self._loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread_id:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)

    # --- connections ------------------------------------------------------------------------

    def connection_opened(self, conn: Connection) -> None:
        """Count a new connection in (its traffic counters too)."""
        self._connections.add(conn)
        self._history.append(conn.stats)
        if len(self._history) > 10_000:
            del self._history[:1000]

    def connection_closed(self, conn: Connection) -> None:
        """Forget a closed connection and free its client id."""
        self._connections.discard(conn)
        if conn.client_id is not None and self._clients.get(conn.client_id) is conn:
            del self._clients[conn.client_id]

    def register_client(self, conn: Connection, client_id: int) -> tuple[int, str] | None:
        """Claim a clientId for a connection; returns (code, text) of the refusal, if any."""
        if client_id in self._clients:
            return 326, 'Unable to connect as the client id is already in use. Retry with a unique client id.'
        if len(self._clients) >= MAX_CLIENTS:
            return 502, (f"Couldn't connect to TWS. The maximum number of API clients ({MAX_CLIENTS}) "
                         'is already connected.')
        self._clients[client_id] = conn
        return None

    def _order_recipients(self, order: Order) -> list[Connection]:
        out = []
        owner = self._clients.get(order.clientId)
        if owner is not None:
            out.append(owner)
        master = self._clients.get(self.master_client_id) if self.master_client_id is not None else None
        if master is not None and master is not owner:
            out.append(master)
        return out

    def notify_owner(self, order: Order, code: int, text: str) -> None:
        """Send an error about `order` (e.g. 202 on a global cancel) to the connection that placed it."""
        owner = self._clients.get(order.clientId)
        if owner is not None:
            owner.send_error(order.orderId, code, text)

    # --- broker listener: push what changed ---------------------------------------------

    def order_changed(self, order: Order) -> None:
        self._dirty = True
        now = copy.copy(order)   # as it is now, not when the loop gets to it
        self._call_in_loop(lambda: self._push_order(now))

    def _push_order(self, order: Order) -> None:
        for conn in self._order_recipients(order):
            conn.send(msg.open_order(order, conn.server_version))
            conn.send(msg.order_status(order))

    def executed(self, execution: Execution) -> None:
        self._dirty = True
        order = SimpleNamespace(clientId=execution.clientId)
        self._call_in_loop(lambda: [
            (conn.send(msg.exec_details(-1, execution)), conn.send(msg.commission_report(execution)))
            for conn in self._order_recipients(order)])

    def account_changed(self, account: str, conIds: list[int]) -> None:
        self._dirty = True
        self._call_in_loop(lambda: self._push_account(account, list(conIds)))

    def _push_account(self, account: str, con_ids: list[int]) -> None:
        positions = {pos.instrument.conId: pos for acct, pos in self.broker.positions(account)}
        items = {item.instrument.conId: item for item in self.broker.portfolio(account)}
        for conn in list(self._connections):
            if conn.ready:
                conn.account_changed(account, con_ids, positions, items)

    def flat_item(self, con_id: int):
        """The portfolio row of a position that is now flat (sent so the client drops it), None if unknown."""
        inst = self.universe.get(con_id)
        if inst is None:
            return None
        price = self.prices.price(inst, self.clock.now())
        return SimpleNamespace(instrument=inst, position=0.0, marketPrice=price, marketValue=0.0,
                               averageCost=0.0, unrealizedPNL=0.0, realizedPNL=0.0)

    # --- account messages a connection sends on request or subscription --------------------

    def account_snapshot(self, account: str) -> list[list]:
        """reqAccountUpdates' first answer: the account values, then every portfolio row."""
        return self.account_value_messages(account) + [msg.portfolio(item, account)
                                                        for item in self.broker.portfolio(account)]

    def account_value_messages(self, account: str) -> list[list]:
        """updateAccountValue for every value of `account`, then the account time."""
        return ([msg.account_value(key, value, ccy, account) for key, value, ccy in self.broker.account_values(account)]
                + [msg.account_time(self.clock.now())])

    def summary_messages(self, req_id: int, tags: list[str], accounts=None) -> list[list]:
        """accountSummary rows of `tags` for `accounts` (default: every account)."""
        return [msg.account_summary(req_id, account, tag, value, ccy) for account in accounts or self.accounts
                for tag, value, ccy in self.broker.summary(account, tags)]
