"""Faults a test can switch on at any time, on a running simulator."""
from __future__ import annotations

import random
from dataclasses import MISSING, dataclass, field, fields


HMDS = 'Historical Market Data Service error message:'
# Error 162's texts, as IB's gateway words them; {symbol}, {exchange}, {secType}, {what}, {bar_size}, {duration}
# come from the request. 'permissions', 'bar-size' and 'duration' are permanent; the others pass.
HIST_ERRORS = {
    'permissions': HMDS + 'No market data permissions for {exchange} {secType}',
    'bar-size': HMDS + 'Invalid bar size: {bar_size}',
    'duration': HMDS + 'Invalid duration: {duration}',
    'no-data': HMDS + 'HMDS query returned no data: {symbol}@{exchange} {what}',
    'outage': HMDS + 'HMDS server connection was broken',
    'pacing': HMDS + 'Historical data request pacing violation',
}
# Connectivity between the gateway and IB's servers (the API socket stays up), IB's codes and texts.
CONNECTIVITY_LOST = [(1100, 'Connectivity between IB and Trader Workstation has been lost.'),
                     (2110, 'Connectivity between Trader Workstation and server is broken. '
                            'It will be restored automatically.')]
FARM_OK = [(2104, 'Market data farm connection is OK:usfarm'),
           (2106, 'HMDS data farm connection is OK:ushmds'),
           (2158, 'Sec-def data farm connection is OK:secdefnj')]
CONNECTIVITY_RESTORED = (1102, 'Connectivity between IB and Trader Workstation has been restored - data maintained. '
                               'All data farms are connected: usfarm; ushmds; secdefnj.')
CONNECTIVITY_RESTORED_DATA_LOST = (1101, 'Connectivity between IB and Trader Workstation has been restored - '
                                         'data lost.*')


@dataclass
class Faults:
    """What the simulated gateway should get wrong. Every field can be changed while it runs."""

    latency_ms: float = 0.0            # added before every reply
    jitter_ms: float = 0.0             # uniform extra 0..jitter_ms per reply (replies keep their order)
    refuse_connections: bool = False   # the listening socket is closed: connects fail with ECONNREFUSED
    drop_after: int | None = None      # close a connection once it has received this many messages
    drop_on: set[int] = field(default_factory=set)   # close a connection when a request with this msg id arrives
    stall: set[int] = field(default_factory=set)     # request msg ids that are read and never answered
    reject_orders: bool | str = False  # True, or a reason text: every new order gets error 201
    partial_fill: float | None = None  # fraction of an order filled at once; the rest keeps working
    hist_outage: bool = False          # historical data requests get error 162 (the HMDS outage text)
    hist_error: str = ''               # historical data requests get error 162 with HIST_ERRORS[hist_error]
    connectivity_lost: bool = False    # True: 1100 + 2110 to every client; back to False: 1102 (or 1101)
    connectivity_data_lost: bool = False   # the restore says 1101 "data lost" and drops market-data streams

    def hist_error_text(self) -> str | None:
        """The 162 text historical requests get now, if any (not yet filled in with the request's values)."""
        if self.hist_error:
            return HIST_ERRORS[self.hist_error]
        return HIST_ERRORS['outage'] if self.hist_outage else None

    def clear(self) -> None:
        """Switch every fault off (the listening socket reopens before this returns)."""
        for f in fields(self):
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            if getattr(self, f.name) != default:
                setattr(self, f.name, default)

    def reply_delay(self) -> float:
        """Seconds to hold the next reply back."""
        delay = self.latency_ms
        if self.jitter_ms:
            delay += random.uniform(0, self.jitter_ms)
        return delay / 1000.0

    def __setattr__(self, name, value):
        if name == 'hist_error' and value and value not in HIST_ERRORS:
            raise ValueError(f'unknown hist_error {value!r}; expected one of {", ".join(HIST_ERRORS)}')
        super().__setattr__(name, value)
        hook = self.__dict__.get('_on_change')
        if hook is not None and name != '_on_change':
            hook(name)
