"""Intent names to classes. Names from messages are looked up here, never imported."""
from __future__ import annotations

from intents.allocation import Allocation
from intents.base import Intent
from intents.cash_balancer import CashBalancer
from intents.close_all import CloseAll
from intents.collect_market_data import CollectMarketData
from intents.execute_plan import ExecutePlan
from intents.health import Health
from intents.summary import Summary
from intents.trade_reconciliation import TradeReconciliation

_INTENTS: dict[str, type[Intent]] = {cls.name: cls for cls in (
    Summary, Health, Allocation, CloseAll, CashBalancer, TradeReconciliation, CollectMarketData,
    ExecutePlan)}


class UnknownIntent(LookupError):
    """No intent is registered under this name."""

    def __init__(self, name: str, known: list[str]):
        super().__init__(f'unknown intent {name!r}; known intents: {", ".join(known)}')
        self.name = name
        self.known = known


def get_intent(name: str) -> type[Intent]:
    """The intent class registered as `name`."""
    try:
        return _INTENTS[name]
    except (KeyError, TypeError):
        raise UnknownIntent(name, intent_names()) from None


def intent_names() -> list[str]:
    """All registered intent names, sorted."""
    return sorted(_INTENTS)


def plannable_intents() -> list[str]:
    """The intents a request's `approval: "required"` applies to, sorted."""
    return sorted(name for name, cls in _INTENTS.items() if cls.plannable)
