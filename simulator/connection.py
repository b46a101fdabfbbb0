"""One client connection: handshake, request dispatch, and the updates its subscriptions (subscriptions.py) earn."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from . import messages as msg
from .broker import OrderError
from .faults import CONNECTIVITY_LOST, FARM_OK
from .limits import PACING_VIOLATION, MessageRate
from .model import Order
from .subscriptions import Subscriptions
from .wire import HANDSHAKE_PREFIX, FrameBuffer, frame, parse_version_range

if TYPE_CHECKING:
    from .server import Simulator

log = logging.getLogger('simulator')

MIN_CLIENT_VERSION = msg.MIN_VERSION   # the oldest layout the simulator speaks
MAX_SERVER_VERSION = msg.MAX_VERSION

# Requests the real gateway never answers and the client never waits for.
FIRE_AND_FORGET = {12, 13, 14, 15, 65, 66, 72, 73}
# Request ids we do not implement, and where their reqId sits (so the error can finish the request).
UNSUPPORTED_REQ_ID_AT = {10: 2, 21: 2, 22: 1, 50: 2, 52: 2, 54: 2, 55: 2, 67: 2, 68: 2, 69: 2,
                         78: 1, 79: 1, 81: 1, 83: 1, 84: 1, 86: 1, 87: 1, 88: 1, 96: 1, 97: 1,
                         100: 1, 102: 1, 104: 1}
# Cancel requests: msg id -> index of the reqId they cancel.
CANCELS = {2: 2, 11: 2, 23: 2, 25: 2, 51: 2, 53: 2, 56: 2, 57: 2, 63: 2, 70: 2, 75: 2, 77: 2,
           89: 1, 90: 1, 93: 1, 95: 1, 98: 1, 101: 1, 103: 1}
NOT_IMPLEMENTED = 10300  # not a TWS code: the simulator's "unsupported request"
# TWS's warning for a request date-time without a zone, read in the login's zone (text as TWS sends it)
IMPLIED_TIME_ZONE_WARNING = ('Warning: You submitted request with date-time attributes without explicit time zone. '
                             'Please switch to use yyyymmdd-hh:mm:ss in UTC or use instrument time zone, like '
                             'US/Eastern. Implied time zone functionality will be removed in the next API release')
CLIENT_TOO_OLD = 10301   # not a TWS code: the client's newest version is below MIN_CLIENT_VERSION

TICKS_LIVE = {'bid': 1, 'ask': 2, 'last': 4, 'high': 6, 'low': 7, 'close': 9, 'open': 14,
              'bidSize': 0, 'askSize': 3, 'lastSize': 5, 'volume': 8}
TICKS_DELAYED = {'bid': 66, 'ask': 67, 'last': 68, 'high': 72, 'low': 73, 'close': 75, 'open': 76,
                 'bidSize': 69, 'askSize': 70, 'lastSize': 71, 'volume': 74}


@dataclass
class Stats:
    """Traffic counters of one connection."""

    client_id: int | None = None
    messages_in: Counter = field(default_factory=Counter)
    messages_out: Counter = field(default_factory=Counter)
    round_trips: int = 0
    closed_at: float | None = None
    bytes_out: int = 0                          # framed bytes of the messages sent (handshake reply included)

    def as_dict(self) -> dict:
        return {'clientId': self.client_id, 'in': dict(self.messages_in), 'out': dict(self.messages_out),
                'messagesIn': sum(self.messages_in.values()), 'messagesOut': sum(self.messages_out.values()),
                'bytesOut': self.bytes_out,
                'roundTrips': self.round_trips, 'open': self.closed_at is None}


class Connection(asyncio.Protocol):
    """The gateway side of one API client."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.transport: asyncio.Transport | None = None
        self.buffer = FrameBuffer()
        self.server_version = 0
        self.client_id: int | None = None
        self.ready = False
        self.stats = Stats()
        self.replied_since_request = True
        self.market_data_type = 1
        self.subs = Subscriptions()
        self.live_req_ids: set[int] = set()       # requests that can still be cancelled
        self.pace_api = False                     # the client asked the gateway to pace it (+PACEAPI)
        self.rate = MessageRate()
        self._pending: deque = deque()            # (send_at, bytes or a callable) when latency is on
        self._flush_handle: asyncio.TimerHandle | None = None
        self._close_when_flushed = False

    # --- transport ----------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.sim.connection_opened(self)

    def connection_lost(self, exc) -> None:
        self.stats.closed_at = time.time()
        if self._flush_handle:
            self._flush_handle.cancel()
        for _, data in self._pending:   # requests still held open (historical data) are open no more
            if callable(data):
                data()
        self._pending.clear()
        self.sim.connection_closed(self)

    def close(self, after_replies: bool = False) -> None:
        """Close now (a dropped connection), or once the replies held back by latency are out."""
        if after_replies and self._pending:
            self._close_when_flushed = True
            return
        if self.transport and not self.transport.is_closing():
            self.transport.close()

    def account_changed(self, account: str, con_ids: list[int], positions: dict, items: dict) -> None:
        """Send what this connection's subscriptions are owed for a change of `account` (see Subscriptions)."""
        for message in self.subs.account_updates(self.sim, account, con_ids, positions, items):
            self.send(message)

    def send_error(self, req_id: int, code: int, text: str) -> None:
        """An error or notice (message 4) in this connection's negotiated layout."""
        self.send(msg.error(req_id, code, text, self.server_version))

    def send(self, fields: list) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.stats.messages_out[int(fields[0])] += 1
        data = frame(fields)
        self.stats.bytes_out += len(data)
        self._queue(data)

    def _queue(self, data: bytes) -> None:
        """Write now, or after the injected latency; replies keep their order either way."""
        delay = self.sim.faults.reply_delay()
        if not delay and not self._pending:
            self._write(data)
            return
        loop = asyncio.get_running_loop()
        send_at = loop.time() + delay
        if self._pending:
            send_at = max(send_at, self._pending[-1][0])
        self._pending.append((send_at, data))
        if self._flush_handle is None:
            self._flush_handle = loop.call_at(send_at, self._flush)

    def after_replies(self, fn) -> None:
        """Call `fn` once every reply queued so far has been written (at once when latency holds none back)."""
        if not self._pending:
            fn()
        else:
            self._pending.append((self._pending[-1][0], fn))

    def _write(self, data: bytes) -> None:
        if self.transport and not self.transport.is_closing():
            self.transport.write(data)
            self.replied_since_request = True   # the client may now be reading a reply: a new round trip follows

    def _flush(self) -> None:
        self._flush_handle = None
        loop = asyncio.get_running_loop()
        while self._pending and self._pending[0][0] <= loop.time():
            _, data = self._pending.popleft()
            if callable(data):
                data()
            else:
                self._write(data)
        if self._pending:
            self._flush_handle = loop.call_at(self._pending[0][0], self._flush)
        elif self._close_when_flushed:
            self.close()

    def data_received(self, data: bytes) -> None:
        self.buffer.feed(data)
        if not self.server_version and not self._handshake():
            return
        for fields in self.buffer.messages():
            if self.transport.is_closing():
                return
            self._count_request(fields[0] if fields else '0')
            try:
                self._dispatch(fields)
            except Exception:  # a bad request must never kill the gateway
                log.exception('failed to handle request %s', fields[:3])
                self.send_error(-1, NOT_IMPLEMENTED, f'Simulator failed to handle request {fields[:1]}')

    def _count_request(self, msg_id: str) -> None:
        try:
            self.stats.messages_in[int(msg_id)] += 1
        except ValueError:
            self.stats.messages_in[-1] += 1
        if self.replied_since_request:
            self.stats.round_trips += 1
            self.replied_since_request = False
        faults = self.sim.faults
        if faults.drop_after is not None and sum(self.stats.messages_in.values()) >= faults.drop_after:
            self.close()
            return
        if self.pace_api or not self.ready:
            return
        verdict = self.rate.record(time.monotonic(), self.sim.limits.message_rate)
        if verdict == 'warn':
            self.send_error(-1, 100, 'Max rate of messages per second has been exceeded:'
                                     f'max={self.sim.limits.message_rate}')
        elif verdict == 'close':
            log.warning('client %s kept exceeding %s messages per second; closing', self.client_id,
                        self.sim.limits.message_rate)
            self.close(after_replies=True)

    def _handshake(self) -> bool:
        """Consume 'API\\0' + version range and answer with the server version; False until complete."""
        raw = self.buffer.take_raw(4)
        if raw is None:
            return False
        if raw != HANDSHAKE_PREFIX:
            log.warning('bad handshake prefix %r; closing', raw)
            self.close()
            return False
        frames = self.buffer.messages()
        first = next(frames, None)
        if first is None:
            self.buffer._buf[:0] = raw  # wait for the rest of the handshake
            return False
        self._count_request('0')
        try:
            _, client_max = parse_version_range(first[0] if first else '')
        except ValueError:
            client_max = 0
        now = self.sim.clock.now().astimezone(timezone.utc)
        if client_max < MIN_CLIENT_VERSION:
            self._refuse_old_client(first[0] if first else '', now)
            return False
        self.server_version = min(client_max, MAX_SERVER_VERSION)
        self.pace_api = '+PACEAPI' in (first[0] if first else '').split()[1:]
        self.stats.messages_out[0] += 1
        reply = frame([self.server_version, now.strftime('%Y%m%d %H:%M:%S UTC')])
        self.stats.bytes_out += len(reply)
        self._queue(reply)
        return True

    def _refuse_old_client(self, offered: str, now: datetime) -> None:
        """Like IB's gateway, answer the handshake with the version it speaks (here its oldest, 157) and leave
        the verdict to the client (IB's own clients refuse a server outside their range); then say why in an
        error with reqId -1 and close, instead of hanging up on a client that gets no reason."""
        log.warning('client offers versions %r, below %d; refusing', offered, MIN_CLIENT_VERSION)
        self.server_version = MIN_CLIENT_VERSION
        self.stats.messages_out[0] += 1
        self._queue(frame([MIN_CLIENT_VERSION, now.strftime('%Y%m%d %H:%M:%S UTC')]))
        self.send_error(-1, CLIENT_TOO_OLD, f'API client versions {offered or "(none)"} are older than this '
                                            f'gateway supports (server versions {MIN_CLIENT_VERSION} to '
                                            f'{MAX_SERVER_VERSION}); upgrade the API client')
        self.close(after_replies=True)

    # --- dispatch -----------------------------------------------------------------------

    def _dispatch(self, f: list[str]) -> None:
        msg_id = int(f[0])
        faults = self.sim.faults
        if msg_id in faults.drop_on:
            self.close()
            return
        if msg_id in faults.stall:
            log.info('stalling request %s', msg_id)
            return
        if msg_id != 71 and not self.ready:
            log.warning('request %s before startApi; ignored', msg_id)
            return
        handler = HANDLERS.get(msg_id)
        if handler:
            handler(self, f)
        elif msg_id in CANCELS:
            self._cancel(f, CANCELS[msg_id])
        elif msg_id in FIRE_AND_FORGET:
            log.debug('request %s needs no answer', msg_id)
        else:
            self._unsupported(msg_id, f)

    def _unsupported(self, msg_id: int, f: list[str]) -> None:
        req_id = -1
        at = UNSUPPORTED_REQ_ID_AT.get(msg_id)
        if msg_id == 19:      # replaceFA carries its reqId last
            at = len(f) - 1
        if at is not None and at < len(f):
            try:
                req_id = int(f[at])
            except ValueError:
                pass
        log.warning('request %s is not implemented by the simulator', msg_id)
        self.send_error(req_id, NOT_IMPLEMENTED, f'The simulated gateway does not implement request {msg_id}')

    def _cancel(self, f: list[str], at: int) -> None:
        req_id = int(f[at]) if at < len(f) and f[at].lstrip('-').isdigit() else -1
        found = req_id in self.live_req_ids
        self.live_req_ids.discard(req_id)
        self.subs.cancel(req_id)
        if not found:
            self.send_error(req_id, 300, f"Can't find EId with tickerId:{req_id}")

    # --- connection setup ---------------------------------------------------------------

    def on_start_api(self, f: list[str]) -> None:
        client_id = int(f[2])
        refusal = self.sim.register_client(self, client_id)
        if refusal:
            code, text = refusal
            self.send_error(-1, code, text)
            self.close(after_replies=True)
            return
        self.client_id = client_id
        self.stats.client_id = client_id
        self.ready = True
        broker = self.sim.broker
        self.send(msg.managed_accounts(self.sim.accounts))
        self.send(msg.next_valid_id(broker.next_order_id(client_id)))
        for code, text in CONNECTIVITY_LOST if self.sim.faults.connectivity_lost else FARM_OK:
            self.send_error(-1, code, text)

    def on_req_ids(self, f):
        self.send(msg.next_valid_id(self.sim.broker.next_order_id(self.client_id)))

    def on_req_managed_accts(self, f):
        self.send(msg.managed_accounts(self.sim.accounts))

    def on_req_current_time(self, f):
        self.send(msg.current_time(int(self.sim.clock.now().timestamp())))

    # --- account and positions ------------------------------------------------------------

    def on_req_positions(self, f):
        self.subs.positions = True
        for account, pos in self.sim.broker.positions():
            self.send(msg.position(account, pos.instrument, pos.quantity, pos.avgCost))
        self.send([msg.POSITION_END, 1])

    def on_cancel_positions(self, f):
        self.subs.positions = False

    def on_req_account_updates(self, f):
        subscribe, account = f[2] == '1', f[3] if len(f) > 3 else ''
        if not subscribe:
            self.subs.account = None
            return
        if not account and len(self.sim.accounts) == 1:
            account = self.sim.accounts[0]
        if account in self.sim.accounts:
            self.subs.account = account
            for message in self.sim.account_snapshot(account):
                self.send(message)
        self.send([msg.ACCT_DOWNLOAD_END, 1, account])

    def on_req_account_updates_multi(self, f):
        req_id, account = int(f[2]), f[3]
        self.live_req_ids.add(req_id)
        self.subs.account_multi[req_id] = account
        for acct in self.sim.accounts_matching(account):
            for key, value, ccy in self.sim.broker.account_values(acct):
                self.send(msg.account_update_multi(req_id, acct, key, value, ccy))
        self.send([msg.ACCOUNT_UPDATE_MULTI_END, 1, req_id])

    def on_req_account_summary(self, f):
        req_id, tags = int(f[2]), [t for t in f[4].split(',') if t]
        self.live_req_ids.add(req_id)
        self.subs.summary[req_id] = tags
        for message in self.sim.summary_messages(req_id, tags):
            self.send(message)
        self.send([msg.ACCOUNT_SUMMARY_END, 1, req_id])

    def on_req_positions_multi(self, f):
        req_id, account = int(f[2]), f[3]
        self.live_req_ids.add(req_id)
        for acct, pos in self.sim.broker.positions():
            if acct in self.sim.accounts_matching(account):
                self.send(msg.position_multi(req_id, acct, pos.instrument, pos.quantity, pos.avgCost))
        self.send([msg.POSITION_MULTI_END, 1, req_id])

    def on_req_pnl(self, f):
        req_id, account = int(f[1]), f[2]
        self.live_req_ids.add(req_id)
        values = {}
        if account in self.sim.accounts:
            values = {key: float(value) for key, value, ccy in self.sim.broker.account_values(account)
                      if key in ('UnrealizedPnL', 'RealizedPnL') and ccy == 'BASE'}
        unrealized, realized = values.get('UnrealizedPnL', 0.0), values.get('RealizedPnL', 0.0)
        self.send([msg.PNL, req_id, unrealized + realized, unrealized, realized])

    def on_req_pnl_single(self, f):
        req_id, account, con_id = int(f[1]), f[2], int(f[4] or 0)
        self.live_req_ids.add(req_id)
        items = self.sim.broker.portfolio(account) if account in self.sim.accounts else []
        item = next((i for i in items if i.instrument.conId == con_id), None)
        if item is None:
            self.send([msg.PNL_SINGLE, req_id, 0, 0.0, 0.0, 0.0, 0.0])
        else:
            self.send([msg.PNL_SINGLE, req_id, int(item.position), item.unrealizedPNL + item.realizedPNL,
                       item.unrealizedPNL, item.realizedPNL, item.marketValue])

    # --- orders -----------------------------------------------------------------------------

    def on_req_open_orders(self, f):
        mine = None if self.client_id == self.sim.master_client_id else self.client_id
        self._send_open_orders(self.sim.broker.open_orders(mine))

    def on_req_all_open_orders(self, f):
        self._send_open_orders(self.sim.broker.open_orders(None))

    def _send_open_orders(self, orders: list[Order]) -> None:
        for order in orders:
            self.send(msg.open_order(order, self.server_version))
            self.send(msg.order_status(order))
        self.send([msg.OPEN_ORDER_END, 1])

    def on_req_completed_orders(self, f):
        for order in self.sim.broker.completed_orders():
            self.send(msg.completed_order(order, self.server_version))
        self.send([msg.COMPLETED_ORDERS_END])

    def on_req_executions(self, f):
        req_id = int(f[2])
        client_id, account, since, symbol, sec_type, exchange, side = (f + [''] * 10)[3:10]
        since = _later(self._filter_time(req_id, since), self.sim.limits.execution_day_start(self.sim.clock.now()))
        executions = self.sim.broker.executions(
            client_id=int(client_id or 0), account=account, since=since,
            symbol=symbol, secType=sec_type, exchange=exchange, side=side)
        for ex in executions:
            self.send(msg.exec_details(req_id, ex))
            self.send(msg.commission_report(ex))
        self.send([msg.EXECUTION_DATA_END, 1, req_id])

    def _request_time(self, text: str, req_id: int = -1) -> datetime | None:
        """A date-time of a request as TWS reads it (_parse_request_time), with warning 2174 for the form without
        a zone, as TWS sends it."""
        when, zoned = _parse_request_time(text, self.sim.time_zone)
        if when is not None and not zoned:
            self.send_error(req_id, 2174, IMPLIED_TIME_ZONE_WARNING)
        return when

    def _filter_time(self, req_id: int, text: str) -> datetime | None:
        """ExecutionFilter.time as TWS reads it; one it cannot read filters nothing."""
        try:
            return self._request_time(text.replace('  ', ' '), req_id)
        except (ValueError, KeyError):
            return None

    def on_place_order(self, f):
        parsed = msg.parse_place_order(f)
        c, o = parsed['contract'], parsed['order']
        order_id = o['orderId']
        inst = self._resolve_one(c)
        if inst is None:
            self.send_error(order_id, 200, 'No security definition has been found for the request')
            return
        account = o['account'] or (self.sim.accounts[0] if len(self.sim.accounts) == 1 else '')
        try:
            order = Order(
                orderId=order_id, clientId=self.client_id, permId=0, account=account, instrument=inst,
                action=o['action'], totalQuantity=_float(o['totalQuantity']), orderType=o['orderType'],
                lmtPrice=_optional_float(o['lmtPrice']), auxPrice=_optional_float(o['auxPrice']),
                tif=o['tif'] or 'DAY', outsideRth=o['outsideRth'], orderRef=o['orderRef'],
                algoStrategy=o['algoStrategy'], algoParams=o['algoParams'])
            if o['whatIf']:
                what_if = self.sim.broker.what_if(order)
                self.send(msg.open_order(order, self.server_version, status='PreSubmitted', what_if=what_if))
                return
            if self.sim.on_place_order is not None:
                self.sim.on_place_order(order)
            self.sim.broker.place(order)
        except OrderError as e:
            self.send_error(order_id, e.code, e.message)
            if e.rejected is not None:          # TWS follows the 201 with the order, Inactive
                self.sim.order_changed(e.rejected)
        except ValueError as e:
            self.send_error(order_id, 201, f'Order rejected - reason:{e}')

    def on_cancel_order(self, f):
        order_id = int(f[2])
        try:
            self.sim.broker.cancel(self.client_id, order_id)
        except OrderError as e:
            self.send_error(order_id, e.code, e.message)
            return
        self.send_error(order_id, 202, 'Order Canceled - reason:')

    def on_req_global_cancel(self, f):
        for order in self.sim.broker.global_cancel():
            self.sim.notify_owner(order, 202, 'Order Canceled - reason:')

    # --- contracts and market data -------------------------------------------------------

    def _resolve(self, c: dict, include_expired: bool = False):
        return self.sim.universe.resolve(
            conId=int(c['conId'] or 0), symbol=c['symbol'], secType=c['secType'],
            exchange=c['exchange'], primaryExchange=c['primaryExchange'], currency=c['currency'],
            lastTradeDateOrContractMonth=c['lastTradeDateOrContractMonth'],
            localSymbol=c['localSymbol'], tradingClass=c['tradingClass'], includeExpired=include_expired)

    def _resolve_one(self, c: dict):
        matches = self._resolve(c)
        return matches[0] if len(matches) == 1 else None

    def on_req_contract_details(self, f):
        req_id = int(f[2])
        contract = _contract12(f[3:15])
        matches = self._resolve(contract, include_expired=f[15] == '1')
        if not matches:
            self.send_error(req_id, 200, 'No security definition has been found for the request')
            return
        now = self.sim.clock.now()
        for inst in matches:
            trading, liquid = self.sim.universe.hours(inst, now)
            self.send(msg.contract_details(req_id, inst, trading, liquid, self.server_version))
        self.send([msg.CONTRACT_DATA_END, 1, req_id])

    def on_req_market_data_type(self, f):
        self.market_data_type = int(f[2])

    def on_req_mkt_data(self, f):
        req_id = int(f[2])
        contract = _contract12(f[3:15])
        rest = f[15:]
        if contract['secType'] == 'BAG':
            legs = int(rest[0] or 0)
            rest = rest[1 + legs * 4:]
        if rest and rest[0] == '1':
            rest = rest[3:]
        snapshot = len(rest) > 2 and rest[2] == '1'
        inst = self._resolve_one(contract)
        if inst is None:
            self.send_error(req_id, 200, 'No security definition has been found for the request')
            return
        lines = self.sim.limits.market_data_lines
        if not snapshot and lines is not None and self.sim.market_data_lines_used() >= lines:
            self.send_error(req_id, 101, 'Max number of tickers has been reached')
            return
        if self.market_data_type != 1:
            self.send([msg.MARKET_DATA_TYPE, 1, req_id, self.market_data_type])
        self.send([msg.TICK_REQ_PARAMS, req_id, inst.minTick, '', 3])
        quote = self._quote(inst)
        self._send_quote(req_id, quote)
        if snapshot:
            self.send([msg.TICK_SNAPSHOT_END, 1, req_id])
        else:
            self.live_req_ids.add(req_id)
            self.subs.market_data[req_id] = (inst, quote)

    def _quote(self, inst):
        """The quote to send: bid, ask and last are -1 (none) for instruments under the no_live_quote fault."""
        quote = self.sim.quote(inst)
        if {inst.symbol, inst.localSymbol} & self.sim.faults.no_live_quote:
            quote = dataclasses.replace(quote, bid=-1.0, ask=-1.0, last=-1.0)
        return quote

    def _send_quote(self, req_id: int, q) -> None:
        ticks = TICKS_LIVE if self.market_data_type in (1, 2) else TICKS_DELAYED
        self.send(msg.tick_price(req_id, ticks['bid'], q.bid, q.bidSize))
        self.send(msg.tick_price(req_id, ticks['ask'], q.ask, q.askSize))
        self.send(msg.tick_price(req_id, ticks['last'], q.last, q.lastSize))
        self.send(msg.tick_price(req_id, ticks['high'], q.high, 0))
        self.send(msg.tick_price(req_id, ticks['low'], q.low, 0))
        self.send(msg.tick_price(req_id, ticks['close'], q.close, 0))
        self.send(msg.tick_price(req_id, ticks['open'], q.open, 0))
        self.send(msg.tick_size(req_id, ticks['volume'], q.volume))

    def drop_market_data(self) -> None:
        """Forget every streaming subscription, as a gateway that lost its data does (1101)."""
        for req_id in self.subs.market_data:
            self.live_req_ids.discard(req_id)
        self.subs.market_data.clear()

    def stream_quotes(self) -> None:
        """Push changed quotes to streaming market-data subscriptions (none while IB is out of reach)."""
        if self.sim.faults.connectivity_lost:
            return
        for req_id, (inst, last) in list(self.subs.market_data.items()):
            quote = self._quote(inst)
            if (quote.bid, quote.ask, quote.last) != (last.bid, last.ask, last.last):
                self.subs.market_data[req_id] = (inst, quote)
                self._send_quote(req_id, quote)

    def on_req_historical_data(self, f):
        req_id = int(f[1])
        contract = _contract12(f[2:14])
        end_text, bar_size, duration, use_rth, what, format_date = f[15:21]
        limits, sim = self.sim.limits, self.sim
        if limits.hist_open_requests is not None and sim.open_hist_requests >= limits.hist_open_requests:
            self.send_error(req_id, 162, PACING_VIOLATION)
            return
        key = tuple(contract[k] for k in ('conId', 'symbol', 'secType', 'lastTradeDateOrContractMonth', 'currency'))
        if limits.pacing_violation(sim.clock.now(), key, contract['exchange'], bar_size, duration, end_text,
                                   what, use_rth):
            self.send_error(req_id, 162, PACING_VIOLATION)
            return
        sim.historical_request_opened()
        try:
            self._answer_historical_data(req_id, contract, end_text, bar_size, duration, use_rth, what, format_date)
        finally:
            self.after_replies(sim.historical_request_closed)

    def _answer_historical_data(self, req_id, contract, end_text, bar_size, duration, use_rth, what, format_date):
        injected = self.sim.faults.hist_error_text()
        if injected:
            self.send_error(req_id, 162, injected.format(
                symbol=contract['localSymbol'] or contract['symbol'], exchange=contract['exchange'],
                secType=contract['secType'], what=what, bar_size=bar_size, duration=duration))
            return
        inst = self._resolve_one(contract)
        if inst is None:
            self.send_error(req_id, 200, 'No security definition has been found for the request')
            return
        try:
            end = self._request_time(end_text, req_id) or self.sim.clock.now()
            bars = self.sim.prices.bars(inst, end, duration, bar_size, what, use_rth == '1')
        except ValueError as e:
            text = str(e)
            if not text.startswith('Historical Market Data Service error message:'):
                text = 'Historical Market Data Service error message:' + text
            self.send_error(req_id, 162, text)
            return
        start_text = bars[0].date.strftime('%Y%m%d') if bars else ''
        self.send(msg.historical_data(req_id, start_text, end.strftime('%Y%m%d %H:%M:%S'), bars,
                                      unix_times=format_date == '2'))

    def on_req_scanner_parameters(self, f):
        self.send([msg.SCANNER_PARAMETERS, 1, '<?xml version="1.0"?><ScanParameterResponse/>'])

    def on_req_family_codes(self, f):
        self.send([msg.FAMILY_CODES, 0])

    def on_req_mkt_depth_exchanges(self, f):
        self.send([msg.MKT_DEPTH_EXCHANGES, 0])

    def on_req_news_providers(self, f):
        self.send([msg.NEWS_PROVIDERS, 0])

    def on_request_fa(self, f):
        self.send_error(-1, 321, 'Error validating request:-\'bN\' : cause - FA data operations '
                                 'ignored for non FA customers.')


def _contract12(f: list[str]) -> dict:
    keys = ('conId', 'symbol', 'secType', 'lastTradeDateOrContractMonth', 'strike', 'right',
            'multiplier', 'exchange', 'primaryExchange', 'currency', 'localSymbol', 'tradingClass')
    return dict(zip(keys, f))


def _float(text: str) -> float:
    return float(text) if text else 0.0


def _optional_float(text: str) -> float | None:
    return float(text) if text and float(text) < 1e300 else None


def _parse_request_time(text: str, login_zone: tzinfo) -> tuple[datetime | None, bool]:
    """(instant, whether the text named its zone) of a request's date-time (reqHistoricalData's endDateTime,
    ExecutionFilter.time), read as TWS reads it; (None, True) for ''.

    - 'yyyymmdd-hh:mm:ss' (a dash): UTC, and nothing may follow it;
    - 'yyyymmdd hh:mm:ss ZONE' (a space, then a zone such as US/Eastern or UTC): in that zone;
    - 'yyyymmdd hh:mm:ss' (no zone): in the time zone of the TWS login (`login_zone`), which TWS deprecates
      with warning 2174.
    Sources: TWS's error 10314 ("The correct format is yyyymmdd hh:mm:ss xx/xxxx where yyyymmdd and xx/xxxx are
    optional ... If no time-zone is specified, local time-zone is assumed(deprecated). You can also provide
    yyyymmddd-hh:mm:ss time is in UTC. Note that there is a dash between the date and time in UTC notation.")
    and warning 2174 (IMPLIED_TIME_ZONE_WARNING), as logged from live sessions in public IB API projects
    quoting them, in projects that log what TWS sent; IB's Python client
    (ibapi 10.50 EClient.reqExecutions: "Time format must be 'yyyymmdd-hh:mm:ss'") and its C# reference
    (ExecutionFilter.Time: "yyyymmdd hh:mm:ss ... Only those executions reported after the specified time
    will be returned"). ValueError or KeyError (unknown zone) when TWS could not read it either.
    """
    text = text.strip()
    if not text:
        return None, True
    if '-' in text[:9]:
        return datetime.strptime(text, '%Y%m%d-%H:%M:%S').replace(tzinfo=timezone.utc), True
    parts = text.split()
    when = datetime.strptime(' '.join(parts[:2]), '%Y%m%d %H:%M:%S')
    if len(parts) > 2:
        return when.replace(tzinfo=ZoneInfo(parts[2])), True
    return when.replace(tzinfo=login_zone), False


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return max((t for t in (a, b) if t is not None), default=None)


HANDLERS = {
    71: Connection.on_start_api,
    8: Connection.on_req_ids,
    17: Connection.on_req_managed_accts,
    49: Connection.on_req_current_time,
    61: Connection.on_req_positions,
    64: Connection.on_cancel_positions,
    6: Connection.on_req_account_updates,
    76: Connection.on_req_account_updates_multi,
    62: Connection.on_req_account_summary,
    74: Connection.on_req_positions_multi,
    92: Connection.on_req_pnl,
    94: Connection.on_req_pnl_single,
    5: Connection.on_req_open_orders,
    16: Connection.on_req_all_open_orders,
    99: Connection.on_req_completed_orders,
    7: Connection.on_req_executions,
    3: Connection.on_place_order,
    4: Connection.on_cancel_order,
    58: Connection.on_req_global_cancel,
    9: Connection.on_req_contract_details,
    59: Connection.on_req_market_data_type,
    1: Connection.on_req_mkt_data,
    20: Connection.on_req_historical_data,
    24: Connection.on_req_scanner_parameters,
    80: Connection.on_req_family_codes,
    82: Connection.on_req_mkt_depth_exchanges,
    85: Connection.on_req_news_providers,
    18: Connection.on_request_fa,
}
