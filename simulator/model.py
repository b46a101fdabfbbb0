"""Plain data the simulator's parts share: instruments, orders, executions, accounts.

Nothing here does I/O or knows the wire format; `server` turns these into TWS messages.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Instrument:
    """One tradable contract of the simulated universe."""

    conId: int
    symbol: str
    secType: str                 # STK, CASH, FUT
    exchange: str                # SMART, IDEALPRO, CME
    primaryExchange: str         # ARCA, NASDAQ, ... ('' for CASH and FUT)
    currency: str
    localSymbol: str
    tradingClass: str
    longName: str
    lastTradeDateOrContractMonth: str = ''   # YYYYMMDD for futures
    multiplier: str = ''                     # '' for stocks and forex, '2' for MNQ, '50' for ES
    minTick: float = 0.01
    timeZoneId: str = 'US/Eastern'
    session: str = 'stock'                   # stock | forex | future: picks the calendar
    basePrice: float = 100.0                 # price level of the seeded model
    volatility: float = 0.2                  # annualised, for the seeded model

    @property
    def price_multiplier(self) -> float:
        return float(self.multiplier) if self.multiplier else 1.0


@dataclass
class Order:
    """An order as the gateway keeps it. Quantities are positive; `action` gives the side."""

    orderId: int
    clientId: int
    permId: int
    account: str
    instrument: Instrument
    action: str                  # BUY | SELL
    totalQuantity: float
    orderType: str               # MKT, LMT, STP, STP LMT
    lmtPrice: float | None = None
    auxPrice: float | None = None
    tif: str = 'DAY'             # DAY, GTC, IOC
    outsideRth: bool = False
    orderRef: str = ''
    algoStrategy: str = ''       # 'Adaptive' is accepted and behaves like the base type
    algoParams: list[tuple[str, str]] = field(default_factory=list)
    status: str = 'Submitted'    # PreSubmitted, Submitted, Filled, Cancelled, ApiCancelled, Inactive
    filled: float = 0.0
    avgFillPrice: float = 0.0
    lastFillPrice: float = 0.0
    stopTriggered: bool = False
    createdAt: datetime | None = None
    completedAt: datetime | None = None
    completedStatus: str = ''    # text shown in completedOrder, e.g. 'Filled', 'Cancelled by Trader'
    whyHeld: str = ''
    expiresAt: datetime | None = None   # end of the liquid session a DAY order lives in

    @property
    def remaining(self) -> float:
        return self.totalQuantity - self.filled

    @property
    def is_done(self) -> bool:
        return self.status in ('Filled', 'Cancelled', 'ApiCancelled', 'Inactive')


@dataclass
class Execution:
    """One fill, with its commission."""

    execId: str
    orderId: int
    clientId: int
    permId: int
    account: str
    instrument: Instrument
    side: str                    # BOT | SLD
    shares: float
    price: float
    time: datetime
    cumQty: float
    avgPrice: float
    orderRef: str
    commission: float
    commissionCurrency: str
    realizedPNL: float           # realized by this fill, net of its commission; 0.0 when opening


@dataclass
class Position:
    instrument: Instrument
    quantity: float = 0.0
    avgCost: float = 0.0         # per unit incl. multiplier, as IB reports it for portfolio items
    realizedPNL: float = 0.0


@dataclass
class Account:
    accountId: str
    baseCurrency: str
    cash: dict[str, float] = field(default_factory=dict)          # currency -> balance
    positions: dict[int, Position] = field(default_factory=dict)  # conId -> position
    realizedPNL: float = 0.0
