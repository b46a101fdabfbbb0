"""A paper IB Gateway that speaks the real TWS API socket protocol (server versions 157 to 176)."""
from .faults import Faults
from .server import Simulator

__all__ = ['Faults', 'Simulator']
