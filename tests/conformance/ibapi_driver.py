"""Drive IB's official Python client (ibapi, from .venv-ibapi) through every conformance scenario against a gateway.

Run by tests/conformance under `.venv-ibapi/bin/python`, never imported by the main suite:
    ibapi_driver.py HOST PORT VERSION
caps the client at server version VERSION by patching its max-version constant, runs the scenarios in order and
prints one JSON document: the version the gateway agreed to, what each scenario saw, and every decoding problem.

The client's decoder is hooked so that a message it cannot decode (a missing field, an int that is not an int),
a message with fields it never read, or a fixed-layout message with the wrong field count becomes a problem
attributed to the scenario it arrived in. IB's client itself would log most of these and carry on.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from decimal import Decimal

import ibapi.client
from ibapi.client import EClient
from ibapi.contract import Contract
from ibapi.decoder import Decoder
from ibapi.execution import ExecutionFilter
from ibapi.order import Order
from ibapi.order_cancel import OrderCancel
from ibapi.wrapper import EWrapper

WAIT_SECONDS = 10.0
ACCOUNT_TAGS = 'AccountType,NetLiquidation,TotalCashValue,BuyingPower,AvailableFunds'

problems: list[dict] = []
current_step = ['handshake']


def hook_decoder() -> None:
    """Make the decoder report what IB's client would silently drop or misread."""
    original = Decoder.interpret

    def interpret(self, fields, msgId):
        if msgId == 0:
            return original(self, fields, msgId)
        info = self.msgId2handleInfo.get(msgId)
        text = [f.decode(errors='backslashreplace') for f in fields]
        if info is None:
            problems.append({'step': current_step[0], 'msgId': msgId, 'problem': 'unknown message id',
                             'fields': text})
            return None
        if info.wrapperMeth is not None:   # decoded by signature: a version field, then one field per argument
            if len(fields) != len(info.wrapperParams):
                problems.append({'step': current_step[0], 'msgId': msgId, 'fields': text,
                                 'problem': f'{len(fields)} fields, the decoder expects {len(info.wrapperParams)}'})
                return None
            return original(self, fields, msgId)
        remaining = iter(fields)
        try:
            info.processMeth(self, remaining)
        except Exception as exc:  # BadMessage, ValueError...: IB's client would lose this message
            problems.append({'step': current_step[0], 'msgId': msgId, 'fields': text,
                             'problem': f'decoding failed: {exc!r}'})
            return None
        unread = [f.decode(errors='backslashreplace') for f in remaining]
        if unread:
            problems.append({'step': current_step[0], 'msgId': msgId, 'fields': text,
                             'problem': f'{len(unread)} fields never read: {unread}'})
        return None

    Decoder.interpret = interpret


class Recorder(EWrapper):
    """Records every callback as (name, args); `wait` blocks until a predicate over the records holds."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, tuple]] = []
        self.changed = threading.Condition()
        for name in dir(EWrapper):
            if not name.startswith('_') and callable(getattr(EWrapper, name)) and name not in ('logAnswer',):
                setattr(self, name, self._recorder(name))

    def _recorder(self, name):
        def record(*args):
            with self.changed:
                self.events.append((name, args))
                self.changed.notify_all()
        return record

    def since(self, mark: int, name: str | None = None) -> list[tuple]:
        with self.changed:
            return [args for n, args in self.events[mark:] if name is None or n == name]

    def mark(self) -> int:
        with self.changed:
            return len(self.events)

    def wait(self, mark: int, name: str, predicate=lambda args: True, timeout: float = WAIT_SECONDS) -> bool:
        return self.wait_any(mark, {name: predicate}, timeout)

    def wait_any(self, mark: int, wanted: dict, timeout: float = WAIT_SECONDS) -> bool:
        """Wait until a callback named in `wanted` arrives whose arguments satisfy its predicate."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                if any(n in wanted and wanted[n](args) for n, args in self.events[mark:]):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(left)

    def errors(self, mark: int, req_id: int | None = None) -> list[int]:
        """Error codes since `mark` (farm notices 2100-2199 left out), optionally only those for `req_id`."""
        return [args[2] for args in self.since(mark, 'error')
                if not 2100 <= args[2] < 2200 and (req_id is None or args[0] == req_id)]


class Session:
    """One connected official client."""

    def __init__(self, host: str, port: int, client_id: int) -> None:
        self.wrapper = Recorder()
        self.client = EClient(self.wrapper)
        self.client.connect(host, port, client_id)
        self.thread = threading.Thread(target=self.client.run, daemon=True)
        self.thread.start()
        self._next_id = 0

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def close(self) -> None:
        self.client.disconnect()
        self.thread.join(5)


def stock(symbol: str) -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = symbol, 'STK', 'SMART', 'USD'
    return c


def forex(pair: str) -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = pair[:3], 'CASH', 'IDEALPRO', pair[4:]
    return c


def future(symbol: str) -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = symbol, 'FUT', 'CME', 'USD'
    return c


def order(action: str, quantity: int, order_type: str, ref: str, limit: float | None = None,
          what_if: bool = False) -> Order:
    o = Order()
    o.action, o.totalQuantity, o.orderType, o.orderRef, o.whatIf = action, Decimal(quantity), order_type, ref, what_if
    if limit is not None:
        o.lmtPrice = limit
    o.eTradeOnly = o.firmQuoteOnly = False
    return o


def run(host: str, port: int, version: int) -> dict:
    ibapi.client.MAX_CLIENT_VER = version
    hook_decoder()
    steps: dict[str, dict] = {}
    seconds: dict[str, float] = {}

    def step(name):
        def wrap(fn):
            current_step[0] = name
            started = time.monotonic()
            try:
                steps[name] = fn()
            except Exception as exc:  # a scenario's own failure is a result too
                steps[name] = {'exception': repr(exc)}
            seconds[name] = round(time.monotonic() - started, 3)
            return fn
        return wrap

    s = Session(host, port, 11)
    w, c = s.wrapper, s.client
    ref = f'conformance-{version}'

    @step('connect')
    def _():
        ready = w.wait(0, 'nextValidId') and w.wait(0, 'managedAccounts')
        w.wait(0, 'error', lambda a: a[2] == 2158, 2)   # the last farm notice after startApi
        first_id = w.since(0, 'nextValidId')[0][0] if ready else None
        s._next_id = first_id or 1000
        return {'ready': ready, 'serverVersion': c.serverVersion(),
                'accounts': [a[0] for a in w.since(0, 'managedAccounts')], 'nextValidId': first_id,
                'notices': sorted({a[2] for a in w.since(0, 'error')})}

    @step('current time')
    def _():
        m = w.mark()
        c.reqCurrentTime()
        return {'answered': w.wait(m, 'currentTime'), 'time': [a[0] for a in w.since(m, 'currentTime')]}

    def details(contract):
        m, req = w.mark(), s.next_id()
        c.reqContractDetails(req, contract)
        done = w.wait_any(m, {'contractDetailsEnd': lambda a: a[0] == req, 'error': lambda a: a[0] == req})
        found = [a[1] for a in w.since(m, 'contractDetails') if a[0] == req]
        return {'done': done, 'count': len(found), 'errors': w.errors(m, req),
                'conIds': [d.contract.conId for d in found], 'localSymbols': [d.contract.localSymbol for d in found],
                'minTick': [d.minTick for d in found], 'timeZoneId': [d.timeZoneId for d in found]}

    step('contract details: stock')(lambda: details(stock('SPY')))
    step('contract details: forex pair')(lambda: details(forex('EUR.USD')))
    step('contract details: future')(lambda: details(future('ES')))
    step('contract details: unknown symbol')(lambda: details(stock('NOSUCHSYMBOL')))

    @step('historical bars')
    def _():
        m, req = w.mark(), s.next_id()
        c.reqHistoricalData(req, stock('SPY'), '', '5 D', '1 day', 'TRADES', 1, 1, False, [])
        done = w.wait(m, 'historicalDataEnd', lambda a: a[0] == req)
        bars = [a[1] for a in w.since(m, 'historicalData') if a[0] == req]
        return {'done': done, 'bars': len(bars), 'closes': [b.close for b in bars], 'errors': w.errors(m, req)}

    @step('market data: snapshot')
    def _():
        m, req = w.mark(), s.next_id()
        c.reqMktData(req, stock('SPY'), '', True, False, [])
        done = w.wait(m, 'tickSnapshotEnd', lambda a: a[0] == req)
        prices = {a[1]: a[2] for a in w.since(m, 'tickPrice') if a[0] == req}
        return {'done': done, 'tickTypes': sorted(prices), 'bid': prices.get(1), 'ask': prices.get(2),
                'errors': w.errors(m, req)}

    @step('market data: stream')
    def _():
        m, req = w.mark(), s.next_id()
        c.reqMktData(req, stock('QQQ'), '', False, False, [])
        got = w.wait(m, 'tickPrice', lambda a: a[0] == req)
        c.cancelMktData(req)
        return {'ticks': got, 'sizes': len([a for a in w.since(m, 'tickSize') if a[0] == req]),
                'errors': w.errors(m, req)}

    @step('market order: fill, execDetails, commission report')
    def _():
        m, oid = w.mark(), s.next_id()
        c.placeOrder(oid, stock('SPY'), order('BUY', 3, 'MKT', f'{ref}-mkt'))
        filled = w.wait(m, 'orderStatus', lambda a: a[0] == oid and a[1] == 'Filled')
        execs = [a[2] for a in w.since(m, 'execDetails') if a[2].orderId == oid]
        exec_ids = {e.execId for e in execs}
        w.wait(m, 'commissionAndFeesReport', lambda a: a[0].execId in exec_ids, 2)
        reports = [a[0] for a in w.since(m, 'commissionAndFeesReport') if a[0].execId in exec_ids]
        opened = [a for a in w.since(m, 'openOrder') if a[0] == oid]
        return {'filled': filled, 'statuses': [a[1] for a in w.since(m, 'orderStatus') if a[0] == oid],
                'execShares': [float(e.shares) for e in execs], 'execOrderRefs': [e.orderRef for e in execs],
                'openOrderRefs': [a[2].orderRef for a in opened],
                'commissions': [r.commissionAndFees for r in reports], 'errors': w.errors(m, oid)}

    @step('positions')
    def _():
        m = w.mark()
        c.reqPositions()
        done = w.wait(m, 'positionEnd')
        c.cancelPositions()
        return {'done': done, 'positions': {a[1].symbol: float(a[2]) for a in w.since(m, 'position')}}

    @step('account summary')
    def _():
        m, req = w.mark(), s.next_id()
        c.reqAccountSummary(req, 'All', ACCOUNT_TAGS)
        done = w.wait(m, 'accountSummaryEnd', lambda a: a[0] == req)
        c.cancelAccountSummary(req)
        return {'done': done, 'tags': sorted({a[2] for a in w.since(m, 'accountSummary') if a[0] == req})}

    @step('account updates')
    def _():
        m = w.mark()
        c.reqAccountUpdates(True, '')
        done = w.wait(m, 'accountDownloadEnd')
        c.reqAccountUpdates(False, '')
        return {'done': done, 'values': len(w.since(m, 'updateAccountValue')),
                'portfolio': {a[0].symbol: float(a[1]) for a in w.since(m, 'updatePortfolio')},
                'time': bool(w.since(m, 'updateAccountTime'))}

    @step('resting limit order, then cancel')
    def _():
        m, oid = w.mark(), s.next_id()
        c.placeOrder(oid, stock('SPY'), order('BUY', 1, 'LMT', f'{ref}-cancel', limit=1.0))
        resting = w.wait(m, 'orderStatus', lambda a: a[0] == oid and a[1] in ('Submitted', 'PreSubmitted'))
        c.cancelOrder(oid, OrderCancel())
        cancelled = w.wait(m, 'orderStatus', lambda a: a[0] == oid and a[1] == 'Cancelled')
        w.wait(m, 'error', lambda a: a[0] == oid and a[2] == 202, 2)
        return {'resting': resting, 'cancelled': cancelled, 'errors': w.errors(m, oid)}

    @step('whatIf')
    def _():
        m, oid = w.mark(), s.next_id()
        c.placeOrder(oid, stock('SPY'), order('BUY', 10, 'MKT', f'{ref}-whatif', what_if=True))
        answered = w.wait(m, 'openOrder', lambda a: a[0] == oid)
        states = [a[3] for a in w.since(m, 'openOrder') if a[0] == oid]
        return {'answered': answered, 'whatIf': [a[2].whatIf for a in w.since(m, 'openOrder') if a[0] == oid],
                'initMarginChange': [st.initMarginChange for st in states],
                'commission': [st.commissionAndFees for st in states],
                'statuses': [a[1] for a in w.since(m, 'orderStatus') if a[0] == oid]}

    resting_id = s.next_id()

    @step('open orders')
    def _():
        m = w.mark()
        c.placeOrder(resting_id, stock('SPY'), order('BUY', 1, 'LMT', f'{ref}-open', limit=1.0))
        w.wait(m, 'orderStatus', lambda a: a[0] == resting_id)
        m = w.mark()
        c.reqOpenOrders()
        done = w.wait(m, 'openOrderEnd')
        mine = [a for a in w.since(m, 'openOrder')]
        return {'done': done, 'orderIds': [a[0] for a in mine], 'orderRefs': [a[2].orderRef for a in mine],
                'statuses': [a[3].status for a in mine]}

    @step('all open orders')
    def _():
        m = w.mark()
        c.reqAllOpenOrders()
        done = w.wait(m, 'openOrderEnd')
        found = [a[0] for a in w.since(m, 'openOrder')]
        m2 = w.mark()
        c.cancelOrder(resting_id, OrderCancel())
        w.wait(m2, 'orderStatus', lambda a: a[0] == resting_id and a[1] == 'Cancelled')
        return {'done': done, 'orderIds': found}

    @step('completed orders')
    def _():
        m = w.mark()
        c.reqCompletedOrders(False)
        done = w.wait(m, 'completedOrdersEnd')
        done_orders = w.since(m, 'completedOrder')
        return {'done': done, 'orderRefs': [a[1].orderRef for a in done_orders],
                'statuses': [a[2].status for a in done_orders],
                'completedStatus': [a[2].completedStatus for a in done_orders]}

    @step('executions')
    def _():
        m, req = w.mark(), s.next_id()
        c.reqExecutions(req, ExecutionFilter())
        done = w.wait(m, 'execDetailsEnd', lambda a: a[0] == req)
        execs = [a[2] for a in w.since(m, 'execDetails') if a[0] == req]
        exec_ids = {e.execId for e in execs}
        w.wait(m, 'commissionAndFeesReport', lambda a: a[0].execId in exec_ids, 2)
        return {'done': done, 'orderRefs': [e.orderRef for e in execs], 'sides': [e.side for e in execs],
                'commissions': len([a for a in w.since(m, 'commissionAndFeesReport') if a[0].execId in exec_ids])}

    @step('duplicate client id')
    def _():
        second = Session(host, port, 11)
        refused = second.wrapper.wait(0, 'error', lambda a: a[2] == 326)
        codes = second.wrapper.errors(0)
        second.close()
        return {'refused': refused, 'errors': codes}

    current_step[0] = 'disconnect'
    s.close()
    return {'version': version, 'steps': steps, 'problems': problems, 'seconds': seconds}


def main(argv: list[str]) -> int:
    host, port, version = argv[1], int(argv[2]), int(argv[3])
    print(json.dumps(run(host, port, version), default=str))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
