"""From target weights to whole-contract quantities, and whose share of a netted trade is whose."""
from __future__ import annotations

import math


def target_quantity(weight: float, budget: float, price: float, multiplier: float, rate: float) -> int:
    """Contracts worth `weight` x `budget` (base currency), rounded toward zero.

    `price` x `multiplier` is one contract's value in its currency and `rate` converts it to the base.
    """
    unit_value = price * multiplier * rate
    if not unit_value > 0:
        raise ValueError(f'cannot size a position from a unit value of {unit_value!r}')
    return math.trunc(round(weight * budget / unit_value, 9))   # round first: 2.9999999997 is 3 contracts


def attribute(trade: float, targets: dict[str, float], previous: dict[str, float]) -> dict[str, float]:
    """Split a netted trade in one contract among the strategies that target it.

    Each strategy's share is its own change (target - previous target quantity); what the changes do
    not explain (manual trades, rounding, moved prices) is shared in proportion to those changes, or to
    the targets when nothing changed. The shares always add up to `trade`.
    """
    if not targets:
        return {}
    if len(targets) == 1:
        return {name: float(trade) for name in targets}
    changes = {name: target - previous.get(name, 0.0) for name, target in targets.items()}
    residual = trade - sum(changes.values())
    weights = {name: abs(change) for name, change in changes.items()}
    if not any(weights.values()):
        weights = {name: abs(target) for name, target in targets.items()}
    if not any(weights.values()):
        weights = {name: 1.0 for name in targets}
    total = sum(weights.values())
    return {name: changes[name] + residual * weights[name] / total for name in targets}
