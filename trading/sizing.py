"""From target weights to whole-contract quantities, and each strategy's own trade in a netted one."""
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


def strategy_trades(trade: float, targets: dict[str, float], held: dict[str, float]) -> dict[str, float]:
    """Each strategy's own signed trade in one contract: its target minus what it holds (the ledger's part).

    What those do not explain (a position the ledger does not know, pending orders, rounding) is shared
    in proportion to the targets, or equally when they are all 0, so the trades add up to `trade`.
    """
    if not targets:
        return {}
    own = {name: target - held.get(name, 0.0) for name, target in targets.items()}
    residual = trade - sum(own.values())
    if abs(residual) > 1e-9:
        weights = {name: abs(target) for name, target in targets.items()}
        if not any(weights.values()):
            weights = {name: 1.0 for name in targets}
        total = sum(weights.values())
        own = {name: own[name] + residual * weights[name] / total for name in own}
    return {name: round(value, 8) for name, value in own.items()}
