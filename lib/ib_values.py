"""IB's "no value" marker for numbers and the one clean-up every reader of gateway numbers uses.

The gateway sends DBL_MAX for a double it has no value for (`UNSET_DOUBLE`, as the official client's
`ibapi/const.py` and ib_insync's `util.py` define it), and ib_insync turns some of those into NaN.
JSON has neither: results and records get None instead.
"""
from __future__ import annotations

import math
import sys
from typing import Any

UNSET_DOUBLE = sys.float_info.max   # 1.7976931348623157e308


def number(value: Any) -> float | None:
    """`value` as a number, or None where IB has none: None, NaN, an infinity, ±UNSET_DOUBLE, or text
    that is not a number. Numbers keep their type (an int stays an int); text is read as a float."""
    if value is None:
        return None
    if not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
    return None if math.isnan(value) or abs(value) >= UNSET_DOUBLE else value


def price(value: Any) -> float | None:
    """number(value) as a float when it is above zero; IB reports 0 or -1 for a quote it does not have."""
    cleaned = number(value)
    return float(cleaned) if cleaned is not None and cleaned > 0 else None
