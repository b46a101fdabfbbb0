"""The one place that imports the IB client library: ib_insync (default) or its maintained fork ib_async.

`IB_CLIENT_LIBRARY=ib_async` selects the fork; both export the names below. They cannot share a virtual
environment (see requirements-ib-async.txt). Import this module from the main thread: ib_insync's
eventkit looks up the event loop when it is imported.
"""
from importlib import import_module

from lib.config import ConfigError, client_library

CLIENT_LIBRARIES = ('ib_insync', 'ib_async')
CLIENT_LIBRARY = client_library()   # a process-level choice: the library is imported once
if CLIENT_LIBRARY not in CLIENT_LIBRARIES:
    raise ConfigError(f'IB_CLIENT_LIBRARY={CLIENT_LIBRARY!r} is invalid: expected one of {", ".join(CLIENT_LIBRARIES)}')
try:
    _client = import_module(CLIENT_LIBRARY)
except ModuleNotFoundError as exc:
    if exc.name != CLIENT_LIBRARY:
        raise
    raise ConfigError(f'IB_CLIENT_LIBRARY={CLIENT_LIBRARY} but {CLIENT_LIBRARY} is not installed here '
                      '(.venv has ib_insync, .venv-ib-async has ib_async)') from exc

IB = _client.IB
AccountValue = _client.AccountValue
Contract = _client.Contract
ContractDetails = _client.ContractDetails
ExecutionFilter = _client.ExecutionFilter
Fill = _client.Fill
Forex = _client.Forex
Future = _client.Future
LimitOrder = _client.LimitOrder
MarketOrder = _client.MarketOrder
Order = _client.Order
PortfolioItem = _client.PortfolioItem
Position = _client.Position
Stock = _client.Stock
Trade = _client.Trade
util = _client.util

__all__ = [
    'CLIENT_LIBRARY', 'IB', 'AccountValue', 'Contract', 'ContractDetails', 'ExecutionFilter', 'Fill', 'Forex',
    'Future', 'LimitOrder', 'MarketOrder', 'Order', 'PortfolioItem', 'Position', 'Stock', 'Trade', 'util',
]
