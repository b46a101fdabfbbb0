"""Faults a test can switch on at any time, on a running simulator."""
from __future__ import annotations

import random
from dataclasses import MISSING, dataclass, field, fields


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
    hist_outage: bool = False          # historical data requests get error 162
    no_live_quote: set[str] = field(default_factory=set)   # symbols / localSymbols quoted with a close only

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
        super().__setattr__(name, value)
        hook = self.__dict__.get('_on_change')
        if hook is not None and name != '_on_change':
            hook(name)
