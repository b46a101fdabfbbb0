"""Builders for the messages the gateway sends, at every server version it speaks (157-176), and the placeOrder parser.

Every builder returns a list of fields; `wire.frame` turns it into bytes. Field counts are exact:
the client silently drops a message with one field too many or too few (see research/tws-protocol.md).
The layouts that change between 157 and 176 take the connection's negotiated `version` and follow the
version checks of IB's official decoder (ibapi 10.50 `decoder.py`, `orderdecoder.py`):

| version | change |
|---|---|
| 158 | openOrder gains `duration` (MIN_SERVER_VER_DURATION) |
| 160 | openOrder gains `postToAts` (MIN_SERVER_VER_POST_TO_ATS) |
| 162 | openOrder gains `autoCancelParent` (MIN_SERVER_VER_AUTO_CANCEL_PARENT) |
| 163 | contractDetails gains `sizeMinTick` (MIN_SERVER_VER_FRACTIONAL_SIZE_SUPPORT) |
| 164 | contractDetails drops its version field, `mdSizeMultiplier` and `sizeMinTick`, gains minSize,
        sizeIncrement, suggestedSizeIncrement (MIN_SERVER_VER_SIZE_RULES) |
| 166 | error gains `advancedOrderRejectJson` (MIN_SERVER_VER_ADVANCED_ORDER_REJECT) |
| 170 | openOrder and completedOrder gain minTradeQty, minCompeteSize, competeAgainstBestOffset,
        midOffsetAtWhole, midOffsetAtHalf (MIN_SERVER_VER_PEGBEST_PEGMID_OFFSETS) |

Every other message the simulator sends has the same layout at every version from 157 to 176.
"""
from __future__ import annotations

from datetime import datetime, timezone

from .model import Execution, Instrument, Order

# Outgoing message ids
TICK_PRICE, TICK_SIZE, ORDER_STATUS, ERR_MSG, OPEN_ORDER = 1, 2, 3, 4, 5
ACCT_VALUE, PORTFOLIO_VALUE, ACCT_UPDATE_TIME, NEXT_VALID_ID = 6, 7, 8, 9
CONTRACT_DATA, EXECUTION_DATA, MANAGED_ACCTS, HISTORICAL_DATA = 10, 11, 15, 17
SCANNER_PARAMETERS, CURRENT_TIME, CONTRACT_DATA_END, OPEN_ORDER_END = 19, 49, 52, 53
ACCT_DOWNLOAD_END, EXECUTION_DATA_END, TICK_SNAPSHOT_END, MARKET_DATA_TYPE = 54, 55, 57, 58
COMMISSION_REPORT, POSITION_DATA, POSITION_END, ACCOUNT_SUMMARY, ACCOUNT_SUMMARY_END = 59, 61, 62, 63, 64
POSITION_MULTI, POSITION_MULTI_END, ACCOUNT_UPDATE_MULTI, ACCOUNT_UPDATE_MULTI_END = 71, 72, 73, 74
FAMILY_CODES, MKT_DEPTH_EXCHANGES, TICK_REQ_PARAMS, NEWS_PROVIDERS, HEAD_TIMESTAMP = 78, 80, 81, 85, 88
PNL, PNL_SINGLE, COMPLETED_ORDER, COMPLETED_ORDERS_END = 94, 95, 101, 102

# Server versions (ibapi server_versions.py) at which a layout the simulator sends changes.
MIN_VERSION, MAX_VERSION = 157, 176
DURATION, POST_TO_ATS, AUTO_CANCEL_PARENT = 158, 160, 162
FRACTIONAL_SIZE_SUPPORT, SIZE_RULES, ADVANCED_ORDER_REJECT, PEGBEST_PEGMID_OFFSETS = 163, 164, 166, 170


def contract11(inst: Instrument, exchange: str | None = None) -> list:
    """The 11-field contract block (no primaryExchange) used by most outgoing messages."""
    return [inst.conId, inst.symbol, inst.secType, inst.lastTradeDateOrContractMonth, 0.0, '',
            inst.multiplier, inst.exchange if exchange is None else exchange, inst.currency,
            inst.localSymbol, inst.tradingClass]


def error(req_id: int, code: int, message: str, version: int) -> list:
    fields = [ERR_MSG, 2, req_id, code, message]
    if version >= ADVANCED_ORDER_REJECT:
        fields.append('')   # advancedOrderRejectJson
    return fields


def managed_accounts(accounts: list[str]) -> list:
    return [MANAGED_ACCTS, 1, ','.join(accounts)]


def next_valid_id(order_id: int) -> list:
    return [NEXT_VALID_ID, 1, order_id]


def current_time(unix_seconds: int) -> list:
    return [CURRENT_TIME, 1, unix_seconds]


def position(account: str, inst: Instrument, quantity: float, avg_cost: float) -> list:
    exchange = inst.primaryExchange or inst.exchange
    return [POSITION_DATA, 3, account, *contract11(inst, exchange), quantity, avg_cost]


def portfolio(item, account: str) -> list:
    inst = item.instrument
    return [PORTFOLIO_VALUE, 8, inst.conId, inst.symbol, inst.secType,
            inst.lastTradeDateOrContractMonth, 0.0, '', inst.multiplier,
            inst.primaryExchange or inst.exchange, inst.currency, inst.localSymbol, inst.tradingClass,
            item.position, item.marketPrice, item.marketValue, item.averageCost,
            item.unrealizedPNL, item.realizedPNL, account]


def account_value(key: str, value: str, currency: str, account: str) -> list:
    return [ACCT_VALUE, 2, key, value, currency, account]


def account_time(now: datetime) -> list:
    return [ACCT_UPDATE_TIME, 1, now.strftime('%H:%M')]


def account_summary(req_id: int, account: str, tag: str, value: str, currency: str) -> list:
    return [ACCOUNT_SUMMARY, 1, req_id, account, tag, value, currency]


def account_update_multi(req_id: int, account: str, key: str, value: str, currency: str) -> list:
    return [ACCOUNT_UPDATE_MULTI, 1, req_id, account, '', key, value, currency]


def position_multi(req_id: int, account: str, inst: Instrument, quantity: float, avg_cost: float) -> list:
    return [POSITION_MULTI, 1, req_id, account, *contract11(inst, inst.primaryExchange or inst.exchange),
            quantity, avg_cost, '']


def contract_details(req_id: int, inst: Instrument, trading_hours: str, liquid_hours: str, version: int) -> list:
    is_stock = inst.secType == 'STK'
    order_types = 'ACTIVETIM,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,DAY,GTC,IOC,LMT,MKT,STP,STPLMT,WHATIF'
    valid = 'SMART,ARCA,NASDAQ,NYSE,BATS,IEX' if is_stock else inst.exchange
    sized = version >= SIZE_RULES
    head = [CONTRACT_DATA] if sized else [CONTRACT_DATA, 8]   # below 164: a version field before reqId
    md_size_multiplier = [] if sized else [1]
    size_rules = [1, 1, 1] if sized else [1] if version >= FRACTIONAL_SIZE_SUPPORT else []
    return [*head, req_id, inst.symbol, inst.secType, inst.lastTradeDateOrContractMonth, 0.0, '',
            inst.exchange, inst.currency, inst.localSymbol, inst.tradingClass, inst.tradingClass,
            inst.conId, inst.minTick, *md_size_multiplier, inst.multiplier, order_types, valid, 1, 0, inst.longName,
            inst.primaryExchange, inst.lastTradeDateOrContractMonth[:6], '', '', '', inst.timeZoneId,
            trading_hours, liquid_hours, '', '', 0,
            1, '', '', '26' if is_stock else '', inst.lastTradeDateOrContractMonth,
            'COMMON' if is_stock else '', *size_rules]


def order_status(order: Order) -> list:
    return [ORDER_STATUS, order.orderId, order.status, order.filled, order.remaining,
            order.avgFillPrice, order.permId, 0, order.lastFillPrice, order.clientId, order.whyHeld, '']


def _order_head(order: Order) -> list:
    """Fields shared by openOrder and completedOrder after the contract: action .. orderRef."""
    return [order.action, order.totalQuantity, order.orderType, order.lmtPrice, order.auxPrice,
            order.tif, '', order.account, 'O', 0, order.orderRef]


def _algo(order: Order) -> list:
    if not order.algoStrategy:
        return ['']
    params = [x for pair in order.algoParams for x in pair]
    return [order.algoStrategy, len(order.algoParams), *params]


def _peg_best_peg_mid(version: int) -> list:
    """minTradeQty, minCompeteSize, competeAgainstBestOffset, midOffsetAtWhole, midOffsetAtHalf (from 170)."""
    return [0, 0, '', '', ''] if version >= PEGBEST_PEGMID_OFFSETS else []


def open_order(order: Order, version: int, status: str | None = None, what_if=None) -> list:
    """openOrder: 128 fields for a plain order at 170 and above (more with algo parameters), 120 at 157."""
    inst = order.instrument
    head = _order_head(order)
    fields = [OPEN_ORDER, order.orderId, *contract11(inst), *head[:10], head[10],
              order.clientId, order.permId, order.outsideRth, False, 0.0, '', '',
              '', '', '', '', '', '', '', '', '',
              0, '', 0, 0, '', '', '', '', '',
              0, False, False, False, 0, 0, False, False, '', 0, 0, '', 0, '', '',
              False, 0, '', '', 0.0, 0, '',
              0, 0, 0,
              '', '', '',
              '',
              False, '', '', False, 0,
              *_algo(order),
              False, what_if is not None, status or order.status]
    if what_if is None:
        fields += [''] * 9 + ['', '', '', '', '']
    else:
        w = what_if
        fields += [w.initMarginBefore, w.maintMarginBefore, w.equityWithLoanBefore,
                   w.initMarginChange, w.maintMarginChange, w.equityWithLoanChange,
                   w.initMarginAfter, w.maintMarginAfter, w.equityWithLoanAfter,
                   w.commission, w.minCommission, w.maxCommission, w.commissionCurrency, '']
    fields += [False, False,
               0,
               '', '', '', '', '', '', '', 0, '', '', '', '',
               False, False, False, False]
    if version >= DURATION:
        fields.append(0)
    if version >= POST_TO_ATS:
        fields.append(0)
    if version >= AUTO_CANCEL_PARENT:
        fields.append(False)
    return fields + _peg_best_peg_mid(version)


def completed_order(order: Order, version: int) -> list:
    """completedOrder: 97 fields for a plain order (92 below 170); a different layout from openOrder."""
    inst = order.instrument
    completed = order.completedAt.strftime('%Y%m%d %H:%M:%S UTC') if order.completedAt else ''
    return [COMPLETED_ORDER, *contract11(inst), *_order_head(order), order.permId, order.outsideRth,
            False, 0.0, '', '', '', '', '', '', '', '', 0.0, '', 0, '', 0,
            '', '', '', '', '', 0, False, False, 0, 0, 0, '', 0, '', '',
            False, 0, '', '', '',
            0, 0, 0,
            '', '', '',
            '',
            '', '', False, 0,
            *_algo(order),
            False, order.status, False, False,
            0,
            '', '', '', False, False, '', order.filled, 0, False, '', False, False, 0,
            completed, order.completedStatus or order.status,
            *_peg_best_peg_mid(version)]


def exec_details(req_id: int, ex: Execution) -> list:
    """execDetails: exactly 31 fields."""
    inst = ex.instrument
    return [EXECUTION_DATA, req_id, ex.orderId, *contract11(inst), ex.execId,
            ex.time.astimezone(timezone.utc).strftime('%Y%m%d %H:%M:%S UTC'), ex.account,
            inst.primaryExchange or inst.exchange, ex.side, ex.shares, ex.price, ex.permId, ex.clientId,
            0, ex.cumQty, ex.avgPrice, ex.orderRef, '', '', '', 1]


def commission_report(ex: Execution) -> list:
    """commissionReport: exactly 8 fields."""
    return [COMMISSION_REPORT, 1, ex.execId, ex.commission, ex.commissionCurrency,
            ex.realizedPNL, '', '']


def tick_price(req_id: int, tick_type: int, price: float, size: float) -> list:
    return [TICK_PRICE, 6, req_id, tick_type, price, size, 0]


def tick_size(req_id: int, tick_type: int, size: float) -> list:
    return [TICK_SIZE, 6, req_id, tick_type, size]


def historical_data(req_id: int, start: str, end: str, bars: list, unix_times: bool = False) -> list:
    fields = [HISTORICAL_DATA, req_id, start, end, len(bars)]
    for b in bars:
        if isinstance(b.date, datetime) and unix_times:
            date = str(int(b.date.timestamp()))
        elif isinstance(b.date, datetime):
            date = b.date.strftime('%Y%m%d %H:%M:%S ') + str(b.date.tzinfo)
        else:
            date = b.date.strftime('%Y%m%d')
        fields += [date, b.open, b.high, b.low, b.close, b.volume, b.wap, int(b.count)]
    return fields


# --- placeOrder (in) -------------------------------------------------------------------------

def parse_place_order(f: list[str]) -> dict:
    """Read the fields a simulated gateway acts on from a placeOrder message.

    Fixed part first, then a walk over the variable part, which is needed to find `whatIf`
    and the algo parameters reliably (the layout grows with combos, scale, hedge, conditions...).
    """
    get = _Cursor(f)
    get.skip(1)
    order = {'orderId': int(get())}
    contract = dict(zip(
        ('conId', 'symbol', 'secType', 'lastTradeDateOrContractMonth', 'strike', 'right',
         'multiplier', 'exchange', 'primaryExchange', 'currency', 'localSymbol', 'tradingClass'),
        get.many(12)))
    get.skip(2)  # secIdType, secId
    (order['action'], order['totalQuantity'], order['orderType'], order['lmtPrice'],
     order['auxPrice'], order['tif'], _oca, order['account'], _oc, _origin,
     order['orderRef'], _transmit, _parent, _block, _sweep, _display, _trigger,
     outside_rth, _hidden) = get.many(19)
    order['outsideRth'] = outside_rth == '1'
    if contract['secType'] == 'BAG':
        legs = int(get() or 0)
        get.skip(legs * 8)
        get.skip(int(get() or 0))
        get.skip(int(get() or 0) * 2)
    get.skip(1)  # deprecated sharesAllocation
    rest = get.many(31)  # discretionaryAmt .. deltaNeutralAuxPrice
    if rest[29]:         # deltaNeutralOrderType adds 8 fields
        get.skip(8)
    get.skip(6)  # continuousUpdate .. scaleSubsLevelSize
    increment = get()
    if increment and 0 < float(increment) < 1e300:
        get.skip(7)
    get.skip(3)  # scaleTable, activeStartTime, activeStopTime
    if get():    # hedgeType
        get.skip(1)
    get.skip(4)  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld
    if get() == '1':  # deltaNeutralContract present
        get.skip(3)
    order['algoStrategy'] = get()
    order['algoParams'] = []
    if order['algoStrategy']:
        for _ in range(int(get() or 0)):
            order['algoParams'].append((get(), get()))
    get.skip(1)  # algoId
    order['whatIf'] = get() == '1'
    return {'contract': contract, 'order': order}


class _Cursor:
    def __init__(self, fields: list[str]) -> None:
        self._fields = fields
        self._i = 0

    def __call__(self) -> str:
        if self._i >= len(self._fields):
            raise ValueError('placeOrder message is shorter than its layout')
        value = self._fields[self._i]
        self._i += 1
        return value

    def many(self, n: int) -> list[str]:
        return [self() for _ in range(n)]

    def skip(self, n: int) -> None:
        self.many(n)
