"""The one place that imports the IB client library.

Swap `ib_insync` for `ib_async` here and nowhere else. Import this module from the main thread:
eventkit looks up the event loop when it is imported.
"""
from ib_insync import (
    IB,
    AccountValue,
    Contract,
    ExecutionFilter,
    Fill,
    LimitOrder,
    MarketOrder,
    Order,
    PortfolioItem,
    Position,
    Stock,
    Trade,
    util,
)

__all__ = [
    'IB', 'AccountValue', 'Contract', 'ExecutionFilter', 'Fill', 'LimitOrder', 'MarketOrder', 'Order',
    'PortfolioItem', 'Position', 'Stock', 'Trade', 'util',
]
