"""Strategy names to classes. Names from config and messages are looked up here, never imported."""
from __future__ import annotations

from strategies.base import Strategy
from strategies.dummy import Dummy
from strategies.spy_macd_vixy import SpyMacdVixy

_STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (SpyMacdVixy, Dummy)}


class UnknownStrategy(LookupError):
    """No strategy is registered under this name."""

    def __init__(self, name: str, known: list[str]):
        super().__init__(f'unknown strategy {name!r}; known strategies: {", ".join(known)}')
        self.name = name
        self.known = known


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class registered as `name`."""
    try:
        return _STRATEGIES[name]
    except (KeyError, TypeError):
        raise UnknownStrategy(name, strategy_names()) from None


def strategy_names() -> list[str]:
    """All registered strategy names, sorted."""
    return sorted(_STRATEGIES)
